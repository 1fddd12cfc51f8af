"""scaledet.ops."""
