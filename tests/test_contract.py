"""One contract every registered sampler keeps, parametrised over the registry.

For each name in :func:`ebmlab.samplers.available` (so a newly registered sampler is
covered automatically): a frozen kernel built by ``make_kernel(name)`` with its defaults;
``init`` caches ``E(x)`` (and ``∇E(x)`` iff the kernel uses gradients); ``step`` returns a
:class:`ChainState` and a :class:`StepInfo` with the documented shapes and dtypes, finite
values, the input left untouched and the step counter advanced; runs are deterministic
under a seed; and the run driver returns a :class:`ChainRecord` of the documented shapes.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ebmlab.energy import BernoulliRBM, Gaussian
from ebmlab.energy.base import value_and_grad
from ebmlab.samplers import ChainRecord, ChainState, StepInfo, available, get_kernel_class, make_kernel, sample

NAMES = available()
NUM_CHAINS = 7


def target_for(kernel, dtype: torch.dtype):
    """A target matching the kernel's support, and ``NUM_CHAINS`` starting states of it.

    Real kernels run on a correlated 2-D Gaussian. Discrete kernels run on a binary RBM with
    3×3 visible units: it offers every capability a binary kernel may use (energy, gradient,
    single-flip energy changes, and the conditional layers block Gibbs needs).
    """
    generator = torch.Generator().manual_seed(51)
    if kernel.support == "discrete":
        energy = BernoulliRBM(9, 4, event_shape=(3, 3), weight_scale=0.5, generator=generator).to(dtype)
        x0 = torch.randint(0, 2, (NUM_CHAINS, 3, 3), generator=generator).to(dtype)
    else:
        energy = Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).to(dtype)
        x0 = energy.sample(NUM_CHAINS, generator).to(dtype)
    return energy, x0


def test_registry_is_not_empty_and_names_round_trip():
    """The six core samplers are registered under their own names; unknown names are refused."""
    assert {"rwmh", "ula", "mala", "hmc", "metropolis", "gibbs"} <= set(NAMES)
    for name in NAMES:
        assert get_kernel_class(name).name == name
    with pytest.raises(ValueError, match="unknown sampler"):
        make_kernel("no-such-sampler")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_kernel_contract(name, dtype):
    """Frozen kernel; ``init`` caches E (and ∇E iff ``uses_grad``); three steps keep shapes,
    dtypes, finiteness and the input; the cached energy equals a fresh evaluation to 1e-4
    (float32 rounding of incrementally updated energies, ~1e-6 here)."""
    kernel = make_kernel(name)
    assert dataclasses.is_dataclass(kernel)
    with pytest.raises(dataclasses.FrozenInstanceError):
        kernel.step_size = 1.0  # frozen: no attribute can be set

    energy, x0 = target_for(kernel, dtype)
    x_before = x0.clone()
    state = kernel.init(energy, x0)
    assert isinstance(state, ChainState) and state.step == 0 and state.num_chains == NUM_CHAINS
    assert state.x.shape == x0.shape and state.x.dtype == dtype
    assert state.energy.shape == (NUM_CHAINS,) and state.energy.dtype == dtype
    assert torch.allclose(state.energy, energy(x0))
    if kernel.uses_grad:
        assert state.grad is not None and state.grad.shape == x0.shape and state.grad.dtype == dtype
        assert torch.allclose(state.grad, value_and_grad(energy, x0)[1])
    else:
        assert state.grad is None

    generator = torch.Generator().manual_seed(52)
    for t in range(1, 4):
        state, info = kernel.step(energy, state, generator)
        assert isinstance(state, ChainState) and isinstance(info, StepInfo)
        assert state.step == t
        assert state.x.shape == x0.shape and state.x.dtype == dtype and torch.isfinite(state.x).all()
        assert state.energy.shape == (NUM_CHAINS,) and state.energy.dtype == dtype
        assert torch.isfinite(state.energy).all()
        assert not state.x.requires_grad and not state.energy.requires_grad
        assert torch.allclose(state.energy, energy(state.x), rtol=1e-4, atol=1e-4)
        if kernel.uses_grad:
            assert state.grad.shape == x0.shape and torch.isfinite(state.grad).all()
        for field in ("accept_prob", "accepted", "diverged"):
            assert getattr(info, field).shape == (NUM_CHAINS,), field
        assert info.accepted.dtype == torch.bool and info.diverged.dtype == torch.bool
        assert ((info.accept_prob >= 0) & (info.accept_prob <= 1)).all()
        assert not info.diverged.any()
        if kernel.support == "discrete":
            assert ((state.x == 0) | (state.x == 1)).all()
    assert torch.equal(x0, x_before), "the kernel modified its input in place"


@pytest.mark.parametrize("name", NAMES)
def test_kernel_is_deterministic_under_a_seed(name):
    """Five steps from the same state with equally seeded generators agree bit for bit."""
    kernel = make_kernel(name)
    energy, x0 = target_for(kernel, torch.float64)

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        state = kernel.init(energy, x0)
        for _ in range(5):
            state, info = kernel.step(energy, state, generator)
        return state, info

    (a, info_a), (b, info_b) = run(53), run(53)
    assert torch.equal(a.x, b.x) and torch.equal(a.energy, b.energy)
    assert torch.equal(info_a.accept_prob, info_b.accept_prob) and torch.equal(info_a.accepted, info_b.accepted)


@pytest.mark.parametrize("name", NAMES)
def test_driver_contract(name):
    """``sample`` returns a ChainRecord of ``(num_steps // thin, C, *event)`` draws, finite
    energies, ``(C,)`` rates in [0, 1] and no divergences on a benign target."""
    kernel = make_kernel(name)
    energy, x0 = target_for(kernel, torch.float64)
    generator = torch.Generator().manual_seed(54)
    record = sample(energy, kernel, x0, num_steps=6, burn_in=4, thin=2, generator=generator)
    assert isinstance(record, ChainRecord)
    assert record.samples.shape == (3, *x0.shape) and record.samples.dtype == torch.float64
    assert record.energy.shape == (3, NUM_CHAINS) and torch.isfinite(record.energy).all()
    assert record.acceptance_rate.shape == (NUM_CHAINS,) and record.divergences.shape == (NUM_CHAINS,)
    assert ((record.acceptance_rate >= 0) & (record.acceptance_rate <= 1)).all()
    assert int(record.divergences.sum()) == 0
    assert record.final_state.step == 10 and type(record.kernel) is type(kernel)
    assert record.wall_time >= 0
