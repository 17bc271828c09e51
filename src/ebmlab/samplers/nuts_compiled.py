"""NUTS run as ``torch.compile`` graphs (``sample(..., compile=True)``).

A transition of batched NUTS (:mod:`ebmlab.samplers.nuts`) doubles its trajectory a
data-dependent number of times, so it cannot be one fixed graph. Each doubling here is three
kinds of graph call:

1. **begin** (:func:`~ebmlab.samplers.nuts_doubling.begin_doubling`): the directions, the signed
   step sizes, the end to grow from, and the subtree's starting state;
2. **leaves** (:mod:`ebmlab.samplers.nuts_leaf`): one call per block of ``k`` leaves, with one
   host synchronisation per call (does any chain still build?);
3. **end** (:func:`~ebmlab.samplers.nuts_doubling.end_doubling`): the choice between trajectory
   and subtree, the new end and the U-turn checks of the merged tree.

A doubling of ``2^j ≤ 2k`` leaves is all three in one call (:func:`doubling_graph`), with one host
synchronisation: on a cheap energy the cost of a call, not of its arithmetic, sets the time of a
draw, and most trees are short. On the banana at 1,024 chains (one thread, ``k = 4``) that took
the calls from 14.7 a draw to about 7 and the draws' time from 1.44–1.64 s to 1.26–1.37 s per 500;
blocks of ``k`` leaves stay for the longer doublings, where a block that runs past the chains'
stop wastes leaves.

Compaction (``StepCompiler(compact=4)``, the default; :mod:`ebmlab.samplers.nuts_compaction`).
A batch runs a doubling as long as its
longest tree needs, and a graph evaluates the gradient of every chain, so in the last leaves
of a long doubling most of the work is for chains that wait. Once at most ``C/4`` chains still
build, the block loop gathers them (padded with copies of one of them) into a batch of ``C/4``
rows, runs the remaining leaves on that batch with its own graph, and again into ``C/16`` rows
once at most that many build (down to 16 rows), then scatters the rows back, innermost batch
first; the chains that stopped are left out exactly (a leaf changes nothing of theirs), so the
draws are the same. Off for fewer than 64 chains and for energies with per-row parameters
(``select_rows``). Measured at 1,024 chains, one thread, the same draws: logistic regression
126 → 92 ms a draw (one level: 136 → 107), the centred funnel 75 → 38 ms (one level), the
banana unchanged (its doublings are short).

Packed state. On small targets the cost of a call is mostly its inputs and outputs (each tensor
is guarded, checked and allocated: about 1 µs apiece on a CPU), so the state travels between
graphs as a few stacked tensors, unpacked and repacked inside each graph:

* trajectory: ``tv`` ``(11, C, D)`` — left ``x, p, p♯, ∇E``, right ``x, p, p♯, ∇E``, ``ρ``,
  candidate ``x``, ``∇E``; ``tf`` ``(4, C)`` — candidate energy, its energy error, ``log W``,
  ``Σ min(1, w)``; ``tb`` ``(3, C)`` bool — active, diverged, moved; ``tl`` ``(2, C)`` long —
  depth, leaves built;
* subtree: ``cv`` ``(7, C, D)`` — edge ``x, p, ∇E``, candidate ``x, ∇E``, ``R``, ``R_prev``;
  ``cf`` ``(6, C)`` — ``E₀, K₀``, ``log w``-sum, acceptance sum, candidate energy and error;
  ``cb`` ``(2, C)`` bool — building, diverged; ``cl`` ``(C,)`` long — leaves built.

Positions are flattened to ``(C, D)`` in the packs and viewed as ``(C, *event)`` for the
energy. Random numbers are drawn outside the graphs from the run's generator in the eager
order (:mod:`ebmlab.samplers.nuts`), so compiled and eager chains agree to floating-point
rounding. The graphs never recompile across leaves, doublings, step sizes or metric values;
a change of metric kind or of the chains' shapes builds new ones.
"""

