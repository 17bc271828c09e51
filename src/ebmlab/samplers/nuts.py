"""The No-U-Turn Sampler, batched over chains (Hoffman & Gelman 2014; Betancourt 2017).

Hamiltonian ``H(x, p) = E(x) + ½ pᵀM⁻¹p`` with momentum ``p ~ N(0, M)`` (the
:class:`~ebmlab.samplers.metric.Metric` ``M⁻¹``; identity by default). Each transition of a
chain builds a trajectory by doubling: at depth ``j`` it draws a direction and integrates
``2^j`` leapfrog steps of size ε from that end of the trajectory (:mod:`ebmlab.samplers.nuts_tree`).
It stops when

* the subtree just built has a divergence — an energy error ``H - H₀ > max_energy_error`` or
  NaN — or a sub-tree that makes a U-turn: the subtree is thrown away;
* the whole trajectory, or one of its two halves extended by the adjacent leaf of the other,
  makes a U-turn (the generalised criterion ``p♯_-·ρ > 0 and p♯_+·ρ > 0``, ``ρ = Σ p``,
  ``p♯ = M⁻¹p``; Betancourt 2013, 2017 §A.4.2; the extra checks as in Stan ≥ 2.26, at every
  level of the tree); with ``robust_uturn=False`` the whole trajectory only (NumPyro and
  BlackJAX make no extra checks either, but use ``ρ - (p_- + p_+)/2``);
* it has ``max_tree_depth`` doublings (``2^max_tree_depth - 1`` leapfrog steps).

The next state is drawn from the trajectory with weights ``w = exp(H₀ - H)`` (multinomial
sampling, Betancourt 2017 App. A.3): unbiased progressive sampling inside a subtree, then the
subtree's candidate replaces the trajectory's with probability ``min(1, W_new / W_old)``
(Stan's biased progressive sampling between subtrees). The acceptance statistic for
step-size adaptation is Stan's mean of ``min(1, exp(H₀ - H))`` over every leaf built,
those of a rejected subtree included.

Batching: chains are the batch dimension; every chain builds its own tree inside the same
tensor program with per-chain masks. A doubling runs while any chain is active and stops
leaf-wise once every chain has stopped; gradients are evaluated once per leapfrog step, on
the building chains only; the gradient at the current state is the cached ``ChainState.grad``.

Random draws per transition, in this order, all from ``generator`` with ``x``'s dtype:

1. the momenta: ``metric.sample_momentum(x, generator)`` (one ``randn`` of ``x``'s shape);
2. for each doubling ``j = 0, 1, …`` (while any chain is active and ``j < max_tree_depth``):
   a. ``rand((C,))`` for the directions: chain ``c`` goes forward (``+ε``) iff ``u_c < 0.5``;
   b. ``rand((C,))`` per leaf ``n = 0, 1, …`` that any chain builds (at most ``2^j``), for the
      progressive choice inside the subtree (leaf ``n`` replaces the candidate iff
      ``log u < log w_n - log Σ_{i≤n} w_i``);
   c. ``rand((C,))`` for the choice between subtrees (the subtree's candidate is taken iff
      ``log u < log W_subtree - log W_trajectory``).

Draws are made for all ``C`` chains whatever their state, so a chain's numbers depend only
on how many doublings and leaves the whole batch ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn
from ebmlab.samplers.adaptation import TensorStepSize, check_step_size, step_size_value
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, uniform_log
from ebmlab.samplers.metric import IDENTITY, Metric
from ebmlab.samplers.nuts_doubling import begin_doubling, end_doubling, start_trajectory
from ebmlab.samplers.nuts_tree import Checkpoints, Edge, RowChoice, build_subtree


@dataclass(frozen=True)
class NUTSInfo(StepInfo):
    """:class:`StepInfo` plus NUTS's per-chain statistics, all ``(C,)``.

    Attributes:
        accept_prob: Stan's mean of ``min(1, exp(H₀ - H))`` over the leaves built.
        accepted: the new state is not the starting one.
        diverged: a leaf had ``H - H₀ > max_energy_error`` or NaN.
        tree_depth: doublings kept (Stan's ``treedepth__``), ``0 … max_tree_depth`` (long).
        num_grad_evals: leapfrog steps (= gradient evaluations) taken, rejected subtree
            included: ``2^tree_depth - 1`` plus the leaves of a rejected last subtree (long).
        energy_error: ``H(x', p') - H₀`` of the state drawn (0 if it is the start).
    """

    tree_depth: torch.Tensor
    num_grad_evals: torch.Tensor
    energy_error: torch.Tensor


@dataclass(frozen=True)
class NUTS(TensorStepSize, Kernel):
    """NUTS with leapfrog step ``step_size``, at most ``max_tree_depth`` doublings, a divergence
    when ``H - H₀ > max_energy_error``, and inverse mass matrix ``metric`` (``None``: identity).

    ``robust_uturn``: Stan's extra U-turn checks (module docstring), on by default. Without them
    (``False``) NUTS misses U-turns on near-isotropic Gaussians and runs in circles: on a 100-D
    standard normal at ε = 0.4 it takes 377 gradients a draw against 14 (the failure that made
    Stan add the checks; BlackJAX's criterion, ``ρ - (p_- + p_+)/2`` without them, takes 14). Where that cannot happen they cost some ESS per gradient: on the
    banana, over 12 seeds, the whole-node checks alone give 1.24 ×/÷ 1.07 times the bulk ESS per
    gradient (``benchmarks/nuts_uturn.py``).

    ``state, info = NUTS(step_size=0.2).step(energy, state, generator)`` with ``info`` a
    :class:`NUTSInfo`. Step size adaptation (``sample(..., burn_in=...)``) tunes ε toward a
    mean acceptance statistic of 0.8.

    ``step_size`` is a float or a ``(C,)`` tensor, one ε per chain (as per-chain adaptation,
    ``adapt_per_chain=True``, tunes it): chain c leapfrogs with ``±ε_c``. The metric may be
    per chain too (:class:`Metric` with ``per_chain=True``, ``(C, D)``).
    """

    step_size: float | torch.Tensor = 0.1
    max_tree_depth: int = 10
    max_energy_error: float = 1000.0
    metric: Metric | None = None
    robust_uturn: bool = True
    name = "nuts"
    uses_grad = True
    adaptive = True
    default_target_accept = 0.8
    default_adapt_per_chain = True  # sample(adapt_per_chain=None) tunes one step size per chain (measured)
    _take_last = False  # tests only: keep the trajectory's last leaf instead of the multinomial draw

    def __post_init__(self) -> None:
        if not isinstance(self.step_size, torch.Tensor):
            check_step_size("NUTS", self.step_size)
        object.__setattr__(self, "step_size", step_size_value(self.step_size))
        super().__post_init__()

    def validate(self) -> None:
        check_step_size("NUTS", self.step_size)
        if isinstance(self.max_tree_depth, bool) or int(self.max_tree_depth) != self.max_tree_depth \
                or not 1 <= int(self.max_tree_depth) <= 30:
            raise ValueError(f"NUTS: max_tree_depth must be an integer in 1..30, got {self.max_tree_depth}")
        if not float(self.max_energy_error) > 0:
            raise ValueError(f"NUTS: max_energy_error must be > 0, got {self.max_energy_error}")
        if not isinstance(self.robust_uturn, bool):
            raise ValueError(f"NUTS: robust_uturn must be True or False, got {self.robust_uturn!r}")
        if self.metric is not None and not isinstance(self.metric, Metric):
            raise ValueError(f"NUTS: metric must be an ebmlab.samplers.metric.Metric or None, "
                             f"got {type(self.metric).__name__}")

    def init(self, energy: EnergyFn, x: torch.Tensor) -> ChainState:
        state = super().init(energy, x)
        self.check_chains(state.x)
        return state

    def _subtree_builder(self, energy: EnergyFn, metric: Metric, state: ChainState):
        """``build(near, eps, depth, active, energy0, kinetic0, generator) -> Subtree`` for one
        transition: :func:`~ebmlab.samplers.nuts_tree.build_subtree` over fresh checkpoint slots
        (:class:`~ebmlab.samplers.nuts_compiled.CompiledNUTS` builds with compiled leaves)."""
        checkpoints = Checkpoints(int(self.max_tree_depth), self.robust_uturn)
        limit = float(self.max_energy_error)

        def build(near, eps, depth, active, energy0, kinetic0, generator):
            return build_subtree(energy, metric, near, eps, depth, active, energy0, kinetic0, limit, checkpoints,
                                 generator, take_last=self._take_last)

        return build

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, NUTSInfo]:
        metric = self.metric or IDENTITY
        x0, c = state.x, state.num_chains
        p0 = metric.sample_momentum(x0, generator).flatten(1)
        energy0, kinetic0 = state.energy, metric.kinetic_energy(p0)
        t = start_trajectory(x0, p0, metric.velocity(p0), state.grad, energy0)
        build = self._subtree_builder(energy, metric, state)
        step = self.step_size
        magnitude = step.to(energy0) if isinstance(step, torch.Tensor) else torch.full_like(energy0, float(step))
        for j in range(int(self.max_tree_depth)):
            if j > 0 and not bool(t["active"].any()):
                break
            u = torch.rand((c,), generator=generator, dtype=energy0.dtype, device=energy0.device)
            forward, eps, near, far_sharp = begin_doubling(RowChoice, t, u, magnitude)
            near = Edge(*near)
            sub = build(near, eps, j, t["active"], energy0, kinetic0, generator)
            t = end_doubling(RowChoice, t, sub, forward, near, far_sharp, uniform_log((c,), generator, energy0),
                             self._take_last, self.robust_uturn)
        new = ChainState(x=t["x"], energy=t["e"], grad=t["g"], step=state.step + 1)
        num_leaves, sum_accept = t["num_leaves"], t["sum_accept"]
        info = NUTSInfo(accept_prob=sum_accept / num_leaves.clamp(min=1).to(sum_accept.dtype), accepted=t["moved"],
                        diverged=t["diverged"], tree_depth=t["depth"], num_grad_evals=num_leaves,
                        energy_error=t["error"])
        return new, info
