"""What a report shows of a run directory, and how runs compare (:mod:`ebmlab.jobs.report`).

:func:`load_run_summary` reads ``config.toml`` (by section), ``metrics.jsonl``, the pictures
(every ``*.png``) and ``evaluation.json`` when present; :func:`comparison_table` and
:func:`differing_keys` compare runs; :func:`metric_curves_png` and :func:`comparison_curves_png`
draw the curves the report shows (PNG bytes).
"""

from __future__ import annotations

import io
import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ebmlab.jobs.evaluation_job import EVALUATION_NAME  # the JSON of evaluate --energy RUN --json, saved in RUN
from ebmlab.jobs.training import CLASSIFICATION_NAME  # a classifier EBM's held-out accuracy and ECE
from ebmlab.training.history import METRICS_NAME, read_metrics

#: The first line of every report: an existing --out file without it is not overwritten.
MARKER = "<!-- ebmlab-report -->"
#: Evaluation figures shown in the comparison table, when a run has them.
EVALUATION_FIGURES = ("log_z", "log_z_stderr", "nll", "nll_stderr", "bits_per_dim", "excess_nll", "mmd2",
                      "energy_distance", "kl_true_model", "ksd", "ksd_p_value", "fisher_divergence")
#: Classifier figures (``classification.json``) shown in the comparison table, when a run has them.
CLASSIFICATION_FIGURES = ("accuracy", "ece")
#: Metrics drawn for all runs on one plot, when at least two runs have them.
COMPARED_CURVES = ("loss", "heldout_loss", "heldout_nll", "cd_gap", "log_z")
#: Record fields that are not metrics to plot.
NOT_CURVES = ("step", "time")


