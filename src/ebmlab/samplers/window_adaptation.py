"""Burn-in adaptation: the step size alone, or Stan's windowed warm-up of step size and metric.

``kernel, state, info = window_adaptation(kernel, energy, x0, num_steps, generator, metric="diag")``

Stan's warm-up (Stan Reference Manual, "HMC algorithm parameters: automatic parameter
tuning"; Hoffman & Gelman 2014 for the step size), run through
:func:`~ebmlab.samplers.loop.run_kernel`:

* an initial fast window of 75 steps (step size only), slow windows of 25, 50, 100, ... steps
  (the last stretched to end where the terminal window begins) and a terminal fast window of
  50; when ``num_steps < 150`` the three are 15 %, 75 % and 10 % of it (Stan's rule);
* at the end of each slow window the inverse mass matrix ``M⁻¹`` becomes the regularised
  covariance of that window's draws, pooled over the C chains and the window's T steps
  (n = C·T draws): ``(n/(n+5)) Σ̂ + 1e-3 (5/(n+5)) I`` (its diagonal for ``"diag"``); with
  ``"diag_per_chain"`` every chain gets its own diagonal from its own T draws (n = T), the same
  regularisation — what Stan and BlackJAX do for one chain;
* after each metric update the step size is re-initialised (doubling or halving until one
  transition's mean acceptance crosses the target, Hoffman & Gelman 2014, Alg. 4, over the
  pooled chains; with per-chain metrics every chain keeps its own ε̄ instead, as BlackJAX
  does) and dual averaging restarts; its ε̄ at the end of the terminal window is the tuned
  step size.

With many chains the covariance comes from C draws per step, so even short slow windows give
a precise metric. :func:`step_size_adaptation` is the step-size-only burn-in that
:func:`~ebmlab.samplers.driver.sample` runs by default.

Shapes: ``x0`` ``(C, *event)``; ``D = prod(event)``; diagonal metrics ``(D,)``, dense ``(D, D)``,
per-chain diagonal ``(C, D)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from ebmlab.energy.base import EnergyFn
from ebmlab.samplers.adaptation import POOLED_GAMMA, DualAveraging
from ebmlab.samplers.base import ChainState, Kernel, StepInfo
from ebmlab.samplers.loop import Callback, KernelRun, check_start_energy, initial_step_sizes, run_kernel
from ebmlab.samplers.metric import Metric

METRICS = ("diag", "dense", "diag_per_chain", None)


def step_size_dual_averaging(target_accept: float, per_chain: bool, restart: bool = False) -> DualAveraging:
    """The dual averaging for a statistic pooled over chains (γ = 0.2; ``restart``: centred on
    the current step, ``μ = log ε``) or for one chain's own (Stan's γ = 0.05, ``μ = log 10ε``);
    see :mod:`ebmlab.samplers.adaptation` for why."""
    if per_chain:
        return DualAveraging(target_accept=target_accept)
    return DualAveraging(target_accept=target_accept, gamma=POOLED_GAMMA, mu_factor=1.0 if restart else 10.0)


def _joined(first: KernelRun, second: KernelRun) -> KernelRun:
    """Two consecutive runs as one (states kept by neither: ``x`` and ``energy`` are ``None``)."""
    return KernelRun(second.state, second.kernel, None, None, first.accepted + second.accepted,
                     first.accept_prob + second.accept_prob, first.divergences + second.divergences,
                     first.num_steps + second.num_steps)


def step_size_adaptation(kernel: Kernel, energy: EnergyFn, state: ChainState, num_steps: int,
                         generator: torch.Generator | None, target_accept: float, per_chain: bool = False,
                         callback: Callback | None = None, first_step: int = 1) -> KernelRun:
    """``num_steps`` burn-in transitions tuning the step size by dual averaging.

    Pooled (one step size): dual averaging with γ = 0.2 from ``μ = log 10ε₀`` for the first
    half, restarted centred on the ε̄ it reached (``μ = log ε̄``) for the second half — this
    removes the period-two cycle and the far-off-``μ`` bias that left HMC at 0.72–0.80
    acceptance against 0.65 (see :mod:`ebmlab.samplers.adaptation`). Per chain
    (``per_chain=True``, a ``(C,)`` step size): Stan's dual averaging on each chain's own
    acceptance probability, vectorised. Returns the :class:`KernelRun` of the burn-in, whose
    kernel holds the tuned step size.
    """
    common = dict(callback=callback, check_finite=True, per_chain=per_chain)
    if per_chain or num_steps < 2:
        return run_kernel(kernel, energy, state, num_steps, generator, first_step=first_step,
                          adaptation=step_size_dual_averaging(target_accept, per_chain), **common)
    half = num_steps // 2
    first = run_kernel(kernel, energy, state, half, generator, first_step=first_step,
                       adaptation=step_size_dual_averaging(target_accept, False), **common)
    second = run_kernel(first.kernel, energy, first.state, num_steps - half, generator, first_step=first_step + half,
                        adaptation=step_size_dual_averaging(target_accept, False, restart=True), **common)
    return _joined(first, second)


def window_schedule(num_steps: int, init_buffer: int = 75, term_buffer: int = 50,
                    base_window: int = 25) -> tuple[int, list[int], int]:
    """Stan's warm-up windows: ``(initial fast steps, [slow window sizes], terminal fast steps)``.

    Sizes sum to ``num_steps``. Slow windows double from ``base_window``; one whose successor
    would not end before the terminal window is stretched to reach it. Below
    ``init_buffer + base_window + term_buffer`` steps the windows are 15 % / 75 % / 10 %; below 20
    steps there is no slow window at all (``(num_steps, [], 0)``: step size only).
    """
    if num_steps < 20:
        return num_steps, [], 0
    if init_buffer + base_window + term_buffer > num_steps:
        init_buffer, term_buffer = int(0.15 * num_steps), int(0.1 * num_steps)
        base_window = num_steps - init_buffer - term_buffer
    slow_end = num_steps - term_buffer
    windows, start, size = [], init_buffer, base_window
    while start < slow_end:
        if windows and start + 3 * size >= slow_end:  # the next window would not fit: stretch this one
            size = slow_end - start
        size = min(size, slow_end - start)
        windows.append(size)
        start += size
        size *= 2
    return init_buffer, windows, term_buffer


class _PooledMoments:
    """Mean and covariance (or variance) of draws pooled over chains and steps, in float64;
    with ``per_chain`` each chain's own variance over the steps, ``(C, D)`` (n = T).

    Sums are shifted by the first batch's mean (per chain: its first draw) so that a target far
    from the origin loses no precision.
    """

    def __init__(self, dense: bool, per_chain: bool = False):
        self.dense, self.per_chain, self.n, self.shift, self.s1, self.s2 = dense, per_chain, 0, None, None, None

    def add(self, x: torch.Tensor) -> None:
        flat = x.detach().flatten(1).to(torch.float64)
        if self.shift is None:
            self.shift = flat.clone() if self.per_chain else flat.mean(0)
            self.s1 = torch.zeros_like(self.shift)
            self.s2 = torch.zeros_like(self.shift) if self.per_chain else \
                flat.new_zeros((flat.shape[1],) * (2 if self.dense else 1))
        centred = flat - self.shift
        if self.per_chain:
            self.n += 1
            self.s1 += centred
            self.s2 += centred.square()
            return
        self.n += flat.shape[0]
        self.s1 += centred.sum(0)
        self.s2 += centred.T @ centred if self.dense else centred.square().sum(0)

    def regularised(self) -> torch.Tensor:
        """Stan's ``(n/(n+5)) Σ̂ + 1e-3 (5/(n+5)) I`` (diagonal: ``Var̂`` and ``1e-3·5/(n+5)``;
        per chain: row c from chain c's n = T draws)."""
        n = self.n
        mean = self.s1 / n
        cov = (self.s2 - n * (torch.outer(mean, mean) if self.dense else mean.square())) / (n - 1)
        shrink = 1e-3 * 5.0 / (n + 5.0)
        cov = (n / (n + 5.0)) * cov
        return cov + shrink * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device) if self.dense else cov + shrink


