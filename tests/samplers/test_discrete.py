"""Statistical correctness of the discrete samplers (single-site Metropolis and Gibbs).

Oracle: exact enumeration. The 3×3 periodic Ising model (J = 0.3, h = 0.1) has 512 states
and the 2×2 three-state Potts model 81, so ``p(x)`` and the exact single-site transition
matrices are computed in float64.

Distribution checks (:func:`ebmlab.testing.assert_distribution_close`) compare the
endpoints of ``n`` independent chains, started at exact draws, with ``p``: they fail when
Pearson's χ² p-value (cells with expected count < 5 pooled) is below 1e-5, or when the TV
distance exceeds ``E[TV] + sqrt(log(1e5)/(2n))`` — the exact mean TV of an n-draw multinomial
plus McDiarmid's bound, exceeded with probability ≤ 1e-5. With n = 40000 the Ising check's
TV bound is 0.042, and the χ² check (df = 410 after pooling, 1e-5 threshold 544) detects a
law ``q`` once its noncentrality ``n·Σ(q-p)²/p`` reaches about 544 - 410 = 134, i.e. a
χ²-distance ``Σ(q-p)²/p`` of about 3.3e-3 (the 1.3·J control is at 0.32).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ebmlab.energy import Ising, Potts, enumerate_states
from ebmlab.samplers import Gibbs, SingleSiteMetropolis, sample
from ebmlab.testing import (
    DEFAULT_P_VALUE,
    assert_distribution_close,
    enumerate_probabilities,
    sample_enumerated,
    state_index,
    total_variation,
    transition_chisquare_pvalue,
)

CHAINS = 40000
ISING_SHAPE = (3, 3)
ISING_SITES = 9
POTTS_SHAPE = (2, 2)


def potts() -> Potts:
    """A 2×2 periodic Potts model with K = 3 (81 states) and an asymmetric field."""
    return Potts(size=2, num_states=3, coupling=0.5, field=torch.tensor([0.2, 0.0, -0.1]))


def run_endpoints(energy, kernel, x0: torch.Tensor, num_steps: int, generator: torch.Generator) -> torch.Tensor:
    record = sample(energy, kernel, x0, num_steps=num_steps, generator=generator, keep_samples=False)
    return record.final_state.x


def test_state_index_follows_enumeration_order():
    """The oracle's state indexing agrees with ``enumerate_states`` (site 0 most significant)."""
    for k, sites in [(2, 9), (3, 4)]:
        states = next(enumerate_states(sites, k))
        assert torch.equal(state_index(states, k), torch.arange(k**sites))


# --------------------------------------------------------------------------------------
# Long runs from exact draws
# --------------------------------------------------------------------------------------

KERNELS = [
    SingleSiteMetropolis(num_states=2, scan="random"),
    SingleSiteMetropolis(num_states=2, scan="systematic"),
    Gibbs(num_states=2, scan="random"),
    Gibbs(num_states=2, scan="systematic"),
]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{k.name}-{k.scan}")
def test_ising_endpoints_follow_enumerated_distribution(kernel, small_ising, small_ising_probs):
    """40000 chains started at exact Ising draws, 8 sweeps (72 site updates): the endpoints
    pass the χ² (p ≥ 1e-5) and TV (≤ E[TV] + McDiarmid, 0.042) checks. Smallest
    detectable error: a χ²-distance of about 3.3e-3 (module docstring). Negative control:
    :func:`test_mis_scaled_coupling_fails_distribution_test`."""
    generator = torch.Generator().manual_seed(21)
    x0 = sample_enumerated(small_ising_probs, CHAINS, ISING_SHAPE, 2, generator, torch.float64)
    x = run_endpoints(small_ising, kernel, x0, 8 * ISING_SITES, generator)
    assert_distribution_close(x, small_ising_probs, 2, DEFAULT_P_VALUE)


