"""Window adaptation (Stan's warm-up), per-chain step sizes, and continuing from a record.

The variance check: a 10-D Gaussian with scales σ_i = 0.1 ... 10 (log-spaced), chains started
at N(0, I) — too narrow in the wide directions, too wide in the narrow ones. The metric learned
from the last slow window (steps 451–950 of a 1000-step warm-up) must equal the true variances
within z = 4.5 Monte-Carlo SEs. The SE is measured, not assumed: the window's estimate is the
pooled mean of ``(x - m)²`` over C chains × T steps, and since chains are independent, its SE
is ``sd over chains of each chain's window mean of (x - m)²`` / √C, which accounts for the
autocorrelation within a chain. (The bound SE ≤ σ²√(2/C) — each chain's mean over its window
varies no more than one draw — would be 6.3 % of σ² here; the measured SEs are far smaller.)
Negative controls: the identity metric, and the metric a too-short (100-step) warm-up learns,
fail the same check.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import Gaussian
from ebmlab.samplers import HMC, MALA, DualAveraging, RandomWalkMetropolis, sample
from ebmlab.samplers.window_adaptation import window_adaptation, window_schedule
from ebmlab.testing import DEFAULT_Z

SCALES = torch.logspace(-1, 1, 10, dtype=torch.float64)
CHAINS = 500


def scaled_gaussian() -> Gaussian:
    return Gaussian(torch.zeros(10), torch.diag(SCALES**2)).double()


@pytest.mark.parametrize("num_steps, expected", [
    (1000, (75, [25, 50, 100, 200, 500], 50)),  # Stan's default warm-up
    (200, (75, [25, 50], 50)),
    (150, (75, [25], 50)),
    (100, (15, [75], 10)),  # shorter than 75 + 25 + 50: 15 % / 75 % / 10 %
    (10, (10, [], 0)),  # under 20 steps: step size only
])
def test_window_schedule_is_stans(num_steps, expected):
    """The windows match Stan's rule (doubling slow windows, the last stretched) and sum to the warm-up."""
    schedule = window_schedule(num_steps)
    assert schedule == expected and schedule[0] + sum(schedule[1]) + schedule[2] == num_steps


def learn_metric(num_steps: int, kernel, metric: str = "diag", seed: int = 71):
    """Run the warm-up from N(0, I) starts; return ``(kernel, info, learned variances, their SEs)``,
    the SEs from each chain's mean of ``(x - m)²`` over the last slow window."""
    target = scaled_gaussian()
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randn(CHAINS, 10, generator=generator, dtype=torch.float64)
    init, slow, _ = window_schedule(num_steps)
    first, last = init + sum(slow[:-1]) + 1, init + sum(slow)
    kept = []
    kernel, _, info = window_adaptation(kernel, target, x0, num_steps, generator, metric=metric,
                                        callback=lambda t, s, i: kept.append(s.x) if first <= t <= last else None)
    inv = kernel.metric.inverse_mass_matrix
    learned = inv if inv.dim() == 1 else inv.diagonal()
    window = torch.stack(kept)  # (T, C, D)
    squares = (window - window.mean((0, 1))).square().mean(0)  # (C, D): each chain's window mean
    se = squares.std(0) / math.sqrt(CHAINS)
    return kernel, info, learned, se


@pytest.mark.parametrize("kernel, metric", [(HMC(step_size=0.1, num_leapfrog=10), "diag"),
                                            (HMC(step_size=0.1, num_leapfrog=10), "dense"),
                                            (MALA(step_size=0.01), "diag")], ids=["hmc-diag", "hmc-dense", "mala-diag"])
def test_window_adaptation_learns_the_variances(kernel, metric):
    """The learned metric's diagonal equals σ_i² (0.01 ... 100) within 4.5 measured SEs
    (module docstring; measured SE ≈ 0.45–0.65 % of σ², so the smallest detectable error is
    ≈ 2–3 %; measured max |z| 3.2 hmc-diag, 3.4 hmc-dense, 2.2 mala-diag), and
    the tuned step accepts near the target over the terminal window."""
    kernel, info, learned, se = learn_metric(1000, kernel, metric)
    z = (learned - SCALES**2) / se
    assert z.abs().max() <= DEFAULT_Z, f"ratios {(learned / SCALES**2).tolist()}, z {z.tolist()}"
    assert info.num_draws[-1] == 500 * CHAINS
    assert abs(info.accept_prob[-1] - kernel.default_target_accept) < 0.05


def test_short_warm_up_and_identity_metric_fail_the_variance_check():
    """Negative controls: a 100-step warm-up (one 75-step slow window starting at step 16) has
    not spread the chains along the wide directions (measured: σ² = 100 learned as 55, |z| = 17.5), and
    the identity metric is off by a factor up to 100; both fail the z = 4.5 check."""
    _, _, learned, se = learn_metric(100, HMC(step_size=0.1, num_leapfrog=10))
    assert ((learned - SCALES**2) / se).abs().max() > DEFAULT_Z
    assert ((torch.ones(10, dtype=torch.float64) - SCALES**2) / se).abs().max() > DEFAULT_Z


