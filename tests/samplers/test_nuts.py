"""The batched NUTS kernel: invariance, a negative control, bookkeeping (the recursive reference is
in tests/samplers/test_nuts_reference.py).

Invariance method (as tests/samplers/test_continuous.py): start ``n`` independent chains at
exact draws of the target, run a few transitions at a fixed step size, and compare the
endpoints' mean and covariance with the exact values at z = 4.5 Monte-Carlo standard errors
per entry (:func:`ebmlab.testing.assert_moments_close`; false-alarm rate 6.8e-6 per entry).
Smallest detectable errors: with n = 4000 on the correlated 2-D Gaussian 0.07 in a mean and
10 % in a variance; on the eight-Gaussian ring 0.10 in a mean and 5 % in a variance; on the
10-D Gaussian (σ from 0.1 to 10) 4.5·sqrt(1/n) = 0.07 σᵢ in mean i and 4.5·sqrt(2/n) = 10 %
of variance i (n = 2000 without a metric: 0.10 σᵢ, 14 %).

Negative control: the same kernel keeping the trajectory's last leaf instead of the
multinomial draw (``_take_last``) — no correction for the integrator's energy error — fails
the same checks at the same settings (measured max |z| = 26 on the 2-D Gaussian at ε = 1.2,
12 on the 10-D Gaussian with its metric at ε = 1.0).
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.samplers import make_kernel, sample
from ebmlab.samplers.metric import Metric
from ebmlab.samplers.nuts import NUTS, NUTSInfo
from ebmlab.testing import DEFAULT_Z, assert_moments_close, moment_z_scores, run_transitions

from nuts_targets import SCALES, correlated, ring, scaled_10d


class LastLeafNUTS(NUTS):
    """NUTS keeping the trajectory's last leaf instead of the multinomial draw — not exact."""

    _take_last = True


def endpoints(target, kernel, num_steps: int, seed: int, num_chains: int = 4000) -> torch.Tensor:
    """Endpoints ``(C, d)`` of chains started at exact draws, fixed step size."""
    generator = torch.Generator().manual_seed(seed)
    x0 = target.sample(num_chains, generator).to(torch.float64)
    record = sample(target, kernel, x0, num_steps=num_steps, generator=generator, adapt=False, keep_samples=False)
    return record.final_state.x


# (target, kernel, transitions, chains). Step sizes: ε = 1.2 on the 2-D Gaussian (ε·ω_max = 1.7,
# acceptance statistic ≈ 0.67) so that the energy error matters; ε = 0.2 on the ring (mode
# σ = 0.2); ε = 1.0 with the metric M⁻¹ = Σ (an isotropic target then); ε = 0.1 without
# it (ε/σ_min = 1), where trees reach depth 7–10.
INVARIANCE = {
    "gaussian-2d": (correlated, NUTS(step_size=1.2), 5, 4000),
    "gaussian-2d-small-step": (correlated, NUTS(step_size=0.3), 5, 4000),
    "eight-gaussians": (ring, NUTS(step_size=0.2), 5, 4000),
    "gaussian-10d-diagonal-metric": (scaled_10d, NUTS(step_size=1.0, metric=Metric(SCALES**2)), 5, 4000),
    "gaussian-10d-no-metric": (scaled_10d, NUTS(step_size=0.1), 3, 2000),
    # without Stan's extra U-turn checks (robust_uturn=False): another stopping rule, the same target
    "gaussian-2d-whole-node-uturn": (correlated, NUTS(step_size=1.2, robust_uturn=False), 5, 4000),
    "gaussian-10d-no-metric-whole-node-uturn": (scaled_10d, NUTS(step_size=0.1, robust_uturn=False), 3, 2000),
}


@pytest.mark.parametrize("name", sorted(INVARIANCE))
def test_nuts_keeps_the_target_from_exact_draws(name):
    """Endpoints of chains started at exact draws keep the target's mean and covariance.

    Tolerance z = 4.5 SEs per entry; smallest detectable errors in the module docstring.
    Measured max |z|: 1.8, 1.6, 1.4, 2.0, 2.9, 1.3 and 3.0 (in the order of ``INVARIANCE``).
    Negative control: :func:`test_last_leaf_instead_of_multinomial_fails`.
    """
    make_target, kernel, steps, chains = INVARIANCE[name]
    target = make_target()
    x = endpoints(target, kernel, steps, seed=21, num_chains=chains)
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


