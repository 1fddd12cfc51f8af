"""scaledet: object detection in pure PyTorch, built around scale."""

__version__ = "0.1.0"


def load(weights, **options):
    """A :class:`~scaledet.inference.predictor.Predictor` for a ``.safetensors`` checkpoint:
    ``scaledet.load("best.safetensors", conf=0.25)(images)`` -> one ``Result`` per image.
    ``options``: ``device``, ``conf``, ``imgsz``, ``batch_size``, ``nms``, ``iou``,
    ``max_det``, ``tta``, ``slicing`` (see ``Predictor``)."""
    from scaledet.inference.predictor import Predictor

    return Predictor(weights, **options)
