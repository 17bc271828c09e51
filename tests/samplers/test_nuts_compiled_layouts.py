"""Compiled NUTS on the inputs its packed graphs reshape (:mod:`ebmlab.samplers.nuts_compiled`).

The graphs carry positions flattened to ``(C, D)`` and stack the per-chain state; these tests
check that nothing is lost in that: from the same states and generator, three transitions of
compiled and eager NUTS give the same positions (to 1e-10 in float64), tree depths, gradient
counts, divergences and generator state, for

* events that are not flat (``(C, 2, 3)``: the energy sees its own shape),
* every metric kind: identity, diagonal, dense and one diagonal per chain,
* two leaves per call (``unroll=2``: whole doublings of 1 and 2 leaves, blocks of 2 after),
* float32 chains (agreement to 1e-4, the rounding of one leapfrog trajectory),
* compaction (the last leaves of a long doubling on the chains still building, gathered into
  a smaller batch) with every metric kind and a shaped event.

Negative control: a compiled run from a different generator seed does not agree.
Graphs are traced by Dynamo and run by ``aot_eager`` (the packing is under test, not the code
generator; ``test_nuts_compiled.py`` runs inductor).
"""

from __future__ import annotations

import pytest
import torch

from ebmlab.energy import Gaussian
from ebmlab.samplers.compiled_loop import StepCompiler
from ebmlab.samplers.metric import Metric
from ebmlab.samplers.nuts import NUTS
from ebmlab.samplers.nuts_compiled import compiled_nuts
from ebmlab.testing import run_transitions

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

CHAINS = 300
EVENT = (2, 3)
D = 6
_cov = torch.eye(D, dtype=torch.float64) * 0.5 + 0.5 * torch.ones(D, D, dtype=torch.float64) / D
FLAT = Gaussian(torch.linspace(-1.0, 1.0, D, dtype=torch.float64), _cov)


class ShapedGaussian(torch.nn.Module):
    """``FLAT`` on events of shape ``(2, 3)``: fails loudly if handed flat positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == EVENT, x.shape
        return FLAT(x.flatten(1))


METRICS = {
    "identity": None,
    "diag": Metric(torch.linspace(0.6, 1.4, D, dtype=torch.float64)),
    "dense": Metric(_cov.clone()),
    "per_chain": Metric(torch.linspace(0.5, 1.5, CHAINS * D, dtype=torch.float64).view(CHAINS, D), per_chain=True),
}


def transitions(kernel: NUTS, energy, x0: torch.Tensor, steps: int = 3, seed: int = 21):
    return run_transitions(kernel, energy, x0, steps, seed)


def start(dtype=torch.float64) -> torch.Tensor:
    return FLAT.sample(CHAINS, torch.Generator().manual_seed(20)).to(dtype)


def compacted(compiler: StepCompiler, shape: tuple) -> bool:
    """A leaf graph for a compact batch of ``shape`` was built (docs/compiled.md, compaction)."""
    return any(isinstance(key, tuple) and len(key) > 1 and key[1] == shape for key in compiler._compiled)


def assert_same_run(eager, fast, atol):
    (a_state, a_infos, a_rng), (b_state, b_infos, b_rng) = eager, fast
    assert b_state.x.shape == a_state.x.shape and b_state.grad.shape == a_state.grad.shape
    assert torch.allclose(a_state.x, b_state.x, rtol=0, atol=atol)
    assert torch.allclose(a_state.grad, b_state.grad, rtol=0, atol=atol * 10)
    assert torch.allclose(a_state.energy, b_state.energy, rtol=0, atol=atol * 10)
    assert torch.equal(a_rng, b_rng)
    for a, b in zip(a_infos, b_infos):
        for name in ("tree_depth", "num_grad_evals", "diverged", "accepted"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert torch.allclose(a.accept_prob, b.accept_prob, rtol=0, atol=atol * 10)
        assert torch.allclose(a.energy_error, b.energy_error, rtol=0, atol=atol * 100)


@pytest.mark.parametrize("metric", list(METRICS), ids=list(METRICS))
def test_every_metric_kind_gives_the_eager_draws(metric):
    kernel = NUTS(step_size=0.35, max_tree_depth=6, metric=METRICS[metric])
    eager = transitions(kernel, FLAT, start())
    fast = transitions(compiled_nuts(kernel, StepCompiler(unroll=4, backend="aot_eager")), FLAT, start())
    assert_same_run(eager, fast, atol=1e-10)
    assert float(torch.stack([i.tree_depth for i in eager[1]]).float().mean()) > 2  # blocks were run


def test_shaped_events_and_two_leaves_a_call_give_the_eager_draws():
    x0 = start().view(CHAINS, *EVENT)
    kernel = NUTS(step_size=0.35, max_tree_depth=5, metric=METRICS["diag"])
    eager = transitions(kernel, ShapedGaussian(), x0)
    fast = transitions(compiled_nuts(kernel, StepCompiler(unroll=2, backend="aot_eager")), ShapedGaussian(), x0)
    assert_same_run(eager, fast, atol=1e-10)


@pytest.mark.parametrize("metric", list(METRICS) + ["shaped"])
def test_compacted_leaves_give_the_eager_draws_with_every_metric_and_shape(metric):
    """Compaction at half the chains (``compact=2``, one leaf a call, so that it happens in
    every long doubling): the same draws as eager with every metric kind and a shaped event,
    and the 150-row graph was built."""
    shaped = metric == "shaped"
    energy, x0 = (ShapedGaussian(), start().view(CHAINS, *EVENT)) if shaped else (FLAT, start())
    # the dense metric whitens the target, where chains with one step size all turn together
    step = torch.linspace(0.1, 0.5, CHAINS, dtype=torch.float64) if metric == "dense" else 0.35
    kernel = NUTS(step_size=step, max_tree_depth=6, metric=METRICS["diag" if shaped else metric])
    eager = transitions(kernel, energy, x0)
    compiler = StepCompiler(unroll=1, backend="aot_eager", compact=2)
    fast = transitions(compiled_nuts(kernel, compiler), energy, x0)
    assert_same_run(eager, fast, atol=1e-10)
    assert compacted(compiler, (CHAINS // 2, *x0.shape[1:]))


def test_float32_chains_agree_to_rounding():
    energy = Gaussian(FLAT.mean.float(), FLAT.covariance.float())
    kernel = NUTS(step_size=0.35, max_tree_depth=6)
    eager = transitions(kernel, energy, start(torch.float32))
    fast = transitions(compiled_nuts(kernel, StepCompiler(unroll=4, backend="aot_eager")), energy, start(torch.float32))
    assert fast[0].x.dtype == torch.float32
    assert_same_run(eager, fast, atol=1e-4)


def test_a_different_seed_does_not_agree():
    """Negative control: the comparison can fail."""
    kernel = NUTS(step_size=0.35, max_tree_depth=6)
    eager = transitions(kernel, FLAT, start())
    fast = transitions(compiled_nuts(kernel, StepCompiler(unroll=4, backend="aot_eager")), FLAT, start(), seed=22)
    assert not torch.allclose(eager[0].x, fast[0].x, rtol=0, atol=1e-3)
