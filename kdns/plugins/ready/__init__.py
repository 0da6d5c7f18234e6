"""kdns/plugins/ready."""