@pytest.mark.parametrize("kernel_cls", [SingleSiteMetropolis, Gibbs], ids=["metropolis", "gibbs"])
def test_mis_scaled_coupling_fails_distribution_test(kernel_cls, small_ising_probs):
    """Negative control: sampling the Ising model with coupling 1.3·J (TV 0.26 from the J
    law) and testing the endpoints against the J law must fail the same check."""
    generator = torch.Generator().manual_seed(21)
    x0 = sample_enumerated(small_ising_probs, CHAINS, ISING_SHAPE, 2, generator, torch.float64)
    wrong = Ising(3, coupling=1.3 * 0.3, field=0.1)
    x = run_endpoints(wrong, kernel_cls(num_states=2), x0, 8 * ISING_SITES, generator)
    with pytest.raises(AssertionError):
        assert_distribution_close(x, small_ising_probs, 2, DEFAULT_P_VALUE)


@pytest.mark.parametrize(
    "kernel",
    [SingleSiteMetropolis(num_states=3, scan="random"), SingleSiteMetropolis(num_states=3, scan="systematic"),
     Gibbs(num_states=3, scan="random"), Gibbs(num_states=3, scan="systematic")],
    ids=lambda k: f"{k.name}-{k.scan}",
)
def test_potts_endpoints_follow_enumerated_distribution(kernel):
    """Categorical (K = 3) kernels on the 81-state Potts model, 40000 chains from exact draws,
    8 sweeps: χ² p ≥ 1e-5 and TV ≤ its 1e-5 bound (0.027). Smallest detectable error: a
    χ²-distance of about (146 - 80)/n ≈ 1.6e-3 (df = 80, 1e-5 threshold 146). Negative control:
    :func:`test_potts_mis_scaled_coupling_fails`."""
    target = potts()
    probs = enumerate_probabilities(target, POTTS_SHAPE, 3)
    generator = torch.Generator().manual_seed(22)
    x0 = sample_enumerated(probs, CHAINS, POTTS_SHAPE, 3, generator, torch.float64)
    x = run_endpoints(target, kernel, x0, 8 * 4, generator)
    assert_distribution_close(x, probs, 3, DEFAULT_P_VALUE)


@pytest.mark.parametrize("kernel_cls", [SingleSiteMetropolis, Gibbs], ids=["metropolis", "gibbs"])
def test_potts_mis_scaled_coupling_fails(kernel_cls):
    """Negative control: the Potts kernels run with coupling 1.3·J fail the J-law check."""
    target = potts()
    probs = enumerate_probabilities(target, POTTS_SHAPE, 3)
    wrong = Potts(size=2, num_states=3, coupling=1.3 * 0.5, field=torch.tensor([0.2, 0.0, -0.1]))
    generator = torch.Generator().manual_seed(22)
    x0 = sample_enumerated(probs, CHAINS, POTTS_SHAPE, 3, generator, torch.float64)
    x = run_endpoints(wrong, kernel_cls(num_states=3), x0, 8 * 4, generator)
    with pytest.raises(AssertionError):
        assert_distribution_close(x, probs, 3, DEFAULT_P_VALUE)


# --------------------------------------------------------------------------------------
# The exact transition matrix
# --------------------------------------------------------------------------------------


def flip_index(num_sites: int) -> torch.Tensor:
    """``flip[s, i]``: the enumeration index of state s with site i flipped, shape ``(2^D, D)``."""
    bits = 1 << torch.arange(num_sites - 1, -1, -1)
    return torch.arange(2**num_sites)[:, None] ^ bits[None, :]


def exact_transition_matrix(energies: torch.Tensor, rule: str, site: int | None = None) -> torch.Tensor:
    """Single-site flip kernel on binary states from their energies ``(2^D,)`` (float64).

    Random scan (``site=None``): ``T(x, x^i) = (1/D)·a(x → x^i)`` for each site i, and
    ``T(x, x) = 1 - Σ_i T(x, x^i)``; a fixed ``site`` gives the systematic-scan step at it.
    ``a = min(1, π(x')/π(x))`` for ``rule="metropolis"``, ``π(x')/(π(x)+π(x'))`` for ``"gibbs"``.
    """
    num_states = energies.shape[0]
    num_sites = num_states.bit_length() - 1
    flip = flip_index(num_sites)
    delta = energies[flip] - energies[:, None]  # E(x^i) - E(x), (S, D)
    if rule == "metropolis":
        accept = torch.exp(torch.clamp(-delta, max=0.0))
    else:
        accept = torch.sigmoid(-delta)
    sites = range(num_sites) if site is None else [site]
    weight = 1.0 / len(sites)
    transition = torch.zeros(num_states, num_states, dtype=torch.float64)
    rows = torch.arange(num_states)
    for i in sites:
        transition[rows, flip[:, i]] += weight * accept[:, i]
    stay = weight * sum(1.0 - accept[:, i] for i in sites)
    transition[rows, rows] += stay
    return transition


