"""kdns/plugins/forward: proxy queries to upstream resolvers (CoreDNS ``forward``)."""
