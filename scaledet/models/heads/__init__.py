"""scaledet.models.heads."""
