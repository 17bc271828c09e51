"""Single-process parts of :mod:`ebmlab.distributed`: environment parsing, errors, sharding
arithmetic, seeds, the one-process fallbacks and the checkpoint re-sharding of objective state.

Everything here is deterministic; the multi-process behaviour is tested in
``test_dist_jobs.py`` and ``test_dist_train.py`` (two gloo processes).
"""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from ebmlab import distributed as D
from ebmlab.training.sharding import TrainSharding, merge_states, split_state
from ebmlab.objectives import get_objective_class

pytestmark = pytest.mark.distributed

TORCHRUN_ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


@pytest.fixture
def clean_env(monkeypatch):
    for name in D.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------------- context and errors


def test_no_torchrun_variables_means_one_process(clean_env):
    ctx = D.init_distributed()
    assert ctx == D.DistContext() and not ctx.is_distributed and ctx.is_main
    assert (D.rank(), D.world_size(), D.is_main_process()) == (0, 1, True)
    D.barrier()  # a no-op, must not need a process group


def test_context_is_read_from_the_torchrun_variables():
    ctx = D.context_from_env(TORCHRUN_ENV)
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main) == (1, 2, 1, False)
    assert D.context_from_env({**TORCHRUN_ENV, "WORLD_SIZE": "1", "RANK": "0"}) == D.DistContext()


@pytest.mark.parametrize("missing", D.RENDEZVOUS_VARS)
def test_missing_rendezvous_variable_is_named(clean_env, missing):
    for name, value in TORCHRUN_ENV.items():
        if name != missing:
            clean_env.setenv(name, value)
    with pytest.raises(D.DistributedSetupError, match=f"WORLD_SIZE=2 but the rendezvous variable {missing} is not set"):
        D.init_distributed()
    assert not D.is_initialized()


@pytest.mark.parametrize("name, value, expected", [("RANK", "2", r"RANK must be in \[0, 2\), got 2"),
                                                   ("WORLD_SIZE", "two", "WORLD_SIZE must be an integer, got 'two'"),
                                                   ("MASTER_PORT", "0", r"MASTER_PORT must be in \[1, 65536\)")])
def test_malformed_variables_are_refused(name, value, expected):
    with pytest.raises(D.DistributedSetupError, match=expected):
        D.context_from_env({**TORCHRUN_ENV, name: value})


def test_cli_reports_a_missing_rendezvous_variable_in_one_line(tmp_path):
    from ebmlab.cli import main

    env = {**TORCHRUN_ENV, "RANK": "0", "MASTER_ADDR": ""}
    result = CliRunner(env=env).invoke(main, ["sample", "--energy", "gaussian:2", "--sampler", "mala", "--chains", "4",
                                              "--steps", "2", "--burn-in", "0", "--out", str(tmp_path / "s.npz")])
    assert result.exit_code == 2, result.output
    assert "rendezvous variable MASTER_ADDR is not set" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "s.npz").exists()


def test_batch_size_not_divisible_by_world_size_is_explained():
    with pytest.raises(ValueError, match="batch size 100 is not divisible by world size 3; "
                                         "use a batch size that is a multiple of 3"):
        D.check_divisible(100, 3)
    D.check_divisible(99, 3)
    with pytest.raises(ValueError, match="batch size 5 is not divisible by world size 2"):
        TrainSharding(1, 2).check_batch(5, 64)
    with pytest.raises(ValueError, match="batch size 5 is not divisible by world size 2"):
        TrainSharding(0, 2).check_batch(64, 5)  # the effective batch is min(batch_size, N) = 5
    TrainSharding(0, 2).check_batch(64, 1000)


# ---------------------------------------------------------------------- sharding arithmetic


