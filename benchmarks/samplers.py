"""Benchmark: the cost of one sampler step against the cost of the energy's own gradient.

A gradient-based MCMC step cannot be cheaper than one forward+backward pass of the energy
with respect to ``x`` (the *floor*), and should not cost much more: everything else in a
ULA/MALA step is O(C·D) elementwise work. For each energy and chain count this script times,
in the same run and interleaved round by round (so drifting machine load hits all alike):

* the floor, ``∇ₓ Σ_c E(x_c)`` by autograd, and a forward pass alone (the RWMH floor);
* "gemm bound" (mlp): the hidden-to-hidden matrix products of one forward+backward alone
  (:func:`gemm_bound_call`), the part of the floor that no compiler can fuse away: a one-gradient
  step (ULA, MALA) cannot take less, nor HMC less than ``L`` times it;
* one ``kernel.step`` of rwmh, ula, mala and hmc (``L`` leapfrog steps), eager;
* the same with ``ebmlab.energy.compile_energy(energy)`` (``torch.compile`` of
  ``torch.func.grad_and_value``), one compiled energy per (model, chains) so every graph is
  specialised to its shapes;
* "compiled step": ula, mala and hmc through ``sample(..., compile=True)``'s runner
  (:class:`ebmlab.samplers.compiled_loop.StepCompiler`: the whole transition as one graph,
  ``--unroll`` transitions per call), timed over runs of :data:`STEPS_PER_CALL` transitions;
* "BlackJAX" (mlp only, when JAX and BlackJAX import): ``blackjax.mala`` and ``blackjax.hmc``
  on the same weights ported to JAX, vmapped over the chains and jit-compiled with a
  ``lax.scan`` over :data:`STEPS_PER_CALL` transitions (benchmarks/blackjax_mlp.py).

Ratios are to the *eager* floor. Goals: ULA and MALA ≤ 1.15× floor; HMC ≤ 1.15·L× floor;
RWMH ≤ 1.15× the forward-only time. Goals of the compiled step (:func:`step_goal`): ULA ≤ 0.45×,
MALA ≤ 0.5× at up to 1,024 chains and ≤ 0.6× above, HMC (L = 5) ≤ 2.5×.

Energies (parameters frozen, as when sampling a trained model):
``mlp`` = ``MLPEnergy(2, (128, 128))`` on x of shape (C, 2);
``conv`` = ``ConvEnergy(1, 28, 28, base_width=8)`` on (C, 1, 28, 28). ``base_width=8``
(channels 8/16/32/32, ≈ 0.65 MMAC per image forward) keeps 8,192 chains at about 1.5 GB
of activations and one to a few seconds per floor on 2 CPU cores. The default CPU run took
76 s without the compiled column on two idle cores, and 7.5 min with it (cold compilation
included) on a 2-core machine shared with other jobs.

Timing: each candidate is run ``warmup`` times, then for ``repeats`` rounds every candidate
is timed once over ``inner`` consecutive calls, ``inner`` chosen from the warm-up time so
one timing lasts about ``--budget`` seconds (at least one call: the large conv configuration
therefore gets one call per round). When one round of single calls takes over 10 s (conv
with 8,192 chains on a 2-core CPU), that first round is the only warm-up and 3 rounds are
timed. The table shows medians over rounds; the "rounds" column says how many. Rows are
also logged to stderr as each configuration finishes.

On a busy machine, ``--threads 1`` gives steadier figures than several intra-op threads
competing with other processes for the cores.

Usage::

    python benchmarks/samplers.py                  # CPU, mlp+conv, 1024 and 8192 chains
    python benchmarks/samplers.py --quick          # smoke run: small sizes, few repeats
    python benchmarks/samplers.py --device cuda --markdown results.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

try:  # run as ``python -m benchmarks.samplers`` or imported as part of the package
    from .blackjax_mlp import blackjax_available, blackjax_stepper, limit_xla_threads
    from .common import Timing, machine_description, resolve_device, set_threads, synchronize
except ImportError:  # run as ``python benchmarks/samplers.py``
    from blackjax_mlp import blackjax_available, blackjax_stepper, limit_xla_threads
    from common import Timing, machine_description, resolve_device, set_threads, synchronize

from ebmlab.energy import ConvEnergy, MLPEnergy, compile_energy
from ebmlab.samplers import make_kernel
from ebmlab.samplers.compiled_loop import StepCompiler

SAMPLERS = ("rwmh", "ula", "mala", "hmc")
MODELS = ("mlp", "conv")
GOAL = 1.15
STEP_SIZES = {"rwmh": 0.05, "ula": 1e-3, "mala": 1e-3, "hmc": 1e-3}
STEPS_PER_CALL = 8  # transitions per timed call of the compiled-step and BlackJAX candidates
COMPILED_STEP = ("ula", "mala", "hmc")
BLACKJAX = ("mala", "hmc")


def step_goal(sampler: str, num_chains: int, num_leapfrog: int) -> float | None:
    """The compiled step's goal, as a ratio to the eager floor (module docstring); HMC's 2.5×
    is for L = 5 and scales with L."""
    if sampler == "ula":
        return 0.45
    if sampler == "mala":
        return 0.5 if num_chains <= 1024 else 0.6
    if sampler == "hmc":
        return 0.5 * num_leapfrog
    return None


@dataclass(frozen=True)
class Row:
    """One line of the result table; times in seconds per call, ratios to the eager floor."""

    model: str
    num_chains: int
    sampler: str  # "floor" for the fwd+bwd row itself
    baseline: str  # "fwd+bwd" or "fwd"
    baseline_time: float
    eager: float
    compiled: float | None
    goal: float
    rounds: int
    compiled_step: float | None = None
    blackjax: float | None = None
    step_goal: float | None = None

    @property
    def eager_ratio(self) -> float:
        return self.eager / self.baseline_time

    @property
    def compiled_ratio(self) -> float | None:
        return None if self.compiled is None else self.compiled / self.baseline_time

    @property
    def compiled_step_ratio(self) -> float | None:
        return None if self.compiled_step is None else self.compiled_step / self.baseline_time

    @property
    def blackjax_ratio(self) -> float | None:
        return None if self.blackjax is None else self.blackjax / self.baseline_time


def build_energy(model: str, device: torch.device, conv_width: int, seed: int = 0) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The benchmark energy (frozen parameters, eval mode) and its event shape."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model == "mlp":
            energy, event = MLPEnergy(2, (128, 128)), (2,)
        elif model == "conv":
            energy, event = ConvEnergy(1, 28, 28, base_width=conv_width), (1, 28, 28)
        else:
            raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    return energy.to(device).eval().requires_grad_(False), event


def floor_call(energy: Callable, x: torch.Tensor) -> Callable[[], object]:
    """One forward+backward of the energy with respect to ``x``: ``∇ₓ Σ_c E(x_c)``."""

    def call():
        x_in = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(energy(x_in).sum(), x_in)
        return g

    return call


def gemm_bound_call(energy: torch.nn.Module, x: torch.Tensor) -> Callable[[], object] | None:
    """The matrix products no fusion removes from a forward+backward: for each ``nn.Linear`` whose
    input and output widths both exceed 4 (the 128×128 layer of the MLP), ``h Wᵀ`` forward and
    ``δ W`` backward on ``(C, width)`` operands, at the energy's weights and dtype. The skinny
    products (2→128, 128→1 and their backward) lower to element-wise code and are left out. A
    lower bound for any step that evaluates one gradient in float32; ``None`` without such a layer."""
    layers = [m for m in energy.modules() if isinstance(m, torch.nn.Linear)
              and min(m.in_features, m.out_features) > 4]
    if not layers:
        return None
    c = x.shape[0]
    buffers = [(m.weight.detach(), torch.randn(c, m.in_features, dtype=x.dtype, device=x.device),
                torch.empty(c, m.out_features, dtype=x.dtype, device=x.device),
                torch.empty(c, m.in_features, dtype=x.dtype, device=x.device)) for m in layers]

    def call():
        for w, h, out, back in buffers:
            torch.mm(h, w.t(), out=out)
            torch.mm(out, w, out=back)
        return buffers

    return call


def forward_call(energy: Callable, x: torch.Tensor) -> Callable[[], object]:
    """One forward pass, no graph."""

    def call():
        with torch.no_grad():
            return energy(x)

    return call


def step_call(kernel, energy: Callable, x: torch.Tensor, generator: torch.Generator) -> Callable[[], object]:
    """One ``kernel.step`` of every chain; the state carries over from call to call."""
    state = [kernel.init(energy, x)]

    def call():
        state[0], info = kernel.step(energy, state[0], generator)
        return info

    return call


def compiled_step_call(kernel, energy: Callable, x: torch.Tensor, generator: torch.Generator,
                       compiler: StepCompiler) -> Callable[[], object]:
    """:data:`STEPS_PER_CALL` compiled transitions (``compiler.run``, the loop of
    ``sample(compile=compiler)``); the state carries over from call to call."""
    state = [kernel.init(energy, x)]

    def call():
        state[0] = compiler.run(kernel, energy, state[0], STEPS_PER_CALL, generator).state
        return state[0]

    return call


def measure(calls: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int,
            budget: float, max_inner: int = 200, slow_round: float = 10.0, slow_repeats: int = 3) -> dict[str, Timing]:
    """Interleaved timing of several calls (see the module docstring); seconds per call.

    Each call first runs once, timed. When that round of single calls took more than
    ``slow_round`` seconds (the large conv configuration on CPU), it counts as the only
    warm-up and ``min(repeats, slow_repeats)`` rounds of single calls are timed. Otherwise each
    call runs ``warmup - 1`` more times, the last warm-up sets how many consecutive calls
    (``inner``) one timing spans (about ``budget`` seconds), and ``repeats`` rounds are timed.
    """

    def timed(call: Callable[[], object]) -> float:
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        return time.perf_counter() - start

    first = {name: timed(call) for name, call in calls.items()}
    if sum(first.values()) > slow_round:
        inner = dict.fromkeys(calls, 1)
        rounds = min(repeats, slow_repeats)
    else:
        inner = {}
        for name, call in calls.items():
            one = first[name]
            for _ in range(warmup - 1):
                one = timed(call)
            inner[name] = int(min(max_inner, max(1, budget / max(one, 1e-9))))
        rounds = repeats
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(inner[name]):
                call()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / inner[name])
    return {name: Timing(statistics.median(t), min(t), max(t), len(t)) for name, t in samples.items()}


def bench_config(model: str, num_chains: int, device: torch.device, samplers: Sequence[str], num_leapfrog: int,
                 conv_width: int, repeats: int, warmup: int, budget: float, compiled: bool,
                 log: Callable[[str], None], compile_mode: str | None = None, unroll: int = 4,
                 blackjax: bool = True) -> list[Row]:
    """All rows for one (model, num_chains)."""
    energy, event = build_energy(model, device, conv_width)
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((num_chains, *event), generator=generator, device=device)
    kernels = {}
    for name in samplers:
        hp = {"step_size": STEP_SIZES[name]}
        if name == "hmc":
            hp["num_leapfrog"] = num_leapfrog
        kernels[name] = make_kernel(name, **hp)

    calls: dict[str, Callable[[], object]] = {"floor": floor_call(energy, x), "forward": forward_call(energy, x)}
    gemm = gemm_bound_call(energy, x)
    if gemm is not None:
        calls["gemm bound"] = gemm
    for name, kernel in kernels.items():
        calls[name] = step_call(kernel, energy, x, generator)
    if compiled:
        energy_c = compile_energy(energy, mode=compile_mode, dynamic=False)
        start = time.perf_counter()
        energy_c.value_and_grad(x)
        if "rwmh" in kernels:
            energy_c(x)
        synchronize(device)
        log(f"  {model}/{num_chains}: compiling the energy took {time.perf_counter() - start:.1f} s")
        calls["floor/compiled"] = lambda: energy_c.value_and_grad(x)
        for name, kernel in kernels.items():
            calls[f"{name}/compiled"] = step_call(kernel, energy_c, x, generator)
        for name in (n for n in COMPILED_STEP if n in kernels):
            compiler = StepCompiler(mode=compile_mode, unroll=unroll)
            calls[f"{name}/step"] = compiled_step_call(kernels[name], energy, x, generator, compiler)
            calls[f"{name}/step"]()
            log(f"  {model}/{num_chains}: compiling the {name} step took {compiler.compile_time:.1f} s")
    with_blackjax = compiled and blackjax and model == "mlp" and device.type == "cpu" and blackjax_available()
    for name in (n for n in BLACKJAX if n in kernels and with_blackjax):
        start = time.perf_counter()
        calls[f"{name}/blackjax"] = blackjax_stepper(energy, x, name, STEP_SIZES[name], num_leapfrog, STEPS_PER_CALL)
        log(f"  {model}/{num_chains}: jit-compiling BlackJAX {name} took {time.perf_counter() - start:.1f} s")
    timings = measure(calls, device, repeats, warmup, budget)

    floor, forward = timings["floor"].median, timings["forward"].median
    rounds = timings["floor"].repeats

    def comp(name: str) -> float | None:
        return timings[f"{name}/compiled"].median if compiled else None

    def per_step(key: str) -> float | None:
        return timings[key].median / STEPS_PER_CALL if key in timings else None

    rows = [Row(model, num_chains, "floor", "fwd+bwd", floor, floor, comp("floor"), 1.0, rounds)]
    if "gemm bound" in timings:
        rows.append(Row(model, num_chains, "gemm bound", "fwd+bwd", floor, timings["gemm bound"].median, None, 1.0,
                        rounds))
    for name in samplers:
        if name == "rwmh":
            rows.append(Row(model, num_chains, name, "fwd", forward, timings[name].median, comp(name), GOAL, rounds))
        else:
            goal = GOAL * (num_leapfrog if name == "hmc" else 1)
            rows.append(Row(model, num_chains, name, "fwd+bwd", floor, timings[name].median, comp(name), goal, rounds,
                            per_step(f"{name}/step"), per_step(f"{name}/blackjax"),
                            step_goal(name, num_chains, num_leapfrog)))
    return rows


def format_table(rows: Sequence[Row], num_leapfrog: int) -> str:
    """The markdown table of step times and ratios."""
    lines = [
        "| model | chains | sampler | baseline (ms) | eager (ms/step) | eager ratio | compiled (ms/step) | compiled ratio "
        "| goal | eager meets goal | compiled step (ms/step) | compiled step ratio | step goal | step meets goal "
        "| BlackJAX (ms/step) | BlackJAX ratio | rounds |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|:---:|---:|---:|---:|",
    ]
    for r in rows:
        label = f"hmc (L={num_leapfrog})" if r.sampler == "hmc" else r.sampler
        comp_ms = "—" if r.compiled is None else f"{1e3 * r.compiled:.3g}"
        comp_ratio = "—" if r.compiled_ratio is None else f"{r.compiled_ratio:.2f}×"
        reference = r.sampler in REFERENCE_ROWS
        meets = "" if reference else ("yes" if r.eager_ratio <= r.goal else "no")
        goal = "" if reference else f"≤ {r.goal:.2f}×"
        step_ms, step_ratio = _cell(r.compiled_step, r.compiled_step_ratio)
        bj_ms, bj_ratio = _cell(r.blackjax, r.blackjax_ratio)
        step_goal_text = "" if r.step_goal is None else f"≤ {r.step_goal:.2f}×"
        step_meets = "" if r.step_goal is None or r.compiled_step_ratio is None else \
            ("yes" if r.compiled_step_ratio <= r.step_goal else "no")
        lines.append(
            f"| {r.model} | {r.num_chains} | {label} | {r.baseline} {1e3 * r.baseline_time:.3g} | "
            f"{1e3 * r.eager:.3g} | {r.eager_ratio:.2f}× | {comp_ms} | {comp_ratio} | {goal} | {meets} | "
            f"{step_ms} | {step_ratio} | {step_goal_text} | {step_meets} | {bj_ms} | {bj_ratio} | {r.rounds} |"
        )
    return "\n".join(lines)


#: Rows that time a reference, not a sampler: the floor, and the GEMMs inside it (:func:`gemm_bound_call`).
REFERENCE_ROWS = ("floor", "gemm bound")


def _cell(seconds: float | None, ratio: float | None) -> tuple[str, str]:
    if seconds is None:
        return "—", "—"
    return f"{1e3 * seconds:.3g}", f"{ratio:.2f}×"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 256 chains, conv base_width 4, 2 rounds, tiny budget")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--chains", type=int, nargs="+", default=None, help="chain counts (default 1024 8192)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    p.add_argument("--num-leapfrog", type=int, default=5, help="HMC leapfrog steps L (default 5)")
    p.add_argument("--conv-width", type=int, default=None, help="ConvEnergy base_width (default 8; 4 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="timing rounds (default 5; 2 with --quick)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per candidate before timing, >= 1 (default 2)")
    p.add_argument("--budget", type=float, default=None,
                   help="target seconds per timing, sets calls per timing (default 0.25; 0.01 with --quick)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="skip the torch.compile columns (compiled energy, compiled step) and BlackJAX's")
    p.add_argument("--unroll", type=int, default=4, help="transitions per compiled-step call (default 4)")
    p.add_argument("--no-blackjax", dest="blackjax", action="store_false", help="skip the BlackJAX columns")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for the compiled column (default: torch's default)")
    p.add_argument("--markdown", default=None, help="also write the table (with the machine line) to this file")
    args = p.parse_args(argv)
    args.chains = args.chains or ([256] if args.quick else [1024, 8192])
    args.conv_width = args.conv_width or (4 if args.quick else 8)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.budget = args.budget if args.budget is not None else (0.01 if args.quick else 0.25)
    if min(args.chains) < 1 or min(args.num_leapfrog, args.repeats, args.warmup, args.unroll) < 1 or args.budget < 0:
        p.error("--chains, --num-leapfrog, --repeats, --warmup and --unroll must be >= 1 and --budget >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Run the benchmark, print the markdown table, return its rows."""
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        set_threads(args.threads)
        limit_xla_threads(args.threads)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    machine = machine_description(device)
    log(f"# {machine}")
    start = time.perf_counter()
    rows: list[Row] = []
    for model in args.models:
        for num_chains in args.chains:
            log(f"  timing {model} with {num_chains} chains ...")
            config_rows = bench_config(model, num_chains, device, args.samplers, args.num_leapfrog, args.conv_width,
                                       args.repeats, args.warmup, args.budget, args.compile, log, args.compile_mode,
                                       args.unroll, args.blackjax)
            log("\n".join(format_table(config_rows, args.num_leapfrog).splitlines()[2:]))
            rows += config_rows
    table = format_table(rows, args.num_leapfrog)
    header = (f"Sampler step time vs. one forward+backward of the energy w.r.t. x ({device.type}).\n"
              f"Machine: {machine}.\n"
              f"conv = ConvEnergy(1, 28, 28, base_width={args.conv_width}); mlp = MLPEnergy(2, (128, 128)); "
              f"HMC with L = {args.num_leapfrog}; compile mode {args.compile_mode or 'default'}; compiled step with "
              f"--unroll {args.unroll}, timed over {STEPS_PER_CALL} transitions per call; "
              f"{blackjax_available() or 'BlackJAX not installed'}; "
              f"medians over interleaved rounds; total {time.perf_counter() - start:.0f} s.\n")
    print(header)
    print(table, flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(header + "\n" + table + "\n")
    return rows


if __name__ == "__main__":
    main()
