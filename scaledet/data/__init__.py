"""scaledet.data."""
