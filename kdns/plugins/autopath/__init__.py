"""kdns/plugins/autopath: server-side search-path completion (setup parses, handler serves)."""