from __future__ import annotations

import dataclasses
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ebmlab.energy.base import EnergyFn
from ebmlab.samplers.base import ChainState, uniform_log
from ebmlab.samplers.compiled_loop import StepCompiler, energy_value_and_grad, metric_tensors
from ebmlab.samplers.metric import IDENTITY
from ebmlab.samplers.nuts import NUTS, NUTSInfo
from ebmlab.samplers.nuts_doubling import (TRAJECTORY_COUNTS, TRAJECTORY_FLAGS, TRAJECTORY_FLOATS, TRAJECTORY_VECTORS,
                                          begin_doubling, end_doubling, where_choice)
from ebmlab.samplers.nuts_leaf import DEFAULT_UNROLL, LeafSpec, block_index, leaves
from ebmlab.samplers.nuts_compaction import MIN_COMPACT_ROWS, Batch, compact_rows
from ebmlab.samplers.nuts_tree import Edge, Subtree

SUBTREE_VECTORS = ("x", "p", "g", "cand_x", "cand_g", "cum", "cum_prev")
SUBTREE_FLOATS = ("energy0", "kinetic0", "log_weight", "sum_accept", "cand_e", "cand_err")


def _unpack_trajectory(tv, tf, tb, tl) -> dict:
    return {**dict(zip(TRAJECTORY_VECTORS, tv.unbind(0))), **dict(zip(TRAJECTORY_FLOATS, tf.unbind(0))),
            **dict(zip(TRAJECTORY_FLAGS, tb.unbind(0))), **dict(zip(TRAJECTORY_COUNTS, tl.unbind(0)))}


def _pack_trajectory(t: dict):
    return (torch.stack([t[k] for k in TRAJECTORY_VECTORS]), torch.stack([t[k] for k in TRAJECTORY_FLOATS]),
            torch.stack([t[k] for k in TRAJECTORY_FLAGS]), torch.stack([t[k] for k in TRAJECTORY_COUNTS]))


def begin_graph(tv, tb, u, magnitude, energy0, kinetic0):
    """``(forward, eps, ends, cv, cf, cb, cl)``: the doubling's directions and signed steps, ``ends``
    ``(3, C, D)`` = near ``p``, near ``p♯``, far ``p♯``, and the subtree's starting packs."""
    t = dict(zip(TRAJECTORY_VECTORS, tv.unbind(0)))
    forward, eps, (x, p, sharp, g), far_sharp = begin_doubling(where_choice, t, u, magnitude)
    zeros = torch.zeros_like(p)
    cv = torch.stack([x, p, g, x, g, zeros, zeros])
    cf = torch.stack([energy0, kinetic0, torch.full_like(energy0, -torch.inf), torch.zeros_like(energy0), energy0,
                      torch.zeros_like(energy0)])
    cb = torch.stack([tb[0], torch.zeros_like(tb[0])])
    cl = torch.zeros(u.shape, dtype=torch.long, device=u.device)
    return forward, eps, torch.stack([p, sharp, far_sharp]), cv, cf, cb, cl


