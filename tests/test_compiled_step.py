"""The compiled whole-transition path (``sample(..., compile=True)``, samplers/compiled_*.py).

* The same chains as eager, to floating-point rounding, from the same generator (which ends in
  the same state): ULA, MALA and HMC; fixed, pooled-adapted and per-chain-adapted step sizes;
  diagonal and dense metrics (float64 chains, relative tolerance 1e-9); window adaptation; unrolled calls with a masked last call and thinning.
  Most cases trace the graph with dynamo and run it without inductor (a counting backend,
  seconds per graph); one runs inductor for real on a module energy.
* Adaptation never recompiles: a run builds one graph per kind of call whatever its length,
  and a second run with another step size builds none.
* Invariance: chains started at exact draws of a correlated Gaussian stay on it (moments
  within z = 4.5 Monte-Carlo SEs over 4,000 independent chains: the smallest detectable error is
  about 0.07σ in a mean and 10 % in a variance). Negative control: a compiled MALA step without
  the proposal's Hastings term (ULA's O(ε) bias: +25 % in the variance at ε = 0.5) must fail it.
* CUDA graphs (``mode="reduce-overhead"``) refuse chains on the CPU in one line; the CUDA
  check itself is skipped without CUDA. A non-gradient kernel with ``compile=True`` is refused.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ebmlab.energy import Gaussian
from ebmlab.samplers import HMC, MALA, ULA, RandomWalkMetropolis, Gibbs, sample
from ebmlab.samplers import compiled_step
from ebmlab.samplers.compiled_loop import StepCompiler
from ebmlab.testing import assert_moments_close, moment_z_scores

#: inductor imports torch.jit.script_method on its first compile, which warns on this torch
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

MEAN = torch.tensor([0.5, -1.0])
COV = torch.tensor([[1.0, 0.5], [0.5, 2.0]])


class Quadratic(nn.Module):
    """``E(x) = ½ (x-μ)ᵀ P (x-μ)`` as a plain module (no ``value_and_grad``: the graph takes
    its gradient with ``torch.func``), the density of N(μ, P⁻¹)."""

    event_shape = (2,)

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", MEAN.clone())
        self.register_buffer("precision", torch.linalg.inv(COV))

    def forward(self, x):
        d = x - self.mean
        return 0.5 * ((d @ self.precision) * d).sum(-1)


class Counting:
    """A ``torch.compile`` backend that runs dynamo's graph as traced and counts the graphs."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def run(energy, kernel, compile, x0, seed=1, **kw):
    g = torch.Generator().manual_seed(seed)
    options = dict(num_steps=7, burn_in=6)
    options.update(kw)
    record = sample(energy, kernel, x0, generator=g, compile=compile, **options)
    return record, g


def assert_same_run(a, b, rtol=1e-4, atol=1e-5):
    torch.testing.assert_close(b.samples, a.samples, rtol=rtol, atol=atol)
    torch.testing.assert_close(b.energy, a.energy, rtol=rtol, atol=atol)
    torch.testing.assert_close(b.final_state.grad, a.final_state.grad, rtol=rtol, atol=atol)
    torch.testing.assert_close(b.acceptance_rate, a.acceptance_rate)
    torch.testing.assert_close(b.divergences, a.divergences)
    torch.testing.assert_close(b.stats["accept_prob"], a.stats["accept_prob"], rtol=rtol, atol=atol)
    torch.testing.assert_close(torch.as_tensor(b.kernel.step_size, dtype=torch.float64),
                               torch.as_tensor(a.kernel.step_size, dtype=torch.float64), rtol=1e-6, atol=0)
    assert b.final_state.step == a.final_state.step


