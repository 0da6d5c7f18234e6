"""kdns/plugins/metadata."""
