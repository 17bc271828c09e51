"""Parallel tempering (``pt``): mixing across modes, exactness, swap statistics, the ladder burn-in.

Oracles and tolerances:

* **Mixing** (8 Gaussians, every chain started in ONE mode): the kept β = 1 draws have a
  rank-normalised split R-hat below 1.01 on both coordinates, and each mode's weight, averaged
  per chain, is within z = 4.5 standard errors of 1/8; the SE is the across-chain standard
  deviation of the per-chain weights over √C (the chains are independent, so no ESS estimate
  is needed; with C = 64 a |t| > 4.5 has probability 3e-5 per mode). Negative control: plain
  MALA with the same budget fails both checks.
* **Exactness** (chains started at exact draws of every tempered law, so a correct kernel stays
  on ``Π_k π_k``): on a 1-D mixture with unequal weights, ``P(x > 0)`` of n = 4000 cold endpoints
  is within 4.5 binomial SEs of its exact value (smallest detectable error 4.5·√(p(1-p)/n) =
  0.031) and the moments pass :func:`~ebmlab.testing.assert_moments_close`; on the 512-state
  Ising model with a Gibbs base, the cold endpoints pass the χ² (p ≥ 1e-5) and TV checks of
  :func:`~ebmlab.testing.assert_distribution_close`. Negative control for both: swaps accepted
  unconditionally (:class:`AlwaysSwap`) must fail the same checks.
* **Swap statistics**: per-pair swap rates and the round-trip rate lie in (0, 1) and agree with
  the per-step :class:`~ebmlab.samplers.tempering.TemperedInfo`; the ladder burn-in shrinks the
  spread of the swap rates on a target with a phase change (narrow and broad components) by more
  than 4.5 SEs of the difference, the SE taken over independent chains.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from ebmlab.diagnostics import split_rhat
from ebmlab.energy import GaussianMixture, Ising, enumerate_states, eight_gaussians
from ebmlab.energy.base import value_and_grad
from ebmlab.samplers import MALA, Gibbs, HMC, make_kernel, sample
from ebmlab.samplers.driver import run_kernel
from ebmlab.samplers.tempering import (
    ParallelTempering, TemperedEnergy, TemperedInfo, TemperedState, communication_barrier, replica_positions,
    round_trip_rate, swap_rates,
)
from ebmlab.samplers.tempering_ladder import geometric_ladder, ladder_from_rejections, retemper
from ebmlab.testing import (
    DEFAULT_P_VALUE, DEFAULT_Z, assert_distribution_close, assert_moments_close, sample_enumerated,
)


class AlwaysSwap(ParallelTempering):
    """Negative control: every proposed swap is accepted (``log α = 0``) — not π-invariant."""

    def swap_log_ratio(self, beta_cold, beta_hot, energy_cold, energy_hot):
        return torch.zeros_like(energy_cold)


# --------------------------------------------------------------------------------------
# Mixing across the modes of the 8-Gaussian ring from a one-mode start
# --------------------------------------------------------------------------------------

RING_CHAINS = 64


def ring_run(kernel, seed: int = 31):
    """3000 kept draws of 64 chains after 500 burn-in steps (step size tuned), all started in mode 0."""
    target = eight_gaussians().double()
    generator = torch.Generator().manual_seed(seed)
    x0 = target.means[0] + target.stds[0] * torch.randn(RING_CHAINS, 2, generator=generator, dtype=torch.float64)
    record = sample(target, kernel, x0, num_steps=3000, burn_in=500, generator=generator)
    return target, record


def mode_weight_z(target, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mode weights (nearest mode), averaged per chain, and their z-scores against 1/8, both ``(8,)``."""
    nearest = torch.cdist(samples.reshape(-1, 2), target.means).argmin(1).view(samples.shape[:2])
    per_chain = torch.stack([(nearest == j).double().mean(0) for j in range(8)], dim=1)  # (C, 8)
    weights = per_chain.mean(0)
    se = per_chain.std(0) / math.sqrt(per_chain.shape[0])
    with torch.no_grad():
        z = torch.where(se > 0, (weights - 0.125) / se, torch.full_like(se, math.inf))
    return weights, z