def test_nuts_keeps_the_target_over_many_transitions():
    """40 transitions at ε = 1.2 from exact draws of the 2-D Gaussian (1,000 chains): still
    on target at z = 4.5 (smallest detectable error 0.14 in a mean, 20 % in a variance;
    measured max |z| = 2.0)."""
    target = correlated()
    x = endpoints(target, NUTS(step_size=1.2), 40, seed=22, num_chains=1000)
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


@pytest.mark.parametrize("name", ["gaussian-2d", "gaussian-10d-diagonal-metric"])
def test_last_leaf_instead_of_multinomial_fails(name):
    """Negative control: the same kernel, target, seed and run length, but keeping the
    trajectory's last leaf, must fail the same z = 4.5 check by a margin (|z| > 9; measured
    max |z| = 26 and 12). At small steps, where the energy error is negligible, it is not
    detectable in five transitions (|z| = 0.5 at ε = 0.3 on the 2-D Gaussian)."""
    make_target, kernel, steps, chains = INVARIANCE[name]
    target = make_target()
    broken = LastLeafNUTS(step_size=kernel.step_size, metric=kernel.metric)
    x = endpoints(target, broken, steps, seed=21, num_chains=chains)
    assert moment_z_scores(x, target.mean, target.covariance).max_abs_z > 2 * DEFAULT_Z
    with pytest.raises(AssertionError):
        assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


# --------------------------------------------------------------------------------------
# Determinism, bookkeeping, divergences, the driver, validation
# --------------------------------------------------------------------------------------


def _run(kernel, target, x0, seed, steps=3):
    state, infos, _ = run_transitions(kernel, target, x0, steps, seed)
    return state, infos


def test_same_seed_same_output_other_seed_other_output():
    target = correlated()
    x0 = target.sample(64, torch.Generator().manual_seed(41))
    kernel = NUTS(step_size=0.5)
    (a, ia), (b, ib), (c, _) = _run(kernel, target, x0, 42), _run(kernel, target, x0, 42), _run(kernel, target, x0, 43)
    assert torch.equal(a.x, b.x) and torch.equal(a.energy, b.energy) and torch.equal(a.grad, b.grad)
    for u, v in zip(ia, ib):
        for field in ("accept_prob", "accepted", "diverged", "tree_depth", "num_grad_evals", "energy_error"):
            assert torch.equal(getattr(u, field), getattr(v, field)), field
    assert not torch.equal(a.x, c.x)


class CountingEnergy:
    """A plain-callable energy (so gradients come from autograd) that counts rows evaluated."""

    def __init__(self, target):
        self.target, self.rows = target, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.target(x)


def test_one_gradient_per_leapfrog_step_and_depth_bookkeeping():
    """The energy is evaluated on exactly ``Σ num_grad_evals`` rows per transition (one
    gradient per leapfrog step of a chain still building, none at the start); each chain has
    ``2^d - 1 <= num_grad_evals <= 2^(d+1) - 1`` for its tree depth ``d``, with equality on
    the left unless its last subtree was thrown away."""
    energy = CountingEnergy(correlated())
    x0 = correlated().sample(200, torch.Generator().manual_seed(44))
    kernel = NUTS(step_size=0.9)
    state = kernel.init(energy, x0)
    generator = torch.Generator().manual_seed(45)
    for _ in range(4):
        energy.rows = 0
        state, info = kernel.step(energy, state, generator)
        assert isinstance(info, NUTSInfo)
        assert energy.rows == int(info.num_grad_evals.sum())
        low, high = 2**info.tree_depth - 1, 2 ** (info.tree_depth + 1) - 1
        assert ((info.num_grad_evals >= low) & (info.num_grad_evals <= high)).all()
        assert ((info.tree_depth >= 1) & (info.tree_depth <= kernel.max_tree_depth)).all()
        assert (info.num_grad_evals[info.diverged] > low[info.diverged]).all()
        assert len(set(info.tree_depth.tolist())) > 1  # chains stop at different depths