def leaves_graph(spec: LeafSpec, vg: Callable, shape: tuple, cv, cf, cb, cl, eps, log_u, index, slots, metric):
    """:func:`~ebmlab.samplers.nuts_leaf.leaves` on packed state: ``(cv, cf, cb, cl, sharp, first, any)``
    with ``sharp`` the last leaf's ``p♯``, ``first`` ``(2, C, D)`` the first leaf's ``p``, ``p♯``."""
    x, p, g, cand_x, cand_g, cum, cum_prev = cv.unbind(0)
    c = dict(zip(SUBTREE_FLOATS, cf.unbind(0)))
    c.update(x=x.view(shape), p=p, g=g.view(shape), cand_x=cand_x.view(shape), cand_g=cand_g.view(shape), cum=cum,
             cum_prev=cum_prev, eps=eps.view(-1, 1), half=(0.5 * eps).view(-1, 1), building=cb[0], diverged=cb[1],
             num_leaves=cl)
    out = leaves(spec, vg, c, log_u, index, slots, metric)
    first = (out["first_p"], out["first_sharp"]) if spec.unroll > 1 else (out["p"], out["sharp"])
    cv = torch.stack([out["x"].flatten(1), out["p"], out["g"].flatten(1), out["cand_x"].flatten(1),
                      out["cand_g"].flatten(1), out["cum"], out.get("cum_prev", cum)])
    cf = torch.stack([c["energy0"], c["kinetic0"], out["log_weight"], out["sum_accept"], out["cand_e"],
                      out["cand_err"]])
    return cv, cf, torch.stack([out["building"], out["diverged"]]), out["num_leaves"], out["sharp"], \
        torch.stack(first), out["any"]


def end_graph(tv, tf, tb, tl, cv, cf, cb, cl, sharp, first, forward, ends, log_u, robust: bool = True):
    """The packed trajectory merged with the packed subtree, and whether any chain is still active
    (``robust``: Stan's extra U-turn checks)."""
    t = _unpack_trajectory(tv, tf, tb, tl)
    x, p, g, cand_x, cand_g, cum, _ = cv.unbind(0)
    _, _, log_weight, sum_accept, cand_e, cand_err = cf.unbind(0)
    sub = Subtree(cb[0], cb[1], Edge(x, p, sharp, g), first[0], first[1], cum, log_weight, cand_x, cand_e, cand_g,
                  cand_err, sum_accept, cl)
    near = Edge(None, ends[0], ends[1], None)
    t = end_doubling(where_choice, t, sub, forward, near, ends[2], log_u, robust=robust)
    return (*_pack_trajectory(t), t["active"].any())


def end_graph_whole_node(tv, tf, tb, tl, cv, cf, cb, cl, sharp, first, forward, ends, log_u):
    """:func:`end_graph` without Stan's extra U-turn checks (a graph of its own)."""
    return end_graph(tv, tf, tb, tl, cv, cf, cb, cl, sharp, first, forward, ends, log_u, False)


def doubling_graph(spec: LeafSpec, vg: Callable, shape: tuple, tv, tf, tb, tl, magnitude, energy0, kinetic0, draws,
                   index, slots, metric):
    """A whole doubling of ``2^j ≤ 2·unroll`` leaves: :func:`begin_graph`, :func:`leaves_graph` and
    :func:`end_graph` in one graph. ``draws`` ``(2^j + 2, C)`` are the uniforms in the eager order
    (direction, one per leaf, the choice between trajectory and subtree); when every chain stops
    after leaf ``n < 2^j`` the choice takes row ``n + 1``, as eager NUTS, which draws no more.
    Returns the packed trajectory and ``(2^j + 1,)`` flags: whether any chain builds after each
    leaf, and whether any is still active."""
    forward, eps, ends, cv, cf, cb, cl = begin_graph(tv, tb, draws[0], magnitude, energy0, kinetic0)
    cv, cf, cb, cl, sharp, first, builds = leaves_graph(spec, vg, shape, cv, cf, cb, cl, eps, draws[1:-1].log(), index,
                                                        slots, metric)
    stopped = ~builds
    used = torch.where(stopped.any(), stopped.to(torch.long).argmax() + 1, builds.shape[0])
    log_u = draws[1:].index_select(0, used.view(1)).squeeze(0).log()
    tv, tf, tb, tl, active = end_graph(tv, tf, tb, tl, cv, cf, cb, cl, sharp, first, forward, ends, log_u,
                                       spec.robust)
    return tv, tf, tb, tl, torch.cat([builds, active.view(1)])


