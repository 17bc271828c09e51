"""Whole transitions of ULA, MALA and HMC as pure functions of tensors, for ``torch.compile``.

:func:`transitions` runs ``k`` transitions of every chain — proposal, energy and gradient,
Metropolis–Hastings test, select, running sums of the acceptance statistics and the
dual-averaging update of the step size — with no Python state, no random draw and no host
synchronisation, so ``torch.compile`` turns it into one graph
(:mod:`ebmlab.samplers.compiled_loop` compiles and drives it). The arithmetic is that of the
eager kernels, line for line:

* ULA (:class:`~ebmlab.samplers.langevin.ULA`): ``x' = x - ε∇E(x) + s√(2ε) ξ``, no test;
* MALA (Roberts & Tweedie 1996; preconditioned with ``A = M⁻¹``):
  ``x' = x - εA∇E(x) + √(2ε) A^{1/2} ξ`` and
  ``log α = E(x) - E(x') + ½ (∇E(x)+∇E(x'))·((x'-x) + ½εA(∇E(x)-∇E(x')))``;
* HMC (Duane et al. 1987; Neal 2011): ``p = M^{1/2} z``, ``L`` leapfrog steps (``L_c`` per chain
  under path jitter, finished chains held still) and ``log α = H(x, p) - H(x', p')``;
* accept iff ``log u < log α`` with NaN or ``+inf`` a rejected divergence (``metropolis_accept``);
* dual averaging (Hoffman & Gelman 2014, Alg. 5) on ``a_t`` = the chains' mean acceptance
  probability (pooled, a 0-dim ε) or each chain's own (a ``(C,)`` ε):
  ``H_t = (1 - w)H_{t-1} + w(δ - a_t)``, ``w = 1/(t+t₀)``, ``log ε_t = μ - √t/γ H_t``,
  ``log ε̄_t = t^{-κ} log ε_t + (1 - t^{-κ}) log ε̄_{t-1}``.

Step sizes, the dual-averaging state, the metric and the iteration count are tensors, so
adaptation changes values, never the graph. The random numbers come in as tensors drawn
outside the graph from the user's generator in the eager kernels' order (see
:func:`ebmlab.samplers.compiled_loop.draw`), so compiled and eager chains agree to
floating-point rounding.

Shapes: ``x``, ``g`` ``(C, *event)``; ``e`` ``(C,)``; ε ``()`` or ``(C,)`` float64; draws
``(k, C, *event)`` (noise) and ``(k, C)`` (uniforms, path lengths); ``active`` ``(k,)`` bool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

VG = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
FAMILIES = ("ula", "mala", "hmc")
METRICS = ("identity", "diag", "dense")


@dataclass(frozen=True)
class StepSpec:
    """What fixes the graph (everything else is a tensor argument).

    Attributes:
        family: ``"ula"``, ``"mala"`` or ``"hmc"``.
        metric: ``"identity"``, ``"diag"`` (``(D,)`` or ``(C, D)``) or ``"dense"`` (``(D, D)``).
        per_chain: ε is ``(C,)`` (else 0-dim).
        adapt: ``None``, ``"pooled"`` or ``"per_chain"`` dual averaging.
        dual_averaging: ``(δ, γ, t₀, κ)``.
        unroll: transitions per call, ``k``.
        masked: the call may run fewer than ``k`` transitions (``active[j]`` false: a no-op).
        trace: also return every transition's ``x`` and ``E(x)`` ``(k, C, ...)``.
        noise_scale: ULA's s. num_leapfrog, fewest_leapfrog, jitter, max_energy_error: HMC's
            L, the shortest path under path jitter (``= L`` without), ε jitter and divergence
            threshold.
    """

    family: str
    metric: str = "identity"
    per_chain: bool = False
    adapt: str | None = None
    dual_averaging: tuple[float, float, float, float] = (0.574, 0.05, 10.0, 0.75)
    unroll: int = 1
    masked: bool = False
    trace: bool = False
    noise_scale: float = 1.0
    num_leapfrog: int = 1
    fewest_leapfrog: int = 1
    jitter: float = 0.0
    max_energy_error: float = 1000.0


def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A 0-dim or ``(C,)`` value as ``(C, 1, ..., 1)`` (or 0-dim) in ``x``'s dtype."""
    v = v.to(x.dtype)
    return v.view((-1,) + (1,) * (x.dim() - 1)) if v.dim() == 1 else v


def velocity(spec: StepSpec, metric: dict, p: torch.Tensor) -> torch.Tensor:
    """``M⁻¹ p`` (shape of ``p``)."""
    if spec.metric == "identity":
        return p
    inv, flat = metric["inv"].to(p.dtype), p.flatten(1)
    return (flat @ inv if spec.metric == "dense" else flat * inv).reshape(p.shape)


