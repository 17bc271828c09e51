"""The Bernoulli restricted Boltzmann machine, as an energy over its visible units.

Visible units ``v ∈ {0,1}^V``, hidden units ``h ∈ {0,1}^H``, parameters ``W`` (H, V),
``b`` (V,), ``c`` (H,). The joint energy (Smolensky 1986; Hinton 2002) is

    E(v, h) = -b·v - c·h - hᵀ W v.

Summing out the hidden units gives the free energy used as this module's energy,

    F(v) = -b·v - Σ_j softplus(c_j + W_j·v),        p(v) = exp(-F(v)) / Z,

and the layers are conditionally independent given each other:

    p(h_j = 1 | v) = σ(c_j + W_j·v),        p(v_i = 1 | h) = σ(b_i + (Wᵀh)_i).

``log Z`` is exact by enumerating the smaller layer when it has at most ~22 units; summing out
the visible units instead gives ``log Z = logsumexp_h [c·h + Σ_i softplus(b_i + (Wᵀh)_i)]``.
Larger models use annealed importance sampling (:mod:`ebmlab.partition.rbm_ais`).

Training: with ``∂F/∂W = -σ(c + Wv) vᵀ``, ``∂F/∂b = -v``, ``∂F/∂c = -σ(c + Wv)`` the
contrastive-divergence gradient has a closed form, which the trainer uses for CD/PCD with
block Gibbs (:mod:`ebmlab.objectives.rbm_lean`; the autograd objective is the reference).

Shapes: ``forward`` maps ``v`` of shape ``(B, *event_shape)`` — or any ``(B, ...)`` with V
entries per example, e.g. images ``(B, 1, 8, 8)`` — to ``(B,)``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.functional import softplus

from ebmlab.energy.base import Energy
from ebmlab.energy.enumeration import enumerate_states

MAX_ENUMERATED_UNITS = 22


def bernoulli(probs: torch.Tensor, generator: torch.Generator | None = None,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """A draw ``x ~ Bernoulli(probs)`` elementwise, bit for bit :func:`torch.bernoulli`'s.

    On the CPU ``torch.bernoulli(p)`` compares one uniform per element, drawn as ``torch.rand``
    draws it, with ``p``; drawing the uniforms with ``torch.rand`` and comparing gives the same
    values, consumes the generator alike and is 2-4x faster from a few hundred elements up
    (``tests/train/test_lean_rbm.py`` checks the equality). Elsewhere ``torch.bernoulli`` itself.
    """
    if probs.device.type != "cpu" or probs.dtype not in (torch.float32, torch.float64):
        return torch.bernoulli(probs, generator=generator, out=out)
    uniform = torch.rand(probs.shape, generator=generator, dtype=probs.dtype)
    if out is None:
        return torch.lt(uniform, probs).to(probs.dtype)
    return torch.lt(uniform, probs, out=out)


class BernoulliRBM(Energy):
    """Bernoulli–Bernoulli RBM with free energy ``F(v) = -b·v - Σ_j softplus(c_j + W_j·v)``.

    Args:
        num_visible: V, the number of visible units.
        num_hidden: H, the number of hidden units.
        event_shape: the shape of one visible sample (default ``(V,)``); its entries must
            multiply to V, e.g. ``(1, 8, 8)`` for 8×8 binary images.
        weight_scale: ``W`` starts as ``N(0, weight_scale²)``, biases at zero (Hinton 2010).
        generator: source of the initial weights.
    """

    support = "binary"
    num_states = 2

    def __init__(self, num_visible: int, num_hidden: int, event_shape: Sequence[int] | None = None,
                 weight_scale: float = 0.01, generator: torch.Generator | None = None):
        super().__init__()
        if int(num_visible) < 1 or int(num_hidden) < 1:
            raise ValueError(f"BernoulliRBM: num_visible and num_hidden must be >= 1, got {num_visible}, {num_hidden}")
        if not weight_scale >= 0:
            raise ValueError(f"BernoulliRBM: weight_scale must be >= 0, got {weight_scale}")
        self.num_visible, self.num_hidden = int(num_visible), int(num_hidden)
        shape = (self.num_visible,) if event_shape is None else tuple(int(s) for s in event_shape)
        if math.prod(shape) != self.num_visible:
            raise ValueError(f"BernoulliRBM: event_shape {shape} has {math.prod(shape)} entries, "
                             f"but num_visible is {self.num_visible}")
        self.event_shape = shape
        self.W = nn.Parameter(torch.randn(self.num_hidden, self.num_visible, generator=generator) * weight_scale)
        self.b = nn.Parameter(torch.zeros(self.num_visible))
        self.c = nn.Parameter(torch.zeros(self.num_hidden))
        self.config = {"num_visible": self.num_visible, "num_hidden": self.num_hidden,
                       "event_shape": list(shape), "weight_scale": float(weight_scale)}

    # ---------------------------------------------------------------- shapes and energies

    def flat(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` reshaped to ``(B, V)``; ``ValueError`` if an example does not hold V values."""
        if v.dim() < 2:
            raise ValueError(f"BernoulliRBM: expected a batch of shape (B, {self.num_visible}) or "
                             f"(B, *{self.event_shape}), got {tuple(v.shape)}")
        flat = v.reshape(v.shape[0], -1)
        if flat.shape[1] != self.num_visible:
            raise ValueError(f"BernoulliRBM: each example must have {self.num_visible} visible values "
                             f"(event_shape {self.event_shape}), got shape {tuple(v.shape)}")
        return flat

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """Hidden pre-activations ``c + W v``, shape ``(B, H)``."""
        return torch.addmm(self.c, self.flat(v).to(self.W.dtype), self.W.T)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Free energy ``F(v) = -b·v - Σ_j softplus(c_j + W_j·v)``, shape ``(B,)``."""
        flat = self.flat(v).to(self.W.dtype)
        return -(flat @ self.b) - softplus(torch.addmm(self.c, flat, self.W.T)).sum(-1)

    def joint_energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``E(v, h) = -b·v - c·h - hᵀWv`` for ``v`` (B, *event) and ``h`` (B, H); shape ``(B,)``."""
        flat = self.flat(v).to(self.W.dtype)
        return -(flat @ self.b) - (h @ self.c) - ((h @ self.W) * flat).sum(-1)

    def value_and_grad(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F(v), ∇ᵥF(v))`` in closed form: ``∇ᵥF = -b - Wᵀσ(c + Wv)``; shapes ``(B,)``, ``v.shape``.

        Both are detached (samplers use them; training differentiates ``forward``).
        """
        with torch.no_grad():
            flat = self.flat(v).to(self.W.dtype)
            logits = torch.addmm(self.c, flat, self.W.T)
            value = -(flat @ self.b) - softplus(logits).sum(-1)
            grad = -(self.b + torch.sigmoid(logits) @ self.W)
        return value, grad.reshape(v.shape).to(v.dtype)

    def delta_energy_flip(self, v: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """``F(v with v_i flipped) - F(v)`` for flat site ``i = site[c]`` of chain c, shape ``(C,)``.

        With ``d = 1 - 2 v_i`` (+1 for 0→1, -1 for 1→0) and ``a = c + Wv``:
        ``ΔF = -d b_i - Σ_j [softplus(a_j + d W_ji) - softplus(a_j)]`` — O(H) after ``a``.
        """
        with torch.no_grad():
            flat = self.flat(v).to(self.W.dtype)
            site = site.to(device=flat.device, dtype=torch.long).expand(flat.shape[0])
            logits = torch.addmm(self.c, flat, self.W.T)
            d = 1.0 - 2.0 * flat.gather(1, site[:, None])[:, 0]
            column = self.W.T[site]  # (C, H): W_{·i} for each chain's site
            change = softplus(logits + d[:, None] * column) - softplus(logits)
            return -d * self.b[site] - change.sum(-1)

    def site_energies(self, v: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """``[F(v with v_i = 0), F(v with v_i = 1)]`` for flat site ``i = site[c]``, shape ``(C, 2)``."""
        with torch.no_grad():
            delta = self.delta_energy_flip(v, site)
            current = self.flat(v).gather(1, site.to(torch.long)[:, None])[:, 0].to(delta.dtype)
            e = self(v)
            zero = torch.zeros_like(delta)
            return torch.stack([torch.where(current == 0, zero, delta),
                                torch.where(current == 1, zero, delta)], dim=1) + e[:, None]

    # ---------------------------------------------------------------- conditionals

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """``p(h_j = 1 | v) = σ(c_j + W_j·v)``, shape ``(B, H)``."""
        return torch.sigmoid(self.hidden_logits(v))

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """``p(v_i = 1 | h) = σ(b_i + (Wᵀh)_i)`` for ``h`` (B, H), shape ``(B, *event_shape)``."""
        probs = torch.sigmoid(torch.addmm(self.b, h.to(self.W.dtype), self.W))
        return probs.reshape(h.shape[0], *self.event_shape)

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw ``h ~ p(h | v)``, shape ``(B, H)``, values in {0, 1}."""
        return bernoulli(self.hidden_probs(v), generator)

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw ``v ~ p(v | h)``, shape ``(B, *event_shape)``, values in {0, 1}."""
        return bernoulli(self.visible_probs(h), generator)

    # ---------------------------------------------------------------- exact enumeration

    def _enumeration_layer(self, max_units: int, layer: str | None) -> str:
        if layer is None:
            layer = "hidden" if self.num_hidden <= self.num_visible else "visible"
        if layer not in ("hidden", "visible"):
            raise ValueError(f"BernoulliRBM: layer must be 'hidden', 'visible' or None, got {layer!r}")
        units = self.num_hidden if layer == "hidden" else self.num_visible
        if units > max_units:
            raise ValueError(f"BernoulliRBM: exact enumeration of the {layer} layer needs 2^{units} states; "
                             f"the limit is 2^{max_units} (use ebmlab.partition.rbm_ais for larger models)")
        return layer

    def _layer_log_weights(self, layer: str, batch_size: int):
        """Yield ``(states, log p̃(states))`` over every configuration of ``layer``, in float64.

        For the hidden layer the visible units are summed out,
        ``log p̃(h) = c·h + Σ_i softplus(b_i + (Wᵀh)_i)``; for the visible layer ``-F(v)``.
        """
        W, b, c = (p.detach().double() for p in (self.W, self.b, self.c))
        units = self.num_hidden if layer == "hidden" else self.num_visible
        for states in enumerate_states(units, 2, batch_size=batch_size, dtype=torch.float64, device=W.device):
            if layer == "hidden":
                yield states, states @ c + softplus(torch.addmm(b, states, W)).sum(-1)
            else:
                yield states, states @ b + softplus(torch.addmm(c, states, W.T)).sum(-1)

    def exact_log_z(self, max_units: int = MAX_ENUMERATED_UNITS, layer: str | None = None,
                    batch_size: int = 2**14) -> float:
        """``log Z`` by enumerating the ``2^units`` states of one layer (the smaller one by default).

        A streamed logsumexp over batches of ``batch_size`` states, in float64.
        """
        layer = self._enumeration_layer(max_units, layer)
        parts = [torch.logsumexp(lw, 0) for _, lw in self._layer_log_weights(layer, batch_size)]
        return float(torch.logsumexp(torch.stack(parts), 0))

    @property
    def log_z(self) -> float | None:
        """Exact ``log Z`` when the smaller layer has at most 22 units, else ``None``."""
        if min(self.num_hidden, self.num_visible) > MAX_ENUMERATED_UNITS:
            return None
        return self.exact_log_z()

    def exact_sample(self, num_samples: int, generator: torch.Generator | None = None,
                     max_units: int = 20) -> torch.Tensor:
        """Exact draws of ``v ~ p(v)``, shape ``(num_samples, *event_shape)``, by enumeration.

        Draws ``h`` from its marginal ``p(h)`` and then ``v ~ p(v | h)`` when the hidden layer is
        the smaller one; otherwise draws ``v`` from ``p(v)`` directly. Keeps the ``2^units``
        probabilities in memory, so ``max_units`` defaults to 20.
        """
        layer = self._enumeration_layer(max_units, None)
        states, log_weights = zip(*self._layer_log_weights(layer, 2**16))
        states, log_weights = torch.cat(states), torch.cat(log_weights)
        probs = torch.softmax(log_weights, 0)
        index = torch.multinomial(probs, int(num_samples), replacement=True, generator=generator)
        chosen = states[index].to(self.W.dtype)
        with torch.no_grad():
            if layer == "hidden":
                return self.sample_visible(chosen, generator)
            return chosen.reshape(int(num_samples), *self.event_shape)

    # ---------------------------------------------------------------- interoperability

    @classmethod
    def from_sklearn(cls, model: Any, event_shape: Sequence[int] | None = None) -> "BernoulliRBM":
        """An RBM holding a fitted ``sklearn.neural_network.BernoulliRBM`` 's parameters.

        ``components_`` (H, V) -> ``W``, ``intercept_visible_`` (V,) -> ``b``,
        ``intercept_hidden_`` (H,) -> ``c``; both libraries use the same free energy.
        """
        missing = [a for a in ("components_", "intercept_visible_", "intercept_hidden_") if not hasattr(model, a)]
        if missing:
            raise ValueError(f"BernoulliRBM.from_sklearn: the model has no {', '.join(missing)}; fit it first")
        W = torch.as_tensor(model.components_, dtype=torch.get_default_dtype())
        b = torch.as_tensor(model.intercept_visible_, dtype=W.dtype)
        c = torch.as_tensor(model.intercept_hidden_, dtype=W.dtype)
        if W.dim() != 2 or b.shape != (W.shape[1],) or c.shape != (W.shape[0],):
            raise ValueError(f"BernoulliRBM.from_sklearn: inconsistent shapes components_ {tuple(W.shape)}, "
                             f"intercept_visible_ {tuple(b.shape)}, intercept_hidden_ {tuple(c.shape)}")
        rbm = cls(W.shape[1], W.shape[0], event_shape=event_shape, weight_scale=0.0)
        with torch.no_grad():
            rbm.W.copy_(W)
            rbm.b.copy_(b)
            rbm.c.copy_(c)
        return rbm


def make_rbm(event_shape: Sequence[int], num_hidden: int = 64, weight_scale: float = 0.01,
             seed: int | None = None) -> BernoulliRBM:
    """Model factory ``"rbm"``: a :class:`BernoulliRBM` over events of shape ``event_shape``.

    ``V = prod(event_shape)``, so images ``(1, 8, 8)`` give 64 visible units; ``seed`` fixes
    the initial weights (``N(0, weight_scale²)``).
    """
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    shape = tuple(int(s) for s in event_shape)
    return BernoulliRBM(math.prod(shape), int(num_hidden), event_shape=shape,
                        weight_scale=float(weight_scale), generator=generator)


__all__ = ["BernoulliRBM", "MAX_ENUMERATED_UNITS", "bernoulli", "make_rbm"]
