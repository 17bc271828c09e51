"""NUTS with one step size per chain: adaptation, invariance, determinism.

Per-chain adaptation: on :class:`TwoWidths` (per coordinate, a narrow mode σ = 0.05 and a wide
one σ = 1, so far apart that no chain changes mode) 16 of 128 chains start in the narrow mode.
``sample(..., adapt_per_chain=True)`` runs Stan's dual averaging on each chain's own acceptance
statistic; afterwards, at the tuned ε, every chain's mean acceptance statistic over the kept
draws is near the target 0.8. Negative control: one pooled step size, tuned on the chains'
mean, fits the wide mode and leaves the narrow-mode chains diverging at (almost) every
transition while the pooled mean still reads near the target.

Invariance with a ``(C,)`` step size: 4,000 chains started at exact draws of the correlated
2-D Gaussian, each with its own ε (log-spaced 0.3 … 1.5), keep the mean and covariance within
z = 4.5 Monte-Carlo SEs after five transitions (smallest detectable error 0.07 in a mean,
10 % in a variance; false-alarm rate 6.8e-6 per entry). Negative control: the same steps with
the last leaf kept instead of the multinomial draw fail the check.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import Gaussian
from ebmlab.samplers import sample
from ebmlab.samplers.nuts import NUTS
from ebmlab.testing import DEFAULT_Z, assert_moments_close, moment_z_scores


class TwoWidths(torch.nn.Module):
    """``E(x) = -log(½ N(x; -5, 0.05²) + ½ N(x; 5, 1))`` per coordinate, 2-D."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        narrow = -0.5 * ((x + 5.0) / 0.05).square() - math.log(0.05)
        wide = -0.5 * (x - 5.0).square()
        return -torch.logaddexp(narrow, wide).sum(-1)


NARROW = 16


def two_width_run(per_chain: bool):
    """150 burn-in transitions tuning ε (per chain or pooled), then 100 kept at the tuned ε."""
    generator = torch.Generator().manual_seed(91)
    x0 = torch.cat([-5.0 + 0.05 * torch.randn(NARROW, 2, generator=generator, dtype=torch.float64),
                    5.0 + torch.randn(128 - NARROW, 2, generator=generator, dtype=torch.float64)])
    return sample(TwoWidths(), NUTS(step_size=0.1), x0, num_steps=100, burn_in=150, generator=generator,
                  adapt_per_chain=per_chain)


def correlated() -> Gaussian:
    return Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).double()


STEPS = torch.logspace(math.log10(0.3), math.log10(1.5), 4000, dtype=torch.float64)


class LastLeafNUTS(NUTS):
    _take_last = True


def endpoints(kernel: NUTS, seed: int = 95) -> torch.Tensor:
    target = correlated()
    generator = torch.Generator().manual_seed(seed)
    x0 = target.sample(STEPS.shape[0], generator).to(torch.float64)
    return sample(target, kernel, x0, num_steps=5, generator=generator, adapt=False, keep_samples=False).final_state.x


def test_per_chain_adaptation_tunes_every_chain():
    """Every chain's mean acceptance statistic over 100 draws at its tuned ε is in [0.6, 0.97]
    (target 0.8; measured 0.84–0.92 — dual averaging keeps the averaged ε̄, which accepts a
    little more than its iterates; a chain's mean of 100 statistics in [0, 1] has an SE below
    0.05, so the bounds are ≥ 4 SEs from the measured range), and the narrow-mode chains get
    steps ≈ 20× smaller. Negative control: the pooled ε (0.88) leaves every narrow-mode chain
    accepting < 0.05 (measured < 1e-21: each transition diverges at its first leaf) while the
    pooled mean still reads 0.8 ± 0.1."""
    record = two_width_run(per_chain=True)
    steps, accept = record.kernel.step_size, record.stats["accept_prob"].mean(0)
    assert isinstance(steps, torch.Tensor) and steps.shape == (128,)
    assert 0.6 <= float(accept.min()) and float(accept.max()) <= 0.97, (accept.min(), accept.max())
    assert float(steps[NARROW:].median() / steps[:NARROW].median()) > 10
    pooled = two_width_run(per_chain=False)
    pooled_accept = pooled.stats["accept_prob"].mean(0)
    assert float(pooled_accept[:NARROW].max()) < 0.05 and abs(float(pooled_accept.mean()) - 0.8) < 0.1


def test_per_chain_steps_keep_the_target_from_exact_draws():
    """z = 4.5 on the endpoints' mean and covariance (measured max |z| = 1.4)."""
    target = correlated()
    assert_moments_close(endpoints(NUTS(step_size=STEPS)), target.mean, target.covariance, z=DEFAULT_Z)


def test_per_chain_steps_with_the_last_leaf_fail():
    """Negative control: keeping the last leaf fails the same check (measured max |z| = 8.0)."""
    target = correlated()
    x = endpoints(LastLeafNUTS(step_size=STEPS))
    assert moment_z_scores(x, target.mean, target.covariance).max_abs_z > 1.5 * DEFAULT_Z


def test_per_chain_steps_are_deterministic_given_the_generator():
    """Same seed, same draws and statistics; another seed, other draws."""
    target = correlated()
    kernel = NUTS(step_size=STEPS[::100].clone())  # 40 chains

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        state = kernel.init(target, target.sample(40, torch.Generator().manual_seed(96)).double())
        infos = []
        for _ in range(3):
            state, info = kernel.step(target, state, generator)
            infos.append(info)
        return state, infos

    (a, ia), (b, ib), (c, _) = run(97), run(97), run(98)
    assert torch.equal(a.x, b.x) and torch.equal(a.energy, b.energy) and torch.equal(a.grad, b.grad)
    for u, v in zip(ia, ib):
        for field in ("accept_prob", "tree_depth", "num_grad_evals", "energy_error", "diverged"):
            assert torch.equal(getattr(u, field), getattr(v, field)), field
    assert not torch.equal(a.x, c.x)


def test_window_adaptation_tunes_one_step_per_chain():
    """``adapt="window", adapt_per_chain=True``: a (C,) step size, a pooled diagonal metric
    within 30 % of the true variances (1 and 1 here: 32 chains × a 75-step slow window), and
    the step-size search and dual averaging per chain."""
    target = correlated()
    generator = torch.Generator().manual_seed(99)
    record = sample(target, NUTS(), target.sample(32, generator).double(), num_steps=0, burn_in=200,
                    generator=generator, adapt="window", adapt_per_chain=True)
    steps, metric = record.kernel.step_size, record.kernel.metric.inverse_mass_matrix
    assert steps.shape == (32,) and bool((steps > 0).all()) and float(steps.std()) > 0
    assert torch.allclose(metric, torch.ones(2, dtype=torch.float64), rtol=0.3), metric


@pytest.mark.parametrize("bad", [torch.tensor([0.1, float("nan")]), torch.zeros(2)])
def test_bad_per_chain_steps_are_refused(bad):
    with pytest.raises(ValueError, match="NUTS: step_size must be finite and > 0 for every chain"):
        NUTS(step_size=bad)
