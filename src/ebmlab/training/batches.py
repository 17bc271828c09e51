"""The batch order of a training run: without replacement within an epoch, from one generator."""

from __future__ import annotations

from typing import Any

import torch

#: :meth:`BatchStream.next_rows` gathers a whole epoch at once for data up to this many bytes.
EPOCH_GATHER_BYTES = 64 * 2**20


class BatchStream:
    """Batches without replacement within an epoch; a new permutation when one runs out.

    With ``batch_size >= n`` every batch is the full data (no randomness). A batch is
    ``perm[cursor : cursor + batch_size]`` of the epoch's permutation; the remainder of an
    epoch (fewer than ``batch_size`` rows) is skipped.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device: torch.device):
        self.n, self.batch_size, self.generator, self.device = n, min(batch_size, n), generator, device
        self.perm = torch.zeros(0, dtype=torch.long, device=device)
        self.cursor = 0
        self._epoch: tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]] | None = None

    def next(self) -> torch.Tensor:
        """The next batch's row indices, shape ``(batch_size,)``."""
        if self.batch_size == self.n:
            return torch.arange(self.n, device=self.device)
        if self.cursor + self.batch_size > self.perm.numel():
            self.perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.cursor = 0
        index = self.perm[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return index

    def next_rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x[self.next()]`` (same draws, same order), for ``x`` of shape ``(n, ...)``.

        For data up to :data:`EPOCH_GATHER_BYTES` the epoch's rows are gathered once, when its
        permutation is drawn, and each batch is a view of them (no per-batch indexing); read it
        before the next call, never write to it.
        """
        if self.batch_size == self.n:
            return x
        if x.numel() * x.element_size() > EPOCH_GATHER_BYTES:
            return x[self.next()]
        if self.cursor + self.batch_size > self.perm.numel():
            self.perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.cursor = 0
        epoch = self._epoch
        if epoch is None or epoch[0] is not self.perm or epoch[1] is not x:
            epoch = self._epoch = (self.perm, x, x[self.perm].split(self.batch_size))
        rows = epoch[2][self.cursor // self.batch_size]
        self.cursor += self.batch_size
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.cursor = state["perm"].to(self.device), int(state["cursor"])


__all__ = ["BatchStream", "EPOCH_GATHER_BYTES"]