def sqrt_inverse_mass(spec: StepSpec, metric: dict, z: torch.Tensor) -> torch.Tensor:
    """``A^{1/2} z`` for ``A = M⁻¹ = LLᵀ``: ``√A ⊙ z`` (diagonal) or ``L z`` (dense)."""
    if spec.metric == "identity":
        return z
    flat = z.flatten(1)
    if spec.metric == "dense":
        return (flat @ metric["chol"].to(z.dtype).T).reshape(z.shape)
    return (flat * metric["inv"].to(z.dtype).sqrt()).reshape(z.shape)


def momentum(spec: StepSpec, metric: dict, z: torch.Tensor) -> torch.Tensor:
    """``p = M^{1/2} z ~ N(0, M)`` from ``z ~ N(0, I)``: ``z / √A`` or ``L⁻ᵀ z``."""
    if spec.metric == "identity":
        return z
    flat = z.flatten(1)
    if spec.metric == "dense":
        p = torch.linalg.solve_triangular(metric["chol"].to(z.dtype).T, flat.T, upper=True).T
    else:
        p = flat / metric["inv"].to(z.dtype).sqrt()
    return p.reshape(z.shape)


def accept(log_alpha: torch.Tensor, log_u: torch.Tensor):
    """The Metropolis test: ``(accepted, accept_prob, diverged)``; NaN and ``+inf`` reject and diverge."""
    safe = torch.nan_to_num(log_alpha, nan=-torch.inf, posinf=-torch.inf, neginf=-torch.inf)
    return log_u < safe, safe.clamp(max=0.0).exp(), safe != log_alpha


def _where(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(mask.shape + (1,) * (new.dim() - mask.dim())), new, old)


def langevin_proposal(spec: StepSpec, metric: dict, x, g, eps, noise, scale: float) -> torch.Tensor:
    """``x - εA∇E + s√(2ε) A^{1/2} ξ``; ``√(2ε)`` in float64 for a 0-dim ε (as the eager float path)."""
    drift = velocity(spec, metric, g)
    noise = sqrt_inverse_mass(spec, metric, noise)
    if eps.dim() == 0:
        return x - eps.to(x.dtype) * drift + (scale * torch.sqrt(2.0 * eps)).to(x.dtype) * noise
    e = _col(eps, x)
    return x - drift * e + scale * (noise * (2.0 * e).sqrt())


def ula(spec, vg: VG, metric, x, e, g, eps, draw):
    x_new = langevin_proposal(spec, metric, x, g, eps, draw["noise"], spec.noise_scale)
    e_new, g_new = vg(x_new)
    ones = torch.ones_like(e_new)
    return x_new, e_new, g_new, ones, ones > 0, ~torch.isfinite(e_new)


def mala(spec, vg: VG, metric, x, e, g, eps, draw):
    x_new = langevin_proposal(spec, metric, x, g, eps, draw["noise"], 1.0)
    e_new, g_new = vg(x_new)
    grad_diff = velocity(spec, metric, g - g_new)
    half = 0.5 * (eps.to(x.dtype) if eps.dim() == 0 else _col(eps, x))
    other = (x_new - x) + half * grad_diff
    log_alpha = e - e_new + 0.5 * torch.linalg.vecdot((g + g_new).flatten(1), other.flatten(1))
    accepted, prob, diverged = accept(log_alpha, draw["u"].log())
    return (_where(accepted, x_new, x), torch.where(accepted, e_new, e), _where(accepted, g_new, g),
            prob, accepted, diverged)


def leapfrog(spec, vg: VG, metric, x, p, g, eps: torch.Tensor, counts: torch.Tensor | None):
    """``L`` leapfrog steps ``p ← p - ε/2 ∇E; x ← x + εM⁻¹p; p ← p - ε/2 ∇E`` (inner half-kicks
    merged); ``counts`` ``(C,)``: chain c stops after ``L_c`` steps (kicks 1, ½ at its last, 0 after)."""
    e_new = None
    if counts is None:
        p = p - (0.5 * eps) * g
        for i in range(spec.num_leapfrog):
            x = x + eps * velocity(spec, metric, p)
            e_new, g = vg(x)
            p = p - ((1.0 if i < spec.num_leapfrog - 1 else 0.5) * eps) * g
        return x, p, e_new, g
    view = (-1,) + (1,) * (x.dim() - 1)
    p = p - (0.5 * eps) * g
    for i in range(spec.num_leapfrog):  # chains past their L_c stand still: the eager loop's max L_c
        moving = (counts > i).to(x.dtype).view(view)
        x = x + velocity(spec, metric, p) * (eps * moving)
        e_new, g = vg(x)
        kick = torch.where(counts > i + 1, 1.0, torch.where(counts == i + 1, 0.5, 0.0)).to(x.dtype).view(view)
        p = p - g * (eps * kick)
    return x, p, e_new, g


