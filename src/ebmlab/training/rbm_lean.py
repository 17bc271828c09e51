"""The lean training path of a Bernoulli RBM under CD-k / PCD-k with block Gibbs.

:class:`LeanRBMUpdates` runs ``n`` updates of :class:`~ebmlab.training.loop.TrainLoop` in one
call, with the closed-form gradient of :mod:`ebmlab.objectives.rbm_lean` and the optimiser
written on one flat vector ``θ = [W (H·V), b (V), c (H)]``. The model's parameters, the
optimiser's state tensors, the EMA weights and the persistent chains are *views* of the
engine's flat buffers, so nothing is copied between updates, checkpoints read the usual
``state_dict`` entries, and anything that replaces those tensors (loading a checkpoint, a
held-out evaluation that restores the chains) is noticed by pointer and adopted before the next
call. The optimiser matches :class:`torch.optim.SGD` and :class:`torch.optim.Adam` as the
general path uses them (gradient ``g = ∇L``, clipping, then weight decay ``g + λθ``):

    SGD:   m ← μ m + g  (m = g at the first step),   θ ← θ - η m     (θ ← θ - η g when μ = 0)
    Adam:  m ← β₁m + (1-β₁)g,  s ← β₂s + (1-β₂)g²,  θ ← θ - η/(1-β₁ᵗ) · m / (√s/√(1-β₂ᵗ) + ε)
    clip:  g ← g · min(1, c / (‖g‖ + 10⁻⁶)),        EMA:  θ̄ ← θ̄ + (1-d)(θ - θ̄)

(Kingma & Ba 2015 for Adam; the forms are PyTorch's; weight decay writes ``g + λθ`` to a buffer
of its own, leaving ``g`` for the metrics.) Metrics: the gradients of a call's updates stay in
slots and the metric rows are computed once, after the call's last update (update by update
when clipping needs ‖g‖ first); calls are at most ``max_chunk`` updates, fewer for large
models, so that the slots hold at most ``chunk_floats`` numbers. Divergence: inside a call the metric
rows are checked once at the end; if one is NaN or infinite the engine restores the state it
started from (parameters, optimiser, chains, both generators, batch position) and replays the
updates one by one, checking each before it is applied, so the error names the same step and
leaves the same state as the general path.

:func:`lean_rbm_updates` decides whether a loop can use the engine and, when it cannot, why.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.objectives.contrastive import ContrastiveDivergence, PersistentCD
from ebmlab.objectives.rbm_lean import ROW, RBMContrastiveStep, row_columns, row_metrics
from ebmlab.samplers.block_gibbs import BlockGibbs


def lean_rbm_updates(loop) -> tuple["LeanRBMUpdates | None", str | None]:
    """``(engine, None)`` when ``loop`` trains a BernoulliRBM by CD/PCD + block Gibbs in a way the
    lean path reproduces; ``(None, reason)`` when the model is such an RBM but a setting needs the
    general path; ``(None, None)`` for every other model or objective."""
    model, objective, s = loop.model, loop.objective, loop.settings
    if type(model) is not BernoulliRBM or type(objective) not in (ContrastiveDivergence, PersistentCD) \
            or not isinstance(objective.kernel, BlockGibbs):
        return None, None
    reasons = []
    if not getattr(objective, "lean", True):
        reasons.append("lean=false")
    if objective.alpha > 0:
        reasons.append(f"the energy penalty alpha={objective.alpha:g}")
    if objective.clamp:
        reasons.append("clamp=True")
    if loop.sharding.is_distributed:
        reasons.append("data-parallel training")
    if loop.labels is not None or list(objective.parameters()):
        reasons.append("labels or objective parameters")
    if loop.x_train.dtype != model.W.dtype or loop.x_train.device != model.W.device:
        reasons.append(f"data of dtype {loop.x_train.dtype} on {loop.x_train.device} for a model of dtype "
                       f"{model.W.dtype} on {model.W.device}")
    if not all(p.requires_grad for p in (model.W, model.b, model.c)):
        reasons.append("frozen parameters")
    if reasons:
        return None, ("RBM training takes the general autograd path (not the lean closed-form path, because of "
                      + "; ".join(reasons) + ")")
    return LeanRBMUpdates(loop), None


class LeanRBMUpdates:
    """``run(first_step, count, ...)``: ``count`` updates of ``loop`` (see the module docstring).

    Metric rows of shape ``(count, 3)`` (:data:`~ebmlab.objectives.rbm_lean.ROW`) come back
    with the learning rates and clock times of the updates done.
    """

    def __init__(self, loop, max_chunk: int = 512, chunk_floats: int = 2 ** 21):
        self.loop, model, objective, s = loop, loop.model, loop.objective, loop.settings
        self.model, self.objective = model, objective
        H, V = model.num_hidden, model.num_visible
        self.sizes = [H * V, V, H]
        like = dict(dtype=model.W.dtype, device=model.W.device)
        n = sum(self.sizes)
        self.theta_ext = torch.zeros(n + 1, **like)  # [θ, 0]: see ebmlab.objectives.rbm_lean
        self.theta = self.theta_ext[:n]
        self.persistent = isinstance(objective, PersistentCD)
        B = loop.batches.batch_size
        chains = getattr(objective, "chains", None)
        C = int(chains.shape[0]) if self.persistent and chains is not None else (
            (objective.num_chains or B) if self.persistent else B)
        kernel = objective.kernel
        # a call's gradients and pre-activations stay in slots (metrics once per call): at most
        # ``chunk_floats`` numbers of them, so large models run shorter calls
        self.max_chunk = max(1, min(int(max_chunk), int(chunk_floats) // (n + (B + C) * (H + 1))))
        self.grads = torch.zeros(self.max_chunk, n, **like)
        self.math = RBMContrastiveStep(self.theta_ext, self.grads, V, H, B, C, objective.num_steps * int(kernel.num_sweeps),
                                       self.persistent, loop.objective_generator)
        self.x_flat = loop.x_train.reshape(loop.x_train.shape[0], -1)
        self.event_shape = tuple(loop.x_train.shape[1:])
        self.adam = s.optimizer == "adam"
        self.momentum = 0.0 if self.adam else float(s.momentum)
        self.state_names = ("exp_avg", "exp_avg_sq") if self.adam else (("momentum_buffer",) if self.momentum else ())
        self.flat_state = {k: torch.zeros(n, **like) for k in self.state_names}
        self.adam_step = 0
        self.started = False  # the momentum buffer / Adam moments hold a first step
        self.ema_theta = torch.zeros(n, **like) if loop.ema is not None else None
        self.denom = torch.zeros(n, **like) if self.adam else None
        self.decayed = torch.zeros(n, **like) if s.weight_decay else None  # g + λθ (g itself is kept)
        self.rows = torch.zeros(self.max_chunk, len(ROW), **like)
        # per-update views of the metric rows, made once (indexing a tensor costs an op)
        self.row_views = [(r, r[0, :2], r[0, 2]) for r in self.rows.split(1)]
        # clipping needs ‖g‖ before the step: metrics update by update then
        self.per_update_metrics = s.grad_clip > 0
        self.plain_sgd = not (self.adam or self.momentum or s.weight_decay or s.grad_clip > 0 or self.ema_theta is not None)
        self.chains_ready = not self.persistent  # CD chains start at each batch
        self.params = [model.W, model.b, model.c]
        self.adopt()

    # ------------------------------------------------------------------ views

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [t.view_as(p) for t, p in zip(flat.split(self.sizes), self.params)]

    def _bind(self, tensors: list[torch.Tensor], flat: torch.Tensor) -> None:
        """Copy ``tensors`` into ``flat`` and make each a view of it (``.data`` re-pointed)."""
        for t, view in zip(tensors, self._views(flat)):
            if t.data_ptr() != view.data_ptr():
                view.copy_(t.detach())
                t.data = view

    def adopt(self) -> None:
        """Take over whatever tensors the model, optimiser, EMA and objective hold now (cheap when bound)."""
        self._bind(self.params, self.theta)
        state = self.loop.optimizer.state
        present = all(k in state.get(p, {}) for p in self.params for k in self.state_names)
        if self.state_names and present:
            for k in self.state_names:
                tensors = [state[p][k] for p in self.params]
                for i, (t, view) in enumerate(zip(tensors, self._views(self.flat_state[k]))):
                    if t.data_ptr() != view.data_ptr():
                        view.copy_(t)
                        state[self.params[i]][k] = view
            self.started = True
            if self.adam:
                self.adam_step = int(state[self.params[0]]["step"])
        if self.ema_theta is not None:
            self._bind(list(self.loop.ema.parameters()), self.ema_theta)
        chains = getattr(self.objective, "chains", None) if self.persistent else None
        if chains is not None:
            flat = self.math.chains.view(self.math.chains.shape[0], *chains.shape[1:])
            if chains.data_ptr() != flat.data_ptr():
                if chains.shape[0] != self.math.chains.shape[0]:
                    raise ValueError(f"pcd: the saved chains hold {chains.shape[0]} rows, the run {self.math.chains.shape[0]}")
                self.math.chains.copy_(chains.reshape(self.math.chains.shape))
                self.objective.chains = flat
            self.chains_ready = True

    def release(self) -> None:
        """Give every bound tensor its own storage again (at the end of a run; :meth:`adopt` re-binds)."""
        for p in self.params + (list(self.loop.ema.parameters()) if self.ema_theta is not None else []):
            p.data = p.data.clone()
        state = self.loop.optimizer.state
        for p in self.params:
            for k in self.state_names:
                if k in state.get(p, {}):
                    state[p][k] = state[p][k].clone()
        if self.persistent and getattr(self.objective, "chains", None) is not None:
            self.objective.chains = self.objective.chains.clone()
            self.chains_ready = False  # adopt() takes them back

    def publish(self, lr: float) -> None:
        """Leave the optimiser's state as its own step would (the state entries, the group lr)."""
        state = self.loop.optimizer.state
        if self.started and self.state_names:
            for k in self.state_names:
                for p, view in zip(self.params, self._views(self.flat_state[k])):
                    state[p][k] = view
            if self.adam:
                for p in self.params:
                    if "step" in state[p]:
                        state[p]["step"].fill_(self.adam_step)
                    else:
                        state[p]["step"] = torch.tensor(float(self.adam_step))
        for group in self.loop.optimizer.param_groups:
            group["lr"] = lr

    # ------------------------------------------------------------------ updates

    def _init_chains(self) -> None:
        batch = self.math.data.view(self.math.data.shape[0], *self.event_shape)
        x0 = self.objective.start_points(self.model, batch, self.loop.objective_generator)
        self.math.chains.copy_(x0.reshape(self.math.chains.shape))
        self.objective.chains = self.math.chains.view(self.math.chains.shape[0], *self.event_shape)
        self.chains_ready = True

    def _apply(self, lr: float, g: torch.Tensor, norm: torch.Tensor) -> None:
        """One optimiser step on θ with gradient ``g`` (left as it is unless clipped) of norm ``norm``."""
        theta = self.theta
        if self.plain_sgd:
            theta.add_(g, alpha=-lr)
            return
        s = self.loop.settings
        if s.grad_clip > 0:
            g.mul_(torch.clamp(s.grad_clip / (norm + 1e-6), max=1.0))  # as clip_grad_norm_
        if s.weight_decay:
            g = torch.add(g, theta, alpha=s.weight_decay, out=self.decayed)
        if self.adam:
            beta1, beta2 = s.betas
            m, v = self.flat_state["exp_avg"], self.flat_state["exp_avg_sq"]
            self.adam_step += 1
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            torch.sqrt(v, out=self.denom).div_((1 - beta2 ** self.adam_step) ** 0.5).add_(1e-8)
            theta.addcdiv_(m, self.denom, value=-lr / (1 - beta1 ** self.adam_step))
        elif self.momentum:
            buf = self.flat_state["momentum_buffer"]
            if self.started:
                torch.add(g, buf, alpha=self.momentum, out=buf)  # m ← μ m + g
            else:
                buf.copy_(g)
            theta.add_(buf, alpha=-lr)
        else:
            theta.add_(g, alpha=-lr)
        self.started = True
        if self.ema_theta is not None:
            self.ema_theta.lerp_(theta, 1.0 - s.ema_decay)

    def _updates(self, first_step: int, count: int, lr_at: Callable[[int], float], stop: Callable[[], bool],
                 checked: bool) -> tuple[list[float], list[float], tuple[int, str] | None]:
        math_, views = self.math, self.row_views
        lrs, times = [], []
        next_rows, x, copy_batch = self.loop.batches.next_rows, self.x_flat, math_.data.copy_
        gibbs, gradient, metrics = math_.gibbs, math_.write_gradient, math_.metrics
        apply, clock, isfinite = self._apply, time.perf_counter, torch.isfinite
        per_update = checked or self.per_update_metrics
        for i in range(count):
            if i and stop():
                break
            step = first_step + i
            lr = lr_at(step)
            copy_batch(next_rows(x))
            if not self.chains_ready:
                self._init_chains()
            row, energies, norm = views[i]
            gibbs()
            g = gradient(i)
            if per_update:
                metrics(i, i + 1, row)
                if checked and not bool(isfinite(row).all()):
                    return lrs, times, (step, "the gradient" if bool(isfinite(energies).all()) else "the loss")
            apply(lr, g, norm)
            lrs.append(lr)
            times.append(clock())
        if not per_update:
            metrics(0, len(lrs), self.rows[:len(lrs)])
        return lrs, times, None

    def _buffers(self) -> list[torch.Tensor]:
        """Every flat buffer that an update writes (parameters, chains, optimiser state, EMA)."""
        ema = [self.ema_theta] if self.ema_theta is not None else []
        return [self.theta, self.math.chains, *self.flat_state.values(), *ema]

    def _snapshot(self) -> dict:
        loop = self.loop
        return {"flat": [t.clone() for t in self._buffers()],
                "rng": (loop.batch_generator.get_state(), loop.objective_generator.get_state()),
                "batches": loop.batches.state_dict(), "misc": (self.adam_step, self.started, self.chains_ready,
                                                                self.objective.chains if self.persistent else None)}

    def _restore(self, snap: dict) -> None:
        loop = self.loop
        for t, saved in zip(self._buffers(), snap["flat"]):
            t.copy_(saved)
        loop.batch_generator.set_state(snap["rng"][0])
        loop.objective_generator.set_state(snap["rng"][1])
        loop.batches.load_state_dict(snap["batches"])
        self.adam_step, self.started, self.chains_ready, chains = snap["misc"]
        if self.persistent:
            self.objective.chains = chains

    def run(self, first_step: int, count: int, lr_at: Callable[[int], float], stop: Callable[[], bool]
            ) -> tuple[torch.Tensor, list[float], list[float], tuple[int, str] | None]:
        """Updates ``first_step, ..., first_step + count - 1`` (fewer when ``stop()`` turns true).

        Returns ``(metric rows (done, 3), learning rates, perf_counter times, diverged)``;
        ``diverged`` is ``(step, what)`` for the first update with a non-finite metric, which is
        then not applied (the state is the one just before it), else ``None``.
        """
        count = min(int(count), self.max_chunk)
        self.adopt()
        checked = count <= 2
        snap = None if checked else self._snapshot()
        lrs, times, bad = self._updates(first_step, count, lr_at, stop, checked)
        if not checked and not bool(torch.isfinite(self.rows[:len(lrs)]).all()):
            self._restore(snap)
            lrs, times, bad = self._updates(first_step, len(lrs), lr_at, lambda: False, True)
        if lrs:
            self.publish(lrs[-1])
        return self.rows[:len(lrs)], lrs, times, bad


def fold_rows(loop, rows: torch.Tensor, lrs: list[float], times: list[float], start: float, log, callbacks) -> None:
    """Fold the engine's metric rows into ``loop`` as ``loop._after_update`` would one row at a time.

    A chunk ends where a checkpoint or a callback needs the loop (``TrainLoop._chunk_length``), so
    inside it only the logged steps (multiples of ``log_every``) and its last row need a record;
    the rows between them go into the metric window in bulk (:meth:`MetricWindow.add_columns`,
    the same sums), the others through ``_after_update``.
    """
    n = len(lrs)
    if not n:
        return
    first, every = loop.step + 1, loop.log_every
    special = list(range((every - first % every) % every, n - 1, every)) + [n - 1]
    values = rows.numpy() if rows.device.type == "cpu" else rows.cpu().numpy()
    columns = row_columns(values) if len(special) < n else None
    prev = 0
    for i in special:
        if i > prev:
            loop.window.add_columns({k: c[prev:i] for k, c in columns.items()})
        loop.step = first + i
        loop._after_update(row_metrics(values[i].tolist()), lrs[i], times[i] - start, log, callbacks)
        prev = i + 1


__all__ = ["LeanRBMUpdates", "fold_rows", "lean_rbm_updates"]
