"""kdns/plugins/cache: the response cache (setup parses, handler serves)."""