def test_sample_with_window_adaptation_keeps_the_learned_kernel():
    """``sample(adapt="window")`` returns the adapted kernel (metric and step) and the info."""
    target = scaled_gaussian()
    generator = torch.Generator().manual_seed(72)
    x0 = target.sample(200, generator).to(torch.float64)
    record = sample(target, HMC(step_size=0.1, num_leapfrog=5), x0, num_steps=20, burn_in=200, generator=generator,
                    adapt="window", metric="dense")
    assert record.kernel.metric is not None and record.kernel.metric.is_dense
    assert record.adaptation.schedule == (75, [25, 50], 50) and len(record.adaptation.inverse_mass_matrices) == 2
    assert record.samples.shape == (20, 200, 10)
    with pytest.raises(ValueError, match="metric"):
        sample(target, HMC(), x0, num_steps=1, burn_in=5, metric="dense")  # a metric without adapt="window"
    with pytest.raises(ValueError, match="no step size and metric"):
        sample(target, RandomWalkMetropolis(0.5), x0, num_steps=1, burn_in=30, adapt="window")


# --------------------------------------------------------------------------------------
# Per-chain adaptation
# --------------------------------------------------------------------------------------


class TwoWidths(torch.nn.Module):
    """``E(x) = -log(½ N(x; -5, 0.05²) + ½ N(x; 5, 1))`` per coordinate, 2-D: one narrow and one
    wide mode per coordinate, separated so far that no chain changes mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        narrow = -0.5 * ((x + 5.0) / 0.05).square() - math.log(0.05)
        wide = -0.5 * (x - 5.0).square()
        return -torch.logaddexp(narrow, wide).sum(-1)


def two_width_rates(per_chain: bool) -> torch.Tensor:
    """Each chain's acceptance rate after a 300-step MALA burn-in: 16 chains start in the narrow
    mode of both coordinates, 112 in the wide one."""
    generator = torch.Generator().manual_seed(73)
    x0 = torch.cat([-5.0 + 0.05 * torch.randn(16, 2, generator=generator, dtype=torch.float64),
                    5.0 + torch.randn(112, 2, generator=generator, dtype=torch.float64)])
    record = sample(TwoWidths(), MALA(step_size=0.1), x0, num_steps=200, burn_in=300, generator=generator,
                    adapt_per_chain=per_chain)
    return record.acceptance_rate, record.step_size


def test_per_chain_adaptation_tunes_every_chain():
    """With ``adapt_per_chain=True`` every chain's acceptance rate over 200 steps is at least 0.3
    (the target is 0.574; a rate of n/200 from a true 0.574 falls below 0.3 with probability
    < 1e-12 even at an integrated autocorrelation of 5) and the narrow-mode chains get steps
    ≈ 400× smaller. Negative control: the pooled step, tuned to the wide mode, leaves the 16
    narrow-mode chains accepting (almost) nothing while the mean still reads near the target."""
    rates, steps = two_width_rates(per_chain=True)
    assert steps.shape == (128,) and rates.min() >= 0.3, rates.min()
    assert float(steps[16:].median() / steps[:16].median()) > 100
    pooled, _ = two_width_rates(per_chain=False)
    assert pooled[:16].max() < 0.05 and abs(float(pooled.mean()) - 0.574) < 0.15


def test_dual_averaging_on_tensors_equals_one_per_chain():
    """The vectorised (C,) dual averaging equals C scalar ones, to float64 rounding."""
    adaptation = DualAveraging(target_accept=0.6)
    start = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    vector = adaptation.init(start)
    scalars = [adaptation.init(float(s)) for s in start]
    for t in range(50):
        accept = torch.exp(-vector.step_size) * (1 + 0.1 * math.sin(t))
        vector = adaptation.update(vector, accept)
        scalars = [adaptation.update(s, math.exp(-s.step_size) * (1 + 0.1 * math.sin(t))) for s in scalars]
    assert torch.allclose(vector.final_step_size, torch.tensor([s.final_step_size for s in scalars],
                                                               dtype=torch.float64), rtol=1e-12)


# --------------------------------------------------------------------------------------
# Continuing from a record
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("adapt, per_chain", [(True, False), (True, True), ("window", False)],
                         ids=["step-size", "per-chain", "window"])
def test_burn_in_then_sampling_equals_one_call(adapt, per_chain):
    """``sample(..., burn_in=B, num_steps=N)`` equals ``sample(..., burn_in=B, num_steps=0)``
    followed by ``sample(energy, record.kernel, record, num_steps=N)`` with the same
    generator, bit for bit (draws, energies, final state, tuned step, rates)."""
    target = scaled_gaussian()
    kernel = HMC(step_size=0.1, num_leapfrog=5)
    options = dict(adapt=adapt, adapt_per_chain=per_chain)

    generator = torch.Generator().manual_seed(74)
    x0 = target.sample(32, generator).to(torch.float64)
    one = sample(target, kernel, x0, num_steps=15, burn_in=40, generator=generator, **options)

    generator = torch.Generator().manual_seed(74)
    x0 = target.sample(32, generator).to(torch.float64)
    warm = sample(target, kernel, x0, num_steps=0, burn_in=40, generator=generator, **options)
    steps = []
    two = sample(target, warm.kernel, warm, num_steps=15, generator=generator,
                 callback=lambda t, s, i: steps.append(t))
    assert torch.equal(one.samples, two.samples) and torch.equal(one.energy, two.energy)
    assert torch.equal(one.final_state.x, two.final_state.x) and one.final_state.step == two.final_state.step
    assert torch.equal(torch.as_tensor(one.step_size), torch.as_tensor(two.step_size))
    assert torch.equal(one.acceptance_rate, two.acceptance_rate)
    assert steps == list(range(41, 56))  # the step count continues
