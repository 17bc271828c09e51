"""Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) driven by exact noised scores.

The target is an unbalanced two-mode mixture ``p = 0.8 N(m₁, I) + 0.2 N(m₂, I)`` in 2-D with
``m₁ = (-5, 0)``, ``m₂ = (5, 0)``. Its σ-noised law ``q_σ = p * N(0, σ²I)`` is the same mixture
with component variance ``1 + σ²`` — same weights at every level — so the exact score
``∇ log q_σ`` is available in closed form for every σ.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import GaussianMixture
from ebmlab.samplers import ULA, ChainDivergedError, sample
from ebmlab.samplers.annealed import DEFAULT_STEP_RATIO, annealed_langevin, annealed_snapshots, annealed_step_sizes
from ebmlab.energy.noise_conditional import NCSNMLP, geometric_sigmas

MEANS = torch.tensor([[-5.0, 0.0], [5.0, 0.0]])
WEIGHTS = torch.tensor([0.8, 0.2])
Z = 4.5


def mixture_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``∇ log q_σ(x)`` of the noised mixture, per chain: ``x (C, 2)``, ``sigma (C,)``.

    ``q_σ = Σ_k w_k N(m_k, (1 + σ²) I)``; score ``= Σ_k r_k(x) (m_k - x) / (1 + σ²)`` with
    responsibilities ``r_k ∝ w_k exp(-‖x - m_k‖² / 2(1 + σ²))``.
    """
    var = (1.0 + sigma.square())[:, None]                       # (C, 1)
    diff = MEANS.to(x)[None] - x[:, None, :]                    # (C, K, 2)
    logits = torch.log(WEIGHTS.to(x)) - 0.5 * diff.square().sum(-1) / var
    resp = torch.softmax(logits, dim=-1)                        # (C, K)
    return (resp[..., None] * diff).sum(1) / var


def heavy_mode_z(x: torch.Tensor) -> tuple[float, float]:
    """Fraction of chains in the heavy mode (x₁ < 0) and its z-score against 0.8.

    z uses the binomial standard error ``√(0.8 · 0.2 / C)`` of C independent chains.
    """
    frac = float((x[:, 0] < 0).double().mean())
    se = math.sqrt(0.8 * 0.2 / x.shape[0])
    return frac, (frac - 0.8) / se


def test_annealed_recovers_mode_weights_where_plain_langevin_does_not(generator):
    """Annealing puts 80 % of the chains in the heavy mode; plain Langevin keeps the start's 50 %.

    Both start from the same 4000 draws, uniform on [-10, 10]² (symmetric about the barrier),
    and make the same 2000 gradient steps. Check: the heavy-mode fraction is within z = 4.5
    binomial standard errors of 0.8 (4.5 · √(0.16/4000) = 0.028: the smallest weight error
    detected). The annealed schedule is σ from 10 (≈ the mode distance) to 0.5 over 20 levels,
    T = 100, ε = 0.0125 (α_i / σ_i² = 0.05); its own bias at this schedule, measured with
    20,000 chains, is about -0.006 (0.7 SE). The negative control is plain Langevin — ULA with
    the σ_min score at the same step ε — which cannot cross the barrier (exp(-10) density
    ratio) and so keeps the start's split (≈ 0.51); it must fail the same check.
    """
    num_chains, sigmas = 4000, geometric_sigmas(10.0, 0.5, 20)
    steps_per_level, step_size = 100, 0.0125
    x0 = 20 * torch.rand(num_chains, 2, generator=generator) - 10

    annealed = annealed_langevin(mixture_score, x0, sigmas, steps_per_level, step_size, generator)
    frac, z = heavy_mode_z(annealed)
    assert abs(z) < Z, f"annealed Langevin: heavy-mode fraction {frac:.4f}, z = {z:.2f}"

    sigma_min = float(sigmas[-1])
    noised = GaussianMixture(MEANS, stds=math.sqrt(1 + sigma_min**2), weights=WEIGHTS)
    plain = sample(noised, ULA(step_size=step_size), x0, num_steps=sigmas.numel() * steps_per_level,
                   generator=generator, keep_samples=False).final_state.x
    frac_plain, z_plain = heavy_mode_z(plain)
    assert abs(z_plain) > Z, f"plain Langevin unexpectedly found the weights: {frac_plain:.4f}, z = {z_plain:.2f}"


