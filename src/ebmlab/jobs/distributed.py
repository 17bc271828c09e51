"""Sampling jobs and AIS over several ranks: split the chains or runs, gather the results.

Both are embarrassingly parallel. Of a total of ``T`` chains (or AIS runs), rank ``r`` of
``W`` runs ``split_count(T, r, W)`` — a contiguous block of the global indices — with its own
random stream seeded by ``rank_seed(seed, r)`` (rank 0 keeps ``seed``, so one process
reproduces a non-distributed job). Results are concatenated in rank order on every rank; only
rank 0 writes files.

* :func:`run_sampling_job_distributed` — ``ebmlab sample`` under torchrun. Burn-in adapts the
  step size on each rank from its own chains, so ranks may end with slightly different step
  sizes (each a valid tuned kernel for its chains); the file records all of them
  (``step_size_per_rank`` in the metadata) and ``step_size`` is rank 0's.
* :func:`distributed_ais` — annealed importance sampling with the runs split over ranks. The
  estimate is one log-mean-exp over every run's weight,
  ``log Ẑ = log (1/N) Σ_{r,n} w_{r,n}`` with ``N = Σ_r N_r`` (Neal 2001), with its standard
  error and ESS from the pooled weights — never an average of per-rank estimates. Per-temperature
  step-size adaptation couples the runs of one rank only.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ebmlab import distributed as D
from ebmlab.energy.base import EnergyFn
from ebmlab.jobs.progress import progress_bar
from ebmlab.partition.ais import AISResult, ais, log_weight_statistics
from ebmlab.samplers import ChainRecord, ChainState, Kernel, sample
from ebmlab.jobs.sampling import (
    SampleJob, SampleResult, StepCounter, energy_errors, metadata, output_errors, prepare, sampling_options,
    save_record,
)


# ---------------------------------------------------------------------- sampling


def _gather_chains(t: torch.Tensor, chain_dim: int) -> torch.Tensor:
    return D.gather_tensor(t, dim=chain_dim)


def gather_record(record: ChainRecord, wall_time: float | None = None) -> ChainRecord:
    """One :class:`ChainRecord` holding the chains of every rank, in rank order (all ranks).

    ``samples (kept, ΣC_r, *event)``, ``energy (kept, ΣC_r)``, per-chain rates ``(ΣC_r,)``,
    the final states concatenated; ``kernel`` is rank 0's; ``wall_time`` the slowest rank's.
    """
    if D.world_size() == 1:
        return record
    state = record.final_state
    grad = None if state.grad is None else _gather_chains(state.grad, 0)
    final = ChainState(x=_gather_chains(state.x, 0), energy=_gather_chains(state.energy, 0), grad=grad, step=state.step)
    slowest = max(D.all_gather_objects(record.wall_time if wall_time is None else wall_time))
    kernel = D.broadcast_object(record.kernel)
    return dataclasses.replace(
        record, samples=_gather_chains(record.samples, 1), energy=_gather_chains(record.energy, 1),
        acceptance_rate=_gather_chains(record.acceptance_rate, 0), divergences=_gather_chains(record.divergences, 0),
        final_state=final, kernel=kernel, wall_time=slowest,
    )


def run_sampling_job_distributed(job: SampleJob) -> SampleResult:
    """:func:`ebmlab.jobs.sampling.run_sampling_job` with the chains split over the ranks.

    Every rank prepares the whole job (checks, energy, the ``num_chains`` starting states from
    its own seed) and keeps its block of chains, so an ``--init FILE.npy`` of shape
    ``(chains, *event)`` is cut the same way. After sampling, the records are gathered; rank 0
    writes ``job.out`` (and ``job.plot``). A failure on any rank (a diverged chain) is raised
    on every rank before anything is written. Returns the gathered result on every rank.
    """
    ctx = D.init_distributed()
    if not ctx.is_distributed:
        from ebmlab.jobs.sampling import run_sampling_job

        return run_sampling_job(job)
    D.split_count(job.num_chains, ctx.rank, ctx.world_size, what="chains")  # refuses fewer chains than ranks
    start, stop = D.shard_bounds(job.num_chains, ctx.rank, ctx.world_size)
    seed = D.rank_seed(job.seed, ctx.rank)
    device = D.local_device(D.resolve_device(job.device, what="--device"))  # cuda -> cuda:LOCAL_RANK
    local_job = dataclasses.replace(job, seed=seed, device=str(device), plot=None,
                                    progress=job.progress and ctx.is_main)
    prepared = D.collectively(prepare, local_job)
    job = dataclasses.replace(job, sampler=prepared.job.sampler, num_steps=prepared.job.num_steps)  # chosen defaults
    x0 = prepared.x0[start:stop]

    def run() -> ChainRecord:
        steps = StepCounter()
        with progress_bar(job.burn_in + job.num_steps, prepared.kernel.name, local_job.progress) as advance, \
                energy_errors(prepared.energy, prepared.kernel, steps):
            return sample(prepared.energy, prepared.kernel, x0, num_steps=job.num_steps, burn_in=job.burn_in,
                          thin=job.thin, generator=prepared.generator, target_accept=job.target_accept,
                          callback=steps.track(advance), compile=prepared.compiler or False,
                          **sampling_options(job))  # each process adapts the metric on its own chains

    local = D.collectively(run)
    step_sizes = D.all_gather_objects(local.step_size)
    record = gather_record(local)
    view = dataclasses.replace(prepared, job=dataclasses.replace(job, device=str(device)),
                               x0=D.gather_tensor(x0, 0))
    meta = metadata(view, record)
    meta.update(world_size=ctx.world_size, seed_per_rank=[D.rank_seed(job.seed, r) for r in range(ctx.world_size)],
                step_size_per_rank=step_sizes, chains_per_rank=[D.split_count(job.num_chains, r, ctx.world_size)
                                                                 for r in range(ctx.world_size)])
    if ctx.is_main:
        with output_errors("--out", job.out):
            save_record(job.out, record, meta)
        if job.plot is not None:
            from ebmlab.jobs.plots import plot_samples

            with output_errors("--plot", job.plot):
                plot_samples(prepared.energy, record.samples, job.plot)
    D.barrier()
    return SampleResult(view, record, Path(job.out), None if job.plot is None else Path(job.plot))


# ---------------------------------------------------------------------- AIS


def _rank_generator(generator: torch.Generator | None, rank: int) -> torch.Generator:
    if generator is None:
        raise ValueError("distributed AIS needs a seeded generator: every rank must draw its own runs")
    if rank == 0:
        return generator
    return torch.Generator(device=generator.device).manual_seed(D.rank_seed(generator.initial_seed(), rank))


def distributed_ais(energy: EnergyFn, base: nn.Module | None = None, data: torch.Tensor | None = None,
                    num_temperatures: int | None = 200, schedule: str | Sequence[float] | torch.Tensor = "sigmoid",
                    kernel: str | Kernel = "mala", num_runs: int = 100, num_steps: int | None = None,
                    generator: torch.Generator | None = None, reverse_samples: torch.Tensor | None = None,
                    adapt: bool = True, event_shape: Sequence[int] | None = None, device=None,
                    callback=None) -> AISResult:
    """:func:`ebmlab.partition.ais` with the ``num_runs`` runs split over the ranks.

    Same arguments and result. Rank r runs ``split_count(num_runs, r, W)`` forward runs with
    the given generator (rank 0) or one seeded ``rank_seed(generator.initial_seed(), r)``, and
    its block of ``reverse_samples``. The result, identical on every rank, pools all runs:
    ``log_z = log (1/N) Σ exp(log_weights)`` over the gathered ``log_weights (N,)`` (likewise the
    reverse bound), ``samples (N, *event)``, acceptance averaged over runs, and the step sizes
    averaged over runs; ``wall_time`` is the slowest rank's. One process: plain :func:`ais`.
    ``callback(k, beta)`` (:func:`ais`'s, per temperature) is called on rank 0 only.
    """
    ctx = D.current_context() if D.is_initialized() else D.init_distributed()
    if not ctx.is_distributed:
        return ais(energy, base=base, data=data, num_temperatures=num_temperatures, schedule=schedule, kernel=kernel,
                   num_runs=num_runs, num_steps=num_steps, generator=generator, reverse_samples=reverse_samples,
                   adapt=adapt, event_shape=event_shape, device=device, callback=callback)
    start = time.perf_counter()
    local_runs = D.split_count(int(num_runs), ctx.rank, ctx.world_size, what="AIS runs")
    local_reverse = None
    if reverse_samples is not None:
        reverse_samples = torch.as_tensor(reverse_samples)
        D.split_count(reverse_samples.shape[0], ctx.rank, ctx.world_size, what="reverse-AIS samples")
        lo, hi = D.shard_bounds(reverse_samples.shape[0], ctx.rank, ctx.world_size)
        local_reverse = reverse_samples[lo:hi]
    rank_gen = _rank_generator(generator, ctx.rank)
    local = D.collectively(ais, energy, base=base, data=data, num_temperatures=num_temperatures, schedule=schedule,
                           kernel=kernel, num_runs=local_runs, num_steps=num_steps, generator=rank_gen,
                           reverse_samples=local_reverse, adapt=adapt, event_shape=event_shape, device=device,
                           callback=callback if ctx.rank == 0 else None)
    log_w = D.gather_tensor(local.log_weights.to(torch.float64), 0)
    log_z, stderr, ess = log_weight_statistics(log_w)
    weight = torch.tensor(float(local_runs), dtype=torch.float64)
    acceptance = D.all_reduce_sum(local.acceptance_rate.to(torch.float64) * weight) / num_runs
    step_sizes = None
    if local.step_sizes is not None:
        step_sizes = D.all_reduce_sum(local.step_sizes.to(torch.float64) * weight) / num_runs
    result = dataclasses.replace(local, log_z=log_z, log_z_stderr=stderr, ess=ess, log_weights=log_w,
                                 samples=D.gather_tensor(local.samples, 0), acceptance_rate=acceptance,
                                 step_sizes=step_sizes)
    if local.reverse_log_weights is not None:
        log_w_rev = D.gather_tensor(local.reverse_log_weights.to(torch.float64), 0)
        neg_log_mean, upper_stderr, _ = log_weight_statistics(log_w_rev)
        result = dataclasses.replace(result, log_z_upper=-neg_log_mean, log_z_upper_stderr=upper_stderr,
                                     reverse_log_weights=log_w_rev)
    result.wall_time = max(D.all_gather_objects(time.perf_counter() - start))
    return result


def distributed_rbm_ais(rbm, base_visible_bias: torch.Tensor | None = None, betas: torch.Tensor | int = 14500,
                        num_runs: int = 100, generator: torch.Generator | None = None, callback=None):
    """:func:`ebmlab.partition.rbm_ais.rbm_ais` (Salakhutdinov & Murray 2008) with the runs split
    over the ranks.

    Rank r runs ``split_count(num_runs, r, W)`` (at least 2) annealing runs with its own
    generator, as :func:`distributed_ais`. The result, identical on every rank, pools every
    run: ``log_z = log Z_0 + log (1/M) Σ w`` over the gathered ``log_weights (M,)``, with the
    standard error and ESS of the pooled weights. One process: plain ``rbm_ais``.
    """
    from ebmlab.partition.rbm_ais import rbm_ais

    ctx = D.current_context() if D.is_initialized() else D.init_distributed()
    if not ctx.is_distributed:
        return rbm_ais(rbm, base_visible_bias, betas=betas, num_runs=num_runs, generator=generator, callback=callback)
    if int(num_runs) < 2 * ctx.world_size:
        raise ValueError(f"RBM AIS needs at least 2 runs per process: use at least {2 * ctx.world_size} runs for "
                         f"{ctx.world_size} processes, got {num_runs}")
    local_runs = D.split_count(int(num_runs), ctx.rank, ctx.world_size, what="AIS runs")
    local = D.collectively(rbm_ais, rbm, base_visible_bias, betas=betas, num_runs=local_runs,
                           generator=_rank_generator(generator, ctx.rank))
    log_w = D.gather_tensor(local.log_weights.to(torch.float64), 0)
    log_mean_w, stderr, ess = log_weight_statistics(log_w)
    return dataclasses.replace(local, log_z=local.log_z_base + log_mean_w, log_z_stderr=stderr, log_weights=log_w,
                               effective_sample_size=ess)


__all__ = ["distributed_ais", "distributed_rbm_ais", "gather_record", "run_sampling_job_distributed"]