@pytest.mark.parametrize("max_depth", [1, 4])
def test_max_tree_depth_is_respected(max_depth):
    """At a tiny step no trajectory turns: every chain stops at ``max_tree_depth`` doublings
    with exactly ``2^max_tree_depth - 1`` leapfrog steps."""
    target = correlated()
    x0 = target.sample(50, torch.Generator().manual_seed(46))
    _, infos = _run(NUTS(step_size=1e-3, max_tree_depth=max_depth), target, x0, 47, steps=2)
    for info in infos:
        assert (info.tree_depth == max_depth).all()
        assert (info.num_grad_evals == 2**max_depth - 1).all()
        assert not info.diverged.any()


def test_divergence_flagged_when_the_energy_blows_up():
    """At ε = 5 on the 2-D Gaussian (ε·ω_max = 7.1 > 2: the leapfrog is unstable, the stiff
    mode's amplitude grows ~48-fold a step) most trajectories diverge (measured 80 %; the
    others U-turn first). Divergences are flagged, no diverged leaf is kept (a chain whose
    first leaf diverges stays put, with tree depth 0), and the states stay finite and equal
    to fresh evaluations. At ε = 0.3 nothing diverges."""
    target = correlated()
    x0 = target.sample(500, torch.Generator().manual_seed(48))
    state, infos = _run(NUTS(step_size=5.0), target, x0, 49)
    assert all(info.diverged.float().mean() > 0.5 for info in infos)
    assert all(((info.tree_depth == 0) <= info.diverged).all() for info in infos)
    assert torch.isfinite(state.x).all() and torch.isfinite(state.energy).all()
    torch.testing.assert_close(state.energy, target(state.x))
    assert all((info.energy_error <= 1000.0).all() for info in infos)
    _, calm = _run(NUTS(step_size=0.3), target, x0, 49)
    assert not any(info.diverged.any() for info in calm)


class NaNBeyond:
    """``½‖x‖²`` inside ``|x₀| < 1.5`` and NaN outside: a NaN energy must count as divergent."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        e = 0.5 * x.square().sum(1)
        return torch.where(x[:, 0].abs() < 1.5, e, torch.full_like(e, math.nan))


def test_nan_energy_is_a_divergence_and_never_kept():
    x0 = 0.3 * torch.randn(300, 2, generator=torch.Generator().manual_seed(50), dtype=torch.float64)
    state, infos = _run(NUTS(step_size=0.2), NaNBeyond(), x0, 51, steps=4)
    assert any(info.diverged.any() for info in infos)
    assert torch.isfinite(state.energy).all() and (state.x[:, 0].abs() < 1.5).all()


def test_driver_adapts_the_step_size_of_nuts():
    """``sample`` with burn-in tunes ε by dual averaging (NUTS is adaptive, target 0.8) and
    returns a NUTS kernel with the tuned step, one per chain by default (pooled on request);
    ``make_kernel("nuts")`` builds the defaults."""
    kernel = make_kernel("nuts")
    assert isinstance(kernel, NUTS) and kernel.default_target_accept == 0.8 and kernel.step_size == 0.1
    target = correlated()
    x0 = target.sample(100, torch.Generator().manual_seed(52))
    record = sample(target, kernel, x0, num_steps=5, burn_in=30, generator=torch.Generator().manual_seed(53))
    step = record.kernel.step_size
    assert isinstance(record.kernel, NUTS) and step.shape == (100,) and bool((step != 0.1).all())
    assert record.samples.shape == (5, 100, 2) and int(record.divergences.sum()) == 0
    pooled = sample(target, kernel, x0, num_steps=5, burn_in=30, generator=torch.Generator().manual_seed(53),
                    adapt_per_chain=False)
    assert isinstance(pooled.kernel.step_size, float) and pooled.kernel.step_size != 0.1


def test_validation_messages():
    for bad, match in [({"step_size": 0.0}, "step_size"), ({"max_tree_depth": 0}, "max_tree_depth"),
                       ({"max_tree_depth": 2.5}, "max_tree_depth"), ({"max_energy_error": -1.0}, "max_energy_error"),
                       ({"metric": torch.ones(2)}, "metric"), ({"step_size": torch.tensor([0.1, -0.1])}, "step_size"),
                       ({"step_size": torch.ones(2, 2)}, "step_size")]:
        with pytest.raises(ValueError, match=match):
            NUTS(**bad)
    with pytest.raises(ValueError, match="inverse_mass_matrix"):
        NUTS(metric=Metric(torch.ones(3))).init(correlated(), torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"does not fit 4 chains"):
        NUTS(step_size=torch.ones(3)).init(correlated(), torch.zeros(4, 2, dtype=torch.float64))