def _uniforms(n: int, c: int, generator, dtype, device) -> torch.Tensor:
    """``(n, C)`` uniforms: the next ``n`` draws of ``rand((C,))`` from ``generator``, in turn."""
    if device.type == "cpu":  # on the CPU one (n, C) draw is the n (C,) draws in turn
        return torch.rand((n, c), generator=generator, dtype=dtype, device=device)
    return torch.stack([torch.rand((c,), generator=generator, dtype=dtype, device=device) for _ in range(n)])


def _compiled(compiler: StepCompiler, key, name: str, call: Callable) -> tuple[Callable, float | None]:
    """``torch.compile`` of ``call`` cached in ``compiler`` under ``key`` with the conventions of
    :class:`~ebmlab.samplers.compiled_loop.StepCompiler` (one code object per graph, so graphs never
    evict one another), and the set-up seconds when it is new."""
    if key in compiler._compiled:
        return compiler._compiled[key][1], None
    start = time.perf_counter()
    name = f"compiled_nuts_{name}_{len(compiler._compiled)}"
    code = call.__code__.replace(co_name=name, co_qualname=name)
    call = types.FunctionType(code, call.__globals__, name, call.__defaults__, call.__closure__)
    fn = torch.compile(call, mode=compiler.mode, backend=compiler.backend, fullgraph=compiler.fullgraph,
                       dynamic=compiler.dynamic)
    compiler._compiled[key] = (key, fn)  # the key holds the energy, so its id is not reused
    return fn, time.perf_counter() - start


def leaf_function(compiler: StepCompiler, spec: LeafSpec, energy: EnergyFn, shape: tuple) -> tuple[Callable, float | None]:
    """The compiled :func:`leaves_graph` of ``spec`` on ``energy`` for positions of ``shape``."""
    vg = energy_value_and_grad(energy)

    def call(cv, cf, cb, cl, eps, log_u, index, slots, metric):
        return leaves_graph(spec, vg, shape, cv, cf, cb, cl, eps, log_u, index, slots, metric)

    return _compiled(compiler, (spec, shape, id(energy), energy), "leaf", call)


def doubling_function(compiler: StepCompiler, spec: LeafSpec, energy: EnergyFn, shape: tuple) -> tuple[Callable, float | None]:
    """The compiled :func:`doubling_graph` of ``spec`` (a whole doubling) on ``energy``."""
    vg = energy_value_and_grad(energy)

    def call(tv, tf, tb, tl, magnitude, energy0, kinetic0, draws, index, slots, metric):
        return doubling_graph(spec, vg, shape, tv, tf, tb, tl, magnitude, energy0, kinetic0, draws, index, slots, metric)

    return _compiled(compiler, ("doubling", spec, shape, id(energy), energy), "doubling", call)


