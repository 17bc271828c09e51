"""NUTS with compiled leaves (:mod:`ebmlab.samplers.nuts_compiled`, ``sample(compile=True)``).

One graph serves the whole module: every test uses the same energy object, 2,000 chains of the
correlated 2-D Gaussian in float64 and a diagonal metric, so the leaf is compiled once.

* Same draws as eager: from the same states and generator, three transitions of compiled and
  eager NUTS give the same positions to 1e-10, the same tree depths, gradient counts and
  divergences, and leave the generator in the same state — with a float step size and with a
  ``(C,)`` one; and four leaves per call (``StepCompiler(unroll=4)``), where the generator is
  rewound when every chain stops inside a call.
* Adaptation builds no graph: a windowed warm-up (step sizes per chain, metric updates, step
  size searches) through ``sample(..., compile=...)`` adds no Dynamo graph, and its chains match
  the eager warm-up's to 1e-6 (dual averaging multiplies rounding differences by √t/γ).
* Invariance: chains started at exact draws keep the mean and covariance within z = 4.5 SEs
  after five compiled transitions (smallest detectable error 0.1 σ in a mean, 14 % in a
  variance). Negative control: the same endpoints against a covariance 15 % too wide fail.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo.utils

from ebmlab.energy import Gaussian
from ebmlab.samplers import sample
from ebmlab.samplers.compiled_loop import StepCompiler
from ebmlab.samplers.metric import Metric
from ebmlab.samplers.nuts import NUTS
from ebmlab.samplers.nuts_compiled import CompiledNUTS, compiled_nuts
from ebmlab.testing import DEFAULT_Z, assert_moments_close, moment_z_scores, run_transitions

#: inductor imports torch.jit.script_method on its first compile, which warns on this torch
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

CHAINS = 2000
TARGET = Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).double()
METRIC = Metric(torch.tensor([0.8, 1.2], dtype=torch.float64))


@pytest.fixture(scope="module")
def compiler() -> StepCompiler:
    return StepCompiler(unroll=1, compact=None)  # one leaf a call, no compaction: one graph for the module


def exact_draws(seed: int = 11) -> torch.Tensor:
    return TARGET.sample(CHAINS, torch.Generator().manual_seed(seed)).double()


def transitions(kernel: NUTS, steps: int, seed: int = 12):
    return run_transitions(kernel, TARGET, exact_draws(), steps, seed)


@pytest.mark.parametrize("step_size", [0.7, torch.logspace(math.log10(0.3), math.log10(1.2), CHAINS,
                                                              dtype=torch.float64)],
                         ids=["float", "per-chain"])
def test_compiled_leaves_give_the_eager_draws(compiler, step_size):
    kernel = NUTS(step_size=step_size, max_tree_depth=6, metric=METRIC)
    eager, eager_infos, eager_rng = transitions(kernel, 3)
    fast, fast_infos, fast_rng = transitions(compiled_nuts(kernel, compiler), 3)
    assert torch.allclose(eager.x, fast.x, rtol=0, atol=1e-10)
    assert torch.allclose(eager.energy, fast.energy, rtol=0, atol=1e-10)
    assert torch.allclose(eager.grad, fast.grad, rtol=0, atol=1e-10)
    assert torch.equal(eager_rng, fast_rng)
    for a, b in zip(eager_infos, fast_infos):
        for name in ("tree_depth", "num_grad_evals", "diverged", "accepted"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert torch.allclose(a.accept_prob, b.accept_prob, rtol=0, atol=1e-10)
    assert float(torch.stack([i.tree_depth for i in eager_infos]).float().mean()) > 1  # real trees were built


@pytest.mark.parametrize("unroll", [1, 4])
@pytest.mark.parametrize("robust_uturn", [True, False], ids=["robust-uturn", "whole-node-checks"])
def test_unrolled_leaves_give_the_eager_draws(unroll, robust_uturn):
    """``StepCompiler(unroll=4)``: four leaves per call; when every chain stops inside a call the
    generator is rewound to where eager NUTS leaves it (traced by dynamo, run without inductor:
    the rewinding and the U-turn checks are under test, not the code generator). With Stan's
    extra U-turn checks and without, one leaf a call (masked checks of all slots) and four."""
    kernel = NUTS(step_size=0.3, max_tree_depth=6, metric=METRIC, robust_uturn=robust_uturn)
    eager, eager_infos, eager_rng = transitions(kernel, 3)
    fast, fast_infos, fast_rng = transitions(compiled_nuts(kernel, StepCompiler(unroll=unroll, backend="aot_eager")), 3)
    assert torch.allclose(eager.x, fast.x, rtol=0, atol=1e-10) and torch.equal(eager_rng, fast_rng)
    for a, b in zip(eager_infos, fast_infos):
        assert torch.equal(a.num_grad_evals, b.num_grad_evals) and torch.equal(a.tree_depth, b.tree_depth)
    assert float(torch.stack([i.tree_depth for i in eager_infos]).float().mean()) > 2  # blocks of 4 were run


@pytest.mark.parametrize("per_chain_metric", [False, True], ids=["pooled-metric", "per-chain-metric"])
def test_compacted_leaves_give_the_eager_draws(per_chain_metric):
    """``StepCompiler(compact=4)``: once at most a quarter of the 2,000 chains build a long
    subtree, its remaining leaves run on those chains alone (a 500-row batch, its own graph),
    and once at most a quarter of those do, on a 125-row batch; positions, statistics and the
    generator stay those of eager NUTS. Checked that both compact graphs were built, so the
    path ran (traced by dynamo, run without inductor)."""
    metric = Metric(METRIC.inverse_mass_matrix.expand(CHAINS, 2).clone(), per_chain=True) if per_chain_metric \
        else METRIC
    kernel = NUTS(step_size=torch.linspace(0.15, 0.6, CHAINS, dtype=torch.float64), max_tree_depth=7, metric=metric)
    eager, eager_infos, eager_rng = transitions(kernel, 3)
    compiler = StepCompiler(unroll=2, backend="aot_eager", compact=4)
    fast, fast_infos, fast_rng = transitions(compiled_nuts(kernel, compiler), 3)
    shapes = {key[1] for key in compiler._compiled if isinstance(key, tuple) and len(key) > 1}
    assert {(CHAINS // 4, 2), (CHAINS // 16, 2)} <= shapes, shapes  # two levels of compaction ran
    assert torch.allclose(eager.x, fast.x, rtol=0, atol=1e-10) and torch.equal(eager_rng, fast_rng)
    for a, b in zip(eager_infos, fast_infos):
        for name in ("tree_depth", "num_grad_evals", "diverged", "accepted"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert torch.allclose(a.accept_prob, b.accept_prob, rtol=0, atol=1e-10)


def test_compaction_is_off_for_few_chains_and_per_row_energies():
    from ebmlab.samplers.nuts_compaction import compact_rows as _compact_rows

    class PerRow(torch.nn.Module):
        def forward(self, x):
            return x.square().sum(-1)

        def select_rows(self, index):
            return self

    compiler = StepCompiler(compact=4)
    assert _compact_rows(compiler, TARGET, 1024) == 256
    assert _compact_rows(compiler, TARGET, 63) is None  # a compact batch of fewer than 16 rows
    assert _compact_rows(compiler, PerRow(), 1024) is None
    assert _compact_rows(StepCompiler(compact=None), TARGET, 1024) is None
    for bad in (1, 0, True, 2.5):
        with pytest.raises(ValueError, match="compact must be an integer >= 2 or None"):
            StepCompiler(compact=bad)


def test_window_adaptation_builds_no_new_graph(compiler):
    kernel = NUTS(max_tree_depth=6, metric=METRIC)
    transitions(compiled_nuts(kernel.with_step_size(0.7), compiler), 1)  # the module's graph exists
    graphs, built = compiler.graphs, torch._dynamo.utils.counters["stats"]["unique_graphs"]
    runs = []
    for compile in (compiler, False):
        generator = torch.Generator().manual_seed(13)
        runs.append(sample(TARGET, kernel, exact_draws(), num_steps=5, burn_in=40, adapt="window",
                           adapt_per_chain=True, generator=generator, compile=compile))
    fast, eager = runs
    assert compiler.graphs == graphs and torch._dynamo.utils.counters["stats"]["unique_graphs"] == built
    assert isinstance(fast.kernel, CompiledNUTS) and fast.compile_time is not None
    assert torch.allclose(fast.samples, eager.samples, rtol=0, atol=1e-6)
    assert torch.allclose(fast.kernel.step_size, eager.kernel.step_size, rtol=1e-6)


def compiled_endpoints(compiler) -> torch.Tensor:
    state, _, _ = transitions(compiled_nuts(NUTS(step_size=0.9, max_tree_depth=6, metric=METRIC), compiler), 5,
                              seed=14)
    return state.x


def test_compiled_nuts_keeps_the_target_from_exact_draws(compiler):
    assert_moments_close(compiled_endpoints(compiler), TARGET.mean, TARGET.covariance, z=DEFAULT_Z)


def test_a_target_fifteen_percent_wider_fails(compiler):
    """Negative control for the check's power: the same endpoints against 1.15 Σ."""
    check = moment_z_scores(compiled_endpoints(compiler), TARGET.mean, 1.15 * TARGET.covariance)
    assert check.max_abs_z > DEFAULT_Z