@pytest.mark.parametrize("n, world", [(10, 2), (7, 3), (3, 3), (100, 7)])
def test_shards_cover_every_index_once_in_rank_order(n, world):
    blocks = [D.shard_indices(n, r, world) for r in range(world)]
    assert torch.equal(torch.cat(blocks), torch.arange(n))
    sizes = [len(b) for b in blocks]
    assert sizes == [D.split_count(n, r, world) for r in range(world)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n


def test_split_count_refuses_fewer_items_than_ranks():
    assert [D.split_count(5, r, 2) for r in range(2)] == [3, 2]
    with pytest.raises(ValueError, match="cannot split 3 chains over 4 processes; use at least 4 chains"):
        D.split_count(3, 0, 4, what="chains")
    with pytest.raises(ValueError, match="rank 2 of 2"):
        D.split_count(10, 2, 2)


def test_rank_seeds_are_distinct_and_rank_zero_keeps_the_global_seed():
    assert D.rank_seed(1234, 0) == 1234
    seeds = {D.rank_seed(s, r) for s in range(50) for r in range(8)}
    assert len(seeds) == 50 * 8  # no two (seed, rank) pairs share a stream
    assert all(0 <= s < 2**63 for s in seeds)
    torch.Generator().manual_seed(D.rank_seed(2**62, 5))  # accepted by torch


# ---------------------------------------------------------------------- one-process fallbacks


def test_collectives_are_identities_for_one_process(clean_env):
    t = torch.arange(6.0).view(3, 2)
    assert D.gather_tensor(t) is t
    assert D.all_reduce_mean({"loss": 1.5, "accept": 1}) == {"loss": 1.5, "accept": 1.0}
    assert D.broadcast_object({"a": 1}) == {"a": 1} and D.all_gather_objects(3) == [3]
    model = torch.nn.Linear(2, 1)
    assert D.wrap_ddp(model) is model
    assert D.collectively(lambda: 7) == 7
    with pytest.raises(KeyError):
        D.collectively(lambda: {}["x"])


def test_log_mean_exp_of_one_process_is_the_log_mean_of_the_weights(clean_env):
    log_w = torch.tensor([0.0, math.log(3.0), -math.inf], dtype=torch.float64)
    assert D.log_mean_exp_across_ranks(log_w) == pytest.approx(math.log(4.0 / 3.0), abs=1e-12)


# ---------------------------------------------------------------------- objective state across world sizes


def _rank_states(world: int, rows: int = 4) -> list[dict]:
    return [{"buffer": torch.full((rows, 2), float(r)), "log_z": torch.tensor(0.5), "note": "same"} for r in range(world)]


def test_merged_state_concatenates_slices_and_splits_back_exactly():
    states = _rank_states(2)
    states[1]["extra"] = torch.tensor(3.0)  # a rank-specific entry survives a same-size resume
    merged, layout = merge_states(states)
    assert merged["buffer"].shape == (8, 2) and torch.equal(merged["buffer"][4:], states[1]["buffer"])
    assert layout["shard_sizes"] == {"buffer": [4, 4]} and merged["log_z"] is states[0]["log_z"]
    for r in range(2):
        back = split_state(merged, layout, r, 2)
        assert torch.equal(back["buffer"], states[r]["buffer"])
        assert ("extra" in back) == (r == 1)


def test_state_is_resplit_for_another_world_size():
    merged, layout = merge_states(_rank_states(2, rows=3))  # 6 rows saved by 2 ranks
    parts = [split_state(merged, layout, r, 3)["buffer"] for r in range(3)]
    assert [len(p) for p in parts] == [2, 2, 2] and torch.equal(torch.cat(parts), merged["buffer"])
    one = split_state(merged, layout, 0, 1)
    assert torch.equal(one["buffer"], merged["buffer"]) and one["log_z"] == 0.5
    with pytest.raises(ValueError, match="cannot split 6 rows of the checkpoint's objective state 'buffer' over 8"):
        split_state(merged, layout, 0, 8)
    single = {"chains": torch.arange(4.0).view(4, 1)}  # a one-process checkpoint has no layout
    assert torch.equal(split_state(single, None, 1, 2)["chains"], torch.tensor([[2.0], [3.0]]))


def test_count_options_are_split_over_ranks():
    replay = get_objective_class("replay")
    assert TrainSharding(0, 1).objective_options(replay, {"buffer_size": 10}) == {"buffer_size": 10}
    assert TrainSharding(0, 3).objective_options(replay, {"buffer_size": 10}) == {"buffer_size": 4}
    assert TrainSharding(2, 3).objective_options(replay, {})["buffer_size"] == 10000 // 3  # the class default
    pcd = get_objective_class("pcd")
    assert TrainSharding(1, 2).objective_options(pcd, {}).get("num_chains", 0) == 0  # 0 = one per local batch row
    assert TrainSharding(1, 2).objective_options(pcd, {"num_chains": 9})["num_chains"] == 4
    assert TrainSharding(1, 2).objective_options(get_objective_class("dsm"), {"sigma": 0.1}) == {"sigma": 0.1}
