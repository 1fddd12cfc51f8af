"""scaledet: object detection in pure PyTorch, built around scale."""

__version__ = "0.1.0"
