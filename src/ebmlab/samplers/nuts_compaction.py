"""Compaction for compiled NUTS: the last leaves of a long doubling on the chains still building.

A batch runs a doubling as long as its longest tree needs, and a compiled leaf evaluates the
gradient of every chain. Once at most ``C/compact`` chains still build,
:class:`~ebmlab.samplers.nuts_compiled.CompiledNUTS` gathers them (padded with copies of one of
them) into a batch of ``C/compact`` rows with its own graph, again into ``C/compact²`` rows once at
most that many build (down to :data:`MIN_COMPACT_ROWS`), and scatters the rows back at the end of
the doubling, innermost batch first. Chains that stopped building are left out exactly: a leaf
changes nothing of theirs (their log w is -∞), so the draws are those of eager NUTS. Shapes: the
packed subtree state of :mod:`ebmlab.samplers.nuts_compiled` (``cv`` ``(7, C, D)``, ``cf``
``(6, C)``, ``cb`` ``(2, C)``, ``cl`` ``(C,)``), slots ``(L + 1, 5, C, D)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn
from ebmlab.samplers.compiled_loop import StepCompiler


def compact_rows(compiler: StepCompiler, energy: EnergyFn, c: int) -> int | None:
    """The batch size that the last leaves of a long subtree run on (``C / compiler.compact``),
    or ``None`` when they always run on all ``C`` chains: compaction off, fewer than
    ``16·compact`` chains (:data:`MIN_COMPACT_ROWS`), or an energy with per-row parameters
    (``select_rows``)."""
    every = compiler.compact
    inner = getattr(energy, "energy", None)
    per_row = any(getattr(e, "select_rows", None) is not None for e in (energy, inner) if e is not None)
    if every is None or per_row or c // every < MIN_COMPACT_ROWS:
        return None
    return c // every


#: the smallest batch compaction gathers into (a smaller one saves too little for its graph)
MIN_COMPACT_ROWS = 16


@dataclass
class Batch:
    """The rows a subtree's leaves run on: all chains (``index`` None), or ``index`` ``(B,)`` rows
    of the batch it was gathered from (the ``count`` chains still building, padded with copies of
    the first), ``chains`` the same rows as indices of all chains; with their step sizes,
    checkpoint slots, metric tensors and position shape. Chains that stopped building are left
    out exactly: a leaf changes nothing of theirs (their log w is -∞)."""

    eps: torch.Tensor
    slots: torch.Tensor
    metric: dict
    shape: tuple
    index: torch.Tensor | None = None
    chains: torch.Tensor | None = None
    count: int = 0

    def compact(self, building, count: int, rows: int, per_chain: bool) -> "Batch":
        """The ``rows``-row batch of this batch's rows that are ``building`` (``count`` of them)."""
        index = building.nonzero().squeeze(1)
        index = torch.cat([index, index[:1].expand(rows - count)])
        metric = {k: v.index_select(0, index) for k, v in self.metric.items()} if per_chain else self.metric
        chains = index if self.chains is None else self.chains.index_select(0, index)
        return Batch(self.eps.index_select(0, index), self.slots.index_select(2, index), metric,
                      (rows, *self.shape[1:]), index, chains, count)

    def gather(self, cv, cf, cb, cl, sharp):
        """The subtree's packed state ``(cv, cf, cb, cl)`` and last ``p♯`` on this batch's rows."""
        i = self.index
        return cv.index_select(1, i), cf.index_select(1, i), cb.index_select(1, i), cl.index_select(0, i), \
            sharp.index_select(0, i)

    def scatter(self, full: tuple, part: tuple) -> tuple:
        """``full`` (the :meth:`gather` inputs) with this batch's real rows replaced by ``part``."""
        real = self.index[:self.count]
        dims = (1, 1, 1, 0, 0)
        return tuple(f.index_copy(d, real, p.narrow(d, 0, self.count)) for f, p, d in zip(full, part, dims))


__all__ = ["MIN_COMPACT_ROWS", "Batch", "compact_rows"]
