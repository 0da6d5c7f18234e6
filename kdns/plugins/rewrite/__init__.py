"""kdns/plugins/rewrite: CoreDNS's ``rewrite`` (question rewrites, answers mapped back)."""
