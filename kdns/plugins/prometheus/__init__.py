"""prometheus plugin."""
