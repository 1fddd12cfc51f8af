"""scaledet.models."""
