"""kdns/plugins/loadbalance: CoreDNS's ``loadbalance`` (round-robin order of A/AAAA/MX)."""
