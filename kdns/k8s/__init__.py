"""kdns/k8s."""
