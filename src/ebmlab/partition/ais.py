"""Annealed importance sampling (Neal 2001) for ``log Z`` in any dimension, with a reverse bound.

Path: ``log f_β(x) = (1-β) log p₀(x) - β E(x)`` from a normalised base p₀ (``Z₀ = 1``) to the
target ``exp(-E)``, over a schedule ``0 = β₀ < ... < β_{K-1} = 1``. Each of N independent runs

    x₀ ~ p₀;   for k = 1..K-1:   log w += (β_k - β_{k-1}) (-E(x_{k-1}) - log p₀(x_{k-1}))
                                 x_k ~ T_k(x_{k-1}, ·)    (k ≤ K-2)

where ``T_k`` is an MCMC kernel leaving ``f_{β_k}`` invariant: any ebmlab kernel run on
:class:`~ebmlab.partition.bases.AnnealedEnergy` ``E_β``. Then ``E[w] = Z``, and

    log Ẑ = log (1/N) Σ_n w_n         (log-mean-exp),

is a stochastic *lower* bound: ``E[log Ẑ] ≤ log Z`` by Jensen. Its standard error by the delta
method is ``std(w) / (√N · mean(w))`` (computed on ``w / max w``), and the importance weights'
effective sample size is ``ESS = (Σ w)² / Σ w²``.

Reverse AIS (the idea of RAISE, Burda, Grosse & Salakhutdinov 2015, and of bidirectional
Monte Carlo, Grosse, Ghahramani & Adams 2015): started at exact draws of the target and
annealed from β = 1 down to 0 with the same kernels, the reverse weights satisfy
``E[w_rev] = Z₀/Z = 1/Z``, so ``-log mean(w_rev)`` is a stochastic *upper* bound. Together:
``[log Ẑ, log Ẑ_upper]`` brackets ``log Z`` in expectation. The bracket is only valid when the
reverse start is an exact sample of the model; data stand-ins give a heuristic bound.

The transitions at each temperature are ``num_steps`` steps of the one chain loop,
:func:`ebmlab.samplers.driver.run_kernel`. Per-temperature step-size adaptation
(``adapt=True``, adaptive kernels) is the library's dual averaging
(:class:`~ebmlab.samplers.adaptation.DualAveraging`, Hoffman & Gelman 2014) across the
schedule: temperature k's mean acceptance probability over all runs is dual-averaging
iteration k, and temperature k+1 uses the *current* iterate ``ε_k`` (not the average ``ε̄``,
which lags behind a target that changes with β) — standard practice in adaptive SMC. Kernels
that take ``metric=`` (MALA, HMC) also get a diagonal inverse mass matrix at each temperature,
the runs' per-dimension variance (:mod:`ebmlab.partition.adaptive`): on a 10-D Gaussian with
scales 0.1..10 one step size cannot suit every direction without it. Both adaptations couple
the runs weakly, which makes ``Ẑ`` consistent rather than exactly unbiased; the adaptive
schedule (``schedule="adaptive"``: each next β keeps the conditional ESS of the incremental
weights at ``target_ess``) runs a pilot to choose temperatures, steps and metrics and then
independent runs with them fixed, which keeps ``E[Ẑ] = Z``.

Whether the ``±`` means anything: :attr:`AISResult.reliable` and :attr:`AISResult.warning`
apply the weight-ESS rule and, with reverse runs, the bracket check of
:mod:`ebmlab.partition.weights`; ``str(result)`` prints no ``±`` for an unreliable result.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
from torch import nn

from ebmlab.energy.base import EnergyFn
from ebmlab.samplers.adaptation import DualAveraging
from ebmlab.samplers.base import ChainState, Kernel
from ebmlab.samplers.driver import run_kernel
from ebmlab.partition.ais_setup import default_kernel, resolve_base
from ebmlab.partition.bases import AnnealedEnergy, CategoricalBase, split_energy
from ebmlab.energy.enumeration import energy_device, energy_dtype
from ebmlab.partition.adaptive import (
    DEFAULT_TARGET_ESS, MAX_ADAPTIVE_TEMPERATURES, STEP_SIZE_RANGE, metric_scale, next_beta, particle_metric,
    takes_metric, temperature_adaptation,
)
from ebmlab.partition.schedules import make_schedule
from ebmlab.partition.weights import combine_log_weights, log_weight_statistics, min_ess_for, result_reliability
from ebmlab.samplers.metric import Metric


@dataclass
class AISResult:
    """The result of :func:`ais`.

    Attributes:
        log_z: ``log Ẑ = log mean exp(log_weights)``, a stochastic lower bound, nats.
        log_z_stderr: delta-method standard error of ``log Ẑ``.
        ess: effective sample size of the importance weights, in ``[1, N]``.
        log_weights: the N runs' log weights, shape ``(N,)`` float64 (cpu). Runs from several
            processes combine by one log-mean-exp of their concatenation
            (:func:`combine_log_weights`).
        schedule: the temperatures ``β``, shape ``(K,)`` (with ``schedule="adaptive"``, the
            pilot's choice).
        samples: the runs' final states, shape ``(N, *event)``; weighted by ``exp(log_weights)``
            they are importance samples of the target.
        acceptance_rate: mean acceptance probability at each intermediate temperature, ``(K-2,)``.
        step_sizes: the step size used at each intermediate temperature, ``(K-2,)``, or None.
        log_z_upper, log_z_upper_stderr, reverse_log_weights: the reverse-AIS upper bound
            ``-log mean exp(reverse_log_weights)`` and its standard error, when reverse starts
            were given; otherwise None.
        wall_time: seconds.
        method: the estimator, ``"ais"`` or ``"rbm_ais"``.
        log_z_base: ``log Z₀`` of the base, so that ``log_z = log_z_base + log mean exp(log_weights)``;
            0 for :func:`ais` (a normalised base), the base-rate RBM's for
            :func:`~ebmlab.partition.rbm_ais.rbm_ais`.
        metrics: the diagonal inverse mass matrix used at each intermediate temperature,
            ``(K-2, D)``, when it was adapted to the runs; otherwise None.
        min_ess: the ESS below which the result is unreliable; None: ``max(30, 0.1 N)``
            (:mod:`ebmlab.partition.weights` justifies it); 0 switches the checks off.
        check_bracket: whether a reverse-AIS bound takes part in ``reliable`` (it should only
            when the reverse runs started at exact draws of the target).
        reliable: whether ``log_z_stderr`` can be believed: ``ess ≥`` the threshold, a finite
            standard error, and with a reverse bound a bracket that agrees with the estimate
            (:func:`~ebmlab.partition.weights.result_reliability`). Derived from the fields
            above (also after ``dataclasses.replace``), not given.
        warning: None when reliable; otherwise one sentence saying why, and what to raise.
    """

    log_z: float
    log_z_stderr: float
    ess: float
    log_weights: torch.Tensor
    schedule: torch.Tensor
    samples: torch.Tensor
    acceptance_rate: torch.Tensor
    step_sizes: torch.Tensor | None
    log_z_upper: float | None = None
    log_z_upper_stderr: float | None = None
    reverse_log_weights: torch.Tensor | None = None
    wall_time: float = 0.0
    method: str = "ais"
    log_z_base: float = 0.0
    metrics: torch.Tensor | None = None
    min_ess: float | None = None
    check_bracket: bool = True
    reliable: bool = field(init=False, default=True)
    warning: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        upper = None
        if self.check_bracket and self.log_z_upper is not None and self.reverse_log_weights is not None:
            _, _, reverse_ess = log_weight_statistics(self.reverse_log_weights)
            upper = (self.log_z_upper, self.log_z_upper_stderr, reverse_ess, int(self.reverse_log_weights.numel()))
        self.reliable, self.warning = result_reliability(self.ess, self.num_runs, self.log_z, self.log_z_stderr,
                                                         self.min_ess, upper)

    @property
    def num_runs(self) -> int:
        return int(self.log_weights.numel())

    @property
    def num_temperatures(self) -> int:
        return int(self.schedule.numel())

    @property
    def bracket(self) -> tuple[float, float | None]:
        """``(lower, upper)`` stochastic bounds on ``log Z`` (upper is None without reverse runs)."""
        return self.log_z, self.log_z_upper

    def __str__(self) -> str:
        """``log Z = 9.1800 ± 0.0400 (ais, K = 200, 100 runs, ESS 63.0)``; when unreliable no
        ``±``: ``log Z ≈ 5.2500 (...), unreliable: <warning>``."""
        how = f"({self.method}, K = {self.num_temperatures}, {self.num_runs} runs, ESS {self.ess:.1f})"
        if self.reliable:
            return f"log Z = {self.log_z:.4f} ± {self.log_z_stderr:.4f} {how}"
        return f"log Z ≈ {self.log_z:.4f} {how}; {self.warning}"


@dataclass
class AnnealPass:
    """What one pass of :func:`_anneal` did: ``log_weights (N,)`` float64 (cpu), final ``x``
    ``(N, *event)``, the temperatures ``betas (K,)``, and per transition temperature the mean
    acceptance, the step size and the diagonal metric (``(D,)`` tensors, or None)."""

    log_weights: torch.Tensor
    x: torch.Tensor
    betas: torch.Tensor
    acceptance: list[float]
    step_sizes: list[float]
    metrics: list[torch.Tensor] | None


def _anneal(target: EnergyFn, base: nn.Module, x: torch.Tensor, betas: torch.Tensor | None, kernel: Kernel,
            num_steps: int, generator: torch.Generator | None, step_sizes: list[float] | None,
            adaptation: DualAveraging | None, metrics: list[torch.Tensor] | None = None, adapt_metric: bool = False,
            target_ess: float = DEFAULT_TARGET_ESS, callback: Callable | None = None) -> AnnealPass:
    """Anneal ``x`` (exact draws of ``f_{betas[0]}``) along ``betas``; AIS in either direction.

    ``log E[w] = log Z_{β_last} - log Z_{β_first}``. Transitions happen at ``betas[1:-1]``,
    ``num_steps`` steps of :func:`run_kernel` each. ``betas=None`` is the adaptive schedule
    (forward only): each next β by :func:`~ebmlab.partition.adaptive.next_beta` at
    ``target_ess``, at most ``MAX_ADAPTIVE_TEMPERATURES``.

    ``step_sizes`` (one per transition) overrides the kernel's; otherwise ``adaptation`` (if
    any) tunes it: temperature k's mean acceptance probability is dual-averaging iteration k,
    and temperature k+1 runs at the current iterate ``ε_k``. The averaging is centred on the
    kernel's initial step, ``μ = log ε₀``: NUTS's ``log 10ε₀`` favours long steps that save
    leapfrog steps, and would start AIS with a 10-20x jump that rejects nearly every move
    (measured: acceptance 0.03 at the second temperature of a 2-D Gaussian with MALA).
    ``metrics`` (one ``(D,)`` per transition) are replayed; otherwise with ``adapt_metric`` the
    kernel's metric at each temperature is :func:`~ebmlab.partition.adaptive.particle_metric`
    of the runs as they arrive there. ``callback(k, beta)`` is called as the runs reach ``β_k``.
    """
    with_grad = kernel.uses_grad
    e, lp, g, glp = split_energy(target, base, x, with_grad)
    log_w = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    acceptance: list[float] = []
    used: list[float] = []
    used_metrics: list[torch.Tensor] = []
    step_counter = 0
    tune = adaptation is not None and step_sizes is None
    dual = replace(adaptation.init(kernel.step_size), mu=math.log(kernel.step_size)) if tune else None
    low, high = (math.log(bound) for bound in STEP_SIZE_RANGE)
    scale = metric_scale(x) if adapt_metric and metrics is None else None
    path_betas = [float(betas[0]) if betas is not None else 0.0]
    k = 0
    while True:
        k += 1
        u = (-e - lp).to(torch.float64)
        if betas is not None:
            beta, last = float(betas[k]), k == len(betas) - 1
        else:
            beta = 1.0 if k >= MAX_ADAPTIVE_TEMPERATURES - 1 else next_beta(log_w, u, path_betas[-1], target_ess)
            last = beta >= 1.0
        log_w = log_w + (beta - path_betas[-1]) * u
        path_betas.append(beta)
        if callback is not None:
            callback(k, beta)
        if last:
            break
        if step_sizes is not None:
            kernel = kernel.with_step_size(step_sizes[k - 1])
        if metrics is not None or scale is not None:
            diagonal = metrics[k - 1] if metrics is not None else particle_metric(x, scale)
            kernel = replace(kernel, metric=Metric(diagonal.to(device=x.device, dtype=x.dtype)))
            used_metrics.append(diagonal.detach().to(torch.float64).cpu())
        path = AnnealedEnergy(target, base, beta)
        grad = -(1 - beta) * glp + beta * g if with_grad else None
        state = ChainState(x=x, energy=-(1 - beta) * lp + beta * e, grad=grad, step=step_counter)
        run = run_kernel(kernel, path, state, num_steps, generator)
        step_counter, x = run.state.step, run.state.x
        acceptance.append(run.mean_accept_prob)
        used.append(float(getattr(kernel, "step_size", math.nan)))
        e, lp, g, glp = split_energy(target, base, x, with_grad)
        bad = ~torch.isfinite(e)
        if bad.any():
            raise RuntimeError(
                f"ais: {int(bad.sum())} run(s) reached a NaN or infinite energy at temperature {k} "
                f"(beta={beta:.4g}) with {type(kernel).__name__}; give the kernel a smaller step_size"
            )
        if tune:
            dual = adaptation.update(dual, acceptance[-1])
            kernel = kernel.with_step_size(math.exp(min(max(dual.log_step, low), high)))
    return AnnealPass(log_w.cpu(), x, torch.tensor(path_betas, dtype=torch.float64), acceptance, used,
                      used_metrics if (metrics is not None or scale is not None) else None)


def ais(energy: EnergyFn, base: nn.Module | None = None, data: torch.Tensor | None = None,
        num_temperatures: int | None = 200, schedule: str | Sequence[float] | torch.Tensor = "sigmoid",
        kernel: str | Kernel = "mala", num_runs: int = 100, num_steps: int | None = None,
        generator: torch.Generator | None = None, reverse_samples: torch.Tensor | None = None,
        adapt: bool | DualAveraging = True, event_shape: Sequence[int] | None = None, device=None,
        adapt_metric: bool = True, target_ess: float = DEFAULT_TARGET_ESS, min_ess: float | None = None,
        callback: Callable[[int, float], None] | None = None) -> AISResult:
    """Estimate ``log Z = log ∫ exp(-E(x)) dx`` (or the sum) by annealed importance sampling.

    Args:
        energy: the target, ``(B, *event) -> (B,)``.
        base: a normalised tractable p₀ with ``log_prob`` and ``sample`` (:class:`GaussianBase`,
            :class:`CategoricalBase`); default: fitted to ``data`` (diagonal Gaussian for real
            data, independent marginals for binary/categorical), else uniform sites for a
            discrete energy, else an analytic energy's own mean and variances.
        num_temperatures: K ≥ 2, counting β = 0 and β = 1 (ignored when ``schedule`` is an
            array or ``"adaptive"``).
        schedule: ``"sigmoid"``, ``"linear"``, an array ``0 = β₀ < ... < β_{K-1} = 1``, or
            ``"adaptive"``: each next β keeps the conditional ESS of the incremental weights at
            ``target_ess`` (:mod:`ebmlab.partition.adaptive`; Zhou, Johansen & Aston 2016).
            The adaptive schedule runs twice: a pilot of ``num_runs`` runs chooses the
            temperatures, step sizes and metrics, then ``num_runs`` independent runs use them
            fixed — so ``Ẑ`` stays unbiased given the pilot, at twice the cost.
        kernel: a kernel instance or a registry name (``"mala"``, ``"hmc"``, ``"rwmh"``,
            ``"gibbs"``, ``"metropolis"``, ...); named kernels get a step size scaled to the base.
        num_runs: N independent runs, batched as N chains.
        num_steps: transitions per intermediate temperature (default: 1; one sweep over the
            sites for discrete single-site kernels).
        generator: the source of every random draw.
        reverse_samples: exact draws of the target, ``(M, *event)``; if given, reverse AIS adds
            the upper bound ``log_z_upper`` (replaying the forward step sizes and metrics).
        adapt: tune the step size across temperatures by dual averaging toward the kernel's
            ``default_target_accept`` (adaptive kernels only; see :func:`temperature_adaptation`),
            or a :class:`~ebmlab.samplers.adaptation.DualAveraging` to use instead. ``False``
            runs the kernel exactly as given (no step size and no metric adaptation).
        adapt_metric: for kernels that take ``metric=`` and have none, a diagonal inverse mass
            matrix at each temperature from the runs' spread
            (:func:`~ebmlab.partition.adaptive.particle_metric`). With ``adapt`` it couples the
            runs, which makes a fixed-schedule ``Ẑ`` consistent rather than exactly unbiased.
        target_ess: the adaptive schedule's conditional-ESS fraction per step, in (0, 1).
        min_ess: the weight ESS below which the result is flagged unreliable
            (``AISResult.reliable``/``warning``); None: ``max(30, 0.1 N)``, 0: never.
        callback: ``callback(k, beta)`` as each pass (the adaptive pilot, forward, reverse) reaches
            its k-th temperature ``beta``, k = 1..K-1 (the last at the pass's end): a progress bar.

    Raises:
        ValueError: K < 2, a bad schedule, a kernel that does not fit the energy's support, or
            events whose shape does not match the base.
    """
    start = time.perf_counter()
    adaptive = isinstance(schedule, str) and schedule == "adaptive"
    betas = None if adaptive else make_schedule(schedule, num_temperatures if isinstance(schedule, str) else None)
    if int(num_runs) < 1:
        raise ValueError(f"ais: num_runs must be >= 1, got {num_runs}")
    if not isinstance(adapt, (bool, DualAveraging)):
        raise ValueError(f"ais: adapt must be True, False or a DualAveraging, got {adapt!r}")
    if not 0.0 < float(target_ess) < 1.0:
        raise ValueError(f"ais: target_ess must be in (0, 1), got {target_ess}")
    min_ess_for(int(num_runs), min_ess)  # validates min_ess
    base = resolve_base(energy, base, data, event_shape)
    if device is None:  # the energy's device, else (an energy without tensors) the generator's
        has_tensors = isinstance(energy, nn.Module) and any(True for _ in [*energy.parameters(), *energy.buffers()])
        device = energy_device(energy) if has_tensors or generator is None else generator.device
    base = base.to(device=device)
    if isinstance(kernel, str):
        kernel = default_kernel(kernel, base)
    discrete = isinstance(base, CategoricalBase)
    if (kernel.support == "discrete") != discrete:
        want = "a discrete kernel (gibbs, metropolis)" if discrete else "a continuous kernel (mala, hmc, rwmh)"
        raise ValueError(f"ais: {type(kernel).__name__} does not fit this {'discrete' if discrete else 'continuous'} base; use {want}")
    if num_steps is None:
        num_steps = math.prod(base.event_shape) if kernel.support == "discrete" else 1
    if int(num_steps) < 1:
        raise ValueError(f"ais: num_steps must be >= 1, got {num_steps}")

    def draw_base() -> torch.Tensor:
        x0 = base.sample(int(num_runs), generator)
        return x0.to(energy_dtype(energy)) if x0.is_floating_point() else x0

    uses_step = hasattr(kernel, "step_size")
    with_metric = adapt is not False and adapt_metric and not discrete and takes_metric(kernel)
    run = _anneal(energy, base, draw_base(), betas, kernel, int(num_steps), generator, None,
                  temperature_adaptation(kernel, adapt), adapt_metric=with_metric, target_ess=float(target_ess),
                  callback=callback)
    if adaptive:  # the pilot chose everything; independent runs with it fixed keep E[Ẑ] = Z
        run = _anneal(energy, base, draw_base(), run.betas, kernel, int(num_steps), generator,
                      run.step_sizes if uses_step else None, None, metrics=run.metrics, callback=callback)
    log_z, stderr, ess = log_weight_statistics(run.log_weights)
    result = AISResult(
        log_z=log_z, log_z_stderr=stderr, ess=ess, log_weights=run.log_weights, schedule=run.betas,
        samples=run.x.detach(), acceptance_rate=torch.tensor(run.acceptance, dtype=torch.float64),
        step_sizes=torch.tensor(run.step_sizes, dtype=torch.float64) if uses_step else None,
        metrics=torch.stack(run.metrics) if run.metrics else None, min_ess=min_ess,
    )
    if reverse_samples is not None:
        x = run.x
        xr = torch.as_tensor(reverse_samples).detach().to(device=x.device, dtype=x.dtype)
        if tuple(xr.shape[1:]) != tuple(x.shape[1:]) or xr.shape[0] < 1:
            raise ValueError(
                f"ais: reverse_samples must have shape (M >= 1, {', '.join(map(str, x.shape[1:]))}), got {tuple(xr.shape)}"
            )
        reverse_steps = run.step_sizes[::-1] if uses_step else None
        reverse_metrics = run.metrics[::-1] if run.metrics is not None else None
        back = _anneal(energy, base, xr, run.betas.flip(0), kernel, int(num_steps), generator, reverse_steps, None,
                       metrics=reverse_metrics, callback=callback)
        neg_log_mean, upper_stderr, _ = log_weight_statistics(back.log_weights)
        result = replace(result, log_z_upper=-neg_log_mean, log_z_upper_stderr=upper_stderr,
                         reverse_log_weights=back.log_weights)
    result.wall_time = time.perf_counter() - start
    return result
