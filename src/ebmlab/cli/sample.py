"""``ebmlab sample``: draw MCMC samples from an energy SPEC and save them as ``.npz`` or ``.nc``.

Thin: parse options -> :class:`ebmlab.jobs.sampling.SampleJob` -> :func:`run_sampling_job`
(annealed Langevin for noise-conditional runs: :func:`run_annealed_job`, told which options
were given so that it can refuse those it cannot honour) -> print the summary. Exit status: 0
on success; 2 on bad input (one line, no traceback) and when a chain's energy turns NaN or
infinite during the run (the message names the step and the chains; lower ``--step-size``).
No output file is written in either failure case.
"""

from __future__ import annotations

import click
from click.core import ParameterSource

from ebmlab.distributed import is_main_process
from ebmlab.jobs.distributed import run_sampling_job_distributed
from ebmlab.jobs.sampling import SampleJob, format_result, in_option_terms
from ebmlab.jobs.sampling_defaults import DEFAULT_STEPS, MCMC_STEPS
from ebmlab.samplers import ChainDivergedError, available
from ebmlab.jobs.annealed_sampling import (
    ANNEALED, ANNEALED_STEPS, format_annealed_summary, noise_conditional_run, run_annealed_job,
)
from ebmlab.jobs.specs import describe_builtin, parse_event_shape
from ebmlab.cli.common import (
    LEAN_THREADS_HELP, OneLineErrors, UserError, SUPPORT_HELP, set_threads, is_terminal, user_errors,
)


_ENERGY_HELP = (
    "Energy SPEC: a built-in ("
    + "; ".join(f"{k}: {v}" for k, v in describe_builtin().items())
    + "), path/to/file.py:NAME or package.module:NAME (an nn.Module subclass, instance or "
    "no-argument factory), or a run directory holding checkpoint.pt."
)


@click.command(cls=OneLineErrors, help="Draw MCMC samples from an energy SPEC and save them as .npz or .nc.",
               epilog="Exit status: 0 ok; 2 bad input or a diverged chain (nothing is written then).")
@click.option("--energy", "energy_spec", required=True, metavar="SPEC", help=_ENERGY_HELP)
@click.option("--sampler", default=None, metavar="NAME",
              help=f"One of {', '.join(available())}, or annealed (annealed Langevin; the default and only "
                   "choice for runs trained with --objective ncsn, where --steps counts steps per noise level). "
                   "Default: from the energy's support, mala for real, gibbs for binary or categorical.")
@click.option("--chains", "num_chains", type=int, default=16, show_default=True, help="Number of chains.")
@click.option("--steps", "num_steps", type=int, default=None,
              help="Transitions after burn-in [default: the sampler's: "
                   + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
                   + f", annealed {ANNEALED_STEPS} per noise level, every other {MCMC_STEPS}].")
@click.option("--burn-in", type=int, default=500, show_default=True,
              help="Transitions before sampling; adaptive samplers tune the step size then.")
@click.option("--thin", type=int, default=1, show_default=True, help="Keep every THIN-th draw.")
@click.option("--step-size", type=float, default=None, help="Initial step size (default: the sampler's).")
@click.option("--leapfrog", "num_leapfrog", type=int, default=10, show_default=True, help="HMC leapfrog steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the run's generator.")
@click.option("--init", default="noise", show_default=True, metavar="noise|zeros|FILE.npy",
              help="Start: noise (N(0,1), or uniform states for discrete energies; annealed: the largest noise "
                   "level's Gaussian), zeros, or a .npy of shape (chains, *event) or (*event).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (CUDA when available).")
@click.option("--threads", type=int, default=None, help=LEAN_THREADS_HELP.format(size="chains"))
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile whole transitions of ula, mala and hmc (proposal, gradient, accept/reject and "
                   "step-size adaptation in one graph; the same chains as without, up to rounding), the energy for "
                   "other samplers; "
                   "says so on stderr with the time it took. Graphs are cached on disk, so later runs compile faster.")
