"""Multi-scale denoising score matching: the NCSN objective (Song & Ermon 2019).

For geometric noise levels ``σ_1 > ... > σ_L`` and a noise-conditional score ``s_θ(x, σ)``,

    L(θ) = E_{σ ~ U{σ_1..σ_L}} E_{x ~ p_data} E_{x̃ ~ N(x, σ² I)}
           [ ½ λ(σ) ‖ s_θ(x̃, σ) + (x̃ - x) / σ² ‖² ],        λ(σ) = σ²,

the σ²-weighted sum of denoising score matching losses (Vincent 2011), one per level. With
``x̃ = x + σ z``, ``z ~ N(0, I)``, each term is ``½ ‖σ s_θ(x̃, σ) + z‖²``: every level
contributes O(d) whatever σ is, which is why λ(σ) = σ² balances the levels. At each level
the minimiser is the score of the noised data ``∇ log q_σ``, ``q_σ = p_data * N(0, σ² I)``.

One Monte-Carlo draw per example: a level index ``k_b ~ U{0..L-1}`` and noise ``z_b``,
drawn in that order from the generator. The levels are the model's ``sigmas`` buffer (so
checkpoints and samplers use the levels it was trained with); :meth:`NCSNObjective.setup`
sets them from the objective's hyperparameters, taking ``σ_max`` from the data when it is
not given (NCSNv2, Song & Ermon 2020, technique 1: σ_max = the largest pairwise distance
between training points). The model samples of a run's pictures come from annealed Langevin
dynamics over the same levels (:mod:`ebmlab.samplers.annealed`).
"""

from __future__ import annotations

import math

import torch

from ebmlab.samplers.annealed import annealed_snapshots, sample_noise_conditional
from ebmlab.energy.noise_conditional import NoiseConditionalModel, geometric_sigmas
from ebmlab.objectives.base import Metrics, Objective, check_positive
from ebmlab.objectives.registry import register_objective

#: data points used to estimate the largest pairwise distance (σ_max) in :meth:`NCSNObjective.setup`
MAX_POINTS_FOR_SIGMA_MAX = 2048