def test_the_last_leaf_variant_is_refused():
    class LastLeaf(CompiledNUTS):
        _take_last = True

    with pytest.raises(ValueError, match="CompiledNUTS: the last-leaf test variant has no compiled form"):
        transitions(LastLeaf(step_size=0.5, metric=METRIC), 1)


def test_a_tuned_compiled_kernel_reruns_eager_or_on_its_own_graphs(compiler):
    """The kernel that ``sample(compile=...)`` returns (a CompiledNUTS) run again: with
    ``compile=False`` it samples with eager leaves (a plain NUTS, the same draws as the eager
    kernel from the same state), with ``compile=True`` on the graphs it already has (no new one,
    no compile time)."""
    kernel = NUTS(step_size=0.7, max_tree_depth=6, metric=METRIC)
    tuned = sample(TARGET, kernel, exact_draws(), num_steps=2, burn_in=0, adapt=False,
                   generator=torch.Generator().manual_seed(15), compile=compiler).kernel
    assert isinstance(tuned, CompiledNUTS)
    eager = sample(TARGET, tuned, exact_draws(), num_steps=3, burn_in=0, adapt=False,
                   generator=torch.Generator().manual_seed(16), compile=False)
    reference = sample(TARGET, kernel, exact_draws(), num_steps=3, burn_in=0, adapt=False,
                       generator=torch.Generator().manual_seed(16))
    assert type(eager.kernel) is NUTS and eager.compile_time is None
    assert torch.equal(eager.samples, reference.samples)
    graphs = tuned.compiler.graphs
    again = sample(TARGET, tuned, exact_draws(), num_steps=3, burn_in=0, adapt=False,
                   generator=torch.Generator().manual_seed(16), compile=True)
    assert isinstance(again.kernel, CompiledNUTS) and again.kernel.compiler is tuned.compiler
    assert tuned.compiler.graphs == graphs and again.compile_time == 0.0
    assert torch.allclose(again.samples, reference.samples, rtol=0, atol=1e-10)
