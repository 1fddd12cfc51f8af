"""scaledet.evaluation."""
