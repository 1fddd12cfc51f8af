"""scaledet.models.backbones."""
