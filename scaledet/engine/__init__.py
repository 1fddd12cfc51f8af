"""scaledet.engine: the training loop, EMA, schedules, atomic checkpoints, COCO validation.

>>> from scaledet.engine import Trainer, TrainConfig
>>> Trainer(model, loader, TrainConfig(time_minutes=10), "runs/a", evaluate=validator).fit()

:func:`scaledet.engine.fit.fit` runs a whole training from typed
:class:`~scaledet.engine.fit.TrainSettings` (``scaledet train`` and ``scaledet.train``); data-parallel
training over several processes (``scaledet train --nproc N``) in
:mod:`scaledet.engine.distributed` (a ``Trainer`` built inside ``distributed.launch`` wraps its
model in ``DistributedDataParallel``; the loader takes ``shard=(rank, world)``).
"""

from scaledet.engine.checkpoint import load_train_state, save_train_state
from scaledet.engine.ema import ModelEMA
from scaledet.engine.schedule import WarmupCosine
from scaledet.engine.trainer import TrainConfig, Trainer, TrainingDiverged

__all__ = ["ModelEMA", "TrainConfig", "Trainer", "TrainingDiverged", "WarmupCosine",
           "load_train_state", "save_train_state"]