def reasonable_step_size(kernel: Kernel, energy: EnergyFn, state: ChainState, generator: torch.Generator | None,
                         target_accept: float, per_chain: bool = False, max_doublings: int = 10):
    """A step size within a factor 2 of where one transition's acceptance crosses ``target_accept``.

    From the kernel's step size, double it while the mean acceptance probability of one
    transition from ``state`` stays above the target, or halve it while it stays below
    (Hoffman & Gelman 2014, Alg. 4, with the kernel's own transition and the chains pooled;
    per chain with ``per_chain``, each chain on its own). The chains do not move. Returns a
    float, or a ``(C,)`` float64 tensor.
    """
    eps = torch.as_tensor(initial_step_sizes(kernel, state, per_chain), dtype=torch.float64, device=state.x.device)

    def accept(step: torch.Tensor) -> torch.Tensor:
        _, info = kernel.with_step_size(step if per_chain else float(step)).step(energy, state, generator)
        prob = torch.nan_to_num(info.accept_prob.detach().to(torch.float64), nan=0.0)
        return prob if per_chain else prob.mean()

    direction = torch.where(accept(eps) > target_accept, 2.0, 0.5)
    active = torch.ones_like(eps, dtype=torch.bool)
    for _ in range(max_doublings):
        eps = torch.where(active, eps * direction, eps)
        above = accept(eps) > target_accept
        active &= above == (direction > 1)  # still on the starting side: keep going
        if not active.any():
            break
    return eps if per_chain else float(eps)


