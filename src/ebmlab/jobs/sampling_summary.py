"""What ``ebmlab sample`` adds to the run summary: warnings in option terms, parallel tempering's ladder.

:func:`warning_in_option_terms` rewrites the library's option names in the ``warning:`` lines of
:func:`ebmlab.diagnostics.format_summary` as the command line's; :func:`tempering_lines` reports
a parallel-tempering run's swap rates and round-trip rate (:mod:`ebmlab.samplers.tempering_ladder`)
and warns when the ladder does not communicate.
"""

from __future__ import annotations

import re

_OPTION_TERMS = ((re.compile(r"sampler='(\w+)'"), r"--sampler \1"), (re.compile(r"\bstep_size\b"), "--step-size"),
                 (re.compile(r"\bburn_in\b"), "--burn-in"), (re.compile(r"\bnum_steps\b"), "--steps"),
                 (re.compile(r"\btarget_accept\b"), "--target-accept"))
MIN_SWAP_RATE = 0.05


def warning_in_option_terms(line: str) -> str:
    """A ``warning:`` line of :func:`ebmlab.diagnostics.format_summary` with the library's option
    names (``step_size``, ``sampler='nuts'``) as ``ebmlab sample``'s (``--step-size``, ``--sampler nuts``)."""
    if not line.startswith("warning: "):
        return line
    for pattern, option in _OPTION_TERMS:
        line = pattern.sub(option, line)
    return line


def tempering_lines(state) -> list[str]:
    """For a parallel-tempering run (a final :class:`~ebmlab.samplers.tempering.TemperedState`): the
    ladder, the swap rate of each neighbouring pair and the round-trip rate since the ladder was
    fixed, and warnings when a pair almost never swaps or no replica made a round trip."""
    if getattr(state, "swap_attempts", None) is None or state.swap_rounds == 0:
        return []
    from ebmlab.samplers.tempering_ladder import round_trip_rate, swap_rates

    rates = swap_rates(state).tolist()
    trips = round_trip_rate(state)
    temps = " ".join(f"{1.0 / b:.3g}" for b in state.betas.tolist())
    lines = [f"pt: {len(rates) + 1} temperatures {temps}; swap rates {' '.join(f'{r:.2f}' for r in rates)}; "
             f"round trips {trips:.4g} per swap round per chain ({int(state.round_trips.sum())} in "
             f"{state.swap_rounds} rounds)"]
    worst = min(range(len(rates)), key=rates.__getitem__)
    if rates[worst] < MIN_SWAP_RATE:
        lines.append(f"warning: replicas at temperatures {1.0 / float(state.betas[worst]):.3g} and "
                     f"{1.0 / float(state.betas[worst + 1]):.3g} swap in {rates[worst]:.1%} of tries, so states "
                     "rarely travel down the ladder; try more --temperatures or a longer --burn-in to adapt it.")
    if int(state.round_trips.sum()) == 0:
        lines.append("warning: no replica went from the coldest to the hottest temperature and back, so the cold "
                     "chains have not mixed between modes yet; try more --steps, more --temperatures, or a higher "
                     "--max-temperature.")
    return lines


__all__ = ["MIN_SWAP_RATE", "tempering_lines", "warning_in_option_terms"]
