"""Two gloo processes: collectives, split-and-gather sampling, and the pooled AIS estimate.

One group of two processes (``torch.multiprocessing`` spawn, the torchrun variables set by
hand) runs every check below in lock-step — process start-up dominates the cost — and
reports per check; each test asserts on one report. Checks do all their collectives first
and assert afterwards, so a failed assertion cannot leave the other rank waiting.

Every check is deterministic: distributed results are compared with the same computation
done in one process from the same per-rank seeds (``rank_seed``), exactly or to float64
round-off, and each comparison has a negative control showing that the plausible mistake
(averaging per-rank AIS estimates, keeping one rank's chains) would be detected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import socket
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ebmlab import distributed as D
from process_group import WORLD, assert_ok, free_port, run_group

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(240)]

GROUP_TIMEOUT_S = 180


# ---------------------------------------------------------------------- the checks (run on each rank)


def check_collectives(rank: int, tmp: Path) -> None:
    mean = D.all_reduce_mean({"a": float(rank), "b": 2.0 * rank + 1.0})
    try:
        D.all_reduce_mean({f"only_rank_{rank}": 1.0})
        mismatch = None
    except ValueError as err:
        mismatch = str(err)
    rows = D.gather_tensor(torch.full((3 - rank, 2), float(rank)))  # 3 rows on rank 0, 2 on rank 1
    cols = D.gather_tensor(torch.full((2, 1 + rank), float(rank)), dim=1)
    flags = D.gather_tensor(torch.tensor([rank == 0, True]))
    shared = D.broadcast_object({"from": rank})
    try:
        D.collectively(lambda: 1 / 0 if rank == 1 else "fine")
        failure = None
    except Exception as err:  # the failing rank re-raises its own error, the other a RemoteRankError
        failure = err
    D.barrier()
    assert mean == {"a": 0.5, "b": 2.0}
    assert mismatch is not None and "different metric names" in mismatch
    assert torch.equal(rows, torch.tensor([[0.0, 0.0]] * 3 + [[1.0, 1.0]] * 2))
    assert torch.equal(cols, torch.tensor([[0.0, 1.0, 1.0]] * 2))
    assert torch.equal(flags, torch.tensor([True, True, False, True]))
    assert shared == {"from": 0}
    if rank == 1:
        assert isinstance(failure, ZeroDivisionError)
    else:
        assert isinstance(failure, D.RemoteRankError) and failure.rank == 1 and "ZeroDivisionError" in str(failure)


def check_log_mean_exp(rank: int, tmp: Path) -> None:
    """One log-mean-exp over all 8 weights (5 on rank 0, 3 on rank 1), to float64 round-off.

    Negative control: the mean of the per-rank log-mean-exps (the wrong combination) differs
    from it by more than 1 nat for these weights (5.39 pooled against 3.55 averaged).
    """
    full = torch.tensor([-1.0, 0.0, 0.5, 2.0, -3.0, 6.0, 5.5, 7.0], dtype=torch.float64)
    lo, hi = (0, 5) if rank == 0 else (5, 8)
    mine = full[lo:hi]
    pooled = D.log_mean_exp_across_ranks(mine)
    per_rank = D.all_gather_objects(float(torch.logsumexp(mine, 0) - math.log(len(mine))))
    expected = float(torch.logsumexp(full, 0) - math.log(8))
    assert abs(pooled - expected) < 1e-12
    assert abs(sum(per_rank) / WORLD - expected) > 1.0


def check_sampling(rank: int, tmp: Path) -> None:
    """Chains are split 3/2, each block sampled with its rank's seed, gathered in rank order;
    rank 0 alone writes the file. Negative control: rank 0's block alone is not the result."""
    from ebmlab.jobs import distributed as distributed_jobs
    from ebmlab.cli import main
    from ebmlab.samplers import sample
    from ebmlab.jobs.sampling import SampleJob, prepare

    writes = []
    original = distributed_jobs.save_record
    distributed_jobs.save_record = lambda *a, **k: (writes.append(a[0]), original(*a, **k))[1]
    try:
        job = SampleJob(energy="gaussian:2", sampler="mala", out=str(tmp / "samples.npz"), num_chains=5, num_steps=6,
                        burn_in=4, seed=11)
        result = distributed_jobs.run_sampling_job_distributed(job)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            main.main(["sample", "--energy", "gaussian:2", "--sampler", "mala", "--chains", "4", "--steps", "3",
                       "--burn-in", "2", "--out", str(tmp / "cli.npz")], standalone_mode=False)
    finally:
        distributed_jobs.save_record = original
    write_counts = D.all_gather_objects(len(writes))

    blocks = []
    for r in range(WORLD):
        prepared = prepare(dataclasses.replace(job, seed=D.rank_seed(job.seed, r)))
        lo, hi = D.shard_bounds(job.num_chains, r, WORLD)
        blocks.append(sample(prepared.energy, prepared.kernel, prepared.x0[lo:hi], num_steps=job.num_steps,
                             burn_in=job.burn_in, generator=prepared.generator).samples)
    assert write_counts == [2, 0]  # sample job + CLI, rank 0 only
    assert result.record.samples.shape == (6, 5, 2)
    assert torch.equal(result.record.samples, torch.cat(blocks, dim=1))
    assert not torch.equal(result.record.samples[:, 3:], blocks[0][:, :2])  # negative control
    with np.load(tmp / "samples.npz") as saved:
        assert np.array_equal(saved["samples"], torch.cat(blocks, dim=1).numpy())
        meta = json.loads(str(saved["metadata"]))
    assert meta["num_chains"] == 5 and meta["world_size"] == 2 and meta["chains_per_rank"] == [3, 2]
    out = printed.getvalue()
    assert ("sampled gaussian:2 with mala: 4 chains" in out) == (rank == 0) and (out == "") == (rank == 1)
    # --metric reaches every process: each adapts a metric on its own chains, as one process would
    windowed = dataclasses.replace(job, metric="diag", burn_in=30, out=str(tmp / "windowed.npz"))
    metric_result = distributed_jobs.run_sampling_job_distributed(windowed)
    mine = prepare(dataclasses.replace(windowed, seed=D.rank_seed(windowed.seed, rank)))
    lo, hi = D.shard_bounds(windowed.num_chains, rank, WORLD)
    alone = sample(mine.energy, mine.kernel, mine.x0[lo:hi], num_steps=windowed.num_steps, burn_in=windowed.burn_in,
                   generator=mine.generator, adapt="window", metric="diag")
    assert torch.equal(metric_result.record.samples[:, lo:hi], alone.samples)
    assert alone.kernel.metric is not None