def test_pt_mixes_across_the_eight_gaussians():
    """PT over MALA (K = 8, T_max = 10) from a one-mode start: split R-hat (rank-normalised)
    < 1.01 on both coordinates and every mode weight within 4.5 SEs of 1/8 (SE ≈ 0.0025: the
    smallest detectable error in a weight is ≈ 0.011). Measured: R-hat 1.005 / 1.004 (bulk ESS
    ≈ 12000 of 192000 draws), weights 0.121 .. 0.129, max |z| = 1.6.
    Negative control: :func:`test_plain_mala_fails_the_mixing_checks`."""
    target, record = ring_run(ParallelTempering(MALA(step_size=0.02), num_temperatures=8, max_temperature=10.0))
    assert record.samples.shape == (3000, RING_CHAINS, 2)  # the β = 1 chains only
    assert isinstance(record.final_state, TemperedState) and record.kernel.name == "pt"
    rhat = split_rhat(record.samples, rank_normalize=True)
    assert (rhat < 1.01).all(), f"split R-hat {rhat}"
    weights, z = mode_weight_z(target, record.samples)
    assert float(z.abs().max()) <= DEFAULT_Z, f"mode weights {weights.tolist()}, z {z.tolist()}"
    rates = swap_rates(record.final_state)
    assert ((rates > 0) & (rates < 1)).all() and 0 < round_trip_rate(record.final_state) < 1


def test_plain_mala_fails_the_mixing_checks():
    """Negative control: MALA alone with the same budget and start stays near its starting mode
    (measured: weight of mode 0 = 0.86, four modes never visited, R-hat 1.22 / 1.34): both checks
    above fail."""
    target, record = ring_run(MALA(step_size=0.02))
    rhat = split_rhat(record.samples, rank_normalize=True)
    _, z = mode_weight_z(target, record.samples)
    assert not (rhat < 1.01).all()
    assert float(z.abs().max()) > DEFAULT_Z


# --------------------------------------------------------------------------------------
# Exactness from exact draws of every tempered law
# --------------------------------------------------------------------------------------

MIXTURE_CHAINS = 4000
MIXTURE_BETAS = geometric_ladder(4, 10.0)


def mixture() -> GaussianMixture:
    """``0.75 N(-2, 0.5²) + 0.25 N(2, 0.5²)`` in 1-D, float64."""
    return GaussianMixture(torch.tensor([[-2.0], [2.0]]), stds=0.5, weights=torch.tensor([0.75, 0.25])).double()


