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
which lags behind a target that changes with β) — standard practice in adaptive SMC. It
couples the runs weakly, which makes ``Ẑ`` consistent rather than exactly unbiased.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import nn

from ebmlab.energy.base import EnergyFn, event_shape_of
from ebmlab.samplers.adaptation import DualAveraging
from ebmlab.samplers.base import ChainState, Kernel
from ebmlab.samplers.driver import run_kernel
from ebmlab.samplers.registry import get_kernel_class, make_kernel
from ebmlab.partition.bases import AnnealedEnergy, CategoricalBase, GaussianBase, fit_base, split_energy
from ebmlab.energy.enumeration import energy_device, energy_dtype
from ebmlab.partition.schedules import make_schedule


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
        schedule: the temperatures ``β``, shape ``(K,)``.
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


def log_weight_statistics(log_weights: torch.Tensor) -> tuple[float, float, float]:
    """``(log mean exp(lw), delta-method stderr of it, ESS)`` for log weights of shape ``(N,)``.

    The one weight statistic of every AIS estimator here (:func:`ais`,
    :func:`~ebmlab.partition.rbm_ais.rbm_ais`, runs pooled over processes). With
    ``w̃ = exp(lw - max lw)``: ``log mean = max + log mean(w̃)``,
    ``stderr = std(w̃) / (√N mean(w̃))`` (unbiased std; ``inf`` for N < 2),
    ``ESS = (Σ w̃)² / Σ w̃²`` (Kong 1992). Runs whose weight is ``-inf`` count as weight 0.
    """
    lw = torch.as_tensor(log_weights, dtype=torch.float64).detach().cpu().flatten()
    if lw.numel() < 1 or torch.isnan(lw).any() or (lw == math.inf).any():
        raise ValueError(f"log_weight_statistics: need >= 1 log weights, none NaN or +inf, got {lw.numel()}")
    top = lw.max()
    if top == -math.inf:
        return -math.inf, math.inf, 0.0
    w = torch.exp(lw - top)
    mean = w.mean()
    n = lw.numel()
    stderr = float(w.std() / (math.sqrt(n) * mean)) if n > 1 else math.inf
    ess = float(w.sum() ** 2 / w.square().sum())
    return float(top + torch.log(mean)), stderr, ess


def combine_log_weights(*log_weights: torch.Tensor) -> tuple[float, float, float]:
    """``(log Ẑ, stderr, ESS)`` of the runs of several AIS calls (e.g. from several processes)."""
    return log_weight_statistics(torch.cat([torch.as_tensor(lw, dtype=torch.float64).flatten().cpu() for lw in log_weights]))


def default_kernel(name: str, base: nn.Module) -> Kernel:
    """The registered kernel ``name`` set up for ``base``; only options the kernel declares are passed.

    Discrete bases: ``num_states`` (if the kernel has it). Continuous bases: a step size scaled
    to the base's median std ``s`` for the built-in kernels (``mala``/``ula`` ``0.25 s²``,
    ``hmc`` ``0.3 s`` with 5 leapfrog steps, ``rwmh`` ``0.5 s``); other kernels keep their defaults.

    Raises:
        ValueError: an unknown kernel name (the registry lists the known ones).
    """
    fields = getattr(get_kernel_class(name), "__dataclass_fields__", {})
    if isinstance(base, CategoricalBase):
        return make_kernel(name, **({"num_states": base.num_states} if "num_states" in fields else {}))
    s = float(base.std.median()) if isinstance(base, GaussianBase) else 1.0
    options = {"mala": {"step_size": 0.25 * s**2}, "ula": {"step_size": 0.25 * s**2},
               "hmc": {"step_size": 0.3 * s, "num_leapfrog": 5}, "rwmh": {"step_size": 0.5 * s}}.get(name, {})
    return make_kernel(name, **{k: v for k, v in options.items() if k in fields})


