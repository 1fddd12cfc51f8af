"""scaledet.losses."""
