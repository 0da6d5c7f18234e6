"""kdns/plugins/errors."""
