"""Bernoulli RBM on binarised 8×8 digits: ebmlab (PCD + block Gibbs + SGD) against scikit-learn.

Both libraries train on the same split of ``sklearn.datasets.load_digits`` binarised at 8/16
(``v = [pixel ≥ 8]``, pixels range 0..16) with the same hidden units, learning rate, batch
size and epochs, for every combination of ``--hidden`` (16, 64, 256) and ``--batch-sizes``
(10, 100). scikit-learn's ``BernoulliRBM`` runs PCD-1 with plain SGD; ebmlab runs the same
algorithm through its trainer (:func:`ebmlab.training.run.train`: model ``rbm``, objective
``pcd``, sampler ``block_gibbs``, optimiser ``sgd``, constant learning rate), which takes the
lean closed-form path (:mod:`ebmlab.training.rbm_lean`), without and with momentum and weight
decay; ``--general-path`` adds the general autograd objective (``objective_kwargs.lean =
false``) as the reference. ebmlab's seconds per epoch are the wall time from the start of the
first update to the end of the run (a callback's clock: the updates with all their bookkeeping,
a ``metrics.jsonl`` record every ``--log-every`` updates (default 10, each record the means of
its window; ``1`` every update, ``0`` once per epoch), and the final checkpoint), over the epochs; it leaves
out reading the data and building the run. scikit-learn's are the wall time of ``fit`` over
the epochs. Both
libraries run on ``--threads`` threads (torch's and, through threadpoolctl, numpy's BLAS).

Both trained models are evaluated by ebmlab in the same way: scikit-learn's weights are loaded
with ``BernoulliRBM.from_sklearn`` and the average log-likelihood per image is
``mean_n [-F(v_n)] - log Z`` with ``log Z`` exact (enumerating the hidden layer) for small
hidden layers and by AIS (Salakhutdinov & Murray 2008: base rates from the training data,
14,500 temperatures, 100 runs) for large ones; small models get both, as a check of AIS.

Run: ``python benchmarks/rbm.py`` (about ten minutes on one CPU thread, most of it AIS); prints a
markdown table with the median seconds per epoch (over the ``--seeds`` training runs and
``--timing-rounds`` more runs, every trainer once per round, interleaved) and the mean ± sd of the
log-likelihoods over the ``--seeds`` training seeds; ``ratio`` is ebmlab's median time over
scikit-learn's, same run, and "per run" the range of the ratios of runs in the same round.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_description, set_threads

from ebmlab.energy.rbm import MAX_ENUMERATED_UNITS, BernoulliRBM
from ebmlab.partition.rbm_ais import base_rate_visible_bias, rbm_ais
from ebmlab.training.callbacks import Callback
from ebmlab.training.run import train


def load_binary_digits(seed: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test sets (80/20, shuffled by ``seed``) of binarised digits, shape ``(N, 64)``.

    The training set is cut to a multiple of ``batch_size`` (dropping fewer than a batch):
    scikit-learn's last, smaller minibatch weighs its ``batch_size`` persistent negatives
    against fewer positives (it divides both sums by the number of positives), an extra
    negative-phase push once per epoch that the comparison should not depend on.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x = (load_digits().data >= 8).astype(np.float32)
    train_x, test_x = train_test_split(x, test_size=0.2, random_state=seed)
    train_x = train_x[: len(train_x) - len(train_x) % batch_size]
    return torch.from_numpy(train_x), torch.from_numpy(test_x)


def evaluate(rbm: BernoulliRBM, train_x: torch.Tensor, test_x: torch.Tensor, args, seed: int) -> dict:
    """Mean log-likelihood per image (nats) on train and test, with exact and/or AIS ``log Z``."""
    out = {}
    if min(rbm.num_hidden, rbm.num_visible) <= MAX_ENUMERATED_UNITS:
        out["log_z_exact"] = rbm.exact_log_z()
    ais = rbm_ais(rbm, base_rate_visible_bias(train_x), betas=args.ais_temperatures, num_runs=args.ais_runs,
                  generator=torch.Generator().manual_seed(seed))
    out["log_z_ais"], out["log_z_ais_se"] = ais.log_z, ais.log_z_stderr
    log_z = out.get("log_z_exact", ais.log_z)
    out["log_z_method"] = "exact" if "log_z_exact" in out else "AIS"
    with torch.no_grad():
        out["train_ll"] = float(-rbm(train_x).double().mean()) - log_z
        out["test_ll"] = float(-rbm(test_x).double().mean()) - log_z
    return out


def train_sklearn(train_x: torch.Tensor, num_hidden: int, args) -> tuple[BernoulliRBM, float]:
    from sklearn.neural_network import BernoulliRBM as SkRBM
    from threadpoolctl import threadpool_limits

    model = SkRBM(n_components=num_hidden, learning_rate=args.lr, batch_size=args.batch_size,
                  n_iter=args.epochs, random_state=args.seed)
    x = train_x.numpy().astype(np.float64)
    with threadpool_limits(args.threads):
        start = time.perf_counter()
        model.fit(x)
        per_epoch = (time.perf_counter() - start) / args.epochs
    return BernoulliRBM.from_sklearn(model), per_epoch


class Clock(Callback):
    """Seconds from the start of the first update to the end of the run (last checkpoint included);
    it needs no per-update record (``record_every = 0``), so the run goes as it would without it."""

    record_every = 0

    def on_fit_start(self, loop) -> None:
        self.start = time.perf_counter()

    def on_fit_end(self, loop) -> None:
        self.seconds = time.perf_counter() - self.start


def train_ebmlab(train_x: torch.Tensor, num_hidden: int, args, momentum: float, weight_decay: float,
                 lean: bool = True) -> tuple[BernoulliRBM, float]:
    """PCD-1 with block Gibbs through the trainer; returns the model and seconds per epoch."""
    updates_per_epoch = -(-train_x.shape[0] // args.batch_size)
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "train.npy"
        np.save(data_file, train_x.numpy())
        result = train({
            "data": str(data_file), "standardize": False, "heldout_fraction": 0.0,
            "model": "rbm", "model_kwargs": {"num_hidden": num_hidden, "weight_scale": 0.01},
            "objective": "pcd", "objective_kwargs": {"init": "noise", "lean": lean},
            "sampler": "block_gibbs", "sampler_steps": 1,
            "optimizer": "sgd", "lr": args.lr, "momentum": momentum, "weight_decay": weight_decay,
            "lr_schedule": "constant", "batch_size": args.batch_size, "steps": args.epochs * updates_per_epoch,
            "seed": args.seed,
            "checkpoint_every": args.epochs * updates_per_epoch,
        }, out=str(Path(tmp) / "run"), callbacks=[clock], log_every=args.log_every or updates_per_epoch)
    return result.model, clock.seconds / args.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.5)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--log-every", type=int, default=10,
                        help="ebmlab's metrics.jsonl record every this many updates, each the window's means "
                             "(0: once per epoch; default 10)")
    parser.add_argument("--timing-rounds", type=int, default=5,
                        help="extra interleaved timing runs of every trainer (seed --seed) after the seeds' runs; "
                             "the times of all runs give the median (default 5)")
    parser.add_argument("--general-path", action="store_true", help="add the general autograd objective's rows")
    parser.add_argument("--ais-temperatures", type=int, default=14500)
    parser.add_argument("--ais-runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="first training seed (also fixes the split)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per configuration")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)

    train_x, test_x = load_binary_digits(args.seed, 1)
    print(f"# Bernoulli RBM on binarised digits (about {train_x.shape[0]} train / {test_x.shape[0]} test images, "
          f"64 pixels)")
    print(f"{machine_description(torch.device('cpu'))}")
    logging = "every update" if args.log_every == 1 else (
        "once per epoch" if args.log_every == 0 else f"every {args.log_every} updates")
    print(f"PCD-1, lr {args.lr}, {args.epochs} epochs; ebmlab logs {logging}; AIS: {args.ais_temperatures} temperatures × {args.ais_runs} "
          f"runs; median s / epoch over {args.seeds} seed(s) + {args.timing_rounds} timing round(s), mean ± sd of the "
          f"log-likelihoods over the {args.seeds} seed(s)\n")
    print("| batch | hidden | trainer | s / epoch | ratio to scikit-learn | ratio per run (min–max) | log Z (method) "
          "| AIS log Z − log Z | train LL / image | test LL / image |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for batch_size in args.batch_sizes:
        train_x, test_x = load_binary_digits(args.seed, batch_size)
        for num_hidden in args.hidden:
            trainers = [
                ("scikit-learn (SGD)", lambda a: train_sklearn(train_x, num_hidden, a)),
                ("ebmlab (SGD)", lambda a: train_ebmlab(train_x, num_hidden, a, 0.0, 0.0)),
                (f"ebmlab (momentum {args.momentum}, wd {args.weight_decay:g})",
                 lambda a: train_ebmlab(train_x, num_hidden, a, args.momentum, args.weight_decay)),
            ]
            if args.general_path:
                trainers.append(("ebmlab general path (SGD)",
                                 lambda a: train_ebmlab(train_x, num_hidden, a, 0.0, 0.0, lean=False)))
            rows = {name: [] for name, _ in trainers}
            for seed in range(args.seed, args.seed + args.seeds):  # trainers interleaved within each seed
                for name, fit in trainers:
                    a = argparse.Namespace(**{**vars(args), "seed": seed, "batch_size": batch_size})
                    rbm, per_epoch = fit(a)
                    rows[name].append((per_epoch, rbm))
            times = {name: [t for t, _ in runs] for name, runs in rows.items()}
            for _ in range(args.timing_rounds):  # rounds: every trainer once, so load drifts hit all alike
                for name, fit in trainers:
                    times[name].append(fit(argparse.Namespace(**{**vars(args), "batch_size": batch_size}))[1])
            base_times = times[trainers[0][0]]
            baseline = None
            for name, runs in rows.items():
                results = [(t, evaluate(rbm.double(), train_x.double(), test_x.double(), args, seed + 1000))
                           for seed, (t, rbm) in zip(range(args.seed, args.seed + args.seeds), runs)]
                median = float(np.median(times[name]))
                per_round = [t / b for t, b in zip(times[name], base_times)]
                baseline = median if baseline is None else baseline
                method = results[0][1]["log_z_method"]
                log_z = [r.get("log_z_exact", r["log_z_ais"]) for _, r in results]
                se = np.mean([r["log_z_ais_se"] for _, r in results])
                gap = (f"{np.mean([r['log_z_ais'] - r['log_z_exact'] for _, r in results]):+.3f} (SE {se:.3f})"
                       if method == "exact" else f"— (SE {se:.3f})")
                print(f"| {batch_size} | {num_hidden} | {name} | {median:.4f} | {median / baseline:.2f} | "
                      f"{min(per_round):.2f}–{max(per_round):.2f} | "
                      f"{fmt(log_z)} ({method}) | {gap} | {fmt([r['train_ll'] for _, r in results])} | "
                      f"{fmt([r['test_ll'] for _, r in results])} |", flush=True)


def fmt(values: list[float]) -> str:
    """``mean ± sd`` (just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"

if __name__ == "__main__":
    main()