def rescaled_step_size(kernel: Kernel, energy: EnergyFn, state: ChainState, generator: torch.Generator | None,
                       target_accept: float, per_chain: bool, per_chain_metric: bool = False):
    """The step size a dual-averaging segment starts from after the metric changed.

    Pooled: :func:`reasonable_step_size`. Per chain with a pooled metric: every chain's ε̄
    times one common factor, the one that takes their median to where the pooled acceptance
    crosses the target — the metric is shared, so it moves every chain's scale alike, and one
    transition's acceptance of one chain is too noisy to search on (searched per chain, chains
    that drew a low statistic were halved into 10–30× smaller steps and deep trees that the
    whole batch waited on; measured on the banana, 128 chains: warm-up 3.3× longer).

    Per chain with per-chain metrics (``per_chain_metric``): every chain keeps its own ε̄, as
    BlackJAX's window adaptation does for one chain. Each chain's metric changed by its own
    amount, so one common factor is wrong for all but the median chain: on the centred funnel
    (128 chains, 5 seeds) the common factor left the worst-coordinate tail ESS per gradient at
    1.02× BlackJAX's (0.60–1.80 by seed) and keeping ε̄ gave 1.22× (0.80–1.44), bulk 1.09×.
    """
    if per_chain and per_chain_metric:
        return torch.as_tensor(initial_step_sizes(kernel, state, True))
    if not per_chain:
        return reasonable_step_size(kernel, energy, state, generator, target_accept)
    steps = torch.as_tensor(initial_step_sizes(kernel, state, True))
    median = float(steps.median())
    found = reasonable_step_size(kernel.with_step_size(median), energy, state, generator, target_accept)
    return steps * (found / median)


@dataclass
class WindowAdaptationInfo:
    """What :func:`window_adaptation` did.

    Attributes:
        schedule: ``(initial fast, [slow windows], terminal fast)`` step counts.
        inverse_mass_matrices: the metric estimated at the end of each slow window.
        num_draws: the draws behind each estimate (pooled: C·T; per chain: T).
        step_sizes: the step size at the end of each dual-averaging segment.
        accept_prob: the mean acceptance probability of each segment.
        divergences: divergent transitions per chain over the whole warm-up, ``(C,)``.
    """

    schedule: tuple[int, list[int], int]
    inverse_mass_matrices: list[torch.Tensor] = field(default_factory=list)
    num_draws: list[int] = field(default_factory=list)
    step_sizes: list = field(default_factory=list)
    accept_prob: list[float] = field(default_factory=list)
    divergences: torch.Tensor | None = None