def tempered_mixture_draws(target, beta: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """Exact draws ``(n, 1)`` of ``π_β ∝ p^β`` by inverse CDF on a grid of width 1e-4 over [-25, 25]
    (uniform within a cell; the discretisation moves probabilities by O(1e-8))."""
    edges = torch.linspace(-25.0, 25.0, 500001, dtype=torch.float64)
    mids = 0.5 * (edges[1:] + edges[:-1])
    probs = torch.softmax(-beta * target(mids[:, None]), 0)
    cell = torch.multinomial(probs, n, replacement=True, generator=generator)
    jitter = torch.rand(n, generator=generator, dtype=torch.float64)
    return (edges[cell] + jitter * (edges[1] - edges[0]))[:, None]


def mixture_endpoints(kernel_cls, seed: int = 32, base=None) -> torch.Tensor:
    target = mixture()
    generator = torch.Generator().manual_seed(seed)
    kernel = kernel_cls(MALA(step_size=0.1) if base is None else base, betas=MIXTURE_BETAS)
    x = torch.stack([tempered_mixture_draws(target, b, MIXTURE_CHAINS, generator) for b in MIXTURE_BETAS])
    state = kernel.init_replicas(target, x)
    return run_kernel(kernel, target, state, 60, generator).state.x


def positive_fraction_z(x: torch.Tensor) -> float:
    """z of the fraction of draws with x > 0 against ``Σ_k w_k Φ(μ_k/σ)`` (binomial SE)."""
    exact = 0.75 * stats.norm.cdf(-2.0 / 0.5) + 0.25 * stats.norm.cdf(2.0 / 0.5)
    n = x.shape[0]
    return (float((x[:, 0] > 0).double().mean()) - exact) / math.sqrt(exact * (1 - exact) / n)


def test_pt_keeps_the_mixture_weights_from_exact_starts():
    """4000 chains × 4 temperatures started at exact tempered draws, 60 steps of PT over MALA:
    the cold endpoints keep ``P(x > 0) = 0.25`` within 4.5 SEs (0.031) and the mean and variance
    (z = 4.5). Negative control: :func:`test_unconditional_swaps_break_the_mixture_weights`."""
    x = mixture_endpoints(ParallelTempering)
    assert abs(positive_fraction_z(x)) <= DEFAULT_Z
    target = mixture()
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


def test_unconditional_swaps_break_the_mixture_weights():
    """Negative control: accepting every swap hands hot states to the cold chains, whose
    ``P(x > 0)`` then drifts towards the flatter tempered laws' (measured z = 28; the correct
    kernel's z = 0.4)."""
    assert positive_fraction_z(mixture_endpoints(AlwaysSwap)) > DEFAULT_Z


def test_pt_over_nuts_keeps_the_mixture_weights_and_unconditional_swaps_break_them():
    """NUTS as the base kernel: its trees evaluate only the replicas still building, each with its
    own β (``TemperedEnergy.select_rows``). From exact tempered draws, 30 steps keep ``P(x > 0)`` and the
    moments (z = 4.5); with every swap accepted the same run fails (negative control)."""
    nuts = make_kernel("nuts", step_size=0.4)
    x = mixture_endpoints(ParallelTempering, base=nuts)
    assert abs(positive_fraction_z(x)) <= DEFAULT_Z
    target = mixture()
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)
    assert positive_fraction_z(mixture_endpoints(AlwaysSwap, base=nuts)) > DEFAULT_Z


def test_tempered_rows_are_the_rows_of_the_full_batch():
    """``TemperedEnergy.select_rows(index)`` evaluates rows ``index`` with their own β and scale."""
    target = mixture()
    beta = torch.tensor([1.0, 0.5, 0.25, 0.1], dtype=torch.float64)
    scale = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    tempered = TemperedEnergy(target, beta, scale)
    y = torch.linspace(-3.0, 3.0, 4, dtype=torch.float64)[:, None]
    index = torch.tensor([3, 1])
    e_all, g_all = value_and_grad(tempered, y)
    e_sub, g_sub = value_and_grad(tempered.select_rows(index), y[index])
    torch.testing.assert_close(e_sub, e_all[index])
    torch.testing.assert_close(g_sub, g_all[index])
    prefix = TemperedEnergy(target, beta[:2], scale[:2])  # what taking the first rows' β would give
    assert not torch.allclose(e_sub, prefix(y[index]))


ISING_CHAINS = 20000
ISING_BETAS = geometric_ladder(4, 4.0)


def ising_endpoints(kernel_cls, small_ising, seed: int = 33) -> torch.Tensor:
    """Cold endpoints after 8 sweeps (72 steps) of PT over random-scan Gibbs from exact tempered draws."""
    generator = torch.Generator().manual_seed(seed)
    states = next(enumerate_states(9, 2, dtype=torch.float64)).view(-1, 3, 3)
    energies = small_ising(states).double()
    x = torch.stack([sample_enumerated(torch.softmax(-b * energies, 0), ISING_CHAINS, (3, 3), 2, generator,
                                       torch.float64) for b in ISING_BETAS])
    kernel = kernel_cls(Gibbs(), betas=ISING_BETAS)
    state = kernel.init_replicas(small_ising, x)
    return run_kernel(kernel, small_ising, state, 72, generator).state.x