@dataclass(frozen=True)
class RunSummary:
    """What a report shows of one run directory: ``config`` is ``{section: {key: value}}`` (nested
    tables flattened as ``options.hidden``), ``metrics`` the records of ``metrics.jsonl``,
    ``pictures`` its PNG files (sorted), ``evaluation`` the saved ``evaluation.json`` or ``None``,
    ``classification`` a classifier EBM's ``classification.json`` (held-out accuracy, ECE, NLL) or ``None``."""

    path: Path
    name: str
    config: dict[str, dict[str, Any]]
    metrics: list[dict[str, Any]]
    pictures: list[Path]
    evaluation: dict[str, Any] | None
    classification: dict[str, Any] | None = None

    @property
    def flat_config(self) -> dict[str, Any]:
        """``{"section.key": value}``."""
        return {f"{section}.{key}": value for section, table in self.config.items() for key, value in table.items()}

    @property
    def steps(self) -> int | None:
        if self.metrics and "step" in self.metrics[-1]:
            return int(self.metrics[-1]["step"])
        steps = self.config.get("optim", {}).get("steps")
        return int(steps) if isinstance(steps, int) else None

    @property
    def wall_time(self) -> float | None:
        """Seconds of training (the last record's ``time``)."""
        times = [r["time"] for r in self.metrics if isinstance(r.get("time"), (int, float))]
        return float(times[-1]) if times else None

    @property
    def final_loss(self) -> float | None:
        """The mean loss over the last tenth of the records (at least one): less noisy than the last."""
        losses = [float(r["loss"]) for r in self.metrics if isinstance(r.get("loss"), (int, float))]
        if not losses:
            return None
        tail = losses[-max(1, len(losses) // 10):]
        return sum(tail) / len(tail)


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_run_summary(run_dir: str | os.PathLike, name: str | None = None) -> RunSummary:
    """Read a run directory (one with ``config.toml`` or ``metrics.jsonl``); ``ValueError`` otherwise."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"report: {str(run_dir)!r} is not a directory; give run directories written by ebmlab train")
    config_path = path / "config.toml"
    if not config_path.is_file() and not (path / METRICS_NAME).is_file():
        raise ValueError(f"report: {str(run_dir)!r} is not a run directory (no config.toml or {METRICS_NAME})")
    config: dict[str, dict[str, Any]] = {}
    if config_path.is_file():
        try:
            raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"report: {config_path} is not valid TOML: {err}") from None
        top = {k: v for k, v in raw.items() if not isinstance(v, dict)}
        config = ({"settings": top} if top else {}) | {k: _flatten(v) for k, v in raw.items() if isinstance(v, dict)}
    pictures = sorted(p for p in path.glob("*.png") if p.is_file() and not p.name.startswith("."))
    return RunSummary(path=path, name=name or path.resolve().name, config=config, metrics=read_metrics(path),
                      pictures=pictures, evaluation=_json_object(path / EVALUATION_NAME),
                      classification=_json_object(path / CLASSIFICATION_NAME))


def _json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, ``None`` when there is no such file; ``ValueError`` when it is not one."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"report: {path} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"report: {path} must hold one JSON object")
    return value


def load_runs(run_dirs: Sequence[str | os.PathLike]) -> list[RunSummary]:
    """Summaries of ``run_dirs``, each named by its directory (by its path when names repeat)."""
    if not run_dirs:
        raise ValueError("report: give at least one run directory")
    names = [Path(d).resolve().name for d in run_dirs]
    return [load_run_summary(d, name if names.count(name) == 1 else str(d)) for d, name in zip(run_dirs, names)]


def differing_keys(runs: Sequence[RunSummary]) -> list[str]:
    """The ``section.key`` settings whose values are not the same in every run (in order of first appearance)."""
    if len(runs) < 2:
        return []
    flats = [r.flat_config for r in runs]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    missing = object()
    return [k for k in keys if len({json.dumps(f.get(k, missing), default=str, sort_keys=True) for f in flats}) > 1]


def comparison_table(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[Any]]]:
    """``(columns, rows)``: one row per run — name, steps, final loss, wall time, the
    evaluation method and figures any run has, and a classifier's held-out accuracy and ECE."""
    figures = [k for k in EVALUATION_FIGURES if any(r.evaluation and k in r.evaluation for r in runs)]
    if any(r.evaluation for r in runs):
        figures = ["method", *figures]
    classified = [k for k in CLASSIFICATION_FIGURES if any(r.classification and k in r.classification for r in runs)]
    columns = ["run", "steps", "final loss", "wall time (s)", *figures, *[f"held-out {k}" for k in classified]]
    rows = [[run.name, run.steps, run.final_loss, run.wall_time, *[(run.evaluation or {}).get(k) for k in figures],
             *[(run.classification or {}).get(k) for k in classified]] for run in runs]
    return columns, rows


def settings_table(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[Any]]]:
    """``(columns, rows)`` of the settings that differ (:func:`differing_keys`): one row per
    setting ``section.key``, one column per run (``None`` where a run lacks it)."""
    flats = [r.flat_config for r in runs]
    return ["setting", *[r.name for r in runs]], [[key, *[f.get(key) for f in flats]] for key in differing_keys(runs)]


def format_value(value: Any) -> str:
    """A setting or figure as text: floats to 4 significant digits, lists as JSON, ``None`` as ``—``."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) if not isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                               for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def metric_curves_png(run: RunSummary) -> bytes | None:
    """PNG of the run's metric curves (every numeric metric but ``time``), or ``None`` without metrics."""
    from ebmlab.jobs.plots import loss_curve_figure

    records = [{k: v for k, v in r.items() if k not in NOT_CURVES[1:]} for r in run.metrics]
    if not any(len(r) > 1 for r in records):
        return None
    return _png(loss_curve_figure(records, title=f"{run.name}: metrics (faint: raw; bold: smoothed)"))


def comparison_curves_png(runs: Sequence[RunSummary]) -> bytes | None:
    """PNG with the runs' :data:`COMPARED_CURVES` on shared panels (``None`` when fewer than two runs have one)."""
    from matplotlib.figure import Figure

    from ebmlab.jobs.plots import plot_smoothed

    def series(run: RunSummary, key: str):
        points = [(r["step"], r[key]) for r in run.metrics if isinstance(r.get(key), (int, float)) and "step" in r]
        return list(zip(*points)) if points else None

    keys = [k for k in COMPARED_CURVES if sum(series(r, k) is not None for r in runs) >= 2]
    if len(runs) < 2 or not keys:
        return None
    fig = Figure(figsize=(9, 0.8 + 2.8 * len(keys)), layout="constrained")
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        for run in runs:
            points = series(run, key)
            if points is not None:
                plot_smoothed(ax, points[0], points[1], label=run.name)
        ax.set_ylabel(key)
        ax.set_xlabel("update step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle("the runs compared (faint: raw; bold: smoothed)", fontsize=11)
    return _png(fig)


__all__ = ["CLASSIFICATION_FIGURES", "COMPARED_CURVES", "EVALUATION_FIGURES", "EVALUATION_NAME", "MARKER", "RunSummary", "comparison_curves_png",
           "comparison_table", "differing_keys", "format_value", "load_run_summary", "load_runs", "metric_curves_png",
           "settings_table"]