@dataclass(frozen=True)
class CompiledNUTS(NUTS):
    """:class:`~ebmlab.samplers.nuts.NUTS` run as compiled graphs (module docstring); ``compiler``
    is the :class:`StepCompiler` that holds the graphs and counts their compile time. Same
    hyperparameters, same draws as NUTS to rounding."""

    compiler: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.compiler is None:
            object.__setattr__(self, "compiler", StepCompiler())
        super().__post_init__()

    def _call(self, fn, args, spec, pending: dict, key):
        """One compiled call of ``fn(*args)``; the first call of a new graph is timed as its compilation."""
        setup = pending.pop(key, None)  # the set-up seconds of a graph not yet called, else None
        start = time.perf_counter()
        with torch.no_grad():
            out = fn(*args)
        if setup is not None:
            seconds = setup + time.perf_counter() - start
            self.compiler.compile_time += seconds
            self.compiler.graphs += 1
            if self.compiler.on_compile is not None:
                self.compiler.on_compile(seconds, spec)
        return out

    def _graph(self, pending: dict, key, make: Callable):
        fn, setup = make()
        if setup is not None:
            pending[key] = setup
        return fn

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, NUTSInfo]:
        if self._take_last:
            raise ValueError("CompiledNUTS: the last-leaf test variant has no compiled form")
        metric = self.metric or IDENTITY
        x0, c = state.x, state.num_chains
        shape, dtype, device = tuple(x0.shape), state.energy.dtype, x0.device
        p0 = metric.sample_momentum(x0, generator).flatten(1)
        energy0, kinetic0 = state.energy, metric.kinetic_energy(p0)
        kind, tensors = metric_tensors(self)
        num = max(int(self.max_tree_depth) - 1, 1)
        asked = self.compiler.unroll or DEFAULT_UNROLL
        unroll = 1 << (int(asked).bit_length() - 1)  # a power of two
        pending: dict = {}
        compiler = self.compiler
        begin = self._graph(pending, "begin", lambda: _compiled(compiler, ("nuts_begin",), "begin", begin_graph))
        robust = bool(self.robust_uturn)
        end = self._graph(pending, "end", lambda: _compiled(compiler, ("nuts_end", robust), "end",
                                                            end_graph if robust else end_graph_whole_node))

        labels = [LeafSpec(f"nuts_{which}", kind, num, float(self.max_energy_error), robust=robust)
                  for which in ("begin", "end")]
        x, g, sharp0 = x0.flatten(1), state.grad.flatten(1), metric.velocity(p0)
        tv = torch.stack([x, p0, sharp0, g, x, p0, sharp0, g, p0, x, g])
        zeros = torch.zeros_like(energy0)
        tf = torch.stack([energy0, zeros, zeros, zeros])
        tb = torch.stack([torch.ones(c, dtype=torch.bool, device=device), torch.zeros(c, dtype=torch.bool, device=device),
                          torch.zeros(c, dtype=torch.bool, device=device)])
        tl = torch.zeros((2, c), dtype=torch.long, device=device)
        slots = x.new_empty((num + 1, 5, *x.shape))
        step = self.step_size
        magnitude = step.to(energy0) if isinstance(step, torch.Tensor) else torch.full_like(energy0, float(step))
        active = True
        first_rows = compact_rows(compiler, energy, c)
        per_chain_metric = self.metric is not None and self.metric.per_chain
        for j in range(int(self.max_tree_depth)):
            if j > 0 and not active:
                break
            total = 2**j
            if total <= 2 * unroll and (generator is not None or total == 1):
                spec = LeafSpec("nuts_leaf", kind, num, float(self.max_energy_error), total, True, robust)
                fn = self._graph(pending, ("doubling", spec), lambda: doubling_function(compiler, spec, energy, shape))
                saved = generator.get_state() if total > 1 else None
                draws = _uniforms(total + 2, c, generator, dtype, device)
                tv, tf, tb, tl, flags = self._call(fn, (tv, tf, tb, tl, magnitude, energy0, kinetic0, draws,
                                                        block_index(0, total, num, device), slots, tensors),
                                                   dataclasses.replace(spec, family="nuts_doubling"), pending,
                                                   ("doubling", spec))
                flags = flags.tolist()
                used = next((i + 1 for i, a in enumerate(flags[:-1]) if not a), total)
                if used < total:  # eager draws no uniform for a leaf after every chain stopped
                    generator.set_state(saved)
                    _uniforms(used + 2, c, generator, dtype, device)
                active = flags[-1]
                continue
            u = torch.rand((c,), generator=generator, dtype=dtype, device=device)
            forward, eps, ends, cv, cf, cb, cl = self._call(begin, (tv, tb, u, magnitude, energy0, kinetic0),
                                                            labels[0], pending, "begin")
            n, going = 0, True
            k, whole = (min(total, unroll), total <= unroll) if generator is not None else (1, j == 0)
            spec = LeafSpec("nuts_leaf", kind, num, float(self.max_energy_error), k, whole, robust)
            fn = self._graph(pending, spec, lambda: leaf_function(compiler, spec, energy, shape))
            sharp, first = ends[1], ends[:2]
            run = Batch(eps, slots, tensors, shape)  # the rows the leaves run on: all chains, or a compact few
            outer, rows = [], first_rows  # per compaction: the batch and state it was gathered from
            while going and n < total:
                saved = generator.get_state() if k > 1 else None
                if device.type == "cpu":  # on the CPU one (k, C) draw is the k (C,) draws in turn
                    log_u = torch.rand((k, c), generator=generator, dtype=dtype, device=device).log()
                else:
                    log_u = torch.stack([torch.rand((c,), generator=generator, dtype=dtype, device=device)
                                         for _ in range(k)]).log()
                if outer:
                    log_u = log_u.index_select(1, run.chains)
                cv, cf, cb, cl, sharp, block_first, flags = self._call(
                    fn, (cv, cf, cb, cl, run.eps, log_u, block_index(n, k, num, device), run.slots, run.metric), spec,
                    pending, spec)
                flags = flags.tolist()
                used = next((i + 1 for i, a in enumerate(flags) if not a), k)
                if used < k:  # eager draws no uniform for a leaf after every chain stopped
                    generator.set_state(saved)
                    for _ in range(used):
                        torch.rand((c,), generator=generator, dtype=dtype, device=device)
                if n == 0:
                    first = block_first
                going, n = flags[-1], n + k
                if going and n < total and rows is not None:
                    count = int(cb[0].sum())
                    if count <= rows:  # the rest of the subtree on the building chains alone
                        outer.append((run, (cv, cf, cb, cl, sharp)))
                        run = run.compact(cb[0], count, rows, per_chain_metric)
                        cv, cf, cb, cl, sharp = run.gather(cv, cf, cb, cl, sharp)
                        fn = self._graph(pending, (spec, run.shape),
                                         lambda: leaf_function(compiler, spec, energy, run.shape))
                        rows = rows // compiler.compact if rows // compiler.compact >= MIN_COMPACT_ROWS else None
            while outer:  # back through the compactions, innermost first
                run_outer, gathered_from = outer.pop()
                cv, cf, cb, cl, sharp = run.scatter(gathered_from, (cv, cf, cb, cl, sharp))
                run = run_outer
            log_u = uniform_log((c,), generator, energy0)
            tv, tf, tb, tl, any_active = self._call(end, (tv, tf, tb, tl, cv, cf, cb, cl, sharp, first, forward, ends,
                                                          log_u), labels[1], pending, "end")
            active = bool(any_active)
        new = ChainState(x=tv[9].view(shape).clone(), energy=tf[0].clone(), grad=tv[10].view(shape).clone(),
                         step=state.step + 1)
        num_leaves, sum_accept = tl[1], tf[3]
        info = NUTSInfo(accept_prob=sum_accept / num_leaves.clamp(min=1).to(sum_accept.dtype), accepted=tb[2],
                        diverged=tb[1], tree_depth=tl[0], num_grad_evals=num_leaves, energy_error=tf[1])
        return new, info


def compiled_nuts(kernel: NUTS, compiler: StepCompiler | None = None) -> CompiledNUTS:
    """``kernel`` (a NUTS) as a :class:`CompiledNUTS` with the same hyperparameters, its graphs
    held by ``compiler`` (a new :class:`StepCompiler` when ``None``)."""
    values = {f.name: getattr(kernel, f.name) for f in dataclasses.fields(NUTS) if f.init}
    return CompiledNUTS(**values, compiler=compiler or StepCompiler())


def eager_nuts(kernel: NUTS) -> NUTS:
    """``kernel`` as a plain (eager) :class:`~ebmlab.samplers.nuts.NUTS` with the same
    hyperparameters, tuned step size and metric included."""
    return NUTS(**{f.name: getattr(kernel, f.name) for f in dataclasses.fields(NUTS) if f.init})


__all__ = ["CompiledNUTS", "begin_graph", "compiled_nuts", "doubling_function", "doubling_graph", "eager_nuts", "end_graph",
           "leaf_function", "leaves_graph"]