def test_pt_gibbs_keeps_the_ising_distribution(small_ising, small_ising_probs):
    """20000 chains × 4 temperatures (T_max = 4) of the 3×3 Ising model from exact draws, PT over
    Gibbs: the cold endpoints pass χ² (p ≥ 1e-5, small cells pooled) and TV ≤ its 1e-5 bound.
    Smallest detectable error: a χ²-distance of ≈ 6.6e-3. Negative control below."""
    assert_distribution_close(ising_endpoints(ParallelTempering, small_ising), small_ising_probs, 2, DEFAULT_P_VALUE)


def test_unconditional_swaps_break_the_ising_distribution(small_ising, small_ising_probs):
    """Negative control: with every swap accepted the same χ²/TV check must fail (measured TV 0.39
    against a bound of 0.06, χ² p = 0; the correct kernel: TV 0.043, p = 0.71)."""
    with pytest.raises(AssertionError):
        assert_distribution_close(ising_endpoints(AlwaysSwap, small_ising), small_ising_probs, 2, DEFAULT_P_VALUE)


# --------------------------------------------------------------------------------------
# Swap statistics and the ladder burn-in
# --------------------------------------------------------------------------------------


def narrow_and_broad() -> GaussianMixture:
    """``½ N(0, 0.2² I) + ½ N(0, I)`` in 2-D: the broad component takes over as T grows."""
    return GaussianMixture(torch.zeros(2, 2), stds=torch.tensor([0.2, 1.0])).double()


def swap_run(ladder_burn_in: int, seed: int = 34):
    """1000 burn-in and 1000 kept steps of 64 chains, K = 6, T_max = 20; per-chain swap rates
    ``(K-1, C)`` and round trips ``(C,)`` gathered from the step infos once the ladder is fixed
    (after step ``ladder_burn_in``, where the state's statistics start too)."""
    target = narrow_and_broad()
    generator = torch.Generator().manual_seed(seed)
    x0 = target.sample(64, generator)
    kernel = ParallelTempering(MALA(step_size=0.02), num_temperatures=6, max_temperature=20.0,
                               ladder_burn_in=ladder_burn_in)
    sums = torch.zeros(5, 64, dtype=torch.float64)
    tries = torch.zeros(5, 1, dtype=torch.float64)
    trips = torch.zeros(64, dtype=torch.long)

    def collect(step, state, info):
        assert isinstance(info, TemperedInfo)
        if step > ladder_burn_in:
            sums.add_(info.swap_accept_prob)
            tries.add_(info.swap_attempted.double()[:, None])
            trips.add_(info.round_trips)

    record = sample(target, kernel, x0, num_steps=1000, burn_in=1000, generator=generator, callback=collect)
    return record.final_state, sums / tries, trips


def spread_and_se(per_chain: torch.Tensor) -> tuple[float, float]:
    """``max_k r_k - min_k r_k`` of the mean rates, and its SE from the per-chain rates ``(K-1, C)``."""
    rates = per_chain.mean(1)
    hi, lo = int(rates.argmax()), int(rates.argmin())
    diff = per_chain[hi] - per_chain[lo]
    return float(rates[hi] - rates[lo]), float(diff.std() / math.sqrt(diff.shape[0]))


def test_swap_and_round_trip_rates_are_reported():
    """Per-pair swap rates and the round-trip rate lie in (0, 1); the state's sums agree with the
    per-step infos; the round-trip rate stays below Syed et al.'s DEO bound 1/(2 + 2Λ)."""
    state, per_chain, trips = swap_run(ladder_burn_in=0)
    rates = swap_rates(state)
    assert ((rates > 0) & (rates < 1)).all()
    assert torch.allclose(rates, per_chain.mean(1), rtol=1e-10)
    rate = round_trip_rate(state)
    assert int(trips.sum()) == int(state.round_trips.sum()) and state.swap_rounds == 2000
    assert 0 < rate < 1 / (2 + 2 * communication_barrier(state))


