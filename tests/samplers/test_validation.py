"""Input validation at the sampler boundary, and K taken from a categorical energy.

Misuse tests: every wrong input to :func:`ebmlab.samplers.sample` / ``kernel.init`` /
:func:`ebmlab.samplers.make_kernel` raises the documented exception once, before any step,
with a message naming the kernel, the energy's class and the value received; each has a
positive twin (the corrected call passes) so a check that refused everything would fail.

Statistical test: a user-defined ``nn.Module`` energy declaring ``support = "categorical"``,
``num_states = 3`` on 4 sites with random pairwise couplings (81 states, enumerated exactly).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import ebmlab.samplers.base as sampler_base
from ebmlab.energy import Gaussian, Ising, Potts, enumerate_states
from ebmlab.energy.base import Support, support_of
from ebmlab.samplers import (
    MALA, ChainState, Gibbs, GibbsWithGradients, SingleSiteMetropolis, available, get_kernel_class, kernel_options,
    make_kernel, sample,
)
from ebmlab.samplers.base import KERNELS_FOR
from ebmlab.samplers.driver import run_kernel

P_VALUE = 1e-5
SITES, K = 4, 3
CHAINS = 20000
STEPS = 8 * SITES  # 8 sweeps of single-site updates


def gaussian() -> Gaussian:
    return Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).double()


# --------------------------------------------------------------------------------------
# Support: one description for energies and kernels
# --------------------------------------------------------------------------------------


class Declares(nn.Module):
    def __init__(self, **attrs):
        super().__init__()
        for key, value in attrs.items():
            setattr(self, key, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1)


def test_support_of_reads_the_energy():
    """Default real; binary has K = 2; categorical reads num_states; bad kinds and K are refused."""
    assert support_of(Declares()) == Support("real", None)
    assert support_of(Ising(3)) == Support("binary", 2)
    assert support_of(Potts(2, num_states=4)) == Support("categorical", 4)
    assert support_of(Declares(support="categorical", num_states=3)).num_states == 3
    with pytest.raises(ValueError, match=r"Declares: support must be one of .*got 'complex'"):
        support_of(Declares(support="complex"))
    with pytest.raises(ValueError, match=r"Declares: a categorical energy needs an integer num_states >= 2, got 1"):
        support_of(Declares(support="categorical", num_states=1))
    with pytest.raises(ValueError, match=r"num_states >= 2, got 2.5"):
        support_of(Declares(support="categorical", num_states=2.5))
    with pytest.raises(ValueError, match="kind must be one of"):
        Support("discrete", 2)


def test_kernels_declare_the_kinds_they_sample():
    """``supports`` per kernel; the old ``support`` summary is derived from it, on the class and
    on instances, and cannot be set on a (frozen) instance."""
    expected = {"rwmh": ("real",), "ula": ("real",), "mala": ("real",), "hmc": ("real",),
                "gibbs": ("binary", "categorical"), "metropolis": ("binary", "categorical"), "gwg": ("binary", "categorical")}
    for name, kinds in expected.items():
        assert get_kernel_class(name).supports == kinds, name
    for name in available():
        cls, kernel = get_kernel_class(name), make_kernel(name)
        legacy = "real" if kernel.supports == ("real",) else "discrete"
        assert kernel.support == legacy, name
        if not isinstance(cls.__dict__.get("supports"), property):  # PT's follow its base kernel's
            assert cls.support == legacy, name
    with pytest.raises(AttributeError):
        Gibbs().support = "real"
    # the hint in error messages lists the registered kernels of each kind (block Gibbs, which
    # needs a two-layer energy, only for binary: the one kind with such an energy in ebmlab)
    for kind, text in KERNELS_FOR.items():
        kernels = {n for n in available() if n != "pt" and kind in make_kernel(n).supports}  # pt wraps any
        assert set(text.replace(" or ", ", ").split(", ")) == kernels - ({"block_gibbs"} if kind != "binary" else set())


# --------------------------------------------------------------------------------------
# Misuse at the boundary
# --------------------------------------------------------------------------------------


def test_x0_must_be_a_floating_tensor():
    target = gaussian()
    good = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"MALA: x0 must be a torch.Tensor, got numpy.ndarray \(energy Gaussian\)"):
        sample(target, MALA(0.1), np.zeros((4, 2)), num_steps=2)
    with pytest.raises(TypeError, match=r"x0 must be a torch.Tensor, got builtins.list"):
        MALA(0.1).init(target, [[0.0, 0.0]])
    with pytest.raises(TypeError, match=r"Gibbs: x0 must be a floating tensor .*got dtype torch.int64 \(energy Ising\); pass x0.float\(\)"):
        sample(Ising(2), Gibbs(), torch.zeros(4, 2, 2, dtype=torch.long), num_steps=2)
    assert sample(target, MALA(0.1), good, num_steps=2).samples.shape == (2, 4, 2)
    assert sample(Ising(2), Gibbs(), torch.zeros(4, 2, 2), num_steps=2).samples.shape == (2, 4, 2, 2)


@pytest.mark.parametrize("kernel, energy, x0, match", [
    (Gibbs(), gaussian(), torch.zeros(3, 2, dtype=torch.float64),
     r"Gibbs samples binary or categorical states but the energy Gaussian has support 'real'; use a real kernel \(mala"),
    (MALA(0.1), Ising(3), torch.zeros(3, 3, 3),
     r"MALA samples real states but the energy Ising has support 'binary'; use a binary kernel \(gibbs"),
    (GibbsWithGradients(), gaussian(), torch.zeros(3, 2, dtype=torch.float64),
     r"GibbsWithGradients samples binary or categorical states but the energy Gaussian has support 'real'"),
], ids=["gibbs-on-gaussian", "mala-on-ising", "gwg-on-gaussian"])
def test_kernel_and_energy_supports_must_match(kernel, energy, x0, match):
    with pytest.raises(ValueError, match=match):
        sample(energy, kernel, x0, num_steps=2)
    with pytest.raises(ValueError, match=match):
        kernel.init(energy, x0)


def test_event_shape_must_match_the_energy():
    with pytest.raises(ValueError, match=r"MALA: x0 has event shape \(3,\) .*energy Gaussian declares event_shape \(2,\)"):
        sample(gaussian(), MALA(0.1), torch.zeros(5, 3, dtype=torch.float64), num_steps=2)
    with pytest.raises(ValueError, match=r"Gibbs: x0 has event shape \(9,\) .*energy Ising declares event_shape \(3, 3\)"):
        Gibbs().init(Ising(3), torch.zeros(5, 9))
    with pytest.raises(ValueError, match=r"x0 must have shape \(num_chains >= 1, \*event_shape\), got \(2,\)"):
        sample(gaussian(), MALA(0.1), torch.zeros(2, dtype=torch.float64), num_steps=2)
    Gibbs().init(Ising(3), torch.zeros(5, 3, 3))  # the declared shape passes


def test_discrete_states_must_be_integers_below_k():
    """The old bug: SingleSiteMetropolis started at 2 on a binary energy flipped 2 -> -1."""
    x0 = torch.zeros(4, 3, 3)
    x0[1, 0, 0] = 2.0
    with pytest.raises(ValueError, match=r"SingleSiteMetropolis: x0 must hold integer states in \{0, 1\} \(K = 2\) "
                                         r"for the binary energy Ising, got value\(s\) 2$"):
        sample(Ising(3), SingleSiteMetropolis(), x0, num_steps=2)
    potts = Potts(2, num_states=3)
    x0 = torch.tensor([[0.0, 1.0, 2.0, 0.5], [3.0, -1.0, 0.0, 0.0]]).view(2, 2, 2)
    with pytest.raises(ValueError, match=r"Gibbs: x0 must hold integer states in \{0, \.\.\., 2\} \(K = 3\) for the "
                                         r"categorical energy Potts, got value\(s\) -1, 0.5, 3$"):
        Gibbs().init(potts, x0)
    Gibbs().init(potts, x0.clamp(0, 2).round())


def test_explicit_num_states_must_agree_with_the_energy():
    with pytest.raises(ValueError, match=r"Gibbs: num_states=2 disagrees with the categorical energy Potts, which has "
                                         r"K = 3 states per site; leave num_states=None"):
        sample(Potts(2, num_states=3), Gibbs(num_states=2), torch.zeros(3, 2, 2), num_steps=2)
    with pytest.raises(ValueError, match=r"SingleSiteMetropolis: num_states=3 disagrees with the binary energy Ising"):
        SingleSiteMetropolis(num_states=3).init(Ising(3), torch.zeros(3, 3, 3))
    with pytest.raises(ValueError, match=r"Gibbs: num_states must be an integer >= 2 \(or None: the energy's\), got 1"):
        Gibbs(num_states=1)
    Gibbs(num_states=3).init(Potts(2, num_states=3), torch.zeros(3, 2, 2))


def test_generator_must_be_on_the_chains_device():
    """A CPU generator for chains on another device (``meta``: no memory, no computation) is
    refused by ``sample`` and by ``run_kernel`` before anything is evaluated."""
    x0 = torch.zeros(4, 2, device="meta")
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"mala: the generator is on device cpu but the chains are on meta"):
        sample(gaussian(), MALA(0.1), x0, num_steps=2, generator=generator)
    state = ChainState(x0, torch.zeros(4, device="meta"))
    with pytest.raises(ValueError, match=r"gibbs: the generator is on device cpu but the chains are on meta"):
        run_kernel(Gibbs(), Ising(2), state, 3, generator)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None, got int"):
        sample(gaussian(), MALA(0.1), torch.zeros(4, 2, dtype=torch.float64), num_steps=2, generator=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_generator_with_cuda_chains_is_refused():
    x0 = torch.zeros(4, 2, device="cuda")
    with pytest.raises(ValueError, match=r"the generator is on device cpu but the chains are on cuda"):
        sample(Gaussian(torch.zeros(2)).cuda(), MALA(0.1), x0, num_steps=2, generator=torch.Generator())
    sample(Gaussian(torch.zeros(2)).cuda(), MALA(0.1), x0, num_steps=2, generator=torch.Generator(device="cuda"))


def test_validation_runs_once_per_call_not_per_step(monkeypatch):
    calls = []
    original = sampler_base.check_start
    monkeypatch.setattr(sampler_base, "check_start", lambda *args: calls.append(1) or original(*args))
    sample(Potts(2, num_states=3), Gibbs(), torch.zeros(5, 2, 2), num_steps=20, burn_in=10)
    assert len(calls) == 1


def test_make_kernel_refuses_unknown_options():
    with pytest.raises(ValueError, match=r"sampler 'mala' \(MALA\): unknown option\(s\) 'num_leapfrog'; it accepts step_size, metric$"):
        make_kernel("mala", step_size=0.1, num_leapfrog=5)
    with pytest.raises(ValueError, match=r"sampler 'gibbs' \(Gibbs\): unknown option\(s\) 'step_size', 'noise_scale'; "
                                         r"it accepts num_states, scan$"):
        make_kernel("gibbs", step_size=0.1, noise_scale=1.0)
    with pytest.raises(ValueError, match=r"'gwg' \(GibbsWithGradients\): unknown option\(s\) 'num_states'; it accepts no options"):
        make_kernel("gwg", num_states=2)
    assert make_kernel("mala", step_size=0.2, num_leapfrog=None) == MALA(step_size=0.2)  # None is dropped
    assert kernel_options("hmc") == ("step_size", "num_leapfrog", "jitter", "path_jitter", "metric", "max_energy_error")


# --------------------------------------------------------------------------------------
# K from a user's categorical energy: chains started on the target stay on it
# --------------------------------------------------------------------------------------


class PairwiseCategorical(nn.Module):
    """A user energy on ``{0, 1, 2}^4``: ``E(x) = -Σ_{i<j} W_ij[x_i, x_j] - Σ_i b_i[x_i]``.

    Written with one-hot comparisons, so any float value is accepted (a value outside 0..2
    has an all-zero one-hot) and a kernel that produces such values is not stopped by an
    indexing error — the distribution test must catch it. Shapes: ``(B, 4) -> (B,)``.
    """

    support = "categorical"
    num_states = K
    event_shape = (SITES,)

    def __init__(self, generator: torch.Generator):
        super().__init__()
        upper = torch.triu(torch.ones(SITES, SITES, dtype=torch.float64), diagonal=1)[..., None, None]  # i < j
        self.couplings = 0.8 * upper * torch.randn(SITES, SITES, K, K, generator=generator, dtype=torch.float64)
        self.fields = 0.8 * torch.randn(SITES, K, generator=generator, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        onehot = (x[..., None] == torch.arange(K, dtype=x.dtype)).to(torch.float64)  # (B, D, K)
        pair = torch.einsum("bik,ijkl,bjl->b", onehot, self.couplings, onehot)
        return -(pair + torch.einsum("bik,ik->b", onehot, self.fields))


def enumerated(energy: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """All 81 states ``(81, 4)`` in enumeration order (site 0 most significant) and their probabilities."""
    states = next(enumerate_states(SITES, K, dtype=torch.float64))
    return states, torch.softmax(-energy(states), dim=0)


def endpoint_pvalue(x: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson χ² p-value of the endpoints ``x`` ``(C, 4)`` against ``probs`` ``(81,)``.

    Cells with expected count < 5 are merged (smallest first) into one cell, and a state
    outside ``{0, 1, 2}^4`` — probability zero under the target — gives p = 0.
    """
    valid = ((x == x.round()) & (x >= 0) & (x <= K - 1)).all(dim=1)
    if not valid.all():
        return 0.0
    index = (x.long() * (K ** torch.arange(SITES - 1, -1, -1))).sum(dim=1)
    observed = torch.bincount(index, minlength=K**SITES).double().numpy()
    expected = (probs * x.shape[0]).numpy()
    small = expected < 5
    if small.any():
        observed = np.append(observed[~small], observed[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    return float(scipy.stats.chisquare(observed, expected).pvalue)


def exact_draws(states: torch.Tensor, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return states[torch.multinomial(probs, CHAINS, replacement=True, generator=generator)]


@pytest.mark.parametrize("kernel_cls", [Gibbs, SingleSiteMetropolis], ids=["gibbs", "metropolis"])
def test_k_from_a_user_categorical_energy(kernel_cls):
    """20000 chains started at exact draws of an 81-state user energy, 8 random-scan sweeps
    with K taken from the energy (``num_states=None``): the endpoint histogram passes
    Pearson's χ² at p ≥ 1e-5.

    What it detects: after merging the 18 cells with expected count < 5 there are 64 cells
    (df = 63, 1e-5 threshold 122.7); the test rejects with power ½ a law q whose noncentrality
    n·Σ(q-p)²/p reaches 60.6, i.e. a χ²-distance Σ(q-p)²/p of about 3.0e-3 (n = 20000) —
    e.g. a kernel that leaves invariant anything but p, uses the wrong K, or writes a value
    outside 0..K-1 (any such state gives p = 0).

    Negative control: the same chains with ``num_states=2`` forced (the old default on this
    energy: Gibbs never draws state 2 again, Metropolis turns 2 into -1) are rejected, p < 1e-5.
    The control has to bypass ``kernel.init``, which now refuses that kernel on this energy.
    """
    energy = PairwiseCategorical(torch.Generator().manual_seed(61))
    states, probs = enumerated(energy)
    assert float(probs.min()) < 0.5 / 81 < 2 / 81 < float(probs.max())  # not close to uniform
    x0 = exact_draws(states, probs, torch.Generator().manual_seed(62))

    generator = torch.Generator().manual_seed(63)
    record = sample(energy, kernel_cls(), x0, num_steps=STEPS, generator=generator, keep_samples=False)
    assert endpoint_pvalue(record.final_state.x, probs) >= P_VALUE
    assert (record.final_state.x == 2).any()

    forced = kernel_cls(num_states=2)
    with pytest.raises(ValueError, match="disagrees"):
        forced.init(energy, x0)
    state = ChainState(x0, energy(x0))
    run = run_kernel(forced, energy, state, STEPS, torch.Generator().manual_seed(63))
    assert endpoint_pvalue(run.state.x, probs) < P_VALUE


def test_endpoint_pvalue_accepts_exact_draws():
    """The oracle itself: fresh exact draws pass (p ≥ 1e-5), and the draws of another random
    energy (a different law) are rejected — so the helper neither always passes nor always fails."""
    energy = PairwiseCategorical(torch.Generator().manual_seed(61))
    states, probs = enumerated(energy)
    assert endpoint_pvalue(exact_draws(states, probs, torch.Generator().manual_seed(64)), probs) >= P_VALUE
    _, other = enumerated(PairwiseCategorical(torch.Generator().manual_seed(65)))
    assert endpoint_pvalue(exact_draws(states, other, torch.Generator().manual_seed(64)), probs) < P_VALUE
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("kernel", [MALA(step_size=0.1), make_kernel("nuts"), make_kernel("pt", num_temperatures=2)],
                         ids=["mala", "nuts", "pt"])
def test_x0_of_another_dtype_than_the_network_gets_one_line(kernel):
    """torch's own error speaks of mat1 and mat2; the sampler names x0's dtype and the weights'."""
    from ebmlab.energy import MLPEnergy

    net = MLPEnergy(3, hidden=(8,))
    with pytest.raises(ValueError, match=r"x0 is float64 but the energy .*parameters are float32; pass "
                                         r"x0.to\(torch.float32\)"):
        sample(net, kernel, torch.zeros(4, 3, dtype=torch.float64), num_steps=2, adapt=False)
    assert sample(net, kernel, torch.zeros(4, 3), num_steps=2, adapt=False).samples.shape == (2, 4, 3)
    assert sample(net.double(), kernel, torch.zeros(4, 3, dtype=torch.float64), num_steps=2,
                  adapt=False).samples.dtype == torch.float64


def test_mixed_dtypes_that_torch_promotes_still_run():
    """A float32 Potts field with float64 states works (elementwise promotion): no false refusal."""
    target = Potts(size=2, num_states=3)
    x0 = torch.zeros(4, 2, 2, dtype=torch.float64)
    assert sample(target, SingleSiteMetropolis(), x0, num_steps=3).samples.shape == (3, 4, 2, 2)


def test_a_real_energy_under_a_discrete_kernel_says_how_to_declare_states():
    from ebmlab.energy import MLPEnergy

    net = MLPEnergy(4, hidden=(8,))
    with pytest.raises(ValueError, match=r"declare discrete states with energy.support = 'binary'"):
        sample(net, Gibbs(), torch.zeros(4, 4), num_steps=2)
    net.support = "binary"
    assert sample(net, Gibbs(), torch.zeros(4, 4), num_steps=2).samples.shape == (2, 4, 4)
