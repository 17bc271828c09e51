"""Benchmark: training steps/s and sampler throughput with 1, 2, ... processes (torchrun).

For each process count W the script launches itself under
``python -m torch.distributed.run --nproc-per-node W`` (the real launcher, gloo on CPU) and
measures, in the worker processes:

* **training** — ``ebmlab.training.run`` (data-parallel, DDP) on ``8gaussians`` with an MLP energy
  (``hidden = [128, 128]``) and a *fixed global batch* (strong scaling: each rank computes
  ``B/W`` examples per step). Steps/s are timed from the trainer's per-step callback after
  ``--warmup`` steps, so set-up, the process group and the final checkpoint are excluded.
  One sampling-free objective (``dsm``) and one that runs MCMC every step (``cd``, 10 ULA steps).
* **sampling** — ``ebmlab sample`` (:func:`ebmlab.jobs.distributed.run_sampling_job_distributed`)
  of a fixed total of chains split over the ranks: MALA on an MLP energy
  (``ebmlab.energy.neural:MLPEnergy``, 2-D, ``hidden = (128, 128)``). Throughput is chain
  transitions per second, ``chains · (burn_in + steps) / wall``, with the wall time of the
  slowest rank's sampling loop (start-up, gather and file writing excluded).

Each process uses one torch thread (``--threads``; 0 = ``cpu_count // W``, so that every row
uses all cores — intra-op threads of small models scale poorly, and on a busy machine they
spin). Speed-ups are ratios to the first row of the same run. A markdown table is printed
(and written to ``--markdown``).

Usage::

    python benchmarks/scaling.py                      # 1 and 2 processes
    python benchmarks/scaling.py --quick              # smoke run: few steps
    python benchmarks/scaling.py --processes 1 2 4 --markdown scaling.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

try:  # run as ``python -m benchmarks.scaling`` or imported as part of the package
    from .common import machine_description
except ImportError:  # run as ``python benchmarks/scaling.py``
    from common import machine_description

OBJECTIVES = {"dsm": {}, "cd": {"sampler": "ula", "sampler_steps": 10, "step_size": 0.01}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to compare (first = baseline)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (0 = cpu_count // W); one thread per process is scale-out proper")
    p.add_argument("--batch-size", type=int, default=1024, help="global training batch")
    p.add_argument("--steps", type=int, default=60, help="training steps per objective (timed after --warmup)")
    p.add_argument("--warmup", type=int, default=10, help="untimed training steps")
    p.add_argument("--chains", type=int, default=4096, help="total sampling chains")
    p.add_argument("--sampler-steps", type=int, default=100, help="sampling transitions after burn-in")
    p.add_argument("--burn-in", type=int, default=20, help="sampling burn-in transitions")
    p.add_argument("--quick", action="store_true", help="smoke run: few steps and chains")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # result file of a torchrun worker
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.chains, args.sampler_steps, args.burn_in = 12, 3, 512, 20, 5
        args.batch_size = min(args.batch_size, 256)
    if args.steps <= args.warmup:
        p.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    return args


# ---------------------------------------------------------------------- worker (one torchrun process)


def _threads(args: argparse.Namespace, world: int) -> int:
    return args.threads or max(1, (os.cpu_count() or 1) // world)


def _train_rate(objective: str, args: argparse.Namespace, run_dir: str) -> float:
    from ebmlab.training.run import train

    stamps: list[float] = []
    config = {"data": "8gaussians", "num_samples": 8192, "heldout_fraction": 0.0, "model": "mlp",
              "model_kwargs": {"hidden": [128, 128]}, "objective": objective, "steps": args.steps,
              "batch_size": args.batch_size, "lr": 1e-3, "lr_schedule": "constant",
              "checkpoint_every": args.steps + 1, **OBJECTIVES[objective]}
    train(config, out=run_dir, callback=lambda step, record, trainer: stamps.append(time.perf_counter()))
    timed = len(stamps) - args.warmup
    return timed / (stamps[-1] - stamps[args.warmup - 1]) if args.warmup else timed / (stamps[-1] - stamps[0])


def _sample_rate(args: argparse.Namespace, out: str) -> float:
    from ebmlab.jobs.distributed import run_sampling_job_distributed
    from ebmlab.jobs.sampling import SampleJob

    job = SampleJob(energy="ebmlab.energy.neural:MLPEnergy", sampler="mala", out=out, num_chains=args.chains,
                    num_steps=args.sampler_steps, burn_in=args.burn_in, step_size=0.01, seed=0)
    record = run_sampling_job_distributed(job).record
    return args.chains * (args.burn_in + args.sampler_steps) / record.wall_time


def worker(args: argparse.Namespace) -> None:
    from ebmlab import distributed as D

    ctx = D.init_distributed()
    threads = _threads(args, ctx.world_size)
    torch.set_num_threads(threads)
    work = D.broadcast_object(tempfile.mkdtemp(prefix="ebmlab-scaling-") if ctx.is_main else None)
    result = {"processes": ctx.world_size, "threads": threads, "machine": machine_description(torch.device("cpu"))}
    for objective in OBJECTIVES:
        result[f"train_{objective}"] = _train_rate(objective, args, os.path.join(work, f"train-{objective}"))
    result["sample"] = _sample_rate(args, os.path.join(work, "samples.npz"))
    D.barrier()
    if ctx.is_main:
        Path(args.worker).write_text(json.dumps(result))
        shutil.rmtree(work, ignore_errors=True)
    D.destroy_distributed()


# ---------------------------------------------------------------------- launcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, args: argparse.Namespace, argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result_file = os.path.join(tmp, "result.json")
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world),
                   "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), os.path.abspath(__file__),
                   *argv, "--worker", result_file]
        env = {**os.environ, "OMP_NUM_THREADS": str(_threads(args, world))}
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        result = json.loads(Path(result_file).read_text())
        result["launch_seconds"] = time.perf_counter() - started
        return result


def table(results: list[dict]) -> str:
    base = results[0]
    keys = [(f"train_{o}", f"train {o} (steps/s)") for o in OBJECTIVES] + [("sample", "MALA (chain steps/s)")]
    head = "| processes | threads/process | " + " | ".join(f"{label} | speed-up" for _, label in keys) + " |"
    rule = "|" + "---:|" * (2 + 2 * len(keys))
    rows = [head, rule]
    for r in results:
        cells = [str(r["processes"]), str(r["threads"])]
        for key, _ in keys:
            value = r[key]
            cells += [f"{value:,.1f}" if value < 1e4 else f"{value:,.0f}", f"{value / base[key]:.2f}×"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    results = []
    for world in args.processes:
        print(f"running {world} process(es)...", file=sys.stderr, flush=True)
        results.append(launch(world, args, argv))
    text = "\n".join([
        f"Machine: {results[0]['machine']}",
        f"Training: 8gaussians, MLP [128, 128], global batch {args.batch_size}, {args.steps - args.warmup} timed steps; "
        f"sampling: MALA on MLPEnergy, {args.chains} chains, {args.burn_in} + {args.sampler_steps} steps.",
        "",
        table(results),
    ])
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
