"""kdns/plugins/kubernetes."""
