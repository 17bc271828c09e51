"""Benchmark: annealed against plain Langevin on an unbalanced two-mode mixture.

Target ``p = 0.8 N((-5, 0), I) + 0.2 N((5, 0), I)`` in 2-D. Its σ-noised law is the same
mixture with component variance ``1 + σ²``, so the exact noised score is known at every σ.
Every sampler starts from the same draws, uniform on [-10, 10]², and takes the same number of
score evaluations (``--steps``, 2000 by default):

* ``exact draws`` — an independent exact sample: the MMD noise floor;
* ``plain ULA`` — unadjusted Langevin with the σ_min score at step ε (the annealed runs' last
  step): ``annealed_langevin`` with the single level σ_min and no denoising, so the same code
  and the same closed-form score as the annealed rows, and the time ratios compare like with like;
* ``annealed L×T`` — :func:`ebmlab.samplers.annealed.annealed_langevin` with the exact score,
  L geometric levels from σ = 10 to σ_min = 0.5, T steps per level, ε = 0.0125 (α_i/σ_i² = 0.05);
* ``annealed, trained ncsn_mlp`` — the same sampler driven by a noise-conditional energy MLP
  trained with the ``ncsn`` objective on draws of p (``--train-steps``; 0 skips the row).

Columns: the heavy-mode fraction (x₁ < 0; truth 0.8) with its z-score against 0.8 (binomial
SE of independent chains), the unbiased Gaussian-kernel MMD² to an exact sample of the same
size (:func:`ebmlab.metrics.mmd2`, median-heuristic bandwidth), and the wall time as a ratio
to plain ULA measured in the same run.

Usage::

    python benchmarks/annealed.py                 # 2000 chains, 2000 steps, trained row included
    python benchmarks/annealed.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import math
import time

import torch

try:  # run as ``python -m benchmarks.annealed`` or imported as part of the package
    from .common import machine_description, set_threads
except ImportError:  # run as ``python benchmarks/annealed.py``
    from common import machine_description, set_threads

from ebmlab.energy import GaussianMixture
from ebmlab.metrics import mmd2
from ebmlab.objectives.ncsn import NCSNObjective
from ebmlab.samplers.annealed import annealed_langevin, sample_noise_conditional
from ebmlab.energy.noise_conditional import NCSNMLP, geometric_sigmas

MEANS = torch.tensor([[-5.0, 0.0], [5.0, 0.0]])
WEIGHTS = torch.tensor([0.8, 0.2])
SIGMA_MAX, SIGMA_MIN, STEP_SIZE = 10.0, 0.5, 0.0125


def mixture_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact ``∇ log q_σ(x)``: ``Σ_k r_k (m_k - x)/(1 + σ²)``; x ``(C, 2)``, sigma ``(C,)``."""
    var = (1.0 + sigma.square())[:, None]
    diff = MEANS[None] - x[:, None, :]
    resp = torch.softmax(torch.log(WEIGHTS) - 0.5 * diff.square().sum(-1) / var, dim=-1)
    return (resp[..., None] * diff).sum(1) / var


def summarise(name: str, x: torch.Tensor, reference: torch.Tensor, seconds: float | None) -> dict:
    frac = float((x[:, 0] < 0).double().mean())
    se = math.sqrt(0.8 * 0.2 / x.shape[0])
    return {"sampler": name, "heavy": frac, "z": (frac - 0.8) / se, "mmd2": mmd2(x, reference), "seconds": seconds}


def train_model(num_steps: int, generator: torch.Generator) -> NCSNMLP:
    """An energy-parametrised ``ncsn_mlp`` trained on draws of p with the ``ncsn`` objective."""
    target = GaussianMixture(MEANS, stds=1.0, weights=WEIGHTS)
    model = NCSNMLP(2, data_scale=4.0)
    objective = NCSNObjective(sigma_max=SIGMA_MAX, sigma_min=SIGMA_MIN, num_levels=10)
    objective.setup(model, target.sample(2000, generator))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_steps)
    for _ in range(num_steps):
        loss, _ = objective.loss(model, target.sample(256, generator), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=2000, help="score evaluations per chain")
    parser.add_argument("--train-steps", type=int, default=3000, help="0 skips the trained-model row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="500 chains, 400 steps, 300 training steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.chains, args.steps, args.train_steps = 500, 400, 300
    set_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    target = GaussianMixture(MEANS, stds=1.0, weights=WEIGHTS)
    reference = target.sample(args.chains, generator)
    x0 = 20 * torch.rand(args.chains, 2, generator=generator) - 10
    rows = [summarise("exact draws", target.sample(args.chains, generator), reference, None)]

    start = time.perf_counter()
    plain = annealed_langevin(mixture_score, x0, [SIGMA_MIN], args.steps, STEP_SIZE, generator, final_denoise=False)
    baseline = time.perf_counter() - start
    rows.append(summarise(f"plain ULA, σ_min score, {args.steps} steps", plain, reference, baseline))

    for num_levels in (5, 10, 20):
        steps_per_level = args.steps // num_levels
        sigmas = geometric_sigmas(SIGMA_MAX, SIGMA_MIN, num_levels)
        start = time.perf_counter()
        x = annealed_langevin(mixture_score, x0, sigmas, steps_per_level, STEP_SIZE, generator)
        rows.append(summarise(f"annealed {num_levels}×{steps_per_level}, exact score", x, reference,
                              time.perf_counter() - start))

    if args.train_steps > 0:
        start = time.perf_counter()
        model = train_model(args.train_steps, generator)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            x = sample_noise_conditional(model, args.chains, generator, steps_per_level=args.steps // 10,
                                         step_size=STEP_SIZE)
        rows.append(summarise(f"annealed 10×{args.steps // 10}, trained ncsn_mlp ({args.train_steps} steps, "
                              f"{train_seconds:.0f} s)", x, reference, time.perf_counter() - start))

    print(f"machine: {machine_description(torch.device('cpu'))}")
    print(f"{args.chains} chains from U([-10, 10]²); target 0.8·N((-5,0), I) + 0.2·N((5,0), I); "
          f"σ {SIGMA_MAX} → {SIGMA_MIN}, ε = {STEP_SIZE}; MMD² noise floor ≈ the exact-draws row\n")
    print("| sampler | heavy-mode fraction (0.8) | z | MMD² to exact sample | time / plain ULA |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = "—" if r["seconds"] is None else f"{r['seconds'] / baseline:.2f}×"
        print(f"| {r['sampler']} | {r['heavy']:.4f} | {r['z']:+.1f} | {r['mmd2']:.2e} | {ratio} |")


if __name__ == "__main__":
    main()
