"""Train from one dict of settings in the tests: the experiment plus the run's own options.

``out``, ``progress``, ``plots``, ``plot_samples`` and ``plot_sampler_steps`` are not part of the
experiment config (:class:`ebmlab.training.config.TrainConfig`); they are split off here and
given to :func:`ebmlab.training.run.train` (``out``) or turned into the pictures callback
(:class:`ebmlab.jobs.pictures.RunPictures`), as the CLI's job does.
"""

from __future__ import annotations

from typing import Any

from ebmlab.jobs.pictures import RunPictures
from ebmlab.training.config import TrainConfig
from ebmlab.training.presets import recommended_picture_steps
from ebmlab.training.run import Trainer
from ebmlab.training.run import train as library_train

RUN_OPTIONS = ("out", "progress", "plots", "plot_samples", "plot_sampler_steps")


def split_settings(settings: dict[str, Any] | TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    if isinstance(settings, TrainConfig):
        return settings, {}
    settings = dict(settings)
    run = {key: settings.pop(key) for key in RUN_OPTIONS if key in settings}
    return TrainConfig.from_dict(settings), run


def _callbacks(config: TrainConfig, run: dict[str, Any], callback=None) -> list:
    callbacks = [callback] if callback is not None else []
    if run.get("plots", True):
        steps = run.get("plot_sampler_steps")
        if steps is None:
            steps = recommended_picture_steps(config.model, config.objective, config.data)
        callbacks.append(RunPictures(run.get("plot_samples", 2000), steps))
    return callbacks


def train(settings, resume: bool = False, callback=None):
    """:func:`ebmlab.training.run.train` with the run options split off ``settings``."""
    config, run = split_settings(settings)
    return library_train(config, resume=resume, out=run.get("out"), callbacks=_callbacks(config, run, callback))


def make_trainer(settings, resume: bool = False, callback=None) -> Trainer:
    """A :class:`~ebmlab.training.run.Trainer` with the run options split off ``settings``."""
    config, run = split_settings(settings)
    return Trainer(config, resume=resume, out=run.get("out"), callbacks=_callbacks(config, run, callback))
