"""Block Gibbs sampling for models with two conditionally independent layers (RBMs).

One transition draws every hidden unit at once, then every visible unit at once:

    h ~ p(h | v) = Π_j p(h_j | v),        v' ~ p(v' | h) = Π_i p(v'_i | h).

Each half-step is an exact conditional draw of the joint ``p(v, h)``, so the composite
``v → h → v'`` leaves the visible marginal ``p(v) = Σ_h p(v, h)`` invariant; no
accept/reject is needed (Geman & Geman 1984; Hinton 2002 uses it for contrastive divergence,
Tieleman 2008 for persistent CD).

The energy must provide ``sample_hidden(v, generator) -> (C, H)`` and
``sample_visible(h, generator) -> (C, ...)`` (e.g. :class:`ebmlab.energy.rbm.BernoulliRBM`);
its ``forward`` is the free energy ``F(v)``, cached in the chain state. The cached energy is
never used to decide a move, so a state carried across parameter updates (persistent chains)
stays valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn, energy as eval_energy
from ebmlab.samplers.base import ChainState, Kernel, StepInfo


def require_layers(energy: EnergyFn, where: str) -> None:
    """``ValueError`` unless ``energy`` has callable ``sample_hidden`` and ``sample_visible``."""
    missing = [m for m in ("sample_hidden", "sample_visible") if not callable(getattr(energy, m, None))]
    if missing:
        raise ValueError(
            f"{where}: the energy ({type(energy).__name__}) has no {' or '.join(missing)} method; block Gibbs "
            "needs a two-layer model such as ebmlab.energy.rbm.BernoulliRBM (use 'gibbs' or 'gwg' for other "
            "binary energies)"
        )


@dataclass(frozen=True)
class BlockGibbs(Kernel):
    """``num_sweeps`` alternations ``v → h → v`` per step; always accepts.

    Shapes: ``state.x`` is ``(C, *event)``; per-chain info ``(C,)``. Costs two matrix products
    per sweep plus one free-energy evaluation per step.
    """

    num_sweeps: int = 1
    name = "block_gibbs"
    # The energy's own conditionals decide the values (Bernoulli units for BernoulliRBM), so the
    # kernel itself fits any kind; init still checks x0 against the energy's declared support.
    supports = ("binary", "categorical", "real")

    def validate(self) -> None:
        if int(self.num_sweeps) < 1:
            raise ValueError(f"BlockGibbs: num_sweeps must be >= 1, got {self.num_sweeps}")

    def with_step_size(self, step_size: float) -> "BlockGibbs":
        return self

    def init(self, energy: EnergyFn, x: torch.Tensor) -> ChainState:
        require_layers(energy, "BlockGibbs")
        return super().init(energy, x)

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        require_layers(energy, "BlockGibbs")
        with torch.no_grad():
            v = state.x
            for _ in range(int(self.num_sweeps)):
                h = energy.sample_hidden(v, generator)
                v = energy.sample_visible(h, generator).reshape(state.x.shape).to(state.x.dtype)
            e = eval_energy(energy, v).detach()
        diverged = ~torch.isfinite(e)
        accepted = ~diverged
        info = StepInfo(accepted.to(e.dtype), accepted, diverged)
        return ChainState(x=v, energy=e, grad=None, step=state.step + 1), info


__all__ = ["BlockGibbs", "require_layers"]
