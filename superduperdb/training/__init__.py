"""Pure compute for training models: metrics, losses, the PyTorch loop, contrastive training.

Nothing here touches MongoDB or Dask: the ``train`` job
(:mod:`superduperdb.tasks.training`) reads the data and calls these. torch is
imported only when a torch model is trained.

>>> from superduperdb.training import metrics
>>> metrics.accuracy([1, 0], [1, 1])
0.5

Floor: pure compute (with ``models``, ``types``, ``index``, ``datasets``). May import its own
floor and the leaves (``errors``, ``config``); no MongoDB, no Dask.
"""

from ..errors import TrainingCancelled, TrainingError
from .loop import Reporter, TrainLoop, TrainSettings
from .metrics import BUILTIN_METRICS

__all__ = ["BUILTIN_METRICS", "Reporter", "TrainLoop", "TrainSettings", "TrainingCancelled", "TrainingError"]
