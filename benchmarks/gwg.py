"""Gibbs-with-gradients against single-site Gibbs: effective samples per evaluation and per second.

Targets (binary): a ferromagnetic Ising model on an L×L periodic grid, and a Bernoulli RBM
trained for a few epochs on binarised 8×8 digits (PCD-1). Each sampler runs ``C`` chains from
uniform noise for ``burn_in`` steps, then ``num_steps`` recorded steps; the effective sample
size (ebmlab.diagnostics.effective_sample_size, multi-chain, Geyer's initial monotone
sequence) is computed for the energy and for the magnetisation ``mean_i (2x_i - 1)``.

Cost accounting, per step and per chain: single-site Gibbs (random scan) evaluates the energy
change of one site through the model's local formula — one energy-sized evaluation; GWG
evaluates the energy and its gradient at the proposal once (for the RBM the gradient is in
closed form, for the Ising model it is autograd). Both change at most one site per step, so
"per evaluation" is "per step"; "per second" includes every overhead. For the RBM, block
Gibbs (all 64 pixels per step, no gradient) is listed as a reference.

Run: ``python benchmarks/gwg.py`` (about a minute on one CPU thread); prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import machine_description, set_threads

from ebmlab.diagnostics import effective_sample_size
from ebmlab.energy import Ising
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.training.run import train
from ebmlab.samplers import BlockGibbs, Gibbs, GibbsWithGradients, sample


def digits_rbm(num_hidden: int, epochs: int, seed: int) -> BernoulliRBM:
    """An RBM trained by PCD-1 (block Gibbs, SGD, lr 0.05, batch 10) with the general trainer on
    binarised digits (``digits-binary``: pixels ≥ 8 of 16), event shape (1, 8, 8)."""
    num_images, batch_size = 1797, 10
    with tempfile.TemporaryDirectory() as tmp:
        result = train({
            "data": "digits-binary", "heldout_fraction": 0.0, "standardize": False,
            "model": "rbm", "model_kwargs": {"num_hidden": num_hidden},
            "objective": "pcd", "objective_kwargs": {"init": "noise"}, "sampler": "block_gibbs", "sampler_steps": 1,
            "optimizer": "sgd", "lr": 0.05, "momentum": 0.0, "lr_schedule": "constant", "batch_size": batch_size,
            "steps": epochs * -(-num_images // batch_size), "seed": seed, "checkpoint_every": 10**9,
        }, out=str(Path(tmp) / "run"))
    rbm = result.model
    for p in rbm.parameters():
        p.requires_grad_(False)
    return rbm


def measure(energy, kernel, num_chains: int, burn_in: int, num_steps: int, event_shape, seed: int) -> dict:
    """Run, then ESS of the energy and the magnetisation, per 1000 steps and per second."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 2, (num_chains, *event_shape), generator=g).float()
    warm = sample(energy, kernel, x0, num_steps=0, burn_in=burn_in, generator=g, keep_samples=False)
    energies, magnetisation = [], []

    def record(step, state, info):
        energies.append(state.energy)
        magnetisation.append((2 * state.x - 1).flatten(1).mean(1))

    run = sample(energy, kernel, warm.final_state.x, num_steps=num_steps, generator=g, callback=record,
                 keep_samples=False)
    out = {"wall_time": run.wall_time, "accept": float(run.acceptance_rate.mean())}
    for name, series in (("energy", energies), ("magnetisation", magnetisation)):
        draws = torch.stack(series).double().numpy()  # (num_steps, C)
        ess = float(effective_sample_size(draws))
        out[f"ess_{name}"] = ess
        out[f"ess_{name}_per_kstep"] = 1000 * ess / (num_steps * num_chains)
        out[f"ess_{name}_per_s"] = ess / run.wall_time
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ising-size", type=int, default=10)
    parser.add_argument("--ising-coupling", type=float, nargs="+", default=[0.2, 0.4])
    parser.add_argument("--rbm-hidden", type=int, default=64)
    parser.add_argument("--rbm-epochs", type=int, default=10)
    parser.add_argument("--chains", type=int, default=32)
    parser.add_argument("--burn-in", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)

    targets = [(f"Ising {args.ising_size}×{args.ising_size}, J = {j:g}",
                Ising(args.ising_size, coupling=j), (args.ising_size, args.ising_size), False)
               for j in args.ising_coupling]
    targets.append((f"RBM 64×{args.rbm_hidden} (digits, {args.rbm_epochs} epochs PCD-1)",
                    digits_rbm(args.rbm_hidden, args.rbm_epochs, args.seed), (1, 8, 8), True))

    print("# Gibbs-with-gradients vs single-site Gibbs (ESS of energy / magnetisation)")
    print(machine_description(torch.device("cpu")))
    print(f"{args.chains} chains, {args.burn_in} burn-in + {args.steps} recorded steps from uniform noise\n")
    print("| target | sampler | accept | s | ESS(E) / 1k steps | ESS(M) / 1k steps | ESS(E) / s | ESS(M) / s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, energy, shape, is_rbm in targets:
        samplers = [("Gibbs (random scan)", Gibbs(num_states=2, scan="random")), ("GWG", GibbsWithGradients())]
        if is_rbm:
            samplers.append(("block Gibbs (reference)", BlockGibbs()))
        results = {}
        for sampler_name, kernel in samplers:
            r = measure(energy, kernel, args.chains, args.burn_in, args.steps, shape, args.seed + 1)
            results[sampler_name] = r
            print(f"| {name} | {sampler_name} | {r['accept']:.3f} | {r['wall_time']:.1f} | "
                  f"{r['ess_energy_per_kstep']:.2f} | {r['ess_magnetisation_per_kstep']:.2f} | "
                  f"{r['ess_energy_per_s']:.1f} | {r['ess_magnetisation_per_s']:.1f} |", flush=True)
        base, gwg = results["Gibbs (random scan)"], results["GWG"]
        ratio = lambda key: gwg[key] / base[key] if base[key] > 0 else float("nan")  # noqa: E731
        print(f"| {name} | **GWG / Gibbs** | | | {ratio('ess_energy_per_kstep'):.2f}× | "
              f"{ratio('ess_magnetisation_per_kstep'):.2f}× | {ratio('ess_energy_per_s'):.2f}× | "
              f"{ratio('ess_magnetisation_per_s'):.2f}× |", flush=True)


if __name__ == "__main__":
    main()
