"""scaledet.inference."""
