"""The objective interface: one signature for every training loss.

An objective turns an energy and a data batch into a scalar loss to minimise::

    objective.setup(energy, data, generator=g, support="real")   # once, before training
    loss, metrics = objective.loss(energy, batch, generator)      # every step

``batch`` has shape ``(B, *event_shape)``; ``loss`` is a scalar tensor whose gradient with
respect to the energy's parameters (and :meth:`Objective.parameters`) is the training signal;
``metrics`` maps names to Python floats for logging. The trainer never knows which loss it
runs: extra learnable parameters (NCE's ``log Z``) come from :meth:`~Objective.parameters`,
and state that must survive a checkpoint (a replay buffer, persistent chains) goes through
:meth:`~Objective.state_dict` / :meth:`~Objective.load_state_dict` as plain tensors.
Every random draw uses the ``generator`` it is given.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from ebmlab.energy.base import EnergyFn

Metrics = dict[str, float]


class Objective:
    """Base class of training objectives.

    Class attributes:
        name: registry name (``"dsm"``, ``"cd"``...).
        uses_sampler: the objective draws model samples with an MCMC kernel; the trainer
            then passes ``kernel=`` (built by :func:`ebmlab.samplers.make_kernel`) and
            ``num_steps=`` (the sampler steps per update) unless the config sets them.
        supports: the data supports it can train on (``"real"``, ``"binary"``, ``"categorical"``).
        score_only: the loss depends on the energy only through its score ``-∇ₓE`` (score
            matching), so an additive offset of the energy gets no gradient (data-parallel
            training must then let DDP find unused parameters).
        learns_log_z: the objective learns ``log Z`` of the energy (NCE); its state holds it as
            ``log_z``.
        sharded_state: state entries that hold per-chain rows along dim 0 (persistent chains,
            a replay buffer): on several processes each rank keeps its own rows.
        sharded_options: constructor options that count those rows (a global count is split
            over the ranks).
        model_aliases: the model family this objective needs in place of a generic one
            (``{"mlp": "ncsn_mlp"}``); empty for objectives that train any energy.
        uses_labels: the objective trains on labelled data: its ``batch`` is a pair
            ``(x (B, *event), y (B,) long)`` and ``setup`` receives ``labels=`` (classifier EBMs).

    The trainer reads these descriptions and never an objective's name.
    """

    name: ClassVar[str] = ""
    uses_sampler: ClassVar[bool] = False
    supports: ClassVar[tuple[str, ...]] = ("real", "binary", "categorical")
    score_only: ClassVar[bool] = False
    learns_log_z: ClassVar[bool] = False
    sharded_state: ClassVar[tuple[str, ...]] = ()
    sharded_options: ClassVar[tuple[str, ...]] = ()
    model_aliases: ClassVar[dict[str, str]] = {}
    uses_labels: ClassVar[bool] = False

    def setup(self, energy: EnergyFn, data: torch.Tensor, generator: torch.Generator | None = None,
              support: str = "real") -> None:
        """Prepare from the training data ``(N, *event_shape)`` (fit noise, fill buffers)."""

    def loss(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        """``(scalar loss, metrics)`` for one batch ``(B, *event_shape)``."""
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter]:
        """Learnable parameters owned by the objective (optimised with the model's)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Tensors and primitives that a checkpoint must keep."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{self.name}: unexpected objective state keys {sorted(state)}")

    def model_samples(self, energy: EnergyFn, num_samples: int, generator: torch.Generator | None) -> torch.Tensor | None:
        """Model samples the objective keeps (persistent chains, a replay buffer), at most
        ``num_samples``, or ``None`` when it keeps none (callers then run a sampler)."""
        return None

    def model_chains(self, energy: EnergyFn, num_chains: int, generator: torch.Generator | None) -> torch.Tensor | None:
        """Chains over time by the objective's own sampler, ``(S, num_chains, *event)`` (snapshot
        times first; e.g. annealed Langevin for noise-conditional models), or ``None`` when any
        MCMC kernel on the energy will do."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@contextlib.contextmanager
def frozen(energy: EnergyFn) -> Iterator[None]:
    """Evaluate ``energy`` as a fixed function: eval mode and parameters not requiring grad.

    Used while sampling negatives: no parameter graph is built (samples carry no gradient to
    θ), and layers with training-time state (spectral normalisation's power iteration) do not
    change between sampler steps. Both settings are restored afterwards.
    """
    if not isinstance(energy, nn.Module):
        yield
        return
    was_training = energy.training
    params = [p for p in energy.parameters() if p.requires_grad]
    energy.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
        energy.train(was_training)


def check_positive(owner: str, name: str, value: float, allow_zero: bool = False) -> float:
    """``float(value)`` after checking it is > 0 (or >= 0); ``ValueError`` naming owner and value."""
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ValueError(f"{owner}: {name} must be {'>=' if allow_zero else '>'} 0, got {value}")
    return value
