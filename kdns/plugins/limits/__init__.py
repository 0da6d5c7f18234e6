"""limits plugin."""