def ising_energies(model: Ising) -> torch.Tensor:
    states = next(enumerate_states(ISING_SITES, 2, dtype=torch.float64))
    return model(states.view(-1, *ISING_SHAPE)).to(torch.float64)


@pytest.mark.parametrize("rule", ["metropolis", "gibbs"])
def test_exact_transition_matrix_has_detailed_balance(rule, small_ising, small_ising_probs):
    """The exact random-scan kernel T (512×512, float64) is stochastic, satisfies
    π(x)T(x,x') = π(x')T(x',x) and has πT = π, to float64 rounding (1e-15 absolute; the
    entries are at most 1). Negative control: with the target's coupling mis-scaled by 1.3
    in T, πT = π fails by orders of magnitude more than the tolerance."""
    pi = small_ising_probs
    transition = exact_transition_matrix(ising_energies(small_ising), rule)
    assert (transition >= 0).all()
    assert torch.allclose(transition.sum(1), torch.ones(512, dtype=torch.float64), rtol=0, atol=1e-15)
    flow = pi[:, None] * transition
    assert (flow - flow.T).abs().max() < 1e-15
    assert (pi @ transition - pi).abs().max() < 1e-15
    wrong = exact_transition_matrix(ising_energies(Ising(3, coupling=0.39, field=0.1)), rule)
    assert (pi @ wrong - pi).abs().max() > 1e-4


def one_step_counts(energy, kernel, generator: torch.Generator, copies: int, step: int = 0) -> torch.Tensor:
    """Empirical transition counts ``(512, 512)``: ``copies`` chains from every state, one step."""
    start = next(enumerate_states(ISING_SITES, 2, dtype=torch.float64)).view(-1, *ISING_SHAPE)
    x0 = start.repeat_interleave(copies, dim=0)
    state = dataclasses.replace(kernel.init(energy, x0), step=step)
    new_state, _ = kernel.step(energy, state, generator)
    before, after = state_index(x0), state_index(new_state.x)
    counts = torch.zeros(512 * 512, dtype=torch.float64)
    counts.index_add_(0, before * 512 + after, torch.ones_like(before, dtype=torch.float64))
    return counts.view(512, 512)


RANDOM_SCAN = {"metropolis": SingleSiteMetropolis(num_states=2), "gibbs": Gibbs(num_states=2)}


@pytest.mark.parametrize("rule", ["metropolis", "gibbs"])
def test_kernel_step_matches_exact_transition_matrix(rule, small_ising):
    """One step of the random-scan kernel from each of the 512 states (400 chains each)
    matches the exact row T(x, ·): the summed Pearson χ² over all rows (cells with expected
    count < 5 pooled per row) has p ≥ 1e-5. Smallest detectable error: with df ≈ 4370 and
    a 1e-5 threshold ≈ df + 410, a relative error of about 6 % in every flip probability
    (noncentrality ≈ 10⁵ moved chains × δ² ≈ 410); an error confined to one row must be of
    order 100 % to be seen.
    Negative controls: :func:`test_kernel_step_detects_wrong_transition_matrix`."""
    generator = torch.Generator().manual_seed(23)
    counts = one_step_counts(small_ising, RANDOM_SCAN[rule], generator, copies=400)
    transition = exact_transition_matrix(ising_energies(small_ising), rule)
    assert transition_chisquare_pvalue(counts, transition) >= DEFAULT_P_VALUE


