"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) for noise-conditional scores.

For noise levels ``σ_1 > ... > σ_L`` and a score ``s(x, σ) ≈ ∇ₓ log q_σ(x)``, run ``T``
unadjusted Langevin steps at each level, largest first, with a step that shrinks with σ::

    α_i = ε σ_i² / σ_L²,
    x ← x + α_i s(x, σ_i) + √(2 α_i) z,     z ~ N(0, I),     T times per level,

so the signal-to-noise ratio ``α_i ‖s‖ / √(2 α_i)`` is the same at every level. The broad
early levels move chains between the modes of the data in proportion to their mass, which
plain Langevin on ``s(·, σ_L)`` cannot do; the later levels refine the samples. An optional
final denoising step (NCSNv2; Song & Ermon 2020, Jolicoeur-Martineau et al. 2021)

    x ← x + σ_L² s(x, σ_L)

returns Tweedie's estimate ``E[x_clean | x]`` and removes the residual σ_L noise.

``score_fn(x, sigma)`` takes ``x (C, *event)`` and ``sigma (C,)`` and returns ``x.shape``:
a :class:`~ebmlab.energy.noise_conditional.NoiseConditionalModel`'s ``score`` method, or any closed-form
noised score. Chains are the batch dimension; every draw uses ``generator``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ebmlab.energy.noise_conditional import NoiseConditionalModel, check_sigmas
from ebmlab.samplers.driver import ChainDivergedError

#: default ``ε / σ_L²``: the ratio ``α_i / σ_i²`` of step to noise variance at every level
DEFAULT_STEP_RATIO = 0.2

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor], None]


def annealed_step_sizes(sigmas: torch.Tensor, step_size: float) -> torch.Tensor:
    """``α_i = ε σ_i² / σ_L²`` for levels ``sigmas`` (shape ``(L,)``); shape ``(L,)``."""
    return step_size * (sigmas / sigmas[-1]).square()