def hmc(spec, vg: VG, metric, x, e, g, eps, draw):
    p0 = momentum(spec, metric, draw["noise"])
    if spec.jitter > 0:
        scale = eps.to(x.dtype)
        eps_x = _col((draw["jitter"] * (2.0 * spec.jitter) + (1.0 - spec.jitter)) * scale, x)
    else:
        eps_x = eps.to(x.dtype) if eps.dim() == 0 else _col(eps, x)
    counts = draw["path"] if spec.fewest_leapfrog < spec.num_leapfrog else None
    x_new, p_new, e_new, g_new = leapfrog(spec, vg, metric, x, p0, g, eps_x, counts)
    velocity_sum = velocity(spec, metric, p0 + p_new)
    log_alpha = (e - e_new) + 0.5 * torch.linalg.vecdot((p0 - p_new).flatten(1), velocity_sum.flatten(1))
    accepted, prob, diverged = accept(log_alpha, draw["u"].log())
    diverged = diverged | (log_alpha < -spec.max_energy_error)
    return (_where(accepted, x_new, x), torch.where(accepted, e_new, e), _where(accepted, g_new, g),
            prob, accepted, diverged)


STEPS = {"ula": ula, "mala": mala, "hmc": hmc}


def dual_averaging(spec: StepSpec, da: dict, stat: torch.Tensor) -> dict:
    """One dual-averaging update (module docstring) of the float64 tensors ``t``, ``error_avg``,
    ``log_step``, ``log_step_avg`` (``mu`` is carried unchanged)."""
    delta, gamma, t0, kappa = spec.dual_averaging
    t = da["t"] + 1.0
    w = 1.0 / (t + t0)
    error_avg = (1.0 - w) * da["error_avg"] + w * (delta - stat)
    log_step = da["mu"] - torch.sqrt(t) / gamma * error_avg
    eta = t ** (-kappa)
    log_step_avg = eta * log_step + (1.0 - eta) * da["log_step_avg"]
    return {"t": t, "error_avg": error_avg, "log_step": log_step, "log_step_avg": log_step_avg, "mu": da["mu"]}


def transitions(spec: StepSpec, vg: VG, carry: dict, draws: dict, metric: dict) -> tuple[dict, dict]:
    """``spec.unroll`` transitions of every chain; pure (see the module docstring).

    ``carry``: ``x``, ``e``, ``g``, ``eps`` (the step size of the next transition), the sums
    ``accepted`` (float), ``accept_prob``, ``divergences`` (long), each ``(C,)``, and with
    adaptation ``da`` (:func:`dual_averaging`'s tensors). ``draws``: per transition ``j`` the
    tensors ``draws[name][j]`` and ``active[j]`` when ``spec.masked``. Returns the new carry and
    per transition ``(k, C)`` ``accept_prob``, ``accepted``, ``diverged``, ``nonfinite`` (the
    state's energy is NaN/inf), and with ``spec.trace`` ``x`` ``(k, C, *event)`` and ``e``.
    """
    step = STEPS[spec.family]
    x, e, g, eps = carry["x"], carry["e"], carry["g"], carry["eps"]
    acc_sum, prob_sum, div_sum = carry["accepted"], carry["accept_prob"], carry["divergences"]
    da = carry.get("da")
    out: dict[str, list] = {"accept_prob": [], "accepted": [], "diverged": [], "nonfinite": [], "x": [], "e": []}
    for j in range(spec.unroll):
        draw = {name: value[j] for name, value in draws.items() if name != "active"}
        x1, e1, g1, prob, accepted, diverged = step(spec, vg, metric, x, e, g, eps, draw)
        if spec.masked:
            on = draws["active"][j]
            x1, e1, g1 = torch.where(on, x1, x), torch.where(on, e1, e), torch.where(on, g1, g)
            accepted, diverged = accepted & on, diverged & on
            prob_add = torch.where(on, prob, 0.0)
        else:
            prob_add = prob
        acc_sum = acc_sum + accepted
        prob_sum = prob_sum + prob_add.to(prob_sum.dtype)
        div_sum = div_sum + diverged
        if da is not None:
            stat = prob.detach().to(torch.float64)
            new = dual_averaging(spec, da, stat if spec.adapt == "per_chain" else stat.mean())
            eps1 = torch.exp(new["log_step"])
            if spec.masked:
                new = {k: torch.where(on, v, da[k]) for k, v in new.items()}
                eps1 = torch.where(on, eps1, eps)
            da, eps = new, eps1
        x, e, g = x1, e1, g1
        for name, value in (("accept_prob", prob), ("accepted", accepted), ("diverged", diverged),
                            ("nonfinite", ~torch.isfinite(e))):
            out[name].append(value)
        if spec.trace:
            out["x"].append(x)
            out["e"].append(e)
    carry = {"x": x, "e": e, "g": g, "eps": eps, "accepted": acc_sum, "accept_prob": prob_sum, "divergences": div_sum}
    if da is not None:
        carry["da"] = da
    return carry, {name: torch.stack(values) for name, values in out.items() if values}


__all__ = ["FAMILIES", "METRICS", "STEPS", "StepSpec", "accept", "dual_averaging", "leapfrog", "momentum",
           "sqrt_inverse_mass", "transitions", "velocity"]
