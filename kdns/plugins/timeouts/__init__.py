"""timeouts plugin."""
