"""An exception raised by a user's energy in the middle of a run, named once at the run's boundary.

The sampler driver and the training loop do not catch errors; the code that calls them
(:func:`ebmlab.jobs.sampling.run_sampling_job`, :meth:`ebmlab.training.loop.TrainLoop.update`)
asks :func:`raised_by` whether the exception passed through the energy (a method of the
module or of one of its submodules was running when it was raised) and, if so, raises
:class:`EnergyRaisedError` from it: ``energy Quad raised IndexError: index 5 is out of bounds
at step 12``. The check walks the traceback once, after the failure, so the hot loop pays nothing.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn


class EnergyRaisedError(RuntimeError):
    """``energy <ClassName> raised <ExcType>: <first line> at step N`` (step 0: the start)."""

    def __init__(self, energy_name: str, error: BaseException, step: int):
        self.energy_name, self.error, self.step = energy_name, error, int(step)
        text = str(error).strip()
        first = text.splitlines()[0] if text else "(no message)"
        where = "at the start (step 0)" if self.step == 0 else f"at step {self.step}"
        super().__init__(f"energy {energy_name} raised {type(error).__name__}: {first} {where}")


def energy_name(energy: Any) -> str:
    """The class name of the user's module: wrappers (``inner``, ``module``, ``_orig_mod``) are looked through."""
    seen = 0
    while seen < 8:
        inner = next((getattr(energy, a) for a in ("inner", "_orig_mod", "module")
                      if isinstance(getattr(energy, a, None), nn.Module)), None)
        if inner is None:
            break
        energy, seen = inner, seen + 1
    if isinstance(energy, nn.Module) or not hasattr(energy, "__name__"):
        return type(energy).__name__
    return str(energy.__name__)


def raised_by(error: BaseException, energy: Any) -> bool:
    """Whether ``error`` was raised while ``energy`` (or one of its submodules, or the function
    itself) was running: some frame of its traceback belongs to it."""
    if isinstance(error, EnergyRaisedError):
        return False
    if isinstance(energy, nn.Module):
        owners = {id(m) for m in energy.modules()}
        code = None
    else:
        owners, code = {id(energy)}, getattr(energy, "__code__", None)
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code is code or id(frame.f_locals.get("self")) in owners:
            return True
        tb = tb.tb_next
    return False


def raised_in(error: BaseException, owner: Any, method: str) -> bool:
    """Whether ``owner.<method>`` was running when ``error`` was raised (e.g. a kernel's ``init``)."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == method and tb.tb_frame.f_locals.get("self") is owner:
            return True
        tb = tb.tb_next
    return False


_KEYS = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: (.*?)\.?\s*$")
_SIZE = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from checkpoint, "
                   r"the shape in current model is torch\.Size\(\[([^\]]*)\]\)")


def missing_entries(state: Any, keys: tuple[str, ...]) -> list[str]:
    """The dotted ``keys`` (``rng.batches``) that the checkpoint ``state`` lacks."""
    missing = []
    for key in keys:
        node = state
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            missing.append(key)
    return missing


def describe_load_error(err: BaseException, most: int = 4) -> str:
    """torch's ``load_state_dict`` error as one line: which entries are missing or unexpected,
    which weights have which shapes (checkpoint against model), at most ``most`` of each."""
    parts: list[str] = []
    for line in (line.strip() for line in str(err).splitlines()):
        keys = _KEYS.search(line)
        if keys:
            names = [k.strip().strip('"') for k in keys[2].split(",") if k.strip()]
            more = f" and {len(names) - most} more" if len(names) > most else ""
            parts.append(f"{'missing' if keys[1] == 'Missing' else 'unexpected'} entr{'ies' if len(names) > 1 else 'y'} "
                         f"{', '.join(names[:most])}{more}")
        for name, saved, built in _SIZE.findall(line):
            parts.append(f"{name} has shape ({saved}) in the checkpoint but ({built}) in the model")
    if not parts:
        text = str(err).strip()
        return text.splitlines()[0] if text else type(err).__name__
    sizes = [p for p in parts if " has shape " in p]
    if len(sizes) > most:
        parts = [p for p in parts if " has shape " not in p] + sizes[:most] + [f"{len(sizes) - most} more shapes differ"]
    return "; ".join(parts)


__all__ = ["EnergyRaisedError", "describe_load_error", "energy_name", "missing_entries", "raised_by", "raised_in"]
