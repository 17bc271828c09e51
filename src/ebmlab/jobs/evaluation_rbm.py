"""``ebmlab evaluate`` for Bernoulli RBMs: log Z by the smaller layer or by RBM AIS.

An RBM (:class:`~ebmlab.energy.rbm.BernoulliRBM`; a run trained with ``--model rbm`` loads as
one, its data being binary and never standardised) has its own estimators:

* ``exact``: ``log Z`` by enumerating the ``2^u`` states of its smaller layer (``u ≤ 22``),
  whatever the number of visible units (:meth:`BernoulliRBM.exact_log_z`);
* ``ais``: annealed importance sampling from a base-rate model with one block-Gibbs sweep per
  temperature, in the piecewise schedule of Salakhutdinov & Murray (2008)
  (:func:`ebmlab.partition.rbm_ais.rbm_ais`; its runs split over the ranks under torchrun).

Model samples for the sample-quality metrics are exact draws when the smaller layer has at
most 20 units, else the end points of 1,000 block-Gibbs sweeps started at the base
(:class:`~ebmlab.samplers.BlockGibbs` run by :func:`ebmlab.samplers.sample`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ebmlab.jobs.distributed import distributed_rbm_ais
from ebmlab.partition.rbm_ais import base_rate_visible_bias
from ebmlab.samplers import BlockGibbs, sample

RBM_TEMPERATURES = 1000  # RBM AIS: one block-Gibbs sweep per temperature is cheap
RBM_SAMPLE_SWEEPS = 1000


def as_rbm(energy):
    """``energy`` when it is a :class:`~ebmlab.energy.rbm.BernoulliRBM` (RBM runs load as one), else ``None``."""
    from ebmlab.energy.rbm import BernoulliRBM

    return energy if isinstance(energy, BernoulliRBM) else None


def rbm_log_z(rbm, method, base_data, base_label, temperatures, runs, sampler, steps_per_temperature, generator,
              report: dict[str, Any], callback=None) -> Callable[[int], torch.Tensor]:
    """Fill ``report`` with the log Z fields of a Bernoulli RBM; return a function drawing n model samples.

    ``method`` is ``exact`` (enumeration of the smaller layer) or ``ais`` (RBM AIS from the
    base-rate model of ``base_data`` ``(N, *event)``, uniform when ``None``, described in the
    report as ``base_label``); ``quadrature`` is refused with the alternatives.
    """
    from ebmlab.energy.rbm import MAX_ENUMERATED_UNITS

    layer = "hidden" if rbm.num_hidden <= rbm.num_visible else "visible"
    units = min(rbm.num_hidden, rbm.num_visible)
    report.update(model="rbm", num_visible=rbm.num_visible, num_hidden=rbm.num_hidden)
    base = None
    if method == "exact":
        if units > MAX_ENUMERATED_UNITS:
            raise ValueError(f"--log-partition exact: the RBM's smaller layer ({layer}) has {units} units, more than "
                             f"{MAX_ENUMERATED_UNITS} to enumerate; use --log-partition ais")
        report.update(log_z=rbm.exact_log_z(), log_z_stderr=0.0, enumerated_layer=layer, enumerated_units=units)
    elif method == "ais":
        ignored = [name for name, value in (("--sampler", sampler), ("--steps-per-temperature", steps_per_temperature))
                   if value is not None]
        if ignored:
            report["warnings"].append(f"{' and '.join(ignored)} ignored: RBM AIS makes one block-Gibbs sweep per "
                                      "temperature")
        base = None if base_data is None else base_rate_visible_bias(base_data)
        # = rbm_ais(...) in one process; under torchrun the runs are split over the ranks and pooled
        result = distributed_rbm_ais(rbm, base, betas=int(temperatures), num_runs=runs, generator=generator,
                                     callback=callback)
        report.update(log_z=result.log_z, log_z_stderr=result.log_z_stderr, ess=result.ess,
                      num_temperatures=int(temperatures), num_runs=int(runs), sampler="block_gibbs",
                      schedule="salakhutdinov-murray", log_z_base=result.log_z_base,
                      base=f"base-rate model of {base_label}" if base is not None else "uniform distribution")
    else:
        raise ValueError(f"--log-partition {method} is for continuous energies; for an RBM use exact "
                         f"(smaller layer <= {MAX_ENUMERATED_UNITS} units) or ais")

    def draw(n: int) -> torch.Tensor:
        if units <= 20:
            return rbm.exact_sample(n, generator)
        logits = torch.zeros(rbm.num_visible) if base is None else base.to(torch.get_default_dtype())
        probs = torch.sigmoid(logits).to(rbm.W.device, rbm.W.dtype).expand(n, rbm.num_visible)
        v = torch.bernoulli(probs, generator=generator).reshape(n, *rbm.event_shape)
        # one transition of RBM_SAMPLE_SWEEPS sweeps v -> h -> v: the free energy is evaluated once
        record = sample(rbm, BlockGibbs(num_sweeps=RBM_SAMPLE_SWEEPS), v, num_steps=1, generator=generator,
                        adapt=False, keep_samples=False)
        return record.final_state.x

    return draw


__all__ = ["RBM_SAMPLE_SWEEPS", "RBM_TEMPERATURES", "as_rbm", "rbm_log_z"]
