"""Window adaptation with one diagonal metric per chain (``metric="diag_per_chain"``).

Each chain's ``M⁻¹`` is the regularised variance of its own slow-window draws (n = T steps):
``(T/(T+5)) Var̂ + 1e-3·5/(T+5)``, as Stan and BlackJAX estimate it for one chain.

Learning each group's variances: :class:`TwoModes` has a mode at (-10, -10) with scales
(0.2, 1) and one at (10, 10) with scales (1, 0.2), too far apart for a chain to change mode;
32 chains start at exact draws of each. After a 250-step warm-up (HMC with 5 leapfrog steps: the
estimate does not depend on the kernel, and HMC is quick; last slow window T = 100), the mean over a group of its chains'
final estimates must equal the regularised variance of that group's mode within z = 4.5 SEs,
the SE measured as the sd over the group's chains / √32 (chains are independent, so this
includes the autocorrelation within a chain; the sample variance of T correlated draws is
biased low by O(τ/T), well under the SE here). Negative control: the pooled metric
(``"diag"``) gives both groups the same variances and fails the same check by far (smallest
detectable error: 4.5 SE ≈ 10 % of a variance).

Invariance: 2,000 chains started at exact draws of a Gaussian with scales (0.3, 2), a short
per-chain warm-up (so every chain has its own noisy metric, from 30 of its draws), then ten
transitions at 1.5 times each chain's adapted step (so that the energy error matters): the
endpoints' mean and covariance within z = 4.5 SEs (smallest detectable error 0.1 σ in a mean,
14 % in a variance). Negative control: the same kernel keeping the last leaf instead of the
multinomial draw fails (at the adapted steps themselves its bias is below what 2,000 chains
detect: |z| = 2.4).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from ebmlab.energy import Gaussian
from ebmlab.samplers.hmc import HMC
from ebmlab.samplers.nuts import NUTS
from ebmlab.samplers.window_adaptation import window_adaptation
from ebmlab.testing import DEFAULT_Z, assert_moments_close, moment_z_scores

SCALES_A = torch.tensor([0.2, 1.0], dtype=torch.float64)
SCALES_B = torch.tensor([1.0, 0.2], dtype=torch.float64)
GROUP = 32


class TwoModes(torch.nn.Module):
    """``E(x) = -log(½ N(x; -10·1, diag(SCALES_A²)) + ½ N(x; 10·1, diag(SCALES_B²)))``, 2-D."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = -0.5 * ((x + 10.0) / SCALES_A).square().sum(-1) - SCALES_A.log().sum()
        b = -0.5 * ((x - 10.0) / SCALES_B).square().sum(-1) - SCALES_B.log().sum()
        return -torch.logaddexp(a, b)


@functools.lru_cache(maxsize=None)
def two_mode_metrics(metric: str) -> tuple[torch.Tensor, int]:
    """The last slow window's metric, ``(2·GROUP, 2)``, and that window's length T."""
    generator = torch.Generator().manual_seed(41)
    z = torch.randn(2 * GROUP, 2, generator=generator, dtype=torch.float64)
    x0 = torch.cat([-10.0 + SCALES_A * z[:GROUP], 10.0 + SCALES_B * z[GROUP:]])
    _, _, info = window_adaptation(HMC(num_leapfrog=5), TwoModes(), x0, 250, generator, metric=metric, per_chain=True)
    inv = info.inverse_mass_matrices[-1]
    return inv.expand(2 * GROUP, 2), info.schedule[1][-1]


def group_z(inv: torch.Tensor, t: int) -> float:
    """The largest |z| of a group mean of the estimates against its regularised variance."""
    worst = 0.0
    for rows, scales in ((slice(0, GROUP), SCALES_A), (slice(GROUP, None), SCALES_B)):
        expected = (t / (t + 5.0)) * scales.square() + 1e-3 * 5.0 / (t + 5.0)
        est = inv[rows]
        se = est.std(0) / math.sqrt(est.shape[0])
        worst = max(worst, float(((est.mean(0) - expected) / se).abs().max()))
    return worst


def test_per_chain_metrics_learn_each_groups_variances():
    """Measured max |z| = 1.7; bound z = 4.5."""
    inv, t = two_mode_metrics("diag_per_chain")
    assert inv.shape == (2 * GROUP, 2) and t >= 100
    assert group_z(inv, t) <= DEFAULT_Z


