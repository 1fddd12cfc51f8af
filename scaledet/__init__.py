"""scaledet: object detection in pure PyTorch, built around scale.

``scaledet.train``, ``scaledet.val`` and ``scaledet.load`` are the Python front end
(:mod:`scaledet.api`); ``scaledet`` on the command line (:mod:`scaledet.cli`) runs the same code.

Layers, lowest first; a module imports only from its own layer and those below it
(``tests/test_layers.py`` checks every import):

1. ``ops``: box formats, IoU, NMS, receptive fields, devices; imports nothing else of scaledet.
2. ``losses`` (focal, IoU-family and distribution losses) and ``nn`` (transformer parts:
   attention, RoPE, linear attention, GAU, feed-forwards, mixture of experts).
3. ``models``: layers, backbones, necks, heads (dense and set prediction), assigners and
   matchers, typed configs, presets, weight files; and ``faces`` (alignment by landmarks,
   margin-softmax heads).
4. ``data``: dataset formats, checks, transforms, loaders, the built-in dataset.
5. ``evaluation`` (COCO metrics, validation) and ``plots`` (every picture scaledet writes).
6. ``inference`` (prediction, TTA, slicing, export, output writers) and ``engine`` (training);
   neither imports the other.
7. ``api``, ``cli`` and ``integrations`` (Ray Data, Spark).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from scaledet.api import load, train, val

__all__ = ["load", "train", "val"]


def __getattr__(name: str) -> Any:
    # lazy: `import scaledet` stays fast and loads torch only when the front end is used
    if name in __all__:
        from scaledet import api

        return getattr(api, name)
    raise AttributeError(f"module 'scaledet' has no attribute {name!r}")
