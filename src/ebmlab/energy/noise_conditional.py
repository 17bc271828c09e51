"""Noise-conditional score networks (NCSN; Song & Ermon 2019, 2020).

A noise-conditional model estimates, for every noise level σ, the score of the data
distribution convolved with ``N(0, σ² I)``::

    s_θ(x, σ) ≈ ∇ₓ log q_σ(x),      q_σ = p_data * N(0, σ² I).

Two parametrisations share one interface, :meth:`NoiseConditionalModel.score`:

* ``"score"`` — the network outputs the score directly: ``s_θ(x, σ) = f_θ(x, σ) / σ``,
  the output scaling of NCSNv2 (Song & Ermon 2020, technique 3), which matches the
  magnitude ``‖∇ log q_σ‖ ~ √d / σ`` of the noised score.
* ``"energy"`` — the network outputs a scalar ``h_θ(x_in, σ)``, the energy is
  ``E_θ(x, σ) = h_θ(x_in, σ) √(σ² + s_data²) / σ`` and the score is ``s_θ = -∇ₓ E_θ``
  (a conservative field; the factor makes ``‖∇ₓE‖ ~ ‖∇h‖ / σ`` like the score's scaling;
  Salimans & Ho 2021 compare the two parametrisations). The model is then an ordinary
  energy ``x -> E_θ(x, σ_L)`` (its ``forward``), the noise-smoothed density ``q_{σ_L}``,
  usable with every MCMC kernel, plot and evaluation in the library.

The network sees the preconditioned input ``x / √(σ² + s_data²)`` (Karras et al. 2022), so
its input has unit scale at every level, and is conditioned on ``log σ`` through a small
embedding that sets a per-feature scale and shift (FiLM; Perez et al. 2018) in every layer.

The model also stores the noise levels it is trained and sampled with, ``sigmas`` (shape
``(L,)``, decreasing), so a checkpoint is self-contained.

Shapes: ``x (B, *event_shape)``, ``sigma (B,)`` (a float is broadcast), score ``x.shape``,
energy ``(B,)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ebmlab.energy.base import Energy

PARAMETRIZATIONS = ("score", "energy")


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> torch.Tensor:
    """Geometric noise levels ``σ_i = σ_max (σ_min/σ_max)^{(i-1)/(L-1)}``, ``i = 1..L``.

    Returns a float tensor of shape ``(L,)`` with ``σ_1 = σ_max > ... > σ_L = σ_min``
    (Song & Ermon 2019, §4.2). ``num_levels = 1`` gives ``[σ_max]`` and requires
    ``σ_max == σ_min``.
    """
    sigma_max, sigma_min, num_levels = float(sigma_max), float(sigma_min), int(num_levels)
    if not (sigma_min > 0 and math.isfinite(sigma_max)):
        raise ValueError(f"geometric_sigmas: need 0 < sigma_min and finite sigma_max, got {sigma_min}, {sigma_max}")
    if num_levels < 1:
        raise ValueError(f"geometric_sigmas: num_levels must be >= 1, got {num_levels}")
    if num_levels == 1:
        if sigma_max != sigma_min:
            raise ValueError(f"geometric_sigmas: one level needs sigma_max == sigma_min, got {sigma_max}, {sigma_min}")
        return torch.tensor([sigma_max], dtype=torch.get_default_dtype())
    if not sigma_max > sigma_min:
        raise ValueError(f"geometric_sigmas: sigma_max must be > sigma_min, got {sigma_max} <= {sigma_min}")
    exponents = torch.linspace(0.0, 1.0, num_levels, dtype=torch.float64)
    levels = sigma_max * (sigma_min / sigma_max) ** exponents
    return levels.to(torch.get_default_dtype())


def check_sigmas(sigmas: torch.Tensor | Sequence[float], where: str) -> torch.Tensor:
    """Validate noise levels: a finite, positive, strictly decreasing vector ``(L,)``."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.get_default_dtype()) if not isinstance(sigmas, torch.Tensor) else sigmas
    if sigmas.dim() != 1 or sigmas.numel() < 1:
        raise ValueError(f"{where}: sigmas must be a non-empty vector (L,), got shape {tuple(sigmas.shape)}")
    if not (torch.isfinite(sigmas).all() and (sigmas > 0).all()):
        raise ValueError(f"{where}: sigmas must be finite and > 0, got {sigmas.tolist()}")
    if sigmas.numel() > 1 and not (sigmas[1:] < sigmas[:-1]).all():
        raise ValueError(f"{where}: sigmas must be strictly decreasing (σ_1 > ... > σ_L), got {sigmas.tolist()}")
    return sigmas


