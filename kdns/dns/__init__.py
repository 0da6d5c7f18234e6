"""kdns/dns."""