def dsm_terms(score: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-example weighted DSM terms ``½ σ² ‖s + (x̃ - x)/σ²‖² = ½ ‖σ s + z‖²``, shape ``(B,)``.

    ``score`` is ``s_θ(x̃, σ)`` and ``noise`` is ``z = (x̃ - x)/σ``, both ``(B, *event)``;
    ``sigma`` is ``(B,)``.
    """
    view = (-1,) + (1,) * (score.dim() - 1)
    return 0.5 * (sigma.view(view) * score + noise).flatten(1).square().sum(1)


def max_pairwise_distance(data: torch.Tensor, max_points: int = MAX_POINTS_FOR_SIGMA_MAX) -> float:
    """The largest Euclidean distance between two of the first ``max_points`` rows of ``data``."""
    flat = data[:max_points].flatten(1).to(torch.get_default_dtype())
    if flat.shape[0] < 2:
        raise ValueError(f"ncsn: need at least 2 data points to set sigma_max from the data, got {flat.shape[0]}")
    return float(torch.cdist(flat, flat).max())


class NCSNObjective(Objective):
    """The ``"ncsn"`` objective: σ²-weighted denoising score matching over noise levels.

    Args:
        sigma_max: the largest level σ_1; ``None`` or 0 takes the largest pairwise distance
            of the training data in :meth:`setup` (NCSNv2). Without :meth:`setup` the
            model's own ``sigmas`` are used unchanged.
        sigma_min: the smallest level σ_L.
        num_levels: L.
        sample_steps_per_level: T of the annealed Langevin run that draws model samples.
        sample_step_size: its ε; 0 means ``0.2 σ_L²`` (see
            :func:`~ebmlab.samplers.annealed.sample_noise_conditional`).

    The model passed as ``energy`` must be a :class:`~ebmlab.energy.noise_conditional.NoiseConditionalModel`
    (``ncsn_mlp`` / ``ncsn_conv``); both the score and the energy parametrisations work.
    """

    name = "ncsn"
    score_only = True
    supports = ("real",)
    #: the noise-conditional model that stands for each generic model name (``--model mlp``,
    #: the trainer's default, means ``ncsn_mlp`` for this objective)
    model_aliases = {"mlp": "ncsn_mlp", "conv": "ncsn_conv"}

    def __init__(self, sigma_max: float | None = None, sigma_min: float = 0.01, num_levels: int = 10,
                 sample_steps_per_level: int = 100, sample_step_size: float = 0.0):
        self.sigma_min = check_positive("ncsn", "sigma_min", sigma_min)
        self.sigma_max = None if not sigma_max else check_positive("ncsn", "sigma_max", sigma_max)
        if self.sigma_max is not None and not self.sigma_max > self.sigma_min:
            raise ValueError(f"ncsn: sigma_max must be > sigma_min, got {sigma_max} <= {sigma_min}")
        if int(num_levels) < 2:
            raise ValueError(f"ncsn: num_levels must be >= 2, got {num_levels}")
        if int(sample_steps_per_level) < 1:
            raise ValueError(f"ncsn: sample_steps_per_level must be >= 1, got {sample_steps_per_level}")
        self.num_levels = int(num_levels)
        self.sample_steps_per_level = int(sample_steps_per_level)
        self.sample_step_size = check_positive("ncsn", "sample_step_size", sample_step_size, allow_zero=True)

    @staticmethod
    def check_model(model) -> NoiseConditionalModel:
        if not isinstance(model, NoiseConditionalModel):
            raise ValueError(
                "ncsn: the model must be noise-conditional (model ncsn_mlp or ncsn_conv), "
                f"got {type(model).__name__}"
            )
        return model

    def levels_for(self, data: torch.Tensor) -> torch.Tensor:
        """The levels ``(L,)`` for this training set: σ_max given, or from the data."""
        sigma_max = self.sigma_max if self.sigma_max is not None else max_pairwise_distance(data)
        if not sigma_max > self.sigma_min:
            raise ValueError(
                f"ncsn: sigma_max (largest pairwise data distance {sigma_max:.4g}) must exceed sigma_min "
                f"{self.sigma_min}; pass a smaller sigma_min"
            )
        return geometric_sigmas(sigma_max, self.sigma_min, self.num_levels)

    def setup(self, energy, data: torch.Tensor, generator: torch.Generator | None = None,
              support: str = "real") -> None:
        """Store the noise levels in the model (``energy.sigmas``) before training."""
        self.check_model(energy).set_sigmas(self.levels_for(data))

    def loss(self, energy, batch: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        """One-draw Monte-Carlo estimate of L(θ) on ``batch`` (shape ``(B, *event)``).

        Returns the scalar loss and the metrics ``loss`` and ``loss_per_dim`` (the loss over
        the event size d): a zero score gives ½ per dimension, the exact noised score
        ``½ E tr Cov(z | x̃) / d`` (< ½), the floor no model goes below.
        """
        model = self.check_model(energy)
        sigmas = model.sigmas.to(device=batch.device, dtype=batch.dtype)
        levels = torch.randint(0, sigmas.numel(), (batch.shape[0],), generator=generator, device=batch.device)
        sigma = sigmas[levels]
        noise = torch.randn(batch.shape, generator=generator, dtype=batch.dtype, device=batch.device)
        view = (-1,) + (1,) * (batch.dim() - 1)
        score = model.score(batch + sigma.view(view) * noise, sigma, create_graph=True)
        loss = dsm_terms(score, noise, sigma).mean()
        value = float(loss.detach())
        return loss, {"loss": value, "loss_per_dim": value / math.prod(batch.shape[1:])}

    def model_samples(self, energy, num_samples: int, generator: torch.Generator | None) -> torch.Tensor:
        """``num_samples`` draws of annealed Langevin over the model's levels (training space)."""
        return sample_noise_conditional(
            self.check_model(energy), num_samples, generator, steps_per_level=self.sample_steps_per_level,
            step_size=self.sample_step_size or None,
        )

    def model_chains(self, energy, num_chains: int, generator: torch.Generator | None) -> torch.Tensor:
        """Annealed Langevin chains from ``N(0, σ_1² I)`` seen over time, ``(S, num_chains, *event)``
        (:func:`~ebmlab.samplers.annealed.annealed_snapshots`): MCMC kernels need an energy."""
        model = self.check_model(energy)
        sigmas = model.sigmas
        x0 = sigmas[0] * torch.randn((int(num_chains), *model.event_shape), generator=generator, dtype=sigmas.dtype,
                                     device=sigmas.device)
        return annealed_snapshots(model, x0, generator, steps_per_level=self.sample_steps_per_level,
                                  step_size=self.sample_step_size or None)


register_objective(NCSNObjective)

__all__ = ["NCSNObjective", "dsm_terms", "max_pairwise_distance"]
