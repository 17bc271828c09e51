"""Trainer overhead: updates per second of ``ebmlab.fit`` against a hand-written PyTorch loop.

The hand loop is the plainest one can write for the same objective on the same model::

    for batch in loader:                       # epoch permutations of the data, as fit draws them
        loss, _ = objective.loss(model, batch, generator)
        optimizer.zero_grad(); loss.backward(); optimizer.step()

:func:`ebmlab.fit` does the same updates and also draws its batches reproducibly, guards against
divergence (loss, metrics and the gradient norm checked every update), computes the gradient norm
it logs, keeps a record every ``log_every`` updates (the default: ``max(1, steps // 2000)``) and,
in the ``run_dir`` rows, writes ``metrics.jsonl`` and checkpoints (every 500 updates and at the
end). Its time per update is the wall time from its first update to the end of the run (a
callback's clock, which asks for no per-update record; the final checkpoint included), over
``N``: everything the updates cost, bookkeeping included, set-up excluded. The hand loop's is
the wall time of its loop over ``N``. The workloads:

* ``dsm-mlp128``: denoising score matching on ``MLPEnergy(2, (128, 128))``, batch 256, Adam;
* ``dsm-mlp16``: the same on ``MLPEnergy(2, (16,))``, batch 32 — a model so small that the
  per-update bookkeeping is what is measured;
* ``rbm-pcd``: PCD-1 with block Gibbs on a 64 × 16 Bernoulli RBM, batch 10, SGD. ``fit`` takes its
  lean closed-form path by default; ``fit (general)`` is the same run with ``lean=False`` (the
  autograd objective the hand loop also runs).

Each timing is the median of ``--repeats`` runs of ``--steps`` updates, the rows of one workload
interleaved; ``ratio`` is fit's time per update over the hand loop's (goal: ≤ 1.1).

Run: ``python benchmarks/train_overhead.py`` (about two minutes on one CPU thread).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_description, set_threads

import ebmlab
from ebmlab.energy.neural import MLPEnergy
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.objectives import make_objective
from ebmlab.samplers.block_gibbs import BlockGibbs


def two_moons(n: int = 4096) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g) * 0.5 + torch.randint(0, 2, (n, 1), generator=g) * 2.0


def binary_digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.from_numpy((load_digits().data >= 8).astype(np.float32))


WORKLOADS = {
    "dsm-mlp128": dict(model=lambda: MLPEnergy(2, (128, 128)), objective=("dsm", {}), data=two_moons,
                       batch_size=256, optimizer="adam", lr=1e-3),
    "dsm-mlp16": dict(model=lambda: MLPEnergy(2, (16,)), objective=("dsm", {}), data=two_moons,
                      batch_size=32, optimizer="adam", lr=1e-3),
    "rbm-pcd": dict(model=lambda: BernoulliRBM(64, 16, generator=torch.Generator().manual_seed(0)),
                    objective=("pcd", {"kernel": BlockGibbs(), "num_steps": 1}), data=binary_digits,
                    batch_size=10, optimizer="sgd", lr=0.05),
}


def hand_loop(spec: dict, x: torch.Tensor, steps: int) -> float:
    """Seconds per update of the plain loop (same model, objective, optimiser, batch size)."""
    torch.manual_seed(0)
    model = spec["model"]()
    name, options = spec["objective"]
    objective = make_objective(name, **options)
    generator = torch.Generator().manual_seed(1)
    objective.setup(model, x, generator, support=getattr(model, "support", "real"))
    params = list(model.parameters())
    optimizer = (torch.optim.Adam(params, lr=spec["lr"]) if spec["optimizer"] == "adam"
                 else torch.optim.SGD(params, lr=spec["lr"]))
    B, order = spec["batch_size"], torch.Generator().manual_seed(2)

    def loader():
        while True:
            perm = torch.randperm(x.shape[0], generator=order)
            for i in range(0, x.shape[0] - B + 1, B):
                yield x[perm[i:i + B]]

    model.train()
    start = time.perf_counter()
    for _, batch in zip(range(steps), loader()):
        loss, _ = objective.loss(model, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


class Clock(ebmlab.Callback):
    """Seconds from the start of the first update to the end of the run; no per-update record."""

    record_every = 0

    def on_fit_start(self, loop) -> None:
        self.start = time.perf_counter()

    def on_fit_end(self, loop) -> None:
        self.seconds = time.perf_counter() - self.start


def fit_loop(spec: dict, x: torch.Tensor, steps: int, run_dir: bool = False, lean: bool = True) -> float:
    """Seconds per update of ``ebmlab.fit``, from its first update to the end of the run."""
    torch.manual_seed(0)
    model = spec["model"]()
    name, options = spec["objective"]
    if name in ("cd", "pcd"):
        options = {**options, "lean": lean}
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        ebmlab.fit(model, name, x, steps=steps, batch_size=spec["batch_size"], optimizer=spec["optimizer"],
                   lr=spec["lr"], momentum=0.0, objective_options=options, seed=1, callbacks=[clock],
                   run_dir=Path(tmp) / "run" if run_dir else None)
    return clock.seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    print("# Trainer overhead: ebmlab.fit against a hand-written PyTorch loop")
    print(machine_description(torch.device("cpu")))
    print(f"{args.steps} updates per run, median of {args.repeats} interleaved runs\n")
    print("| workload | loop | ms / update | updates / s | ratio to the hand loop |")
    print("|---|---|---:|---:|---:|")
    for name in args.workloads:
        spec, x = WORKLOADS[name], WORKLOADS[name]["data"]()
        loops = {"hand loop": lambda: hand_loop(spec, x, args.steps),
                 "fit": lambda: fit_loop(spec, x, args.steps),
                 "fit (run_dir: metrics.jsonl, checkpoints)": lambda: fit_loop(spec, x, args.steps, run_dir=True)}
        if name.startswith("rbm"):
            loops["fit (general, lean=False)"] = lambda: fit_loop(spec, x, args.steps, lean=False)
        for run in loops.values():  # warm-up: imports, allocator, first-call costs
            run()
        times = {label: [] for label in loops}
        for _ in range(args.repeats):
            for label, run in loops.items():
                times[label].append(run())
        base = statistics.median(times["hand loop"])
        for label, values in times.items():
            t = statistics.median(values)
            print(f"| {name} | {label} | {1e3 * t:.3f} | {1 / t:,.0f} | {t / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