def test_ladder_burn_in_evens_out_the_swap_rates():
    """On the narrow+broad mixture the geometric ladder's swap rates are uneven (measured
    0.507, 0.659, 0.697, 0.708, 0.708: spread 0.202); after a 800-step ladder burn-in inside
    ``sample``'s burn-in they are even (0.652 .. 0.656: spread 0.004). The spread must shrink by
    more than 4.5 SEs of the difference (SEs over the 64 independent chains, ≈ 0.003 each), with
    the ladder's ends kept."""
    fixed_state, fixed, _ = swap_run(ladder_burn_in=0)
    tuned_state, tuned, _ = swap_run(ladder_burn_in=800)
    (before, se_before), (after, se_after) = spread_and_se(fixed), spread_and_se(tuned)
    assert before - after > DEFAULT_Z * math.hypot(se_before, se_after), (before, after, se_before, se_after)
    assert tuned_state.betas[0] == 1.0 and math.isclose(float(tuned_state.betas[-1]), 1 / 20.0, rel_tol=1e-12)
    assert torch.equal(fixed_state.betas, torch.tensor(geometric_ladder(6, 20.0), dtype=torch.float64))


def test_tune_ladder_returns_a_fixed_ladder_kernel():
    """``tune_ladder`` runs the burn-in and returns the kernel with the adapted ``betas`` fixed;
    continuing with it does not move the ladder further."""
    target = narrow_and_broad()
    generator = torch.Generator().manual_seed(35)
    pt = ParallelTempering(MALA(step_size=0.02), num_temperatures=6, max_temperature=20.0)
    tuned, state = pt.tune_ladder(target, target.sample(32, generator), 300, generator)
    assert tuned.betas == tuple(state.betas.tolist()) and tuned.ladder_burn_in == 0
    assert tuned.betas != geometric_ladder(6, 20.0)
    after = run_kernel(tuned, target, tuned.init(target, state.x), 50, generator).state
    assert after.betas.tolist() == list(tuned.betas)


# --------------------------------------------------------------------------------------
# Deterministic pieces: the tempered energy, re-tempering, step sizes, options
# --------------------------------------------------------------------------------------


def test_tempered_energy_scales_value_gradient_and_local_formulas(small_ising):
    """``β E(y/s)`` and ``(β/s) ∇E(y/s)`` agree with autograd to 1e-12 (float64); the Ising
    ``delta_energy_flip``/``site_energies`` are β times the model's; support and shape are kept."""
    target = eight_gaussians().double()
    y = torch.randn(6, 2, generator=torch.Generator().manual_seed(36), dtype=torch.float64)
    beta = torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64).repeat_interleave(2)
    tempered = TemperedEnergy(target, beta, beta.sqrt())
    e, g = tempered.value_and_grad(y)
    y_req = y.clone().requires_grad_(True)
    ref = beta * target(y_req / beta.sqrt()[:, None])
    (ref_g,) = torch.autograd.grad(ref.sum(), y_req)
    assert torch.allclose(e, ref.detach(), atol=1e-12) and torch.allclose(g, ref_g, atol=1e-12)
    assert tempered.event_shape == (2,) and tempered.support == "real"
    x = torch.randint(0, 2, (4, 3, 3), generator=torch.Generator().manual_seed(37)).double()
    site = torch.tensor([0, 3, 5, 8])
    b = torch.tensor([1.0, 0.7, 0.4, 0.2], dtype=torch.float64)
    spins = TemperedEnergy(small_ising, b)
    assert spins.support == "binary" and spins.event_shape == (3, 3)
    assert torch.allclose(spins.delta_energy_flip(x, site), b * small_ising.delta_energy_flip(x, site))
    assert torch.allclose(spins.site_energies(x, site), b[:, None] * small_ising.site_energies(x, site))
    assert torch.allclose(spins(torch.cat([x, x])), torch.cat([b, b]) * small_ising(torch.cat([x, x])))


