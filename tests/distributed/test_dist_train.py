"""Data-parallel training with two gloo processes: updates, checkpoints and resumption.

One group of two processes (``torch.multiprocessing`` spawn with the torchrun variables set
by hand, so :class:`ebmlab.training.run.Trainer` finds them exactly as under torchrun) runs the
checks below in lock-step and reports per check; checks train first and assert afterwards,
so a failed assertion cannot leave the other rank waiting in a collective. One more test runs
the real launcher (``python -m torch.distributed.run``) on ``ebmlab train``.

Equivalence checks compare one distributed SGD step (no momentum, so the update is exactly
``-lr · gradient``) with the step computed in one process over the whole global batch.
Random draws are per rank (rank r's objective generator is seeded ``rank_seed(seed_obj, r)``),
so the one-process reference draws each example's noise (or runs its chain) with the
generator of the rank that owns it; with per-example mean losses the whole-batch loss is then
the mean of the shard losses. Exact score matching draws nothing and is also compared with a
single loss call on the whole batch; so is contrastive divergence with fixed negatives.
Tolerance: float32 round-off of two summation orders (rtol 1e-5, atol 1e-7 on updates of size
~1e-2). Negative control: the update from rank 0's shard alone (what a missing gradient
all-reduce gives) is outside that tolerance for every objective.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ebmlab import distributed as D
from process_group import WORLD, assert_ok, run_group

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

GROUP_TIMEOUT_S = 240
RTOL, ATOL = 1e-5, 1e-7
BASE = dict(data="8gaussians", num_samples=64, heldout_fraction=0.0, model="mlp", model_kwargs={"hidden": [16, 16]},
            steps=1, batch_size=8, optimizer="sgd", momentum=0.0, lr=0.1, lr_schedule="constant", plots=False,
            progress="off", checkpoint_every=1000, seed=3)
SAMPLER = dict(sampler="ula", sampler_steps=3, step_size=0.05)
OBJECTIVES = {"sm": {}, "ssm": {}, "dsm": {}, "nce": {}, "cd": SAMPLER, "pcd": SAMPLER,
              "replay": {**SAMPLER, "objective_kwargs": {"buffer_size": 32}}}
RESUME = {**BASE, "objective": "replay", **SAMPLER, "objective_kwargs": {"buffer_size": 32, "restart_prob": 0.2},
          "optimizer": "adam", "steps": 4, "checkpoint_every": 2}


# ---------------------------------------------------------------------- one-process references


def one_process_update(trainer, start: dict[str, torch.Tensor], start_extra: list[torch.Tensor], ranks,
                       whole_batch: bool = False) -> list[torch.Tensor]:
    """``-lr · ∇ mean_{r ∈ ranks} loss_r`` in this process, for the model and objective parameters.

    ``loss_r`` is rank r's shard of the global batch with rank r's objective (its share of
    the count options) and generator — or, with ``whole_batch``, the whole batch in one call.
    """
    from ebmlab.training.sharding import TrainSharding
    from ebmlab.objectives import get_objective_class, make_objective
    from ebmlab.training.loop import derive_seed
    from ebmlab.training.loop import BatchStream
    from ebmlab.training.run import build_kernel

    cfg, x = trainer.config, trainer.x_train
    stream = BatchStream(x.shape[0], cfg.batch_size, torch.Generator().manual_seed(derive_seed(cfg.seed, "batches")),
                         x.device)
    batch = x[stream.next()]
    cls = get_objective_class(cfg.objective)
    model = copy.deepcopy(trainer.model)
    model.load_state_dict(start)
    shared = [torch.nn.Parameter(v.clone()) for v in start_extra]  # NCE's log Z, one for all ranks
    total = 0.0
    for r in ranks:
        options = dict(cfg.objective_kwargs)
        if cls.uses_sampler:
            options.update(kernel=build_kernel(cfg), num_steps=cfg.sampler_steps)
        objective = make_objective(cfg.objective, **TrainSharding(r, WORLD).objective_options(cls, options))
        generator = torch.Generator().manual_seed(D.rank_seed(derive_seed(cfg.seed, "objective"), r))
        objective.setup(model, x, generator, support=trainer.support)
        if shared:
            objective.log_z = shared[0]
        lo, hi = D.shard_bounds(batch.shape[0], r, WORLD)
        loss, _ = objective.loss(model, batch if whole_batch else batch[lo:hi], generator)
        total = total + loss / len(ranks)
    params = [*model.parameters(), *shared]
    grads = torch.autograd.grad(total, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else -cfg.lr * g for p, g in zip(params, grads)]


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(x, y, rtol=RTOL, atol=ATOL) for x, y in zip(a, b))


# ---------------------------------------------------------------------- the checks (run on each rank)


def check_equivalence(rank: int, tmp: Path) -> None:
    """One distributed step = the one-process whole-batch step, for every objective."""
    from train_helpers import make_trainer as Trainer

    runs = {}
    for name, extra in OBJECTIVES.items():
        trainer = Trainer({**BASE, "objective": name, **extra, "out": str(tmp / name)})
        start = copy.deepcopy(trainer.model.state_dict())
        start_extra = [p.detach().clone() for p in trainer.objective.parameters()]
        before = [p.detach().clone() for p in trainer.model.parameters()] + start_extra
        trainer.run()
        after = [*trainer.model.parameters(), *trainer.objective.parameters()]
        delta = [a.detach() - b for a, b in zip(after, before)]
        lines = (tmp / name / "metrics.jsonl").read_text().splitlines() if rank == 0 else []
        runs[name] = (trainer, start, start_extra, delta, lines)
    for name, (trainer, start, start_extra, delta, lines) in runs.items():
        reference = one_process_update(trainer, start, start_extra, range(WORLD))
        assert _close(delta, reference), f"{name}: the distributed update differs from the whole-batch update"
        assert not _close(delta, one_process_update(trainer, start, start_extra, [0])), f"{name}: negative control"
        if name == "sm":  # no random draws: literally one loss call over the whole batch
            assert _close(delta, one_process_update(trainer, start, start_extra, [0], whole_batch=True))
        if rank == 0:
            assert len(lines) == 1 and json.loads(lines[0])["step"] == 1, f"{name}: metrics written once per step"


def check_fixed_negatives(rank: int, tmp: Path) -> None:
    """Contrastive divergence with fixed negatives: the DDP gradient of the shard losses equals
    the gradient of one loss call on the whole batch (alpha > 0 adds the energy penalty)."""
    from ebmlab.training.sharding import LossModule
    from ebmlab.energy import MLPEnergy
    from ebmlab.objectives import ContrastiveDivergence

    class FixedNegatives(ContrastiveDivergence):
        def negatives(self, energy, batch, generator):
            return 1.5 * batch.flip(-1) + 0.3, {"accept": 1.0}  # a fixed negative per data row

    torch.manual_seed(0)
    model = MLPEnergy(2, [16, 16])
    reference = copy.deepcopy(model)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    objective = FixedNegatives(alpha=0.1)
    lo, hi = D.shard_bounds(8, rank, WORLD)
    ddp = D.wrap_ddp(LossModule(model, objective))  # kept alive: its reducer averages during backward
    loss, _ = ddp(x[lo:hi], None)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    whole = torch.autograd.grad(objective.loss(reference, x, None)[0], list(reference.parameters()))
    shard0 = torch.autograd.grad(objective.loss(reference, x[:4], None)[0], list(reference.parameters()))
    assert _close(grads, list(whole))
    assert not _close(grads, list(shard0))


def check_checkpoints(rank: int, tmp: Path) -> None:
    """Checkpoints are written by rank 0 only; stopping at step 2 and resuming reproduces the
    uninterrupted 4-step run bit for bit (weights, optimiser, every rank's replay buffer and
    generator); a one-process checkpoint resumes on two ranks."""
    import ebmlab.training.loop as train_module
    from ebmlab.training.checkpoint import load_checkpoint
    from train_helpers import make_trainer as Trainer

    writes = []
    original = train_module.save_checkpoint
    train_module.save_checkpoint = lambda path, state: (writes.append(int(state["step"])), original(path, state))[1]
    try:
        straight = Trainer({**RESUME, "out": str(tmp / "straight")})
        straight.run()
        Trainer({**RESUME, "steps": 2, "out": str(tmp / "stopped")}).run()
        D.barrier()
        if rank == 0:  # kept at step 2 for the parent's one-process resume
            shutil.copytree(tmp / "stopped", tmp.parent / "world2_at_step2")
        D.barrier()
        resumed = Trainer({**RESUME, "out": str(tmp / "stopped")}, resume=True)
        resumed.run()
        from_single = Trainer({**RESUME, "out": str(tmp.parent / "single")}, resume=True)
        from_single.run()
    finally:
        train_module.save_checkpoint = original
    counts = D.all_gather_objects(writes)
    buffers = D.all_gather_objects((straight.objective.buffer.samples, resumed.objective.buffer.samples,
                                    from_single.objective.buffer.samples))

    assert counts == [[2, 4, 2, 4, 4], []]  # rank 0 writes every checkpoint, rank 1 none
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(straight.objective_generator.get_state(), resumed.objective_generator.get_state())
    for r in range(WORLD):
        assert torch.equal(buffers[r][0], buffers[r][1]) and buffers[r][0].shape == (16, 2)
        assert buffers[r][2].shape == (16, 2)  # the one-process buffer of 32 rows, split
    assert not torch.equal(buffers[0][0], buffers[1][0])  # ranks keep their own slices
    saved = load_checkpoint(tmp / "straight")
    assert torch.equal(saved["objective"]["buffer"], torch.cat([buffers[0][0], buffers[1][0]]))
    assert saved["distributed"]["world_size"] == 2 and saved["distributed"]["shard_sizes"] == {"buffer": [16, 16]}
    strip = [{k: v for k, v in json.loads(line).items() if k != "time"} for line in
             (tmp / "straight" / "metrics.jsonl").read_text().splitlines()]
    again = [{k: v for k, v in json.loads(line).items() if k != "time"} for line in
             (tmp / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert strip == again and len(strip) == 4


def check_bad_batch(rank: int, tmp: Path) -> None:
    from train_helpers import make_trainer as Trainer

    with pytest.raises(ValueError, match="batch size 5 is not divisible by world size 2; "
                                         "use a batch size that is a multiple of 2"):
        Trainer({**BASE, "batch_size": 5, "out": str(tmp / "bad")})


CHECKS = {"equivalence": check_equivalence, "fixed_negatives": check_fixed_negatives,
          "checkpoints": check_checkpoints, "bad_batch": check_bad_batch}


# ---------------------------------------------------------------------- the process group


@pytest.fixture(scope="module")
def group(tmp_path_factory) -> tuple[Path, dict[int, dict[str, str]]]:
    from train_helpers import make_trainer as Trainer

    out = tmp_path_factory.mktemp("dist_train")
    torch.set_num_threads(1)
    Trainer({**RESUME, "steps": 2, "out": str(out / "single")}).run()  # a one-process run for the 2-rank resume
    reports = run_group(CHECKS, out, GROUP_TIMEOUT_S)
    return out, reports


def test_one_step_equals_the_whole_batch_step_for_every_objective(group):
    assert_ok(group[1], "equivalence")


def test_contrastive_divergence_with_fixed_negatives_matches_the_whole_batch(group):
    assert_ok(group[1], "fixed_negatives")


def test_checkpoint_written_once_and_resume_is_exact(group):
    assert_ok(group[1], "checkpoints")


def test_batch_size_not_divisible_by_world_size_is_refused(group):
    assert_ok(group[1], "bad_batch")


def test_two_rank_checkpoint_resumes_in_one_process(group):
    """Another world size: the buffers are concatenated (32 rows in one process), the
    generators re-derived, and the data order stays that of the two-rank run."""
    from ebmlab.training.checkpoint import load_checkpoint
    from train_helpers import make_trainer as Trainer

    out, _ = group
    assert_ok(group[1], "checkpoints")
    run_dir = out / "world2_at_step2"
    result = Trainer({**RESUME, "out": str(run_dir)}, resume=True).run()
    assert result.step == 4 and result.objective.buffer.samples.shape == (32, 2)
    mine, theirs = load_checkpoint(run_dir), load_checkpoint(out / "checkpoints" / "straight")
    assert torch.equal(mine["batches"]["perm"], theirs["batches"]["perm"])
    assert mine["batches"]["cursor"] == theirs["batches"]["cursor"] and "distributed" not in mine
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4


def test_incompatible_checkpoint_names_the_setting_to_change(group):
    from train_helpers import make_trainer as Trainer

    out, _ = group
    with pytest.raises(ValueError, match=r"model_kwargs: \{'hidden': \[16, 16\]\} -> \{'hidden': \[8\]\}\); set "
                                         r"model_kwargs back to the values in .*config.toml"):
        Trainer({**RESUME, "model_kwargs": {"hidden": [8]}, "out": str(out / "single")}, resume=True)


def test_ebmlab_train_under_torchrun(tmp_path):
    """The real launcher: ``python -m torch.distributed.run --nproc-per-node 2 ... ebmlab train``.
    One checkpoint, one metrics line per step, one summary printed (by rank 0)."""
    script = tmp_path / "ebmlab_cli.py"
    script.write_text("from ebmlab.cli import main\nmain()\n")
    run_dir = tmp_path / "run"
    # --standalone: torchrun picks a free rendezvous port itself (no window for another process to take it)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
               str(script), "train", "--data", "8gaussians",
               "--objective", "dsm", "--steps", "3", "--batch-size", "8", "--hidden", "16,16", "--out", str(run_dir),
               "--no-plots", "--set", "num_samples=64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))) == \
        ["checkpoint.pt"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    assert done.stdout.count(str(run_dir)) == 1, done.stdout