def resolve_base(energy: EnergyFn, base: nn.Module | None, data: torch.Tensor | None,
                 event_shape: Sequence[int] | None) -> nn.Module:
    """The given base, else one fitted to ``data``, else uniform sites for a discrete energy, else
    ``N(mean, diag cov)`` of an analytic energy."""
    if base is not None:
        if not (hasattr(base, "log_prob") and hasattr(base, "sample")):
            raise ValueError("ais: base must have log_prob(x) and sample(n, generator), e.g. GaussianBase")
        return base
    support = getattr(energy, "support", "real")
    if data is not None:
        return fit_base(torch.as_tensor(data), support, int(getattr(energy, "num_states", 2)))
    shape = event_shape_of(energy, event_shape)
    if support in ("binary", "categorical") and shape is not None:
        k = 2 if support == "binary" else int(getattr(energy, "num_states", 2))
        return CategoricalBase(torch.ones(*shape, k))
    mean, cov = getattr(energy, "mean", None), getattr(energy, "covariance", None)
    if isinstance(mean, torch.Tensor) and isinstance(cov, torch.Tensor):
        return GaussianBase(mean.detach().clone(), torch.sqrt(torch.diagonal(cov.detach())))
    raise ValueError("ais: give a base distribution (GaussianBase(mean, std)) or data to fit one to")


STEP_SIZE_RANGE = (1e-8, 1e4)  # a guard on the adapted step size, not part of the adaptation


def temperature_adaptation(kernel: Kernel, adapt: bool | DualAveraging) -> DualAveraging | None:
    """The dual averaging that tunes ``kernel`` across the temperatures, or None (no tuning).

    ``adapt=True`` gives the library's ``DualAveraging(target_accept=kernel.default_target_accept)``
    with its usual γ = 0.05, t₀ = 10, κ = 0.75; a :class:`DualAveraging` is used as given.
    Non-adaptive kernels are never tuned.

    Near HMC's stability limit the current iterate can cycle between short and too-long steps
    (measured on a 2-D Gaussian, K = 50: a third of the temperatures at acceptance < 0.15) at
    no measurable cost in the standard error of ``log Ẑ`` (150 seeds: 0.0074 against 0.0072 for
    a fixed-gain rule); ``DualAveraging(target_accept, gamma=0.2)`` damps it (0.06 of the
    temperatures) for a slightly larger standard error (0.0083).
    """
    if not kernel.adaptive or adapt is False:
        return None
    if isinstance(adapt, DualAveraging):
        return adapt
    return DualAveraging(target_accept=kernel.default_target_accept)


def _anneal(target: EnergyFn, base: nn.Module, x: torch.Tensor, betas: torch.Tensor, kernel: Kernel,
            num_steps: int, generator: torch.Generator | None, step_sizes: list[float] | None,
            adaptation: DualAveraging | None) -> tuple[torch.Tensor, torch.Tensor, list[float], list[float]]:
    """Anneal ``x`` (exact draws of ``f_{betas[0]}``) along ``betas``; AIS in either direction.

    Returns ``(log_weights (N,) float64, final x, acceptance per transition temperature,
    step size per transition temperature)``. ``log E[w] = log Z_{β_last} - log Z_{β_first}``.
    Transitions happen at ``betas[1:-1]``, ``num_steps`` steps of :func:`run_kernel` each.
    ``step_sizes`` (one per transition) overrides the kernel's; otherwise ``adaptation`` (if
    any) tunes it: temperature k's mean acceptance probability is dual-averaging iteration k,
    and temperature k+1 runs at the current iterate ``ε_k``. The averaging is centred on the
    kernel's initial step, ``μ = log ε₀``: NUTS's ``log 10ε₀`` favours long steps that save
    leapfrog steps, and would start AIS with a 10-20x jump that rejects nearly every move
    (measured: acceptance 0.03 at the second temperature of a 2-D Gaussian with MALA).
    """
    with_grad = kernel.uses_grad
    e, lp, g, glp = split_energy(target, base, x, with_grad)
    log_w = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    acceptance: list[float] = []
    used: list[float] = []
    step_counter = 0
    tune = adaptation is not None and step_sizes is None
    dual = replace(adaptation.init(kernel.step_size), mu=math.log(kernel.step_size)) if tune else None
    low, high = (math.log(bound) for bound in STEP_SIZE_RANGE)
    for k in range(1, len(betas)):
        delta = float(betas[k] - betas[k - 1])
        log_w = log_w + delta * (-e - lp).to(torch.float64)
        if k == len(betas) - 1:
            break
        beta = float(betas[k])
        if step_sizes is not None:
            kernel = kernel.with_step_size(step_sizes[k - 1])
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
    return log_w.cpu(), x, acceptance, used