def test_retemper_round_trip_and_ladder_spacing():
    """Re-tempering to another ladder and back restores the cached values (1e-12); equal
    rejections leave a ladder in place; the spacing keeps the ends."""
    target = eight_gaussians().double()
    kernel = ParallelTempering(MALA(step_size=0.02), num_temperatures=4)
    state = kernel.init(target, target.sample(5, torch.Generator().manual_seed(38)))
    old = state.betas.repeat_interleave(5)
    new = torch.tensor([1.0, 0.9, 0.5, 0.1], dtype=torch.float64).repeat_interleave(5)
    there = retemper(state.replicas, None, old, new, old.sqrt(), new.sqrt())
    back = retemper(there, None, new, old, new.sqrt(), old.sqrt())
    for field in ("x", "energy", "grad"):
        assert torch.allclose(getattr(back, field), getattr(state.replicas, field), atol=1e-12), field
    e, g = value_and_grad(TemperedEnergy(target, new, new.sqrt()), there.x)
    assert torch.allclose(there.energy, e, atol=1e-12) and torch.allclose(there.grad, g, atol=1e-12)
    betas = torch.tensor(geometric_ladder(5, 10.0), dtype=torch.float64)
    assert torch.allclose(ladder_from_rejections(betas, torch.full((4,), 0.3, dtype=torch.float64)), betas)
    spaced = ladder_from_rejections(betas, torch.tensor([0.8, 0.1, 0.1, 0.1], dtype=torch.float64))
    assert spaced[0] == 1.0 and spaced[-1] == betas[-1] and (spaced.diff() < 0).all() and spaced[1] > betas[1]
    assert torch.allclose(replica_positions(state), state.x.expand(4, 5, 2))


def test_step_size_and_capabilities_follow_the_base_kernel():
    """``with_step_size`` forwards to the base; ``supports``/``uses_grad``/``adaptive`` are the
    base's; a name or ``step_size`` option builds the base; bad options are refused."""
    pt = ParallelTempering(HMC(step_size=0.1, num_leapfrog=3))
    assert pt.step_size == 0.1 and pt.with_step_size(0.3).base == HMC(step_size=0.3, num_leapfrog=3)
    assert pt.supports == ("real",) and pt.uses_grad and pt.adaptive and pt.default_target_accept == 0.65
    discrete = make_kernel("pt", base="gibbs", num_temperatures=3)
    assert discrete.supports == ("binary", "categorical") and not discrete.uses_grad and discrete.step_size is None
    assert make_kernel("pt", step_size=0.2).base == MALA(step_size=0.2)
    assert ParallelTempering(betas=(1.0, 0.5, 0.25)).num_temperatures == 3
    for bad in [dict(num_temperatures=1), dict(max_temperature=1.0), dict(betas=(1.0, 1.0, 0.5)),
                dict(betas=(0.9, 0.5)), dict(swap_every=0), dict(base="block_gibbs")]:
        with pytest.raises(ValueError, match="ParallelTempering"):
            ParallelTempering(**bad)
    with pytest.raises(ValueError, match="num_temperatures"):
        pt.init_replicas(eight_gaussians(), torch.zeros(3, 4, 2))


def test_hot_replicas_move_further_with_step_scaling():
    """With ``scale_steps`` the base step ε moves replica k by ∝ ε/√β_k: on one Gaussian mode
    (σ = 0.2) MALA's mean squared jump at β = 0.1 is ≈ 10× that at β = 1 (ratio measured > 5,
    far outside the MC error of 2000 chains); without it the hot jumps are no longer."""
    target = GaussianMixture(torch.zeros(1, 2), stds=0.2).double()
    generator = torch.Generator().manual_seed(39)
    x0 = target.sample(2000, generator)
    ratios = []
    for scale in (True, False):
        kernel = ParallelTempering(MALA(step_size=0.005), betas=(1.0, 0.1), swap_every=2, scale_steps=scale)
        before = replica_positions(kernel.init(target, x0))
        after = replica_positions(kernel.step(target, kernel.init(target, x0), generator)[0])
        jump = (after - before).square().sum(-1).mean(1)  # (K,); no swap at the first step (swap_every=2)
        ratios.append(float(jump[1] / jump[0]))
    assert ratios[0] > 5 and ratios[1] < 2
