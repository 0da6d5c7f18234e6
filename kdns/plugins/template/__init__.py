"""kdns/plugins/template."""