def test_step_sizes_and_callback_schedule():
    """α_i = ε σ_i²/σ_L²; the callback sees every step (L·T) then the denoised x (step L·T + 1)."""
    sigmas = torch.tensor([4.0, 2.0, 1.0])
    assert torch.allclose(annealed_step_sizes(sigmas, 0.1), torch.tensor([1.6, 0.4, 0.1]))
    seen: list[tuple[int, torch.Tensor]] = []
    x0 = torch.zeros(3, 2)
    out = annealed_langevin(lambda x, s: -x / (1 + s[:, None] ** 2), x0, sigmas, 4, 0.01,
                            torch.Generator().manual_seed(0), callback=lambda t, x: seen.append((t, x)))
    assert [t for t, _ in seen] == list(range(1, 14))
    assert torch.equal(seen[-1][1], out)
    assert all(x.shape == (3, 2) for _, x in seen)


def test_default_step_size_is_relative_to_sigma_min():
    """``step_size=None`` is ε = 0.2 σ_L² (Song & Ermon's 2e-5 at σ_L = 0.01): same draws as explicit."""
    sigmas = geometric_sigmas(1.0, 0.05, 3)
    x0 = torch.zeros(5, 2)

    def run(step_size):
        return annealed_langevin(lambda x, s: -x, x0, sigmas, 3, step_size, torch.Generator().manual_seed(1))

    assert torch.equal(run(None), run(DEFAULT_STEP_RATIO * 0.05**2))
    assert not torch.equal(run(None), run(1e-3))


def test_final_denoising_step_is_tweedie():
    """For data at one point μ, ``q_σ = N(μ, σ²I)`` and ``x + σ_L² s(x, σ_L) = μ`` exactly."""
    mu = torch.tensor([1.5, -2.0])

    def point_score(x, sigma):
        return -(x - mu) / sigma.square()[:, None]

    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    out = annealed_langevin(point_score, x0, torch.tensor([1.0, 0.3]), 5, 1e-3, g)
    assert torch.allclose(out, mu.expand(50, 2), atol=1e-5)
    noisy = annealed_langevin(point_score, x0, torch.tensor([1.0, 0.3]), 5, 1e-3, g, final_denoise=False)
    assert not torch.allclose(noisy, mu.expand(50, 2), atol=1e-2)


def test_snapshots_of_a_model_run():
    """``annealed_snapshots``: the start, evenly spaced states and the denoised end, (S, C, *event)."""
    model = NCSNMLP((1, 2, 2), hidden=(8, 8), sigmas=[1.0, 0.5, 0.1], parametrization="score")
    x0 = torch.zeros(4, 1, 2, 2)
    frames = annealed_snapshots(model, x0, torch.Generator().manual_seed(0), num_snapshots=4, steps_per_level=3)
    assert frames.shape == (4, 4, 1, 2, 2) and torch.equal(frames[0], x0)
    final = annealed_langevin(model.score, x0, model.sigmas, 3, None, torch.Generator().manual_seed(0))
    assert torch.equal(frames[-1], final)


def test_images_and_reproducibility():
    """Any event shape; the same generator seed gives the same samples."""
    x0 = torch.zeros(4, 1, 3, 3)

    def run():
        return annealed_langevin(lambda x, s: -x, x0, [1.0, 0.1], 2, 1e-3, torch.Generator().manual_seed(5))

    a, b = run(), run()
    assert a.shape == x0.shape and torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sigmas": [0.1, 1.0]}, "strictly decreasing"),
        ({"sigmas": [1.0, 0.0]}, "> 0"),
        ({"steps_per_level": 0}, "steps_per_level"),
        ({"step_size": -1.0}, "step_size"),
        ({"x0": torch.zeros(2)}, "x0"),
        ({"x0": torch.full((2, 2), math.nan)}, "NaN"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    args = {"x0": torch.zeros(2, 2), "sigmas": [1.0, 0.1], "steps_per_level": 2, "step_size": 1e-3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        annealed_langevin(lambda x, s: -x, args.pop("x0"), **args)


def test_divergence_names_the_chains():
    """A score that explodes for one chain raises ChainDivergedError naming that chain."""

    def bad_score(x, sigma):
        s = -x.clone()
        s[1] = math.inf
        return s

    with pytest.raises(ChainDivergedError, match=r"chain\(s\) 1 "):
        annealed_langevin(bad_score, torch.zeros(3, 2), [1.0, 0.5], 2, 1e-3, torch.Generator().manual_seed(0))
