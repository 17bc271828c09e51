"""Held-out metrics during training, and the ``best`` checkpoint they choose.

:class:`HeldoutEvaluation` is a training-loop callback. Every ``every`` updates (and at the last)
it adds to the update's record, before the record is logged:

* ``heldout_loss`` — the objective's loss on the held-out rows, with its own fixed generator
  (the training generator is not touched, and an objective's state — persistent chains, a
  replay buffer — is restored afterwards, so evaluating never changes the run);
* ``heldout_nll`` — for real-valued data of at most 3 dimensions, the held-out negative
  log-likelihood in nats, ``mean_x E(x) + log Z`` with ``log Z`` by grid quadrature of the
  energy over the original data space (:func:`ebmlab.partition.quadrature_log_z`; the grid spans
  the held-out range widened by half its width per side, as ``ebmlab evaluate`` does);
* ``heldout_mmd`` — for images, when the objective keeps model samples (replay buffer,
  persistent chains), the unbiased MMD² (:func:`ebmlab.metrics.mmd2`, median bandwidth) between
  them and the held-out images on a fixed feature map: each image average-pooled to at most 4×4
  cells per channel, so the statistic compares shapes rather than pixel noise.

The first of these that exists (``heldout_nll``, else ``heldout_loss``) decides the best
evaluation so far; its full state is written atomically to ``RUN_DIR/best.pt`` beside the last
one (``checkpoint.pt``); :func:`ebmlab.training.loading.load` reads it with ``checkpoint="best"``.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch

from ebmlab.data import is_image_like
from ebmlab.metrics import mmd2
from ebmlab.partition import BoundaryMassWarning, GridResolutionWarning, quadrature_log_z
from ebmlab.training.callbacks import Callback
from ebmlab.training.checkpoint import save_checkpoint
from ebmlab.training.loading import energy_on_raw_data

BEST_NAME = "best.pt"
#: largest event for which the held-out NLL is computed by quadrature
MAX_QUADRATURE_DIMS = 3
_NUM_POINTS = {1: 1025, 2: 257, 3: 65}


class HeldoutEvaluation(Callback):
    """Held-out metrics every ``every`` updates (see the module docstring).

    Args:
        x_heldout: held-out rows in the original data space ``(N, *event)``.
        labels: their class indices ``(N,)`` for objectives that train on ``(x, y)`` batches.
        every: evaluation interval in updates (the last update is always evaluated).
        standardizer: the run's standardisation (the model sees ``(x - μ)/s``), or ``None``.
        max_rows: at most this many held-out rows enter the loss (the first ones; never more than
            the training batch size, which replay buffers and persistent chains are sized for).
        keep_best: write ``best.pt`` when the deciding metric improves (needs a run directory).
        seed: the seed of the evaluation's own generator (the same draws at every evaluation).
    """

    def __init__(self, x_heldout: torch.Tensor, every: int, standardizer=None, max_rows: int = 1024,
                 keep_best: bool = True, seed: int = 0, labels: torch.Tensor | None = None):
        if int(every) < 1:
            raise ValueError(f"held-out evaluation: every must be >= 1, got {every}")
        if x_heldout.shape[0] < 1:
            raise ValueError("held-out evaluation: no held-out rows")
        self.x_raw, self.every, self.standardizer = x_heldout, int(every), standardizer
        self.record_every = self.every  # the loop stops for this callback only at these steps (and the last)
        self.max_rows, self.keep_best, self.seed = int(max_rows), bool(keep_best), int(seed)
        self.labels = labels  # (N,) class indices for objectives that train on (x, y) batches
        self.best: float = math.inf
        self.best_step: int | None = None

    def on_record(self, loop, record: dict[str, Any]) -> None:
        if loop.step % self.every and loop.step != loop.settings.steps:
            return
        device = loop.x_train.device
        x_raw = self.x_raw.to(device)
        x_model = self.standardizer.to(device).transform(x_raw) if self.standardizer is not None else x_raw
        model = loop.trained_model
        was_training = model.training
        model.eval()
        try:
            rows = min(self.max_rows, loop.settings.batch_size)  # what the objective is built for (buffers)
            batch = x_model[:rows]
            if self.labels is not None:
                batch = (batch, self.labels[:rows].to(device))
            record["heldout_loss"] = self._loss(loop, model, batch)
            nll = self._nll(loop, model, x_raw)
            if nll is not None:
                record["heldout_nll"] = nll
            mmd = self._image_mmd(loop, model, x_model)
            if mmd is not None:
                record["heldout_mmd"] = mmd
        finally:
            model.train(was_training)
        deciding = record.get("heldout_nll", record["heldout_loss"])
        if math.isfinite(deciding) and deciding < self.best:
            self.best, self.best_step = deciding, loop.step
            record["heldout_best"] = 1.0
            if self.keep_best and loop.run_dir is not None:
                state = loop.state_dict()  # a collective in a process group: every rank is here
                if loop.sharding.is_main:
                    save_checkpoint(loop.run_dir / BEST_NAME, {**state, "heldout": {"metric": deciding,
                                                                                   "step": loop.step}})

    def _loss(self, loop, model, batch) -> float:
        objective = loop.objective
        saved = copy.deepcopy(objective.state_dict())  # chains/buffers must not move
        generator = torch.Generator(device=loop.x_train.device).manual_seed(self.seed)
        try:
            with torch.enable_grad():
                loss, _ = objective.loss(model, batch, generator)
            return float(loss.detach())
        finally:
            objective.load_state_dict(saved)

    def _image_mmd(self, loop, model, x: torch.Tensor) -> float | None:
        if not is_image_like(tuple(x.shape[1:])):
            return None
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        samples = loop.objective.model_samples(model, min(x.shape[0], self.max_rows), generator)
        if samples is None or samples.shape[0] < 2:
            return None
        return mmd2(pooled_features(x[: self.max_rows]), pooled_features(samples.detach()))

    def _nll(self, loop, model, x_raw: torch.Tensor) -> float | None:
        event = tuple(x_raw.shape[1:])
        if loop.support != "real" or len(event) != 1 or event[0] > MAX_QUADRATURE_DIMS:
            return None
        if getattr(model, "parametrization", "energy") != "energy":  # a score network has no density
            return None
        energy = energy_on_raw_data(model, self.standardizer, event, loop.support)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundaryMassWarning)  # a young model's mass may spill over
            warnings.simplefilter("ignore", GridResolutionWarning)  # a progress figure, not a final estimate
            result = quadrature_log_z(energy, data=x_raw, num_points=_NUM_POINTS[event[0]])
        with torch.no_grad():
            mean_energy = float(energy(x_raw).double().mean())
        return mean_energy + float(result.log_z)


def pooled_features(images: torch.Tensor, cells: int = 4) -> torch.Tensor:
    """The fixed feature map of ``heldout_mmd``: ``(N, [C,] H, W) -> (N, C·h·w)`` by average pooling
    to ``h, w = min(H, cells), min(W, cells)`` (float64)."""
    x = images if images.dim() == 4 else images.unsqueeze(1)
    x = torch.nn.functional.adaptive_avg_pool2d(x.double(), (min(x.shape[-2], cells), min(x.shape[-1], cells)))
    return x.flatten(1)


__all__ = ["BEST_NAME", "HeldoutEvaluation", "MAX_QUADRATURE_DIMS", "pooled_features"]
