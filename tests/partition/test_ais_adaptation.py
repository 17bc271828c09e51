"""AIS step sizes across temperatures: the library's dual averaging, run through the one chain loop.

* The reported step sizes are exactly the dual-averaging iterates of the reported per-temperature
  acceptances (deterministic: :class:`~ebmlab.samplers.adaptation.DualAveraging`, centred on the
  kernel's initial step, one iteration per temperature, the current iterate used next).
* On a 1-D Gaussian whose ideal MALA step is far below the initial one, the acceptance over the
  second half of the temperatures ends near MALA's target 0.574. Tolerance: 4.5 standard errors
  of that mean (from the per-temperature spread, ≈ 0.004 here) plus 0.02 for the lag of the
  adaptation behind a step size that shrinks along the path (measured ≈ 0.01); it detects an
  adaptation aimed ≥ 0.04 off target. Negative controls: without adaptation the acceptance
  ends near 0.27, and a DualAveraging aimed at 0.9 ends near 0.89 — both fail the check.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from ebmlab.energy import Gaussian
from ebmlab.partition import CategoricalBase, GaussianBase, ais
from ebmlab.partition.ais import default_kernel
from ebmlab.samplers import HMC, MALA, DualAveraging, available

PARTITION_SOURCES = sorted((Path(__file__).resolve().parents[2] / "src" / "ebmlab" / "partition").glob("*.py"))
MALA_TARGET = MALA.default_target_accept


@pytest.fixture(autouse=True)
def _float64_default(float64):
    """Every test here runs in float64 (the ``float64`` fixture of conftest.py)."""


def narrow_gaussian_ais(generator, **options):
    """N(2, 0.5²) from the base N(0, 2²): MALA starts at step 0.25·2² = 1, four times the ideal.
    The scalar step size alone is under test here, so the metric stays the identity
    (``adapt_metric=False``; the adapted metric would absorb the shrinking scale)."""
    target = Gaussian(torch.tensor([2.0]), torch.tensor([[0.25]]))
    result = ais(target, base=GaussianBase(torch.zeros(1), 2.0), num_temperatures=100, num_runs=400, kernel="mala",
                 generator=generator, adapt_metric=False, **options)
    return target, result


def ends_near(acceptance: torch.Tensor, target: float) -> bool:
    late = acceptance[len(acceptance) // 2:]
    se = float(late.std()) / math.sqrt(late.numel())
    return abs(float(late.mean()) - target) <= 4.5 * se + 0.02


def test_step_sizes_are_the_dual_averaging_iterates_of_the_acceptances(generator):
    target, result = narrow_gaussian_ais(generator)
    acceptance, steps = result.acceptance_rate.tolist(), result.step_sizes.tolist()
    assert len(acceptance) == len(steps) == 98 and steps[0] == pytest.approx(1.0)
    adaptation = DualAveraging(target_accept=MALA_TARGET)
    state = dataclasses.replace(adaptation.init(steps[0]), mu=math.log(steps[0]))
    for k in range(len(steps) - 1):
        state = adaptation.update(state, acceptance[k])
        assert steps[k + 1] == pytest.approx(state.step_size, rel=1e-12), k  # the current iterate, not ε̄
    assert abs(result.log_z - target.log_z) <= 3 * result.log_z_stderr


def test_acceptance_ends_near_the_kernel_target(generator):
    _, result = narrow_gaussian_ais(generator)
    assert ends_near(result.acceptance_rate, MALA_TARGET), result.acceptance_rate[49:].mean()
    assert result.step_sizes[-1] < 0.6  # shrunk from 1.0


def test_negative_controls_no_adaptation_and_another_target_miss_it(generator):
    _, fixed = narrow_gaussian_ais(generator, adapt=False)
    assert torch.all(fixed.step_sizes == 1.0)
    assert not ends_near(fixed.acceptance_rate, MALA_TARGET), fixed.acceptance_rate[49:].mean()
    _, high = narrow_gaussian_ais(generator, adapt=DualAveraging(target_accept=0.9))
    assert not ends_near(high.acceptance_rate, MALA_TARGET) and ends_near(high.acceptance_rate, 0.9)


def test_reverse_runs_reuse_the_forward_step_sizes(generator):
    target = Gaussian(torch.tensor([2.0]), torch.tensor([[0.25]]))
    result = ais(target, base=GaussianBase(torch.zeros(1), 2.0), num_temperatures=30, num_runs=100,
                 kernel=HMC(step_size=0.5, num_leapfrog=3), generator=generator,
                 reverse_samples=target.sample(100, generator))
    assert result.reverse_log_weights.shape == (100,) and result.log_z_upper is not None
    assert len(set(result.step_sizes.tolist())) > 1  # adapted, then replayed backwards without adapting


def test_bad_adapt_is_refused():
    target = Gaussian(torch.tensor([2.0]), torch.tensor([[0.25]]))
    with pytest.raises(ValueError, match="adapt must be True, False or a DualAveraging"):
        ais(target, base=GaussianBase(torch.zeros(1), 2.0), num_temperatures=3, adapt="yes")


@pytest.mark.parametrize("name", available())
def test_default_kernel_passes_only_options_the_kernel_accepts(name):
    """The sampler registry refuses unknown options; every registered kernel builds for both bases."""
    gaussian = default_kernel(name, GaussianBase(torch.zeros(2), torch.tensor([2.0, 2.0])))
    categorical = default_kernel(name, CategoricalBase(torch.ones(3, 3)))
    assert gaussian.name == categorical.name == name
    if "num_states" in getattr(type(categorical), "__dataclass_fields__", {}):
        assert categorical.num_states == 3
    if name == "mala":
        assert gaussian.step_size == pytest.approx(0.25 * 2.0**2)
    if name == "hmc":
        assert gaussian.step_size == pytest.approx(0.6) and gaussian.num_leapfrog == 5


def test_unknown_kernel_name_is_refused():
    with pytest.raises(ValueError, match="mala"):  # the registry lists the known names
        default_kernel("no-such-sampler", GaussianBase(torch.zeros(2), 1.0))


@pytest.mark.parametrize("path", PARTITION_SOURCES, ids=lambda p: p.name)
def test_partition_runs_chains_only_through_run_kernel(path):
    """No private transition loop: kernels step only inside ``ebmlab.samplers.driver.run_kernel``."""
    assert ".step(" not in path.read_text(), path.name

