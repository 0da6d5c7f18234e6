"""reload plugin."""
