"""kdns/plugins/log."""