GAUSS = Gaussian(MEAN, COV)
GAUSS64 = Gaussian(MEAN.double(), COV.double())  # float64 chains: rounding differences stay ~1e-12
X0 = torch.randn(24, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
DIAG = torch.tensor([0.7, 1.8], dtype=torch.float64)
CASES = {
    "ula": (ULA(step_size=0.05), {}, 1),
    "mala-pooled": (MALA(step_size=0.3), {}, 1),
    "mala-per-chain": (MALA(step_size=0.3), {"adapt_per_chain": True}, 1),
    "mala-diag-metric": (MALA(step_size=0.3, metric=DIAG), {"adapt": False}, 1),
    "mala-window": (MALA(step_size=0.3), {"adapt": "window", "burn_in": 25}, 1),
    "hmc-pooled-path-jitter": (HMC(step_size=0.2, num_leapfrog=4), {}, 1),
    "hmc-per-chain-jitter-diag": (HMC(step_size=0.2, num_leapfrog=3, jitter=0.1, path_jitter=0.0, metric=DIAG),
                                  {"adapt_per_chain": True}, 1),
    "hmc-dense-unrolled": (HMC(step_size=0.2, num_leapfrog=3, metric=COV.double()), {"thin": 2}, 3),
    "mala-unrolled-masked": (MALA(step_size=0.3), {"thin": 2, "callback": lambda *a: None}, 4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_chains_equal_eager(case):
    kernel, kw, unroll = CASES[case]
    eager, g_eager = run(GAUSS64, kernel, False, X0, **kw)
    compiled, g_comp = run(GAUSS64, kernel, StepCompiler(backend=Counting(), unroll=unroll, fullgraph=True), X0, **kw)
    assert_same_run(eager, compiled, rtol=1e-9, atol=1e-10)
    assert torch.equal(g_eager.get_state(), g_comp.get_state())  # the generator advanced alike


def test_callback_sees_every_transition_when_unrolled():
    seen_eager, seen_comp = [], []
    kernel = MALA(step_size=0.3)
    run(GAUSS64, kernel, False, X0, callback=lambda s, st, info: seen_eager.append((s, st.x.clone())))
    run(GAUSS64, kernel, StepCompiler(backend=Counting(), unroll=3), X0,
        callback=lambda s, st, info: seen_comp.append((s, st.x.clone())))
    assert [s for s, _ in seen_comp] == [s for s, _ in seen_eager] == list(range(1, 14))
    for (_, a), (_, b) in zip(seen_eager, seen_comp):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-10)


def test_adaptation_does_not_recompile():
    """Dual averaging changes the step size at every burn-in step: the step size is a tensor,
    so a run builds one graph for the adapting calls and one for the sampling calls (MALA's
    default: 4 transitions a call, the surplus of a last call masked), and a run of another
    length from another step size builds none."""
    backend = Counting()
    compiler = StepCompiler(backend=backend, fullgraph=True)
    run(GAUSS64, MALA(step_size=0.3), compiler, X0, burn_in=10, num_steps=5)
    assert backend.graphs == 2 and compiler.graphs == 2
    record, _ = run(GAUSS64, MALA(step_size=0.05), compiler, X0, burn_in=30, num_steps=12)
    assert backend.graphs == 2 and compiler.graphs == 2
    assert record.compile_time == 0.0 < compiler.compile_time  # this run compiled nothing; the first did


@pytest.fixture(scope="module")
def inductor_mala():
    """One inductor graph (MALA, fixed ε = 0.5, 4,000 chains) shared by the tests below."""
    return Quadratic(), MALA(step_size=0.5), StepCompiler(unroll=1)


def exact_draws(n, seed):
    g = torch.Generator().manual_seed(seed)
    return GAUSS.sample(n, generator=g)


def test_inductor_chains_equal_eager(inductor_mala):
    energy, kernel, compiler = inductor_mala
    x0 = exact_draws(4000, 3)
    eager, _ = run(energy, kernel, False, x0, burn_in=0, num_steps=10, adapt=False)
    compiled, _ = run(energy, kernel, compiler, x0, burn_in=0, num_steps=10, adapt=False)
    assert_same_run(eager, compiled, rtol=1e-4, atol=1e-4)
    assert compiler.graphs == 1


def test_compiled_mala_leaves_the_gaussian_invariant(inductor_mala):
    energy, kernel, compiler = inductor_mala
    record, _ = run(energy, kernel, compiler, exact_draws(4000, 4), seed=5, burn_in=0, num_steps=30, adapt=False)
    assert compiler.graphs <= 1  # the fixture's graph, reused
    assert_moments_close(record.samples[-1], MEAN, COV, z=4.5)


def test_negative_control_wrong_hastings_term_fails(monkeypatch):
    """MALA's compiled step without ``log q(x|x') - log q(x'|x)`` is ULA with a Metropolis test
    on the energies alone: its stationary variance is off by O(ε), far beyond 4.5 SEs."""

    def no_hastings(spec, vg, metric, x, e, g, eps, draw):
        x_new = compiled_step.langevin_proposal(spec, metric, x, g, eps, draw["noise"], 1.0)
        e_new, g_new = vg(x_new)
        accepted, prob, diverged = compiled_step.accept(e - e_new, draw["u"].log())
        return (compiled_step._where(accepted, x_new, x), torch.where(accepted, e_new, e),
                compiled_step._where(accepted, g_new, g), prob, accepted, diverged)

    monkeypatch.setitem(compiled_step.STEPS, "mala", no_hastings)
    record, _ = run(GAUSS, MALA(step_size=0.5), StepCompiler(backend=Counting()), exact_draws(4000, 4), seed=5,
                    burn_in=0, num_steps=30, adapt=False)
    assert moment_z_scores(record.samples[-1], MEAN, COV).max_abs_z > 4.5
    with pytest.raises(AssertionError, match="standard errors"):
        assert_moments_close(record.samples[-1], MEAN, COV, z=4.5)


@pytest.mark.parametrize("kernel", [RandomWalkMetropolis(step_size=0.5), Gibbs()], ids=["rwmh", "gibbs"])
def test_compile_refuses_kernels_without_a_compiled_step(kernel):
    with pytest.raises(ValueError, match=r"compile=True compiles the transitions of ula, mala and hmc") as err:
        sample(GAUSS64, kernel, X0, num_steps=2, compile=True)
    assert "\n" not in str(err.value)


def test_cuda_graphs_refuse_cpu_chains():
    with pytest.raises(ValueError, match=r"'reduce-overhead' replays CUDA graphs and needs chains on a CUDA") as err:
        sample(GAUSS64, MALA(step_size=0.3), X0, num_steps=2, compile=StepCompiler(mode="reduce-overhead"))
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graphs_equal_eager_on_cuda():
    energy = Quadratic().cuda()
    x0 = exact_draws(256, 6).cuda()
    kernel = MALA(step_size=0.5)

    def go(compile):
        g = torch.Generator(device="cuda").manual_seed(7)
        return sample(energy, kernel, x0, num_steps=20, burn_in=10, generator=g, compile=compile)

    assert_same_run(go(False), go(StepCompiler(mode="reduce-overhead", unroll=4)), rtol=1e-4, atol=1e-4)
