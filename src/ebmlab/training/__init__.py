"""Training: the loop (:func:`fit`), the config-driven run (:func:`train`), checkpoints, loading.

Layer: imports objectives, partition, samplers, energy, data, diagnostics, metrics and
distributed; never jobs or cli (no printing, no pictures, no file formats beyond the run's own).
"""

from ebmlab.training.config import TrainConfig
from ebmlab.training.fit import fit
from ebmlab.training.loading import Run, load, load_run
from ebmlab.training.loop import Callback, FitResult, TrainingDivergedError, TrainLoop
from ebmlab.training.models import available_models, register_model
from ebmlab.training.run import RunResult, Trainer, train

__all__ = ["Callback", "FitResult", "Run", "RunResult", "TrainConfig", "TrainLoop", "Trainer", "TrainingDivergedError",
           "available_models", "fit", "load", "load_run", "register_model", "train"]
