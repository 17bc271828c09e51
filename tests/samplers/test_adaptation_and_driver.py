"""Step-size adaptation and the run driver: tuning, shapes, divergences, errors, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import Gaussian
from ebmlab.samplers import (
    HMC, MALA, ULA, ChainDivergedError, DualAveraging, RandomWalkMetropolis, make_kernel, sample,
)

# --------------------------------------------------------------------------------------
# Dual averaging
# --------------------------------------------------------------------------------------


def test_dual_averaging_solves_a_deterministic_acceptance_curve():
    """With a noiseless acceptance curve a(ε) = exp(-ε), 2000 updates bring the averaged
    step ε̄ to the root of a(ε) = δ = 0.6, ε* = -log 0.6 = 0.511, within 1 % (the iterates'
    residual oscillation decays as O(t^{-1/2}); measured 0.6 %). Negative control: the
    initial step (1.0) is ~100 % off."""
    adaptation = DualAveraging(target_accept=0.6)
    state = adaptation.init(1.0)
    root = -math.log(0.6)
    assert abs(state.final_step_size / root - 1) > 0.5
    for _ in range(2000):
        state = adaptation.update(state, math.exp(-state.step_size))
    assert abs(state.final_step_size / root - 1) < 0.01


def anisotropic_gaussian(dim: int = 20) -> Gaussian:
    """``N(0, diag(σ²))`` with σ evenly spaced in [0.5, 1.5], float64.

    Twenty dimensions with spread scales make every kernel's mean acceptance a smooth,
    decreasing function of the step size; in 2-D, HMC with a fixed number of leapfrog steps
    has resonant step sizes where acceptance is not monotone, and no step-size rule can
    promise a target there.
    """
    std = torch.linspace(0.5, 1.5, dim)
    return Gaussian(torch.zeros(dim), torch.diag(std**2)).double()


ADAPTIVE = {
    "rwmh": lambda eps: RandomWalkMetropolis(step_size=eps),
    "mala": lambda eps: MALA(step_size=eps),
    "hmc": lambda eps: HMC(step_size=eps, num_leapfrog=5),
}
ACCEPT_TOLERANCE = 0.03


@pytest.mark.parametrize("initial_step", [0.01, 5.0], ids=["too-small", "too-large"])
@pytest.mark.parametrize("name", sorted(ADAPTIVE))
def test_dual_averaging_reaches_target_acceptance(name, initial_step):
    """After 200 burn-in steps of dual averaging from a step 10-50× off, the mean acceptance
    of 1000 chains over 100 further steps is within 0.03 of the kernel's target (0.234
    rwmh, 0.574 mala, 0.65 hmc).

    Tolerance origin: the Monte-Carlo SE of the measured rate (10⁵ correlated accept
    indicators, SD ≤ 0.5, integrated autocorrelation ≲ 10) is ≤ 0.005; the rest of the 0.03
    allows the dual-averaging residual after 200 iterations (measured ≤ 0.013). Negative
    control: :func:`test_without_adaptation_acceptance_misses_target`.
    """
    target = anisotropic_gaussian()
    generator = torch.Generator().manual_seed(41)
    kernel = ADAPTIVE[name](initial_step)
    x0 = target.sample(1000, generator).to(torch.float64)
    record = sample(target, kernel, x0, num_steps=100, burn_in=200, generator=generator, adapt=True)
    rate = float(record.acceptance_rate.mean())
    assert abs(rate - kernel.default_target_accept) < ACCEPT_TOLERANCE, (
        f"{name}: tuned step {record.step_size:.4g} gives acceptance {rate:.3f}, "
        f"target {kernel.default_target_accept}"
    )
    assert record.kernel.step_size != initial_step


@pytest.mark.parametrize("name", sorted(ADAPTIVE))
def test_without_adaptation_acceptance_misses_target(name):
    """Negative control: with ``adapt=False`` the initial steps (0.01 and 5.0) keep an
    acceptance far outside the 0.03 band on at least one side."""
    target = anisotropic_gaussian()
    generator = torch.Generator().manual_seed(41)
    x0 = target.sample(1000, generator).to(torch.float64)
    for initial_step in (0.01, 5.0):
        kernel = ADAPTIVE[name](initial_step)
        record = sample(target, kernel, x0, num_steps=20, burn_in=50, generator=generator, adapt=False)
        assert record.kernel.step_size == initial_step
        assert abs(float(record.acceptance_rate.mean()) - kernel.default_target_accept) > ACCEPT_TOLERANCE


def test_custom_target_accept_is_used():
    """``target_accept`` overrides the kernel default: MALA tuned to 0.9 accepts 0.9 ± 0.03."""
    target = anisotropic_gaussian()
    generator = torch.Generator().manual_seed(42)
    x0 = target.sample(1000, generator).to(torch.float64)
    record = sample(target, MALA(step_size=0.1), x0, num_steps=100, burn_in=200, generator=generator,
                    target_accept=0.9)
    assert abs(float(record.acceptance_rate.mean()) - 0.9) < ACCEPT_TOLERANCE


# --------------------------------------------------------------------------------------
# Burn-in, thinning, callback, shapes
# --------------------------------------------------------------------------------------


def small_gaussian() -> Gaussian:
    return Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).double()


@pytest.mark.parametrize("num_steps, burn_in, thin, kept", [(10, 5, 3, 3), (12, 0, 1, 12), (7, 4, 7, 1), (0, 3, 1, 0)])
def test_burn_in_thin_and_kept_shapes(num_steps, burn_in, thin, kept, generator):
    """``samples`` is ``(num_steps // thin, C, *event)``, holding the states after
    transitions ``burn_in + thin·k`` (k = 1..kept) as seen by the callback; per-chain
    statistics are ``(C,)``; the callback sees every transition, numbered from 1."""
    target = small_gaussian()
    x0 = target.sample(6, generator).to(torch.float64)
    seen: dict[int, torch.Tensor] = {}
    record = sample(target, MALA(step_size=0.2), x0, num_steps=num_steps, burn_in=burn_in, thin=thin,
                    generator=generator, callback=lambda t, state, info: seen.__setitem__(t, state.x))
    assert sorted(seen) == list(range(1, burn_in + num_steps + 1))
    assert record.samples.shape == (kept, 6, 2) and record.samples.dtype == torch.float64
    assert record.energy.shape == (kept, 6)
    assert record.acceptance_rate.shape == (6,) and record.divergences.shape == (6,)
    for k in range(kept):
        assert torch.equal(record.samples[k], seen[burn_in + thin * (k + 1)])
        assert torch.allclose(record.energy[k], target(record.samples[k]))
    assert (record.num_steps, record.burn_in, record.thin, record.num_chains) == (num_steps, burn_in, thin, 6)
    if burn_in + num_steps:
        assert torch.equal(record.final_state.x, seen[burn_in + num_steps])


def test_keep_samples_false_keeps_only_the_final_state(generator):
    """``keep_samples=False`` stores no draws but still returns the final state."""
    target = small_gaussian()
    x0 = target.sample(5, generator).to(torch.float64)
    record = sample(target, RandomWalkMetropolis(0.5), x0, num_steps=8, generator=generator, keep_samples=False)
    assert record.samples.shape == (0, 5, 2)
    assert record.final_state.x.shape == (5, 2) and record.final_state.step == 8


@pytest.mark.parametrize("kwargs", [{"num_steps": -1}, {"num_steps": 5, "burn_in": -2}, {"num_steps": 5, "thin": 0}])
def test_bad_run_arguments_raise_value_error(kwargs, generator):
    """Negative step counts and ``thin < 1`` are refused with a ValueError naming the sampler."""
    target = small_gaussian()
    x0 = target.sample(3, generator).to(torch.float64)
    with pytest.raises(ValueError, match="rwmh"):
        sample(target, RandomWalkMetropolis(0.5), x0, generator=generator, **kwargs)


# --------------------------------------------------------------------------------------
# Divergences and bad starts
# --------------------------------------------------------------------------------------


class WalledQuadratic(torch.nn.Module):
    """``E(x) = ½‖x‖²`` for ``max_i |x_i| ≤ 100``, ``+inf`` beyond."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = 0.5 * x.square().sum(-1)
        return torch.where(x.abs().amax(-1) > 100.0, torch.full_like(e, math.inf), e)


def test_chain_diverged_error_names_step_and_chain():
    """Noise-free ULA with ε = 3 maps x to -2x: the chain started at 30 passes the wall at
    step 2 (30 → -60 → 120) while the others are still inside, so the error names step 2
    and chain 1 exactly."""
    x0 = torch.tensor([[1.0, 0.0], [30.0, 0.0], [0.5, -0.5]], dtype=torch.float64)
    with pytest.raises(ChainDivergedError) as excinfo:
        sample(WalledQuadratic(), ULA(step_size=3.0, noise_scale=0.0), x0, num_steps=20)
    assert excinfo.value.step == 2 and excinfo.value.chains == [1]
    message = str(excinfo.value)
    assert "step 2" in message and "chain(s) 1 " in message and "ula" in message


def test_ula_with_huge_step_diverges(generator):
    """ULA with ε = 50 on N(0, I) multiplies x by -49 per step, so the float32 energy
    overflows within a few dozen steps; the error names a step and the chains."""
    target = Gaussian(torch.zeros(2))
    x0 = target.sample(8, generator)
    with pytest.raises(ChainDivergedError) as excinfo:
        sample(target, ULA(step_size=50.0), x0, num_steps=200, generator=generator)
    assert 1 <= excinfo.value.step < 200 and excinfo.value.chains
    assert f"step {excinfo.value.step}" in str(excinfo.value)


def test_nan_start_raises_value_error():
    """A NaN in ``x0`` is refused before any step."""
    target = small_gaussian()
    x0 = torch.tensor([[0.0, 0.0], [math.nan, 1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN"):
        sample(target, MALA(step_size=0.1), x0, num_steps=3)


def test_infinite_start_energy_raises_value_error_naming_the_chain():
    """A start with infinite energy is refused, naming the offending chain."""
    x0 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [500.0, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"chain\(s\) \[2\]"):
        sample(WalledQuadratic(), RandomWalkMetropolis(0.5), x0, num_steps=3)


class NaNRegion(torch.nn.Module):
    """``E(x) = ½‖x‖²`` for ``x₀ < 0.5``; NaN (an undefined energy) for ``x₀ ≥ 0.5``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = 0.5 * x.square().sum(-1)
        return torch.where(x[:, 0] < 0.5, e, torch.full_like(e, math.nan))


@pytest.mark.parametrize("name, hp", [("rwmh", {"step_size": 1.0}), ("mala", {"step_size": 0.5}),
                                       ("hmc", {"step_size": 0.3, "num_leapfrog": 5})])
def test_nan_energy_proposals_are_rejected_and_counted(name, hp):
    """Proposals into the NaN region are rejected (``accepted`` is False wherever
    ``diverged`` is True), no chain ever enters it, and ``record.divergences`` counts
    exactly the diverged proposals after burn-in."""
    generator = torch.Generator().manual_seed(43)
    x0 = torch.randn(500, 2, generator=generator, dtype=torch.float64) * 0.5 - 1.0
    x0[:, 0] = x0[:, 0].clamp(max=0.0)
    diverged_after_burn_in = torch.zeros(500, dtype=torch.long)

    def callback(t, state, info):
        assert not (info.diverged & info.accepted).any()
        assert (state.x[:, 0] < 0.5).all() and torch.isfinite(state.energy).all()
        if t > 5:
            diverged_after_burn_in.add_(info.diverged.long())

    record = sample(NaNRegion(), make_kernel(name, **hp), x0, num_steps=30, burn_in=5, adapt=False,
                    generator=generator, callback=callback)
    assert int(record.divergences.sum()) > 0
    assert torch.equal(record.divergences.long(), diverged_after_burn_in)


# --------------------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ADAPTIVE))
def test_same_seed_same_run(name):
    """Two runs with equal seeds agree bit for bit (samples, tuned step, rates); a third
    with another seed differs."""
    target = small_gaussian()

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        x0 = target.sample(50, generator).to(torch.float64)
        return sample(target, ADAPTIVE[name](0.3), x0, num_steps=10, burn_in=10, generator=generator)

    first, second, other = run(44), run(44), run(45)
    assert torch.equal(first.samples, second.samples) and first.step_size == second.step_size
    assert torch.equal(first.acceptance_rate, second.acceptance_rate)
    assert not torch.equal(first.samples, other.samples)
