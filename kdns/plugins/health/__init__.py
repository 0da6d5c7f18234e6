"""kdns/plugins/health."""