@click.option("--compile-mode", type=click.Choice(["reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]),
              default=None, help="torch.compile mode of --compile (implies it); reduce-overhead replays CUDA graphs "
                                 "(small problems on a GPU; needs --device cuda).")
@click.option("--event-shape", default=None, metavar="D[,D...]",
              help="Event shape, e.g. 2 or 1,28,28, for energies that do not declare one [default: from an "
                   "--init FILE.npy].")
@click.option("--support", default=None, metavar="binary|categorical:K", help=SUPPORT_HELP)
@click.option("--target-accept", type=float, default=None, help="Acceptance rate that burn-in tunes toward.")
@click.option("--max-tree-depth", type=int, default=None, metavar="D",
              help="nuts: at most D trajectory doublings (2^D - 1 leapfrog steps) per transition [default: 10].")
@click.option("--robust-uturn/--no-robust-uturn", default=None,
              help="nuts: Stan's extra U-turn checks (each half of the trajectory extended by a leaf of the other) "
                   "[default: on]; without them NUTS can run in circles on near-isotropic targets, and gets more "
                   "ESS per gradient where it does not (the banana: 1.24x).")
@click.option("--metric", type=click.Choice(["diag", "dense", "diag_per_chain"]), default=None,
              help="hmc, mala, nuts: learn a diagonal or dense mass matrix with the step size during burn-in "
                   "(Stan's window adaptation), pooled over chains, or with diag_per_chain one diagonal per "
                   "chain; default: the step size only, identity mass matrix.")
@click.option("--base", default=None, metavar="NAME",
              help="pt: the sampler run at every temperature, e.g. mala (default), hmc, rwmh, gibbs, gwg.")
@click.option("--temperatures", "num_temperatures", type=int, default=None, metavar="K",
              help="pt: number of temperatures, the target's included [default: 8].")
@click.option("--max-temperature", type=float, default=None, metavar="T",
              help="pt: the hottest temperature [default: 10]; the ladder starts geometric and adapts during "
                   "burn-in toward equal swap rates.")
@click.option("--out", required=True, metavar="FILE.npz|FILE.nc",
              help="Output file (written atomically): .npz, or .nc for netCDF via ArviZ (pip install ebmlab[arviz]). "
                   "An earlier ebmlab sample file of that name is replaced; any other existing file is refused.")
@click.option("--plot", default=None, metavar="FILE.png",
              help="Also plot: density contours with samples (2-D), an image grid (image-shaped events) "
                   "or chain traces (.png, .pdf or .svg; replaces only a picture ebmlab wrote).")
@click.option("--plot-chains", default=None, metavar="FILE.png",
              help="Also plot the chains over time: for image-shaped events a grid with one row per chain "
                   "(the first 8) and one column per snapshot (10, evenly spaced over the kept draws); "
                   "otherwise trace plots (replaces only a picture ebmlab wrote).")
@user_errors(terms=in_option_terms)
def command(energy_spec, sampler, num_chains, num_steps, burn_in, thin, step_size, num_leapfrog, seed, init,
            device, threads, progress, compile_, compile_mode, event_shape, support, target_accept, max_tree_depth, robust_uturn, metric,
            base, num_temperatures, max_temperature, out, plot, plot_chains) -> None:
    if threads is not None:
        set_threads(threads)
    progress = is_terminal() if progress is None else progress
    job = SampleJob(
        energy=energy_spec, sampler=sampler, out=out, num_chains=num_chains, num_steps=num_steps, burn_in=burn_in,
        thin=thin, step_size=step_size, num_leapfrog=num_leapfrog, seed=seed, init=init,
        device=device, compile=compile_ or compile_mode is not None, compile_mode=compile_mode, event_shape=parse_event_shape(event_shape),
        target_accept=target_accept, plot=plot, plot_chains=plot_chains, progress=progress,
        max_tree_depth=max_tree_depth, robust_uturn=robust_uturn, metric=metric, base=base, num_temperatures=num_temperatures,
        max_temperature=max_temperature, support=support, lean_threads=threads is None,
    )
    annealed_run = noise_conditional_run(energy_spec) if sampler in (None, ANNEALED) else None
    if annealed_run is None and sampler == ANNEALED:
        raise UserError(f"--sampler annealed needs a run directory trained with --objective ncsn; choose one of "
                        f"{', '.join(available())}")
    try:
        if annealed_run is not None:
            click.echo(format_annealed_summary(run_annealed_job(annealed_run, job, given=_given_options())))
            return
        result = run_sampling_job_distributed(job)  # = run_sampling_job(job) outside torchrun
    except ChainDivergedError as err:
        raise UserError(f"sampling stopped, nothing written: {err}") from err
    if is_main_process():
        if plot_chains is not None and result.plot_chains is None:  # the distributed job draws only --plot
            from ebmlab.jobs.plots import plot_chains as draw_chains

            result.plot_chains = draw_chains(result.record.samples, plot_chains)
        click.echo(format_result(result))


def _given_options() -> set[str]:
    """The options named on the command line (or in the environment), e.g. ``{"--burn-in"}``."""
    ctx = click.get_current_context()
    return {param.opts[0] for param in ctx.command.params
            if ctx.get_parameter_source(param.name) not in (None, ParameterSource.DEFAULT)}
