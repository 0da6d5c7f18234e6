"""kdns/plugins/loop: forwarding-loop detection at start-up (setup parses, handler probes)."""
