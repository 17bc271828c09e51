"""``ebmlab train``'s job: a config-driven run with a progress bar and pictures.

The library's :func:`ebmlab.training.run.train` prints and draws nothing; this job passes it two
callbacks — :class:`ProgressBar` (a tqdm bar with the key figures) and
:class:`~ebmlab.jobs.pictures.RunPictures` — and, with ``log``, a logger of
:mod:`ebmlab.jobs.logging` (CSV or TensorBoard), and returns the run's result.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from ebmlab.jobs.logging import make_logger
from ebmlab.jobs.pictures import RunPictures
from ebmlab import distributed as D
from ebmlab.jobs.guards import OS_REASONS
from ebmlab.jobs.sampling import check_path_names, format_bytes, output_errors
from ebmlab.training.config import TrainConfig
from ebmlab.training.loop import Callback, TrainLoop
from ebmlab.training.presets import recommended_picture_steps
from ebmlab.training.run import RunResult, train

#: A classifier EBM's held-out figures in its run directory (shown by ebmlab report).
CLASSIFICATION_NAME = "classification.json"

#: Metrics shown on the progress bar, when the objective reports them.
KEY_FIGURES = ("loss", "cd_gap", "accept", "log_z", "accuracy")
PROGRESS = ("auto", "on", "off")


class ProgressBar(Callback):
    """A tqdm bar over the run's updates, moved and its postfix set every 10 updates (the loop
    runs the updates in between without stopping)."""

    record_every = 10

    def __init__(self, desc: str = "train"):
        self.desc, self.bar = desc, None

    def on_fit_start(self, loop: TrainLoop) -> None:
        if loop.step >= loop.settings.steps or not loop.sharding.is_main:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=loop.settings.steps, initial=loop.step, desc=self.desc, unit="step", dynamic_ncols=True)

    def on_step(self, loop: TrainLoop, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix({k: f"{record[k]:.4g}" for k in KEY_FIGURES if k in record}, refresh=False)
        self.bar.update(loop.step - self.bar.n)

    def on_fit_end(self, loop: TrainLoop) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Notices(Callback):
    """Writes each note on how the run is trained (``TrainLoop``'s ``on_notice``, e.g. why an RBM
    takes the general autograd path) as one ``ebmlab: note:`` line on standard error, once."""

    record_every = 0

    def on_notice(self, loop: TrainLoop, message: str) -> None:
        if loop.sharding.is_main:
            print(f"ebmlab: note: {message}", file=sys.stderr, flush=True)


class LeanThreads(Callback):
    """At the start of the run, torch's thread count from the batch size and the model
    (:func:`ebmlab.jobs.threads.lean_threads`: one thread for small problems)."""

    def on_fit_start(self, loop: TrainLoop) -> None:
        from ebmlab.jobs.threads import lean_threads

        lean_threads(loop.settings.batch_size, loop.model, tuple(loop.x_train.shape[1:]), loop.x_train.device)


def show_progress(progress: str) -> bool:
    """``on``, ``off``, or ``auto`` (when standard error is a terminal)."""
    if progress not in PROGRESS:
        raise ValueError(f"progress must be one of {', '.join(PROGRESS)}, got {progress!r}")
    return progress == "on" or (progress == "auto" and sys.stderr.isatty())


def run_train_job(config: TrainConfig, out: str | Path, resume: bool = False, progress: str = "auto",
                  plots: bool = True, plot_samples: int = 2000, plot_sampler_steps: int | None = None,
                  log: str = "none", log_every: int | None = None, lean_threads: bool = False) -> RunResult:
    """Train (or resume) ``config`` into ``out`` with a progress bar and the run's pictures;
    ``log`` is ``csv`` (``out/metrics.csv``), ``tensorboard`` (``out/tensorboard/``) or ``none``;
    the logger and ``metrics.jsonl`` record every ``log_every`` updates (default: the library's,
    ``max(1, steps // 2000)``); ``lean_threads``: :class:`LeanThreads`."""
    callbacks: list[Callback] = [Notices(), *([LeanThreads()] if lean_threads else [])]
    logger = make_logger(log, out, log_every)
    if logger is not None:
        callbacks.append(logger)
    if show_progress(progress):
        callbacks.append(ProgressBar(f"train {config.objective}"))
    if plots:
        steps = plot_sampler_steps
        if steps is None:
            steps = recommended_picture_steps(config.model, config.objective, config.data)
        callbacks.append(RunPictures(plot_samples, steps))
    check_run_directory(config, out, resume)
    with output_errors("run directory", out):
        result = train(config, resume=resume, out=out, callbacks=callbacks, log_every=log_every)
        classifier = getattr(result.objective, "uses_labels", False) and callable(getattr(result.model, "logits", None))
        if classifier and not result.already_complete and D.is_main_process():  # metrics, pictures or not
            result.classification = classifier_report(result.config, out, samples=plots)
            if "class_samples" in result.classification:
                result.pictures.append(Path(result.classification["class_samples"]))
    return result


def classifier_report(config: TrainConfig, out: str | Path, samples: bool = True) -> dict:
    """A classifier EBM's held-out accuracy, ECE (15 bins) and NLL, saved as ``RUN/classification.json``,
    and with ``samples`` ``class_samples.png`` (SGLD on E(x | y) from noise with the run's sampler)."""
    import json

    import torch

    from ebmlab.jobs.jem_report import jem_report
    from ebmlab.samplers import make_kernel
    from ebmlab.training.loading import load_run

    run = load_run(out)
    labels = run.dataset().labels
    if labels is None or run.heldout_index.numel() == 0:
        return {}
    x_test = run.heldout_data()
    if run.standardizer is not None:
        x_test = run.standardizer.transform(x_test)
    kernel = make_kernel("ula", step_size=config.step_size, noise_scale=config.noise_scale)
    generator = torch.Generator().manual_seed(int(config.seed))
    report = jem_report(run.model, x_test, labels[run.heldout_index].long(), out, kernel, generator=generator,
                        samples=samples)
    figures = {k: (str(v) if isinstance(v, Path) else v) for k, v in report.items() if k != "samples"}
    (Path(out) / CLASSIFICATION_NAME).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return figures


#: Bytes one step adds to ``metrics.jsonl`` at the least (a record is one JSON line of a few figures).
METRICS_BYTES_PER_STEP = 64


def check_run_directory(config: TrainConfig, out: str | Path, resume: bool = False) -> None:
    """Refuse a run directory with a name the file system cannot hold, one that cannot be created
    or written (a read-only or virtual file system such as /proc, no permission), and a run whose
    ``metrics.jsonl`` (one line per step) would not fit on its disk, saying how much it needs."""
    option = "--resume" if resume else "--out"
    path = check_path_names(out, option)
    probe = next((p for p in [path, *path.parents] if p.is_dir()), Path("."))
    check_writable(probe, out, option)
    need = int(config.steps) * METRICS_BYTES_PER_STEP
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ValueError(f"--steps {config.steps} would write at least {format_bytes(need)} of metrics "
                         f"(metrics.jsonl, one line per step) into {str(out)!r}, more than the {format_bytes(free)} "
                         f"free there; lower --steps")


def check_writable(directory: Path, out: str | Path, option: str) -> None:
    """Refuse ``out`` when ``directory`` (itself or its nearest existing parent) takes no new
    entries: a directory is made there and removed at once, as the run would make its files."""
    import errno
    import os
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ebmlab-probe-", dir=directory))
    except OSError as err:
        if shutil.disk_usage(directory).total == 0:
            reason = "a virtual file system, which holds no files"
        elif err.errno in (errno.EACCES, errno.EPERM):
            reason = "not writable (permission denied)"
        else:
            reason = f"not writable ({OS_REASONS.get(err.errno, err.strerror or type(err).__name__)})"
        where = "it" if directory == Path(out) else repr(str(directory))
        raise ValueError(f"{option} {str(out)!r}: the run directory cannot be written: {where} is {reason}; "
                         f"choose a directory you can write to") from None


__all__ = ["KEY_FIGURES", "LeanThreads", "Notices", "PROGRESS", "ProgressBar", "run_train_job", "show_progress"]