class SigmaEmbedding(nn.Module):
    """``log σ -> (B, dim)`` features: ``Linear(1, dim) -> SiLU -> Linear(dim, dim) -> SiLU``."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(torch.log(sigma)[:, None])


class FiLM(nn.Module):
    """Per-feature scale and shift from the σ embedding: ``h (1 + γ(e)) + β(e)``.

    ``h`` has shape ``(B, F, *spatial)``; ``e`` has shape ``(B, embed_dim)``. Initialised to
    the identity (γ = β = 0).
    """

    def __init__(self, embed_dim: int, features: int):
        super().__init__()
        self.proj = nn.Linear(embed_dim, 2 * features)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(embedding).chunk(2, dim=-1)
        extra = (1,) * (h.dim() - 2)
        return h * (1 + gamma.view(*gamma.shape, *extra)) + beta.view(*beta.shape, *extra)


class NoiseConditionalModel(Energy):
    """Base class: a network ``(x_in, embedding) -> output`` turned into a score or energy.

    Subclasses build ``self.embed`` (a :class:`SigmaEmbedding`) and implement
    :meth:`network`, returning shape ``x.shape`` for ``parametrization="score"`` and
    ``(B,)`` for ``"energy"``.
    """

    event_shape: tuple[int, ...]

    def __init__(self, event_shape: Sequence[int], sigmas: torch.Tensor | Sequence[float] | None,
                 parametrization: str, data_scale: float):
        super().__init__()
        name = type(self).__name__
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"{name}: parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
        if not float(data_scale) > 0:
            raise ValueError(f"{name}: data_scale must be > 0, got {data_scale}")
        self.event_shape = tuple(int(s) for s in event_shape)
        self.parametrization = parametrization
        self.data_scale = float(data_scale)
        sigmas = geometric_sigmas(1.0, 0.01, 10) if sigmas is None else check_sigmas(sigmas, name)
        self.register_buffer("sigmas", sigmas.detach().clone().to(torch.get_default_dtype()))

    # -- the network ---------------------------------------------------------------------

    def network(self, x_in: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sigma_batch(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """``sigma`` as a ``(B,)`` tensor of x's dtype and device (a float is broadcast)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(
                f"{type(self).__name__}: sigma must be a float or shape ({x.shape[0]},), got {tuple(sigma.shape)}"
            )
        return sigma

    def _raw(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``f_θ(x, σ)`` (score) or ``h_θ(x, σ)`` (energy), before the ``1/σ`` scaling."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"{type(self).__name__}: x must have shape (B, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}"
            )
        view = (-1,) + (1,) * (x.dim() - 1)
        x_in = x / torch.sqrt(sigma.square() + self.data_scale**2).view(view)
        return self.network(x_in, self.embed(sigma))

    # -- the public interface ------------------------------------------------------------

    def energy(self, x: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """``E_θ(x, σ) = h_θ(x_in, σ) √(σ² + s²) / σ``, shape ``(B,)``; σ defaults to σ_L.

        Only the ``"energy"`` parametrisation has an energy; a score model raises ``ValueError``.
        """
        if self.parametrization != "energy":
            raise ValueError(
                f"{type(self).__name__}: this model has parametrization='score' and no energy; sample it with "
                "annealed Langevin (ebmlab.samplers.annealed) or train it with parametrization='energy'"
            )
        sigma = self._sigma_batch(x, self.sigmas[-1] if sigma is None else sigma)
        return self._energy(x, sigma)

    def _energy(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``E = h_θ(x_in, σ) √(σ² + s²) / σ`` for ``sigma (B,)`` (h summed over the event)."""
        return self._raw(x, sigma).flatten(1).sum(1) * torch.sqrt(sigma.square() + self.data_scale**2) / sigma

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float, create_graph: bool = False) -> torch.Tensor:
        """``s_θ(x, σ) ≈ ∇ₓ log q_σ(x)``, shape ``x.shape``.

        With ``create_graph=False`` (sampling) the score is detached from the parameters;
        with ``create_graph=True`` (training) it is differentiable in θ. The energy
        parametrisation takes ``-∇ₓE_θ`` by autograd.
        """
        sigma = self._sigma_batch(x, sigma)
        if self.parametrization == "score":
            view = (-1,) + (1,) * (x.dim() - 1)
            with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
                return self._raw(x, sigma) / sigma.view(view)
        with torch.enable_grad():
            x_in = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
            e = self._energy(x_in, sigma)
            (g,) = torch.autograd.grad(e.sum(), x_in, create_graph=create_graph)
        return -g if create_graph else -g.detach()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """The energy ``E_θ(x, σ)``, shape ``(B,)`` (σ defaults to σ_L): see :meth:`energy`.

        So an energy-parametrised model is an ordinary energy ``x -> (B,)``.
        """
        return self.energy(x, sigma)

    def at_sigma(self, sigma: float | None = None) -> "FixedSigmaEnergy":
        """The energy ``x -> E_θ(x, σ)`` at one level (default ``σ_L``), for MCMC kernels."""
        if self.parametrization != "energy":
            raise ValueError(f"{type(self).__name__}: at_sigma() needs parametrization='energy'")
        return FixedSigmaEnergy(self, float(self.sigmas[-1]) if sigma is None else float(sigma))

    def set_sigmas(self, sigmas: torch.Tensor | Sequence[float]) -> None:
        """Replace the stored noise levels (shape ``(L,)``, strictly decreasing)."""
        sigmas = check_sigmas(sigmas, type(self).__name__)
        self.sigmas = sigmas.detach().clone().to(self.sigmas.dtype).to(self.sigmas.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the number of levels may differ from the constructor default
        key = prefix + "sigmas"
        if key in state_dict:
            self.sigmas = torch.empty_like(state_dict[key], dtype=self.sigmas.dtype, device=self.sigmas.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class FixedSigmaEnergy(Energy):
    """``x -> E_θ(x, σ)`` for a fixed σ: an ordinary energy ``(B, *event) -> (B,)``."""

    def __init__(self, model: NoiseConditionalModel, sigma: float):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"FixedSigmaEnergy: sigma must be > 0, got {sigma}")
        self.model, self.sigma = model, float(sigma)
        self.event_shape = model.event_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.energy(x, self.sigma)


class NCSNMLP(NoiseConditionalModel):
    """Noise-conditional MLP for vectors ``(B, dim)`` (other event shapes are flattened).

    Input features ``[x_in, sin(x_in B), cos(x_in B)]`` with a fixed random ``B (d, F)``,
    ``B_ij ~ N(0, fourier_scale²)`` (random Fourier features; Tancik et al. 2020), then
    ``hidden[0] -> ... -> hidden[-1] -> d`` (score) or ``-> 1`` (energy), ``d = prod(event)``;
    every hidden layer is ``SiLU(FiLM(Linear(h), e(log σ)))``. The Fourier features
    overcome the network's bias toward smooth functions, which otherwise stalls the energy
    parametrisation on multi-modal data: on the eight-Gaussians toy a plain energy MLP often
    learns only the ring (relative score error ≈ 0.7 at small σ, half of the seeds tried),
    with the features the modes (≈ 0.06–0.1). ``fourier_features=0`` turns them off.
    """

    def __init__(self, dim: int | Sequence[int] = 2, hidden: Sequence[int] = (128, 128, 128), embed_dim: int = 32,
                 sigmas: torch.Tensor | Sequence[float] | None = None, parametrization: str = "energy",
                 data_scale: float = 1.0, fourier_features: int = 64, fourier_scale: float = 2.0):
        event_shape = (int(dim),) if isinstance(dim, int) else tuple(int(s) for s in dim)
        if min(event_shape, default=0) < 1 or embed_dim < 1 or len(hidden) < 1 or any(h < 1 for h in hidden):
            raise ValueError(
                f"NCSNMLP: dim, embed_dim and hidden sizes must be >= 1, got {dim}, {embed_dim}, {tuple(hidden)}"
            )
        if fourier_features < 0 or not fourier_scale > 0:
            raise ValueError(f"NCSNMLP: need fourier_features >= 0 and fourier_scale > 0, got "
                             f"{fourier_features}, {fourier_scale}")
        super().__init__(event_shape, sigmas, parametrization, data_scale)
        flat = math.prod(event_shape)
        self.register_buffer("frequencies", torch.randn(flat, int(fourier_features)) * float(fourier_scale))
        sizes = [flat + 2 * int(fourier_features), *map(int, hidden)]
        self.embed = SigmaEmbedding(embed_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.films = nn.ModuleList(FiLM(embed_dim, b) for b in sizes[1:])
        self.head = nn.Linear(sizes[-1], flat if parametrization == "score" else 1)
        self.config = {"dim": list(event_shape), "hidden": list(map(int, hidden)), "embed_dim": int(embed_dim),
                       "parametrization": parametrization, "data_scale": self.data_scale,
                       "fourier_features": int(fourier_features), "fourier_scale": float(fourier_scale)}

    def network(self, x_in: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = x_in.flatten(1)
        if self.frequencies.shape[1] > 0:
            proj = h @ self.frequencies
            h = torch.cat([h, torch.sin(proj), torch.cos(proj)], dim=1)
        for layer, film in zip(self.layers, self.films):
            h = nn.functional.silu(film(layer(h), embedding))
        out = self.head(h)
        return out.view(x_in.shape) if self.parametrization == "score" else out


class _ResBlock(nn.Module):
    """``h + Conv(SiLU(FiLM(GroupNorm(Conv(SiLU(FiLM(GroupNorm(h))))))))`` with dilated 3×3 convs."""

    def __init__(self, width: int, embed_dim: int, dilation: int):
        super().__init__()
        groups = math.gcd(8, width)
        self.norm1, self.norm2 = nn.GroupNorm(groups, width), nn.GroupNorm(groups, width)
        self.film1, self.film2 = FiLM(embed_dim, width), FiLM(embed_dim, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        r = self.conv1(nn.functional.silu(self.film1(self.norm1(h), embedding)))
        r = self.conv2(nn.functional.silu(self.film2(self.norm2(r), embedding)))
        return h + r


class NCSNConv(NoiseConditionalModel):
    """A small noise-conditional conv net for images ``(B, C, H, W)``, any H, W.

    ``Conv3×3(C -> width)``, ``num_blocks`` residual blocks (GroupNorm, FiLM on ``log σ``,
    SiLU, 3×3 convs with dilations 1, 2, 4, 1, 2, ... so the receptive field covers 28×28
    with three blocks), then ``SiLU(GroupNorm(h))`` and a 3×3 conv to ``C`` channels (score)
    or a 1×1 conv to one channel summed over pixels (energy). Resolution is kept throughout.
    """

    def __init__(self, channels: int = 1, height: int = 8, width: int = 8, base_width: int = 32,
                 num_blocks: int = 3, embed_dim: int = 32, sigmas: torch.Tensor | Sequence[float] | None = None,
                 parametrization: str = "score", data_scale: float = 1.0):
        if min(channels, height, width, base_width, num_blocks, embed_dim) < 1:
            raise ValueError("NCSNConv: channels, height, width, base_width, num_blocks and embed_dim must be >= 1")
        super().__init__((channels, height, width), sigmas, parametrization, data_scale)
        self.embed = SigmaEmbedding(embed_dim)
        self.conv_in = nn.Conv2d(channels, base_width, 3, padding=1)
        self.blocks = nn.ModuleList(_ResBlock(base_width, embed_dim, 2 ** (i % 3)) for i in range(num_blocks))
        self.norm_out = nn.GroupNorm(math.gcd(8, base_width), base_width)
        out_channels, kernel = (channels, 3) if parametrization == "score" else (1, 1)
        self.conv_out = nn.Conv2d(base_width, out_channels, kernel, padding=kernel // 2)
        self.config = {"channels": int(channels), "height": int(height), "width": int(width),
                       "base_width": int(base_width), "num_blocks": int(num_blocks), "embed_dim": int(embed_dim),
                       "parametrization": parametrization, "data_scale": self.data_scale}

    def network(self, x_in: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_in)
        for block in self.blocks:
            h = block(h, embedding)
        out = self.conv_out(nn.functional.silu(self.norm_out(h)))
        return out


# ---------------------------------------------------------------------- factories (event_shape, **options)


def ncsn_mlp(event_shape: tuple[int, ...], hidden: Sequence[int] = (128, 128, 128), embed_dim: int = 32,
              parametrization: str = "score", data_scale: float = 1.0, fourier_features: int = 64,
              fourier_scale: float = 2.0) -> NCSNMLP:
    """``ncsn_mlp``: :class:`NCSNMLP` on events of any shape (flattened); score by default.

    On 8 gaussians (3,000 updates, annealed Langevin from N(0, σ₁²I)) the score form put 94 %
    of samples within 0.5 of a mode centre (exact draws: 96 %) and none astray, where the energy
    form with Fourier features left 5-11 % of chains in spurious minima far from the data.
    Pass ``parametrization="energy"`` for a model with a density (MCMC samplers, density plots).
    """
    return NCSNMLP(tuple(event_shape), hidden=tuple(hidden), embed_dim=embed_dim, parametrization=parametrization,
                   data_scale=data_scale, fourier_features=fourier_features, fourier_scale=fourier_scale)


def ncsn_conv(event_shape: tuple[int, ...], base_width: int = 32, num_blocks: int = 3, embed_dim: int = 32,
               parametrization: str = "score", data_scale: float = 1.0) -> NCSNConv:
    """``ncsn_conv``: :class:`NCSNConv` on image events ``(C, H, W)``; score by default."""
    if len(event_shape) != 3:
        raise ValueError(f"model 'ncsn_conv' needs image events (C, H, W), got event shape {tuple(event_shape)}")
    return NCSNConv(*event_shape, base_width=base_width, num_blocks=num_blocks, embed_dim=embed_dim,
                    parametrization=parametrization, data_scale=data_scale)


__all__ = [
    "FiLM", "FixedSigmaEnergy", "NCSNConv", "NCSNMLP", "NoiseConditionalModel", "PARAMETRIZATIONS",
    "SigmaEmbedding", "check_sigmas", "geometric_sigmas", "ncsn_conv", "ncsn_mlp",
]
