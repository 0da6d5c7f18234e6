"""kdns/server."""
