"""Parallel tempering (replica exchange) over any base kernel, continuous or discrete.

K replicas of every chain run at inverse temperatures ``1 = β_0 > β_1 > ... > β_{K-1} = 1/T_max``
(geometric by default) on the tempered targets ``π_k(x) ∝ exp(-β_k E(x))``; hot replicas cross
energy barriers and pass their states down by swaps (Swendsen & Wang 1986; Geyer 1991;
Hukushima & Nemoto 1996). One transition is

1. one base-kernel step of all ``K·C`` replicas at once, on :class:`TemperedEnergy`
   ``β_r E(y/s_r)`` (replicas are the batch dimension, temperature-major: row ``k·C + c`` is
   chain c at β_k);
2. every ``swap_every``-th transition, a swap between neighbours ``(k, k+1)`` with k of one
   parity — even pairs at even swap rounds, odd pairs at odd ones, the deterministic even-odd
   (DEO) scheme of Okabe et al. (2001), the non-reversible PT of Syed, Bouchard-Côté,
   Deligiannidis & Doucet (2022, JRSS-B 84(2)) — accepted with
   ``log α = (β_k - β_{k+1}) (E(x_k) - E(x_{k+1}))`` (NaN rejects). DEO is chosen over random
   pairs because a replica keeps its direction while swaps succeed, so round trips take O(K)
   rounds instead of the O(K²) of a reversible random walk on the ladder.

Each step leaves ``Π_k π_k`` invariant, so the β = 1 replicas sample ``p(x) ∝ exp(-E(x))``.
Those C chains are all the run driver sees: :class:`TemperedState` ``x``/``energy``/``grad`` are
the cold replicas, ``(C, *event)``; the replica stack and the swap statistics ride along in
extra fields, and :class:`TemperedInfo` adds per-replica and per-pair figures.

Step sizes: on real states (``scale_steps=True``) replica k runs in coordinates ``y = √β_k x``,
where every replica of a near-Gaussian mode has the same width, so one step size fits all:
the base kernel's ε moves replica k by a length ∝ ``ε/√β_k`` (MALA at ``ε/β_k``, RWMH at scale
``σ/√β_k``, HMC with mass ``β_k I``). ``with_step_size`` (the driver's dual averaging, tuned on
the cold chains' acceptance) forwards ε to the base kernel.

Ladder: during a burn-in — :meth:`ParallelTempering.tune_ladder`, or the first ``ladder_burn_in``
transitions of any run (set it ≤ ``sample``'s ``burn_in``) — the ladder is re-spaced after swap
rounds 16, 32, 64, ... and at the window's end so that the estimated swap rejection rates are
equal (:func:`ladder_from_rejections`, Syed et al. 2022 §5.1). Afterwards it is fixed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ebmlab.energy.base import EnergyFn, Support, support_of
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, check_start, metropolis_accept
from ebmlab.samplers.langevin import MALA
from ebmlab.samplers.tempering_ladder import (
    TemperedEnergy, communication_barrier, geometric_ladder, ladder_from_rejections, per_temperature_rows,
    replica_positions, retemper, round_trip_rate, swap_rates,
)

FIRST_LADDER_UPDATE = 16  # swap rounds before the first ladder update; then doubling rounds


@dataclass(frozen=True)
class TemperedState(ChainState):
    """C chains of K replicas. ``x``, ``energy``, ``grad``: the β = 1 replicas (``(C, *event)``, ``(C,)``).

    Attributes:
        replicas: the base kernel's state of all ``K·C`` replicas (row ``k·C + c``) in its
            coordinates ``y = s_k x``, caching ``β_k E(x)`` and ``(β_k/s_k) ∇E(x)``.
        betas: the ladder, ``(K,)``; ``scales``: ``√β`` ``(K,)`` or ``None`` (no rescaling).
        direction: per slot ``(K, C)`` int8, travelling with the states: 0 not yet at β = 1,
            +1 heading hot after β = 1, -1 heading cold after the hottest.
        swap_accept, swap_attempts: summed swap acceptance probabilities and attempts per pair
            ``(K-1,)`` since the ladder was last fixed; ``round_trips``: completed trips
            β = 1 → β_{K-1} → β = 1 per chain ``(C,)`` over the same ``swap_rounds`` rounds.
        ladder_accept, ladder_attempts: the same sums since the last ladder update.
        swap_count: swap rounds in all (their parity picks the pairs); ``adapt_until``: the
            ladder adapts while ``step < adapt_until``; ``next_update``: the round of the next update.
    """

    replicas: ChainState | None = None
    betas: torch.Tensor | None = None
    scales: torch.Tensor | None = None
    direction: torch.Tensor | None = None
    swap_accept: torch.Tensor | None = None
    swap_attempts: torch.Tensor | None = None
    round_trips: torch.Tensor | None = None
    swap_rounds: int = 0
    ladder_accept: torch.Tensor | None = None
    ladder_attempts: torch.Tensor | None = None
    swap_count: int = 0
    adapt_until: int = 0
    next_update: int = FIRST_LADDER_UPDATE

    @property
    def num_temperatures(self) -> int:
        return self.betas.shape[0]


@dataclass(frozen=True)
class TemperedInfo(StepInfo):
    """``accept_prob``/``accepted``: the cold replicas' base move, ``(C,)``; ``diverged``: any of the
    chain's replicas diverged in the move or the swap, ``(C,)``.

    Attributes:
        replica_accept_prob: the base move's acceptance probability per replica, ``(K, C)``.
        swap_accept_prob: ``min(1, α)`` of each pair this step, ``(K-1, C)`` (0 where not tried).
        swap_attempted: which pairs were tried this step, ``(K-1,)`` bool.
        round_trips: round trips completed this step per chain, ``(C,)`` (long).
    """

    replica_accept_prob: torch.Tensor
    swap_accept_prob: torch.Tensor
    swap_attempted: torch.Tensor
    round_trips: torch.Tensor


@dataclass(frozen=True)
class ParallelTempering(Kernel):
    """Replica exchange over ``base`` (module docstring): K temperatures, DEO swaps, ladder burn-in.

    Args:
        base: the kernel run at every temperature (a kernel or a registered name); its
            ``supports``, ``uses_grad``, ``adaptive`` and target acceptance are this kernel's.
        num_temperatures, max_temperature: K ≥ 2 and ``T_max > 1`` of the geometric ladder.
        betas: an explicit ladder ``(1, ..., 1/T_max)``, strictly decreasing; it sets K and T_max.
        swap_every: base steps per swap round.
        adapt_ladder: whether the ladder adapts during :meth:`tune_ladder` or the first
            ``ladder_burn_in`` transitions (0: a fixed ladder in plain runs).
        scale_steps: on real states, run replica k in coordinates ``√β_k x`` (module docstring).
        step_size: when given, the base kernel's step size (``None``: the base's own).
    """

    base: Kernel | str = field(default_factory=lambda: MALA(step_size=0.05))
    num_temperatures: int = 8
    max_temperature: float = 10.0
    betas: tuple[float, ...] | None = None
    swap_every: int = 1
    adapt_ladder: bool = True
    ladder_burn_in: int = 0
    scale_steps: bool = True
    step_size: float | None = None
    name = "pt"

    def __post_init__(self) -> None:
        base = self.base
        if isinstance(base, str):
            from ebmlab.samplers.registry import make_kernel

            base = make_kernel(base)
        if not isinstance(base, Kernel):
            raise TypeError(f"ParallelTempering: base must be a Kernel or a sampler name, got {type(base).__name__}")
        if self.step_size is not None and self.step_size != getattr(base, "step_size", None):
            base = base.with_step_size(self.step_size)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "step_size", getattr(base, "step_size", None))
        if self.betas is not None:
            betas = tuple(float(b) for b in self.betas)
            object.__setattr__(self, "betas", betas)
            if len(betas) >= 2 and betas[-1] > 0:
                object.__setattr__(self, "num_temperatures", len(betas))
                object.__setattr__(self, "max_temperature", 1.0 / betas[-1])
        self.validate()

    def validate(self) -> None:
        base = self.base
        if isinstance(base, ParallelTempering) or base.name == "block_gibbs":
            raise ValueError(f"ParallelTempering: cannot temper {type(base).__name__} (block Gibbs draws from the "
                             "energy's own conditionals, which a tempered energy does not have); use gibbs or gwg")
        if int(self.num_temperatures) != self.num_temperatures or self.num_temperatures < 2:
            raise ValueError(f"ParallelTempering: num_temperatures must be an integer >= 2, "
                             f"got {self.num_temperatures}")
        if not 1.0 < float(self.max_temperature) < float("inf"):
            raise ValueError(f"ParallelTempering: max_temperature must be finite and > 1, got {self.max_temperature}")
        if self.betas is not None:
            b = self.betas
            if len(b) < 2 or b[0] != 1.0 or not b[-1] > 0 or any(not lo < hi for hi, lo in zip(b, b[1:])):
                raise ValueError(f"ParallelTempering: betas must be strictly decreasing from 1.0 to a value > 0 "
                                 f"(at least two), got {b}")
        if int(self.swap_every) != self.swap_every or self.swap_every < 1:
            raise ValueError(f"ParallelTempering: swap_every must be an integer >= 1, got {self.swap_every}")
        if int(self.ladder_burn_in) != self.ladder_burn_in or self.ladder_burn_in < 0:
            raise ValueError(f"ParallelTempering: ladder_burn_in must be an integer >= 0, got {self.ladder_burn_in}")

    # The base kernel's capabilities are this kernel's.
    @property
    def supports(self) -> tuple[str, ...]:
        return self.base.supports

    @property
    def support(self) -> str:
        return "discrete" if any(kind != "real" for kind in self.supports) else "real"

    @property
    def uses_grad(self) -> bool:
        return self.base.uses_grad

    @property
    def adaptive(self) -> bool:
        return self.base.adaptive

    @property
    def default_target_accept(self) -> float:
        return self.base.default_target_accept

    def num_states_for(self, energy: EnergyFn, support: Support) -> int | None:
        return self.base.num_states_for(energy, support)

    def with_step_size(self, step_size: float) -> "ParallelTempering":
        """The base kernel at step size ε (at β_k it moves ∝ ε/√β_k on real states, ``scale_steps``)."""
        base = self.base.with_step_size(step_size)
        return dataclasses.replace(self, base=base, step_size=getattr(base, "step_size", None))

    def ladder(self, like: torch.Tensor) -> torch.Tensor:
        """The ladder ``(K,)`` in ``like``'s dtype and device: ``betas``, else geometric."""
        betas = self.betas or geometric_ladder(self.num_temperatures, self.max_temperature)
        return torch.tensor(betas, dtype=like.dtype, device=like.device)

    # ------------------------------------------------------------------ init
    def init(self, energy: EnergyFn, x0: torch.Tensor) -> TemperedState:
        """Every chain of ``x0`` ``(C, *event)`` copied to the K temperatures (validated once)."""
        check_start(self, energy, x0)
        x0 = x0.detach()
        return self.init_replicas(energy, x0.unsqueeze(0).expand(self.num_temperatures, *x0.shape))

    def init_replicas(self, energy: EnergyFn, x: torch.Tensor) -> TemperedState:
        """Start replica k of chain c at ``x[k, c]``; ``x`` ``(K, C, *event)`` (e.g. exact draws of every
        tempered law, or :func:`replica_positions` of an earlier run)."""
        if not isinstance(x, torch.Tensor) or x.dim() < 3 or x.shape[0] != self.num_temperatures:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"ParallelTempering: replica starts must have shape (num_temperatures="
                             f"{self.num_temperatures}, num_chains, *event_shape), got {got}")
        k, c = x.shape[0], x.shape[1]
        stack = x.detach().reshape(k * c, *x.shape[2:])
        support = check_start(self, energy, stack)
        betas = self.ladder(stack)
        scales = betas.sqrt() if self.scale_steps and not support.discrete else None
        scale_rows = per_temperature_rows(scales, c)
        if scale_rows is not None:
            stack = stack * scale_rows.view(-1, *([1] * (stack.dim() - 1)))
        replicas = self.base.init(TemperedEnergy(energy, per_temperature_rows(betas, c), scale_rows), stack)
        direction = torch.zeros((k, c), dtype=torch.int8, device=stack.device)
        direction[0] = 1
        zeros = replicas.energy.new_zeros(k - 1)
        return self._state(replicas, c, betas=betas, scales=scales, direction=direction, swap_accept=zeros,
                           swap_attempts=zeros, round_trips=torch.zeros(c, dtype=torch.long, device=stack.device),
                           ladder_accept=zeros, ladder_attempts=zeros,
                           adapt_until=int(self.ladder_burn_in) if self.adapt_ladder else 0)

    @staticmethod
    def _state(replicas: ChainState, num_chains: int, step: int = 0, **fields) -> TemperedState:
        grad = None if replicas.grad is None else replicas.grad[:num_chains]
        return TemperedState(x=replicas.x[:num_chains].clone(), energy=replicas.energy[:num_chains].clone(),
                             grad=grad, step=step, replicas=replicas, **fields)

    # ------------------------------------------------------------------ step
    def swap_log_ratio(self, beta_cold: torch.Tensor, beta_hot: torch.Tensor, energy_cold: torch.Tensor,
                       energy_hot: torch.Tensor) -> torch.Tensor:
        """``log α = (β_k - β_{k+1})(E(x_k) - E(x_{k+1}))`` for swapping the states of a pair, ``(P, C)``."""
        return (beta_cold - beta_hot)[:, None] * (energy_cold - energy_hot)

    def step(self, energy: EnergyFn, state: TemperedState, generator: torch.Generator | None
             ) -> tuple[TemperedState, TemperedInfo]:
        k, c = state.num_temperatures, state.num_chains
        betas, scales = state.betas, state.scales
        beta_rows, scale_rows = per_temperature_rows(betas, c), per_temperature_rows(scales, c)
        replicas, move = self.base.step(TemperedEnergy(energy, beta_rows, scale_rows), state.replicas, generator)
        diverged = move.diverged.view(k, c).any(0)
        fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(TemperedState)
                  if f.name not in ("x", "energy", "grad", "step", "replicas")}
        swap_prob = replicas.energy.new_zeros(k - 1, c)
        attempted = torch.zeros(k - 1, dtype=torch.bool, device=swap_prob.device)
        trips = torch.zeros(c, dtype=torch.long, device=swap_prob.device)
        if (state.step + 1) % self.swap_every == 0:
            lower = torch.arange(state.swap_count % 2, k - 1, 2, device=swap_prob.device)
            raw = (replicas.energy / beta_rows).view(k, c)
            log_alpha = self.swap_log_ratio(betas[lower], betas[lower + 1], raw[lower], raw[lower + 1])
            accepted, prob, swap_div = (t.view(-1, c) for t in metropolis_accept(log_alpha.flatten(), generator))
            diverged = diverged | swap_div.any(0)
            source = torch.arange(k, device=lower.device)[:, None].repeat(1, c)  # slot k takes slot source[k]
            up, down = lower[:, None], lower[:, None] + 1
            source[lower] = torch.where(accepted, down, up)
            source[lower + 1] = torch.where(accepted, up, down)
            rows = (source * c + torch.arange(c, device=lower.device)).flatten()
            replicas = retemper(replicas, rows, beta_rows, beta_rows, scale_rows, scale_rows)
            direction = state.direction.gather(0, source)
            trips = (direction[0] == -1).long()
            direction[0] = 1
            direction[-1] = torch.where(direction[-1] == 1, -1, direction[-1]).to(direction.dtype)
            swap_prob = swap_prob.index_copy(0, lower, prob)
            attempted = attempted.index_fill(0, lower, True)
            summed, tried = prob.sum(1), torch.full_like(prob[:, 0], float(c))
            fields.update(direction=direction, swap_count=state.swap_count + 1, swap_rounds=state.swap_rounds + 1,
                          swap_accept=state.swap_accept.index_add(0, lower, summed),
                          swap_attempts=state.swap_attempts.index_add(0, lower, tried),
                          round_trips=state.round_trips + trips)
            if state.step < state.adapt_until:
                fields.update(ladder_accept=state.ladder_accept.index_add(0, lower, summed),
                              ladder_attempts=state.ladder_attempts.index_add(0, lower, tried))
        if state.step < state.adapt_until:
            replicas, fields = self._adapt(replicas, c, state.step + 1 == state.adapt_until, fields)
        info = TemperedInfo(accept_prob=move.accept_prob[:c], accepted=move.accepted[:c], diverged=diverged,
                            replica_accept_prob=move.accept_prob.view(k, c), swap_accept_prob=swap_prob,
                            swap_attempted=attempted, round_trips=trips)
        return self._state(replicas, c, step=state.step + 1, **fields), info

    def _adapt(self, replicas: ChainState, num_chains: int, last: bool, fields: dict) -> tuple[ChainState, dict]:
        """Re-space the ladder at swap round ``next_update`` (then doubling) and at the window's end."""
        attempts = fields["ladder_attempts"]
        due = fields["swap_count"] >= fields["next_update"] or last
        if due and bool((attempts > 0).all()):
            betas = fields["betas"]
            new = ladder_from_rejections(betas, 1.0 - fields["ladder_accept"] / attempts)
            scales = None if fields["scales"] is None else new.sqrt()
            rows = [per_temperature_rows(v, num_chains) for v in (betas, new, fields["scales"], scales)]
            replicas = retemper(replicas, None, *rows)
            zeros = attempts.new_zeros(attempts.shape)
            fields.update(betas=new, scales=scales, ladder_accept=zeros, ladder_attempts=zeros,
                          next_update=2 * fields["swap_count"])
        if last:  # the ladder is fixed from here on: the reported statistics start afresh
            zeros = attempts.new_zeros(attempts.shape)
            fields.update(swap_accept=zeros, swap_attempts=zeros, swap_rounds=0,
                          round_trips=torch.zeros_like(fields["round_trips"]))
        return replicas, fields

    # ------------------------------------------------------------------ burn-in
    def tune_ladder(self, energy: EnergyFn, x0: torch.Tensor, num_steps: int,
                    generator: torch.Generator | None = None) -> tuple["ParallelTempering", TemperedState]:
        """Run ``num_steps`` transitions from ``x0`` ``(C, *event)`` adapting the ladder (if ``adapt_ladder``).

        Returns the kernel with ``betas`` fixed to the adapted ladder (and ``ladder_burn_in=0``) and
        the final state; continue exactly with ``run_kernel(kernel, energy, state, ...)``, or start
        ``sample(energy, kernel, state.x, burn_in=...)`` from its cold chains.
        """
        from ebmlab.samplers.driver import run_kernel

        if int(num_steps) != num_steps or num_steps < 1:
            raise ValueError(f"ParallelTempering.tune_ladder: num_steps must be an integer >= 1, got {num_steps}")
        kernel = dataclasses.replace(self, ladder_burn_in=int(num_steps))
        state = run_kernel(kernel, energy, kernel.init(energy, x0), int(num_steps), generator, check_finite=True).state
        tuned = dataclasses.replace(self, betas=tuple(float(b) for b in state.betas.tolist()), ladder_burn_in=0)
        return tuned, state


__all__ = ["ParallelTempering", "TemperedEnergy", "TemperedInfo", "TemperedState", "communication_barrier",
           "replica_positions", "round_trip_rate", "swap_rates"]
