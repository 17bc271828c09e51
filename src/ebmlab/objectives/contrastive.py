"""Contrastive divergence: push data energy down and model-sample energy up.

For ``p_θ(x) = exp(-E_θ(x)) / Z_θ`` the log-likelihood gradient is
``∇_θ log p_θ(x) = -∇_θ E_θ(x) + E_{x⁻~p_θ}[∇_θ E_θ(x⁻)]``, so with negatives ``x⁻`` drawn by
MCMC and treated as constants, the surrogate loss

    L(θ) = mean_b E_θ(x⁺_b) - mean_b E_θ(x⁻_b) + α · mean(E_θ(x⁺)² + E_θ(x⁻)²)

has the (stochastic) negative log-likelihood gradient when α = 0 (Hinton 2002, "Training
products of experts by minimizing contrastive divergence"). The α term is the energy-magnitude
penalty of Du & Mordatch (2019). Negatives never carry gradient: they come from
:func:`run_chains`, which samples the frozen energy and detaches the result. The kernel is
any :mod:`ebmlab.samplers` kernel, chosen by name + hyperparameters
(:func:`ebmlab.samplers.make_kernel`): ULA/MALA/HMC for real data, Gibbs/Metropolis (or a
block-Gibbs kernel) for discrete data. When none is given, :meth:`ContrastiveDivergence.setup`
picks one for the data's support (:func:`default_kernel`); a kernel the user gave is never replaced.

Variants differ only in where chains start:

* ``cd``      — CD-k: at the data batch, k steps (Hinton 2002);
* ``pcd``     — persistent CD: at the previous update's end points, one persistent chain per
  batch element (Tieleman 2008, "Training restricted Boltzmann machines using approximations
  to the likelihood gradient");
* ``replay``  — short-run chains from a replay buffer, each restarting from noise with
  probability p (Du & Mordatch 2019).

Metrics: ``loss``, ``energy_pos``, ``energy_neg``, ``cd_gap = mean E(x⁻) - mean E(x⁺)`` and the
sampler's mean acceptance probability ``accept``.
"""

from __future__ import annotations

from typing import Any

import torch

from ebmlab.energy.base import EnergyFn, check_energy_output
from ebmlab.samplers import ULA, BlockGibbs, Gibbs, Kernel, make_kernel
from ebmlab.samplers.driver import run_kernel
from ebmlab.objectives.base import Metrics, Objective, check_positive, frozen
from ebmlab.objectives.buffers import NOISE_KINDS, NoiseSource, ReplayBuffer


def _check_noise(owner: str, noise: str) -> str:
    if noise not in NOISE_KINDS:
        raise ValueError(f"{owner}: noise must be one of {', '.join(NOISE_KINDS)}, got {noise!r}")
    return noise


