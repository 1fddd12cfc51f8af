"""scaledet.engine."""
