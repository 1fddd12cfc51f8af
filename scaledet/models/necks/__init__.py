"""scaledet.models.necks."""
