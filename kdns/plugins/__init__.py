"""kdns/plugins."""