def test_a_pooled_metric_does_not_learn_each_groups_variances():
    """Negative control: one metric for both groups (≈ 100: the spread between the modes)
    misses each group's variances by far (measured |z| > 2,000)."""
    inv, t = two_mode_metrics("diag")
    # a pooled estimate has no spread over chains: measure it against the per-chain run's SE
    per_chain, _ = two_mode_metrics("diag_per_chain")
    for rows, scales in ((slice(0, GROUP), SCALES_A), (slice(GROUP, None), SCALES_B)):
        expected = (t / (t + 5.0)) * scales.square()
        se = per_chain[rows].std(0) / math.sqrt(GROUP)
        assert float(((inv[rows].mean(0) - expected) / se).abs().max()) > 3 * DEFAULT_Z


STEPS = 10
STEP_FACTOR = 1.5


class LastLeafNUTS(NUTS):
    _take_last = True


def target_with_scales() -> Gaussian:
    return Gaussian(torch.zeros(2), torch.diag(torch.tensor([0.3, 2.0]) ** 2)).double()


@functools.lru_cache(maxsize=None)
def adapted() -> tuple[NUTS, torch.Tensor, torch.Generator]:
    target = target_with_scales()
    generator = torch.Generator().manual_seed(43)
    x0 = target.sample(2000, generator).double()
    kernel, _, _ = window_adaptation(NUTS(), target, x0, 40, generator, metric="diag_per_chain", per_chain=True)
    return kernel, x0, generator.get_state()


def invariance_endpoints(take_last: bool) -> torch.Tensor:
    target = target_with_scales()
    kernel, x0, rng = adapted()
    generator = torch.Generator()
    generator.set_state(rng)
    assert kernel.metric.per_chain and kernel.metric.inverse_mass_matrix.shape == (2000, 2)
    # 1.5x the adapted steps (median ε 1.75 on the whitened target): the energy error then
    # matters, which is what the multinomial draw corrects and the last leaf does not
    kernel = (LastLeafNUTS if take_last else NUTS)(step_size=STEP_FACTOR * kernel.step_size, metric=kernel.metric)
    state = kernel.init(target, x0)  # restart at the exact draws: the metric is what is tested
    for _ in range(STEPS):
        state, _ = kernel.step(target, state, generator)
    return state.x, target


def test_per_chain_metrics_keep_the_target_from_exact_draws():
    """Measured max |z| = 1.3; bound 4.5."""
    x, target = invariance_endpoints(take_last=False)
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


def test_per_chain_metrics_with_the_last_leaf_fail():
    """Negative control, measured max |z| = 10.8; it must fail by a margin (|z| > 2 × 4.5)."""
    x, target = invariance_endpoints(take_last=True)
    assert moment_z_scores(x, target.mean, target.covariance).max_abs_z > 2 * DEFAULT_Z


def test_per_chain_metric_needs_a_known_name():
    with pytest.raises(ValueError, match="window_adaptation: metric must be 'diag', 'dense', 'diag_per_chain'"):
        window_adaptation(NUTS(), TwoModes(), torch.zeros(4, 2, dtype=torch.float64), 100, None, metric="chain")


def test_per_chain_metrics_restart_every_chain_from_its_own_step():
    """After an update of per-chain metrics each chain's dual averaging starts from its own ε̄
    (``rescaled_step_size`` with ``per_chain_metric``); with a pooled metric all chains move
    by one common factor, so their ratios are kept. Deterministic."""
    from ebmlab.samplers.window_adaptation import rescaled_step_size

    target = target_with_scales()
    generator = torch.Generator().manual_seed(5)
    x0 = target.sample(8, generator).double()
    steps = torch.linspace(0.05, 0.8, 8, dtype=torch.float64)
    kernel = NUTS(step_size=steps)
    state = kernel.init(target, x0)
    kept = rescaled_step_size(kernel, target, state, generator, 0.8, True, per_chain_metric=True)
    assert torch.equal(kept, steps)
    common = rescaled_step_size(kernel, target, state, generator, 0.8, True, per_chain_metric=False)
    ratio = common / steps
    assert torch.allclose(ratio, ratio[0].expand(8)) and not torch.allclose(common, steps)