def window_adaptation(kernel: Kernel, energy: EnergyFn, x0: torch.Tensor | ChainState, num_steps: int,
                      generator: torch.Generator | None, metric: str | None = "diag",
                      target_accept: float | None = None, per_chain: bool = False, callback: Callback | None = None,
                      first_step: int = 1) -> tuple[Kernel, ChainState, WindowAdaptationInfo]:
    """Stan's windowed warm-up of ``kernel`` (module docstring) over ``num_steps`` transitions.

    Args:
        kernel: an adaptive kernel with a ``metric`` field (HMC, MALA, NUTS).
        x0: starting states ``(C, *event)`` or a :class:`ChainState` to continue from.
        metric: ``"diag"``, ``"dense"`` (pooled over chains), ``"diag_per_chain"`` (one diagonal
            per chain from its own draws, a ``(C, D)`` :class:`Metric` with ``per_chain=True``;
            needs at least 2 draws per slow window), or ``None`` (keep the kernel's metric; step
            size only, one dual averaging over all the steps).
        target_accept: δ; the kernel's ``default_target_accept`` when ``None``.
        per_chain: tune one step size per chain; after an update of a pooled metric the chains'
            step sizes move by one common factor, after one of per-chain metrics every chain
            restarts from its own ε̄ (:func:`rescaled_step_size`).
        callback: ``callback(step, state, info)`` after each transition, ``step`` from ``first_step``.

    Returns ``(kernel with the tuned step_size and metric, final ChainState, info)``.
    """
    name = type(kernel).__name__
    if metric not in METRICS:
        raise ValueError(f"window_adaptation: metric must be 'diag', 'dense', 'diag_per_chain' or None, "
                         f"got {metric!r}")
    if not kernel.adaptive or (metric is not None and "metric" not in {f.name for f in dataclasses.fields(kernel)}):
        raise ValueError(f"window_adaptation: {name} has no step size and metric to adapt; use HMC, MALA or NUTS")
    if per_chain and not getattr(kernel, "per_chain_adaptive", False):
        raise ValueError(f"window_adaptation: {name} does not take one step size per chain")
    if num_steps < 0:
        raise ValueError(f"window_adaptation: num_steps must be >= 0, got {num_steps}")
    delta = target_accept or kernel.default_target_accept
    state = x0 if isinstance(x0, ChainState) else kernel.init(energy, x0)
    check_start_energy(state, name, energy)
    schedule = window_schedule(num_steps) if metric is not None else (num_steps, [], 0)
    info = WindowAdaptationInfo(schedule=schedule)
    init_buffer, slow, term = schedule
    divergences = torch.zeros(state.num_chains, dtype=torch.long, device=state.x.device)
    step = first_step
    # dual-averaging segments: [fast + slow₁], [slow₂], ..., [slowₖ], [terminal fast]
    segments = ([(init_buffer, slow[0])] + [(0, w) for w in slow[1:]]) if slow else [(init_buffer, 0)]
    if term:
        segments.append((term, 0))
    for k, (fast_steps, slow_steps) in enumerate(segments):
        if k > 0:  # the metric (or nothing, for the terminal window's restart) changed: re-initialise ε
            kernel = kernel.with_step_size(rescaled_step_size(kernel, energy, state, generator, delta, per_chain,
                                                              metric == "diag_per_chain"))
        adaptation = step_size_dual_averaging(delta, per_chain, restart=k > 0 and not per_chain)
        moments = _PooledMoments(dense=metric == "dense", per_chain=metric == "diag_per_chain")
        total = fast_steps + slow_steps

        def observe(t: int, s: ChainState, i: StepInfo, start=step, moments=moments, fast=fast_steps) -> None:
            if t - start >= fast:
                moments.add(s.x)
            if callback is not None:
                callback(t, s, i)

        run = run_kernel(kernel, energy, state, total, generator, adaptation=adaptation, per_chain=per_chain,
                         callback=observe if slow_steps else callback, first_step=step, check_finite=True)
        kernel, state, step = run.kernel, run.state, step + total
        divergences += run.divergences
        info.step_sizes.append(kernel.step_size)
        info.accept_prob.append(run.mean_accept_prob)
        if slow_steps:
            inv = moments.regularised().to(state.x.dtype)
            kernel = dataclasses.replace(kernel, metric=Metric(inv, per_chain=moments.per_chain))
            info.inverse_mass_matrices.append(inv)
            info.num_draws.append(moments.n)
    info.divergences = divergences
    return kernel, state, info


__all__ = ["WindowAdaptationInfo", "reasonable_step_size", "step_size_adaptation", "window_adaptation",
           "window_schedule"]
