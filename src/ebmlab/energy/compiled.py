"""``torch.compile`` for samplers: compile the energy's value-and-gradient once.

Kernels are pure functions of ``(energy, state, generator)`` and reach the energy only
through :func:`ebmlab.energy.base.value_and_grad`, which defers to an energy's own
``value_and_grad``. :class:`CompiledEnergy` supplies one built from
``torch.func.grad_and_value`` and compiled by ``torch.compile``, so every sampler runs with a
fused forward+backward without knowing it.
"""

from __future__ import annotations

import torch
from torch import nn

from ebmlab.energy.base import EnergyFn, check_energy_output


class CompiledEnergy(nn.Module):
    """Wraps ``energy``; ``forward`` and ``value_and_grad`` run compiled graphs.

    ``value_and_grad(x)`` returns ``(E(x), ∇ₓE(x))`` with shapes ``(B,)`` and ``x.shape``,
    computed as ``grad_and_value(x ↦ Σ_b E(x_b))``. Gradients with respect to parameters are
    not tracked: use it for sampling, not for training.
    """

    def __init__(self, energy: EnergyFn, mode: str | None = None, dynamic: bool | None = None):
        super().__init__()
        self.energy = energy
        for attr in ("event_shape", "support", "num_states"):
            if hasattr(energy, attr):
                setattr(self, attr, getattr(energy, attr))

        def summed(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            e = energy(x)
            if e.dim() == 2:
                e = e.squeeze(-1)
            return e.sum(), e

        self._value_and_grad = torch.compile(torch.func.grad_and_value(summed, has_aux=True), mode=mode, dynamic=dynamic)
        self._forward = torch.compile(energy, mode=mode, dynamic=dynamic)
        # Modes that replay CUDA graphs write every call's outputs into the same static buffers:
        # a sampler keeps the current state's energy and gradient while it evaluates the
        # proposal, so those outputs are copied out before the next call can overwrite them.
        self._cudagraphs = mode in ("reduce-overhead", "max-autotune")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._cudagraphs and x.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
            return self._forward(x).clone()
        return self._forward(x)

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        copy_out = self._cudagraphs and x.is_cuda
        if copy_out:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad():
            g, (_, e) = self._value_and_grad(x.detach())
            if copy_out:
                g, e = g.clone(), e.clone()
        return check_energy_output(e, x).detach(), g.detach()


def compile_energy(energy: EnergyFn, **kwargs) -> CompiledEnergy:
    """``CompiledEnergy(energy, **kwargs)``; see that class."""
    return CompiledEnergy(energy, **kwargs)