def check_ais(rank: int, tmp: Path) -> None:
    """Pooled AIS (generic, and the RBM's): the gathered log weights are the per-rank runs'
    (recomputed here from the rank seeds), and log Ẑ and the reverse bound are single
    log-mean-exps over all of them. Negative control: the mean of per-rank estimates differs
    from the pooled one."""
    from ebmlab.cli import main
    from ebmlab.jobs.distributed import distributed_ais, distributed_rbm_ais
    from ebmlab.energy import Gaussian
    from ebmlab.energy.rbm import BernoulliRBM
    from ebmlab.partition import GaussianBase
    from ebmlab.partition.ais import ais
    from ebmlab.partition.rbm_ais import rbm_ais

    energy = Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.2], [0.2, 0.4]])).double()
    base = GaussianBase(torch.zeros(2, dtype=torch.float64), 2.0)
    reverse = energy.sample(6, torch.Generator().manual_seed(9))
    options = dict(base=base, num_temperatures=4, kernel="mala")
    result = distributed_ais(energy, num_runs=7, generator=torch.Generator().manual_seed(5), reverse_samples=reverse,
                             **options)
    try:
        distributed_ais(energy, num_runs=1, generator=torch.Generator().manual_seed(5), **options)
        too_few = None
    except ValueError as err:
        too_few = str(err)
    rbm = BernoulliRBM(6, 4, weight_scale=0.5, generator=torch.Generator().manual_seed(2))
    bias = torch.linspace(-1.0, 1.0, 6)
    rbm_result = distributed_rbm_ais(rbm, bias, betas=20, num_runs=7, generator=torch.Generator().manual_seed(6))
    try:
        distributed_rbm_ais(rbm, bias, betas=20, num_runs=3, generator=torch.Generator().manual_seed(6))
        rbm_too_few = None
    except ValueError as err:
        rbm_too_few = str(err)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main.main(["evaluate", "--energy", "gaussian:2", "--log-partition", "ais", "--runs", "6", "--temperatures", "5",
                   "--json"], standalone_mode=False)

    forward, backward, estimates = [], [], []
    for r in range(WORLD):
        lo, hi = D.shard_bounds(6, r, WORLD)
        part = ais(energy, num_runs=D.split_count(7, r, WORLD), reverse_samples=reverse[lo:hi],
                   generator=torch.Generator().manual_seed(D.rank_seed(5, r)), **options)
        forward.append(part.log_weights)
        backward.append(part.reverse_log_weights)
        estimates.append(part.log_z)
    forward, backward = torch.cat(forward), torch.cat(backward)
    rbm_forward = torch.cat([rbm_ais(rbm, bias, betas=20, num_runs=D.split_count(7, r, WORLD),
                                     generator=torch.Generator().manual_seed(D.rank_seed(6, r))).log_weights
                             for r in range(WORLD)])
    assert torch.equal(result.log_weights, forward) and result.num_runs == 7 and result.samples.shape == (7, 2)
    assert abs(result.log_z - float(torch.logsumexp(forward, 0) - math.log(7))) < 1e-12
    assert abs(-result.log_z_upper - float(torch.logsumexp(backward, 0) - math.log(6))) < 1e-12
    assert abs(sum(estimates) / WORLD - result.log_z) > 1e-3
    assert too_few is not None and "cannot split 1 AIS runs over 2 processes" in too_few
    assert abs(rbm_result.log_z - rbm_result.log_z_base - float(torch.logsumexp(rbm_forward, 0) - math.log(7))) < 1e-12
    assert torch.equal(rbm_result.log_weights, rbm_forward)
    assert rbm_too_few is not None and "use at least 4 runs for 2 processes" in rbm_too_few
    if rank == 0:  # ``ebmlab evaluate`` under torchrun: rank 0 prints the pooled report
        report = json.loads(printed.getvalue())
        assert report["num_runs"] == 6 and math.isfinite(report["log_z"]) and report["log_z_upper"] is not None
    else:
        assert printed.getvalue() == ""


CHECKS = {"collectives": check_collectives, "log_mean_exp": check_log_mean_exp, "sampling": check_sampling,
          "ais": check_ais}


# ---------------------------------------------------------------------- the process group


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[int, dict[str, str]]:
    out = tmp_path_factory.mktemp("dist_jobs")
    reports = run_group(CHECKS, out, GROUP_TIMEOUT_S)
    return reports


def test_collectives_reduce_gather_and_fail_together(reports):
    assert_ok(reports, "collectives")


def test_ais_estimate_is_one_log_mean_exp_over_all_runs(reports):
    assert_ok(reports, "log_mean_exp")
    assert_ok(reports, "ais")


def test_sampling_splits_and_gathers_chains(reports):
    assert_ok(reports, "sampling")