def annealed_langevin(
    score_fn: ScoreFn,
    x0: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    steps_per_level: int = 100,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    final_denoise: bool = True,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Draw samples by annealed Langevin dynamics; returns the final ``x``, shape ``x0.shape``.

    Args:
        score_fn: ``(x (C, *event), sigma (C,)) -> x.shape``, the noise-conditional score.
        x0: starting points, one per chain ``(C, *event)`` (e.g. uniform noise).
        sigmas: noise levels ``(L,)``, strictly decreasing ``σ_1 > ... > σ_L > 0``.
        steps_per_level: T, Langevin steps at each level.
        step_size: ε, the step at the smallest level; level i uses ``ε σ_i² / σ_L²``.
            ``None`` means ``ε = 0.2 σ_L²`` (:data:`DEFAULT_STEP_RATIO`), which is Song &
            Ermon's (2019) ε = 2e-5 for their σ_L = 0.01 (with T = 100, σ from 1 to 0.01).
        generator: the source of every random draw.
        final_denoise: finish with ``x + σ_L² s(x, σ_L)`` (no noise).
        callback: called as ``callback(step, x)`` after every Langevin step (``step`` counts
            from 1 over all levels) and once more after the denoising step.

    Raises:
        ValueError: bad arguments.
        ChainDivergedError: a chain became NaN or infinite (names the step and the chains).
    """
    if not isinstance(x0, torch.Tensor) or x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"annealed_langevin: x0 must be a tensor (num_chains >= 1, *event_shape), got {getattr(x0, 'shape', x0)}")
    if not torch.isfinite(x0).all():
        raise ValueError("annealed_langevin: x0 contains NaN or infinite values")
    if int(steps_per_level) < 1:
        raise ValueError(f"annealed_langevin: steps_per_level must be >= 1, got {steps_per_level}")
    sigmas = check_sigmas(torch.as_tensor(sigmas), "annealed_langevin").to(dtype=x0.dtype, device=x0.device)
    if step_size is None:
        step_size = DEFAULT_STEP_RATIO * float(sigmas[-1]) ** 2
    if not (float(step_size) > 0 and math.isfinite(float(step_size))):
        raise ValueError(f"annealed_langevin: step_size must be > 0, got {step_size}")

    num_chains = x0.shape[0]
    alphas = annealed_step_sizes(sigmas, float(step_size))
    x = x0.detach().clone()
    step = 0
    with torch.no_grad():
        for sigma, alpha in zip(sigmas, alphas):
            sigma_batch = sigma.expand(num_chains)
            noise_scale = torch.sqrt(2 * alpha)
            for _ in range(int(steps_per_level)):
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = x + alpha * score_fn(x, sigma_batch) + noise_scale * noise
                step += 1
                if callback is not None:
                    callback(step, x)
            _check_finite(x, step)
        if final_denoise:
            x = x + sigmas[-1].square() * score_fn(x, sigmas[-1].expand(num_chains))
            _check_finite(x, step)
            if callback is not None:
                callback(step + 1, x)
    return x


def sample_noise_conditional(
    model: NoiseConditionalModel,
    num_samples: int,
    generator: torch.Generator | None = None,
    steps_per_level: int = 100,
    step_size: float | None = None,
    final_denoise: bool = True,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Samples of a trained noise-conditional model, shape ``(num_samples, *model.event_shape)``.

    Starts from ``x0 ~ N(0, σ_1² I)`` — close to ``q_{σ_1}`` for centred (e.g. standardised)
    data whose spread σ_1 exceeds — and runs :func:`annealed_langevin` with ``model.score``
    over the model's own levels ``model.sigmas``, on the model's device and dtype.
    """
    if int(num_samples) < 1:
        raise ValueError(f"sample_noise_conditional: num_samples must be >= 1, got {num_samples}")
    sigmas = model.sigmas
    x0 = sigmas[0] * torch.randn((int(num_samples), *model.event_shape), generator=generator,
                                 dtype=sigmas.dtype, device=sigmas.device)
    return annealed_langevin(model.score, x0, sigmas, steps_per_level, step_size, generator, final_denoise, callback)


def annealed_snapshots(model: NoiseConditionalModel, x0: torch.Tensor, generator: torch.Generator | None = None,
                       num_snapshots: int = 10, steps_per_level: int = 100,
                       step_size: float | None = None) -> torch.Tensor:
    """Annealed Langevin chains of ``model`` from ``x0`` ``(C, *event)``, seen at ``num_snapshots``
    times evenly spaced over the run (the start and the denoised end included).

    Returns ``(S, C, *event)``, ``S = min(num_snapshots, L·T + 2)``: the picture of chains
    over time for noise-conditional runs (MCMC kernels need an energy; this needs a score).
    """
    if int(num_snapshots) < 1:
        raise ValueError(f"annealed_snapshots: num_snapshots must be >= 1, got {num_snapshots}")
    total = model.sigmas.numel() * int(steps_per_level) + 1  # callback steps, the denoising step last
    times = {round(t * total / max(int(num_snapshots) - 1, 1)) for t in range(int(num_snapshots))}
    snapshots = [x0.detach().clone()] if 0 in times else []

    def keep(step: int, x: torch.Tensor) -> None:
        if step in times:
            snapshots.append(x.clone())

    annealed_langevin(model.score, x0, model.sigmas, steps_per_level, step_size, generator, True, keep)
    return torch.stack(snapshots)


def _check_finite(x: torch.Tensor, step: int) -> None:
    bad = ~torch.isfinite(x.flatten(1)).all(1)
    if bad.any():
        raise ChainDivergedError(step, bad.nonzero().flatten().tolist(), "annealed_langevin")


__all__ = ["DEFAULT_STEP_RATIO", "annealed_langevin", "annealed_step_sizes", "annealed_snapshots", "sample_noise_conditional"]
