"""Training callbacks with Keras 3 semantics, and the Keras progress bar.

One module per callback; ``base`` holds the ``Callback`` class and its hook names, and
``callback_list`` the ``CallbackList`` that ``Model.fit``/``evaluate``/``predict`` drive.
"""
from __future__ import annotations

from .base import Callback
from .callback_list import CallbackList
from .csv_logger import CSVLogger
from .early_stopping import EarlyStopping
from .history import History
from .lambda_callback import LambdaCallback
from .learning_rate_scheduler import LearningRateScheduler
from .model_checkpoint import ModelCheckpoint
from .progbar import Progbar
from .progbar_logger import ProgbarLogger
from .reduce_lr_on_plateau import ReduceLROnPlateau
from .terminate_on_nan import TerminateOnNaN

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "Progbar", "EarlyStopping", "ModelCheckpoint",
           "ReduceLROnPlateau", "CSVLogger", "LambdaCallback", "LearningRateScheduler", "TerminateOnNaN"]