def ais(energy: EnergyFn, base: nn.Module | None = None, data: torch.Tensor | None = None,
        num_temperatures: int | None = 200, schedule: str | Sequence[float] | torch.Tensor = "sigmoid",
        kernel: str | Kernel = "mala", num_runs: int = 100, num_steps: int | None = None,
        generator: torch.Generator | None = None, reverse_samples: torch.Tensor | None = None,
        adapt: bool | DualAveraging = True, event_shape: Sequence[int] | None = None, device=None) -> AISResult:
    """Estimate ``log Z = log ∫ exp(-E(x)) dx`` (or the sum) by annealed importance sampling.

    Args:
        energy: the target, ``(B, *event) -> (B,)``.
        base: a normalised tractable p₀ with ``log_prob`` and ``sample`` (:class:`GaussianBase`,
            :class:`CategoricalBase`); default: fitted to ``data`` (diagonal Gaussian for real
            data, independent marginals for binary/categorical), else uniform sites for a
            discrete energy, else an analytic energy's own mean and variances.
        num_temperatures: K ≥ 2, counting β = 0 and β = 1 (ignored when ``schedule`` is an array).
        schedule: ``"sigmoid"``, ``"linear"`` or an array ``0 = β₀ < ... < β_{K-1} = 1``.
        kernel: a kernel instance or a registry name (``"mala"``, ``"hmc"``, ``"rwmh"``,
            ``"gibbs"``, ``"metropolis"``, ...); named kernels get a step size scaled to the base.
        num_runs: N independent runs, batched as N chains.
        num_steps: transitions per intermediate temperature (default: 1; one sweep over the
            sites for discrete single-site kernels).
        generator: the source of every random draw.
        reverse_samples: exact draws of the target, ``(M, *event)``; if given, reverse AIS adds
            the upper bound ``log_z_upper``.
        adapt: tune the step size across temperatures by dual averaging toward the kernel's
            ``default_target_accept`` (adaptive kernels only; see :func:`temperature_adaptation`),
            or a :class:`~ebmlab.samplers.adaptation.DualAveraging` to use instead.

    Raises:
        ValueError: K < 2, a bad schedule, a kernel that does not fit the energy's support, or
            events whose shape does not match the base.
    """
    start = time.perf_counter()
    betas = make_schedule(schedule, num_temperatures if isinstance(schedule, str) else None)
    if int(num_runs) < 1:
        raise ValueError(f"ais: num_runs must be >= 1, got {num_runs}")
    if not isinstance(adapt, (bool, DualAveraging)):
        raise ValueError(f"ais: adapt must be True, False or a DualAveraging, got {adapt!r}")
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

    x0 = base.sample(int(num_runs), generator)
    x0 = x0.to(energy_dtype(energy)) if x0.is_floating_point() else x0
    log_w, x, acceptance, step_sizes = _anneal(energy, base, x0, betas, kernel, int(num_steps), generator, None,
                                               temperature_adaptation(kernel, adapt))
    log_z, stderr, ess = log_weight_statistics(log_w)
    uses_step = hasattr(kernel, "step_size")
    result = AISResult(
        log_z=log_z, log_z_stderr=stderr, ess=ess, log_weights=log_w, schedule=betas, samples=x.detach(),
        acceptance_rate=torch.tensor(acceptance, dtype=torch.float64),
        step_sizes=torch.tensor(step_sizes, dtype=torch.float64) if uses_step else None,
    )
    if reverse_samples is not None:
        xr = torch.as_tensor(reverse_samples).detach().to(device=x.device, dtype=x.dtype)
        if tuple(xr.shape[1:]) != tuple(x.shape[1:]) or xr.shape[0] < 1:
            raise ValueError(
                f"ais: reverse_samples must have shape (M >= 1, {', '.join(map(str, x.shape[1:]))}), got {tuple(xr.shape)}"
            )
        reverse_steps = step_sizes[::-1] if uses_step else None
        log_w_rev, _, _, _ = _anneal(energy, base, xr, betas.flip(0), kernel, int(num_steps), generator,
                                     reverse_steps, None)
        neg_log_mean, upper_stderr, _ = log_weight_statistics(log_w_rev)
        result = replace(result, log_z_upper=-neg_log_mean, log_z_upper_stderr=upper_stderr,
                         reverse_log_weights=log_w_rev)
    result.wall_time = time.perf_counter() - start
    return result
