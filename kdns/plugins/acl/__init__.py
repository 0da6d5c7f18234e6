"""kdns/plugins/acl: source-address access control (setup parses, handler serves)."""