@pytest.mark.parametrize("rule", ["metropolis", "gibbs"])
def test_kernel_step_detects_wrong_transition_matrix(rule, small_ising):
    """Negative controls for the one-step check: each kernel's counts against the other
    rule's exact matrix, and the kernel run on the 1.3·J energy against the J matrix,
    must give p < 1e-5."""
    generator = torch.Generator().manual_seed(23)
    energies = ising_energies(small_ising)
    other = "gibbs" if rule == "metropolis" else "metropolis"
    counts = one_step_counts(small_ising, RANDOM_SCAN[rule], generator, copies=400)
    assert transition_chisquare_pvalue(counts, exact_transition_matrix(energies, other)) < DEFAULT_P_VALUE
    wrong = Ising(3, coupling=0.39, field=0.1)
    counts = one_step_counts(wrong, RANDOM_SCAN[rule], generator, copies=400)
    assert transition_chisquare_pvalue(counts, exact_transition_matrix(energies, rule)) < DEFAULT_P_VALUE


@pytest.mark.parametrize("kernel_cls, rule", [(SingleSiteMetropolis, "metropolis"), (Gibbs, "gibbs")],
                         ids=["metropolis", "gibbs"])
def test_systematic_scan_step_matches_exact_site_kernel(kernel_cls, rule, small_ising):
    """At step t the systematic-scan kernel updates site t mod 9 only: from every state
    (200 chains each) at t = 13 (site 4), the transitions match the exact single-site
    matrix T_4 (χ² p ≥ 1e-5), and do not match T_5 (negative control, p < 1e-5)."""
    generator = torch.Generator().manual_seed(24)
    kernel = kernel_cls(num_states=2, scan="systematic")
    counts = one_step_counts(small_ising, kernel, generator, copies=200, step=13)
    energies = ising_energies(small_ising)
    assert transition_chisquare_pvalue(counts, exact_transition_matrix(energies, rule, site=4)) >= DEFAULT_P_VALUE
    assert transition_chisquare_pvalue(counts, exact_transition_matrix(energies, rule, site=5)) < DEFAULT_P_VALUE


# --------------------------------------------------------------------------------------
# Convergence from a dispersed start
# --------------------------------------------------------------------------------------

DISPERSED_SWEEPS = 20
CONVERGENCE_CHAINS = 20000


@pytest.mark.parametrize("kernel_cls, rule", [(SingleSiteMetropolis, "metropolis"), (Gibbs, "gibbs")],
                         ids=["metropolis", "gibbs"])
def test_convergence_from_uniform_start(kernel_cls, rule):
    """On a weakly coupled Ising model (J = 0.15, h = 0.1), from uniformly random spins,
    20 sweeps of the random-scan kernel reach π: the exact law after t steps, u·T^t, is
    within 1e-4 of π in TV and 1e-8 in χ²-distance (from the exact matrix, so the residual
    is far below what the check detects), and the endpoints of 20000 chains pass the χ² / TV
    check at 1e-5 (smallest detectable χ²-distance ≈ 7.4e-3). Negative control: after one
    sweep (exact χ²-distance from π 0.05-0.09, TV ≈ 0.1) the same check fails."""
    model = Ising(3, coupling=0.15, field=0.1)
    pi = enumerate_probabilities(model, ISING_SHAPE, 2)
    transition = exact_transition_matrix(ising_energies(model), rule)
    steps = DISPERSED_SWEEPS * ISING_SITES
    uniform = torch.full((512,), 1.0 / 512, dtype=torch.float64)
    law = uniform @ torch.linalg.matrix_power(transition, steps)
    assert total_variation(law, pi) < 1e-4 and float(((law - pi) ** 2 / pi).sum()) < 1e-8

    generator = torch.Generator().manual_seed(25)
    x0 = model.sample_uniform(CONVERGENCE_CHAINS, generator).to(torch.float64)
    x = run_endpoints(model, kernel_cls(num_states=2), x0, steps, generator)
    assert_distribution_close(x, pi, 2, DEFAULT_P_VALUE)

    x_short = run_endpoints(model, kernel_cls(num_states=2), x0, ISING_SITES, generator)
    with pytest.raises(AssertionError):
        assert_distribution_close(x_short, pi, 2, DEFAULT_P_VALUE)
