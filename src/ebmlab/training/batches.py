"""The batch order of a training run: without replacement within an epoch, from one generator."""

from __future__ import annotations

from typing import Any

import torch


class BatchStream:
    """Batches without replacement within an epoch; a new permutation when one runs out.

    With ``batch_size >= n`` every batch is the full data (no randomness).
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device: torch.device):
        self.n, self.batch_size, self.generator, self.device = n, min(batch_size, n), generator, device
        self.perm = torch.zeros(0, dtype=torch.long, device=device)
        self.cursor = 0

    def next(self) -> torch.Tensor:
        if self.batch_size == self.n:
            return torch.arange(self.n, device=self.device)
        if self.cursor + self.batch_size > self.perm.numel():
            self.perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.cursor = 0
        index = self.perm[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return index

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.cursor = state["perm"].to(self.device), int(state["cursor"])


__all__ = ["BatchStream"]