def run_chains(energy: EnergyFn, kernel: Kernel, x0: torch.Tensor, num_steps: int,
               generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
    """Run ``num_steps`` transitions of ``kernel`` from ``x0`` (shape ``(C, *event)``) on the frozen energy.

    Returns the detached end points (same shape as ``x0``) and ``{"accept": mean acceptance
    probability}`` over chains and steps (1.0 for zero steps). No gradient with respect to the
    energy's parameters is built. The loop is :func:`ebmlab.samplers.driver.run_kernel`; ``x0``
    is validated once by ``kernel.init``.
    """
    with frozen(energy):
        run = run_kernel(kernel, energy, kernel.init(energy, x0.detach()), num_steps, generator)
    return run.state.x.detach(), {"accept": run.mean_accept_prob}


def default_kernel(energy: EnergyFn, support: str) -> Kernel:
    """The kernel for contrastive negatives when the user gave none, by the data's ``support``.

    * ``"real"``: ``ULA(step_size=0.01, noise_scale=1.0)`` (short-run Langevin, Du & Mordatch 2019);
    * ``"binary"`` / ``"categorical"`` on a two-layer model (``sample_hidden`` and
      ``sample_visible``, e.g. :class:`~ebmlab.energy.rbm.BernoulliRBM`): ``BlockGibbs()``, the
      exact alternating conditional draws ``h ~ p(h | v)``, ``v ~ p(v | h)`` of CD-k / PCD-k
      (Hinton 2002; Tieleman 2008), which is also the kernel of the closed-form fast path
      (:mod:`ebmlab.objectives.rbm_lean`);
    * other ``"binary"`` / ``"categorical"`` energies: single-site ``Gibbs()`` (heat bath), the
      kernel the trainer's ``sampler = "auto"`` chooses for such data.
    """
    if support == "real":
        return ULA(step_size=0.01, noise_scale=1.0)
    if all(callable(getattr(energy, m, None)) for m in ("sample_hidden", "sample_visible")):
        return BlockGibbs()
    return Gibbs()


def _as_kernel(kernel: Kernel | str | dict | None) -> Kernel:
    if kernel is None:
        return ULA(step_size=0.01, noise_scale=1.0)  # until setup() sees the data's support
    if isinstance(kernel, str):
        return make_kernel(kernel)
    if isinstance(kernel, dict):
        options = dict(kernel)
        if "name" not in options:
            raise ValueError(f"contrastive objective: a kernel table needs a 'name', got {sorted(options)}")
        return make_kernel(options.pop("name"), **options)
    return kernel


class ContrastiveDivergence(Objective):
    """CD-k: negatives from ``num_steps`` kernel transitions started at the data batch.

    Args:
        kernel: a sampler kernel, a registry name, or ``{"name": ..., **hyperparameters}``;
            by default :meth:`setup` picks one for the data's support (:func:`default_kernel`:
            ULA for real data, block Gibbs for an RBM, single-site Gibbs for other discrete
            energies). A kernel given here is used as is, and refused by its own ``init`` if it
            cannot sample the energy's states.
        num_steps: transitions per update (k).
        alpha: weight of the energy-magnitude penalty ``α(E(x⁺)² + E(x⁻)²)``.
        clamp: clip negatives to the training data's range (set up by :meth:`setup`).
        lean: let the trainer run a :class:`~ebmlab.energy.rbm.BernoulliRBM` with the block-Gibbs
            kernel by the closed-form gradient of :mod:`ebmlab.objectives.rbm_lean` (same
            update, no autograd; the default). ``False`` keeps this general autograd loss, the
            reference; other energies and kernels always use it.
    """

    name = "cd"
    uses_sampler = True

    def __init__(self, kernel: Kernel | str | dict | None = None, num_steps: int = 20, alpha: float = 0.0,
                 clamp: bool = False, lean: bool = True):
        self.kernel = _as_kernel(kernel)
        self.kernel_is_default = kernel is None  # setup() then picks it by the data's support
        if not isinstance(lean, bool):
            raise ValueError(f"{self.name}: lean must be true or false, got {lean!r}")
        self.lean = lean
        if int(num_steps) < 1:
            raise ValueError(f"{self.name}: num_steps must be >= 1, got {num_steps}")
        self.num_steps = int(num_steps)
        self.alpha = check_positive(self.name, "alpha", alpha, allow_zero=True)
        self.clamp = bool(clamp)
        self.noise_kind = "uniform"
        self.noise: NoiseSource | None = None

    def setup(self, energy: EnergyFn, data: torch.Tensor, generator: torch.Generator | None = None,
              support: str = "real") -> None:
        """Choose the default kernel for ``support`` (unless one was given) and fit the start noise."""
        if self.kernel_is_default:
            self.kernel = default_kernel(energy, support)
        self.noise = NoiseSource(self.noise_kind, support=support,
                                 num_states=getattr(self.kernel, "num_states", None) or int(getattr(energy, "num_states", 2))).fit(data)

    def start_points(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Where this update's chains start: the data batch for CD-k."""
        return batch

    def end_points(self, x: torch.Tensor) -> None:
        """Receive the chains' end points (persistent variants store them)."""

    def negatives(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        x0 = self.start_points(energy, batch, generator)
        x, metrics = run_chains(energy, self.kernel, x0, self.num_steps, generator)
        if self.clamp:
            if self.noise is None:
                raise RuntimeError(f"{self.name}: clamp=True needs setup(energy, data) first")
            x = self.noise.clamp(x)
        self.end_points(x)
        return x, metrics

    def loss(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        x_neg, metrics = self.negatives(energy, batch, generator)
        both = torch.cat([batch, x_neg.to(batch.dtype)], dim=0)
        e = check_energy_output(energy(both), both, where=f"{self.name}: energy")
        e_pos, e_neg = e.split([batch.shape[0], x_neg.shape[0]])
        loss = e_pos.mean() - e_neg.mean()
        if self.alpha > 0:
            loss = loss + self.alpha * (e_pos.square().mean() + e_neg.square().mean())
        pos, neg = float(e_pos.mean().detach()), float(e_neg.mean().detach())
        return loss, {"loss": float(loss.detach()), "energy_pos": pos, "energy_neg": neg, "cd_gap": neg - pos, **metrics}


class PersistentCD(ContrastiveDivergence):
    """Persistent CD: chains continue from the previous update (Tieleman 2008).

    One persistent chain per batch element unless ``num_chains`` is given; chains start from
    noise fitted to the data (``init="noise"``) or at the first batch (``init="data"``).
    """

    name = "pcd"
    sharded_state = ("chains",)
    sharded_options = ("num_chains",)

    def __init__(self, kernel: Kernel | str | dict | None = None, num_steps: int = 20, alpha: float = 0.0,
                 clamp: bool = False, num_chains: int = 0, init: str = "noise", noise: str = "uniform",
                 lean: bool = True):
        super().__init__(kernel, num_steps, alpha, clamp, lean)
        if init not in ("noise", "data"):
            raise ValueError(f"pcd: init must be 'noise' or 'data', got {init!r}")
        if int(num_chains) < 0:
            raise ValueError(f"pcd: num_chains must be >= 0 (0 = batch size), got {num_chains}")
        self.num_chains, self.init, self.noise_kind = int(num_chains), init, _check_noise("pcd", noise)
        self.chains: torch.Tensor | None = None

    def start_points(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.chains is None:
            n = self.num_chains or batch.shape[0]
            if self.init == "data":
                self.chains = batch[torch.arange(n, device=batch.device) % batch.shape[0]].detach().clone()
            else:
                if self.noise is None:
                    raise RuntimeError("pcd: init='noise' needs setup(energy, data) first")
                self.chains = self.noise.sample(n, generator).to(batch.dtype)
        return self.chains

    def end_points(self, x: torch.Tensor) -> None:
        self.chains = x

    def state_dict(self) -> dict[str, Any]:
        return {} if self.chains is None else {"chains": self.chains}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        extra = set(state) - {"chains"}
        if extra:
            raise ValueError(f"pcd: unexpected objective state keys {sorted(extra)}")
        self.chains = state["chains"].clone() if "chains" in state else None

    def model_samples(self, energy: EnergyFn, num_samples: int, generator: torch.Generator | None) -> torch.Tensor | None:
        return None if self.chains is None else self.chains[:num_samples]


class ReplayCD(ContrastiveDivergence):
    """Short-run chains from a replay buffer (Du & Mordatch 2019).

    Each update draws ``B`` distinct buffer slots; each chain starts from fresh noise with
    probability ``restart_prob`` (uniform on the data range or Gaussian, ``noise``) and from
    its slot's sample otherwise; after ``num_steps`` transitions the end points are written
    back to their slots. The buffer (``buffer_size`` samples) starts as noise.
    """

    name = "replay"
    sharded_state = ("buffer",)
    sharded_options = ("buffer_size",)

    def __init__(self, kernel: Kernel | str | dict | None = None, num_steps: int = 20, alpha: float = 0.0,
                 clamp: bool = False, buffer_size: int = 10000, restart_prob: float = 0.05, noise: str = "uniform"):
        super().__init__(kernel, num_steps, alpha, clamp)
        if int(buffer_size) < 1:
            raise ValueError(f"replay: buffer_size must be >= 1, got {buffer_size}")
        if not 0.0 <= float(restart_prob) <= 1.0:
            raise ValueError(f"replay: restart_prob must be in [0, 1], got {restart_prob}")
        self.buffer_size, self.restart_prob = int(buffer_size), float(restart_prob)
        self.noise_kind = _check_noise("replay", noise)
        self.buffer: ReplayBuffer | None = None
        self._index: torch.Tensor | None = None
        self._restarted = 0.0

    def setup(self, energy: EnergyFn, data: torch.Tensor, generator: torch.Generator | None = None,
              support: str = "real") -> None:
        super().setup(energy, data, generator, support)
        self.buffer = ReplayBuffer(self.noise.sample(self.buffer_size, generator).to(data.dtype))

    def start_points(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.buffer is None:
            raise RuntimeError("replay: call setup(energy, data) before loss()")
        x, self._index = self.buffer.draw(batch.shape[0], generator)
        restart = torch.rand(x.shape[0], generator=generator, device=x.device) < self.restart_prob
        noise = self.noise.sample(x.shape[0], generator).to(x.dtype)
        self._restarted = float(restart.float().mean())
        return torch.where(restart.view(-1, *([1] * (x.dim() - 1))), noise, x)

    def end_points(self, x: torch.Tensor) -> None:
        self.buffer.update(self._index, x)

    def loss(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        loss, metrics = super().loss(energy, batch, generator)
        metrics["restarted"] = self._restarted
        return loss, metrics

    def state_dict(self) -> dict[str, Any]:
        return {} if self.buffer is None else {"buffer": self.buffer.samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        extra = set(state) - {"buffer"}
        if extra:
            raise ValueError(f"replay: unexpected objective state keys {sorted(extra)}")
        if "buffer" in state:
            self.buffer = ReplayBuffer(state["buffer"])

    def model_samples(self, energy: EnergyFn, num_samples: int, generator: torch.Generator | None) -> torch.Tensor | None:
        if self.buffer is None:
            return None
        return self.buffer.draw(min(num_samples, len(self.buffer)), generator)[0]
