"""What a trained classifier energy (JEM) reports: accuracy, calibration and class-conditional samples.

* :func:`expected_calibration_error` — ECE with ``M`` equal-width confidence bins (Guo et al.
  2017, "On calibration of modern neural networks"):
  ``ECE = Σ_m |B_m|/N · |acc(B_m) - conf(B_m)|`` where ``B_m`` holds the examples whose top
  probability lies in ``((m-1)/M, m/M]``, ``acc`` is their accuracy and ``conf`` their mean top
  probability (M = 15 as in the paper).
* :func:`classification_metrics` — test accuracy, ECE and the mean negative log-likelihood of
  the labels under ``p(y|x) = softmax f(x)``.
* :func:`noise_samples` — SGLD from uniform noise (on the data's range) on any energy: the
  marginal ``E(x)`` or a class's ``E(x | y)`` (:meth:`ClassifierEnergy.conditional` with one
  class per chain); the end points are clipped to the data's range, as the JEM objective
  clips its negatives.
* :func:`save_class_samples` — a grid of class-conditional samples, one row per class, as a PNG
  (:func:`ebmlab.jobs.image_grids.save_image_grid`); :func:`jem_report` does all of the above.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ebmlab.energy.base import EnergyFn
from ebmlab.jobs.image_grids import save_image_grid
from ebmlab.objectives import NoiseSource, run_chains
from ebmlab.samplers import Kernel

ECE_BINS = 15


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, num_bins: int = ECE_BINS) -> float:
    """ECE of class probabilities ``(N, K)`` against labels ``(N,)`` with ``num_bins`` equal-width bins."""
    if probabilities.dim() != 2 or labels.shape != probabilities.shape[:1] or probabilities.shape[0] < 1:
        raise ValueError(f"expected_calibration_error: probabilities (N, K) and labels (N,) needed, got "
                         f"{tuple(probabilities.shape)} and {tuple(labels.shape)}")
    if int(num_bins) < 1:
        raise ValueError(f"expected_calibration_error: num_bins must be >= 1, got {num_bins}")
    confidence, predicted = probabilities.detach().double().max(dim=1)
    correct = (predicted == labels.to(predicted.device)).double()
    # bin m (0-based) holds confidences in (m/M, (m+1)/M]; a confidence of exactly 0 joins bin 0
    bins = (torch.ceil(confidence * num_bins).long() - 1).clamp_(0, num_bins - 1)
    count = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins.cpu(), torch.ones_like(confidence).cpu())
    acc = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins.cpu(), correct.cpu())
    conf = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins.cpu(), confidence.cpu())
    return float((acc - conf).abs().sum() / confidence.shape[0])


@torch.no_grad()
def classification_metrics(classifier, x: torch.Tensor, labels: torch.Tensor, num_bins: int = ECE_BINS,
                           batch_size: int = 1024) -> dict[str, float]:
    """``{"accuracy", "ece", "nll"}`` of ``classifier.logits`` on ``x`` ``(N, *event)`` with labels ``(N,)``."""
    if not callable(getattr(classifier, "logits", None)):
        raise ValueError(f"classification_metrics: needs a classifier energy with logits(x), got "
                         f"{type(classifier).__name__}")
    logits = torch.cat([classifier.logits(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    log_p = torch.log_softmax(logits.double(), dim=1)
    labels = labels.to(logits.device).long()
    return {"accuracy": float((logits.argmax(1) == labels).double().mean()),
            "ece": expected_calibration_error(log_p.exp(), labels, num_bins),
            "nll": float(-log_p.gather(1, labels.unsqueeze(1)).mean())}


def noise_samples(energy: EnergyFn, data: torch.Tensor, num_samples: int, kernel: Kernel, num_steps: int,
                  generator: torch.Generator | None, clamp: bool = True) -> torch.Tensor:
    """``num_steps`` of ``kernel`` on ``energy`` from uniform noise over the range of ``data``
    ``(N, *event)``: ``(num_samples, *event)``, clipped to that range when ``clamp``."""
    noise = NoiseSource("uniform").fit(data)
    x0 = noise.sample(num_samples, generator).to(data.dtype)
    x, _ = run_chains(energy, kernel, x0, num_steps, generator)
    return noise.clamp(x) if clamp else x


def class_conditional_samples(classifier, data: torch.Tensor, per_class: int, kernel: Kernel, num_steps: int,
                              generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(samples (K·per_class, *event), classes (K·per_class,))``: SGLD on ``E(x | y)`` from noise,
    class-major (the first ``per_class`` rows are class 0)."""
    k = int(classifier.num_classes)
    classes = torch.arange(k, device=data.device).repeat_interleave(int(per_class))
    x = noise_samples(classifier.conditional(classes), data, classes.shape[0], kernel, num_steps, generator)
    return x, classes


def save_class_samples(samples: torch.Tensor, num_classes: int, path: str | os.PathLike,
                       value_range: tuple[float, float] | None = (0.0, 1.0), title: str | None = None) -> Path:
    """A PNG of class-major ``samples`` ``(K·n, *image)``: one row per class, ``n`` columns."""
    per_class = samples.shape[0] // int(num_classes)
    if per_class < 1 or per_class * int(num_classes) != samples.shape[0]:
        raise ValueError(f"save_class_samples: {samples.shape[0]} samples are not n per class for {num_classes} classes")
    return save_image_grid(samples.detach().cpu(), path, nrow=per_class, title=title,
                           row_labels=[str(c) for c in range(int(num_classes))],
                           col_labels=[str(i + 1) for i in range(per_class)], xlabel="sample", ylabel="class",
                           value_range=value_range)


def jem_report(classifier, x_test: torch.Tensor, y_test: torch.Tensor, out_dir: str | os.PathLike, kernel: Kernel,
               num_steps: int = 100, per_class: int = 8, generator: torch.Generator | None = None,
               samples: bool = True) -> dict[str, Any]:
    """Accuracy, ECE (15 bins) and NLL on the test rows, and with ``samples`` ``class_samples.png`` in
    ``out_dir`` (``per_class`` SGLD samples of ``E(x | y)`` per class from noise); returns the figures
    (and the path and the samples)."""
    was_training = getattr(classifier, "training", False)
    classifier.eval()
    try:
        report: dict[str, Any] = classification_metrics(classifier, x_test, y_test)
        if not samples:
            return report
        drawn, _ = class_conditional_samples(classifier, x_test, per_class, kernel, num_steps, generator)
    finally:
        classifier.train(was_training)
    lo, hi = float(x_test.min()), float(x_test.max())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report["class_samples"] = save_class_samples(drawn, classifier.num_classes, out / "class_samples.png",
                                                 value_range=(lo, hi), title="class-conditional samples, E(x | y)")
    report["samples"] = drawn
    return report


__all__ = ["ECE_BINS", "class_conditional_samples", "classification_metrics", "expected_calibration_error",
           "jem_report", "noise_samples", "save_class_samples"]
