"""The smaller conveniences of the command line (issue "Runs people can look at and compare", item 6).

AIS reports progress through a callback and the job draws the bar; a crossed AIS bracket is
called noise and the exact log Z is printed when it is known; ``--progress`` and ``--device
auto`` on every command; ``sample`` picks its sampler from the energy's support and each
sampler its own ``--steps``; ``--compile`` says it is compiling; a user's module takes its event
shape from ``--init``/``--data`` and its support from ``--support``; the thread count follows
the problem size. Plumbing only: tiny runs, in-process.
"""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ebmlab.cli import main
from ebmlab.energy import Gaussian, Ising
from ebmlab.energy.enumeration import exact_log_z
from ebmlab.jobs import threads as T
from ebmlab.jobs.evaluation_report import EvaluationReport, format_report
from ebmlab.jobs.sampling import default_sampler, default_steps
from ebmlab.partition.ais import ais

USER_FILE = textwrap.dedent(
    """
    from torch import nn


    class Spins(nn.Module):
        '''The 3x3 Ising model of ebmlab.energy.Ising(3, 0.3), declaring neither shape nor support.'''

        def forward(self, x):
            s = 2 * x - 1
            return -0.3 * (s * (s.roll(-1, -1) + s.roll(-1, -2))).sum((-2, -1))


    class Colours(nn.Module):
        '''A 2x2 three-state Potts model declaring nothing.'''

        def forward(self, x):
            return -0.5 * ((x == x.roll(-1, -1)).float() + (x == x.roll(-1, -2)).float()).sum((-2, -1))


    class Quad(nn.Module):
        def forward(self, x):
            return 0.5 * x.pow(2).flatten(1).sum(-1)
    """
)


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "energies.py"
    path.write_text(USER_FILE)
    return path


@pytest.fixture(autouse=True)
def keep_threads():
    """The commands run in-process and may set torch's thread count: restore it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def meta(path) -> dict:
    with np.load(path) as data:
        return json.loads(str(data["metadata"]))


# ------------------------------------------------------------------ AIS progress


def test_ais_calls_back_once_per_temperature_of_every_pass():
    energy = Gaussian(torch.zeros(2))
    calls = []
    generator = torch.Generator().manual_seed(0)
    ais(energy, num_temperatures=6, num_runs=8, generator=generator, reverse_samples=energy.sample(8, generator),
        callback=lambda k, beta: calls.append((k, beta)))
    assert [k for k, _ in calls] == [1, 2, 3, 4, 5] * 2  # forward, then reverse
    assert calls[4][1] == 1.0 and calls[-1][1] == 0.0
    adaptive = []
    ais(energy, schedule="adaptive", num_runs=8, generator=generator, target_ess=0.5,
        callback=lambda k, beta: adaptive.append(k))
    assert adaptive.count(1) == 2 and len(adaptive) % 2 == 0  # the pilot, then the runs with its schedule


def test_evaluate_draws_an_ais_bar_only_when_asked():
    args = ["evaluate", "--energy", "gaussian:2", "--log-partition", "ais", "--temperatures", "5", "--runs", "20"]
    shown = invoke(*args, "--progress")
    assert shown.exit_code == 0, shown.output
    assert "AIS:" in shown.stderr and "/8 " in shown.stderr  # 4 forward + 4 reverse temperatures
    for quiet in (invoke(*args, "--no-progress"), invoke(*args)):  # the default: only on a terminal
        assert quiet.exit_code == 0 and "AIS" not in quiet.stderr


# ------------------------------------------------------------------ the bracket and the exact log Z


def _ais_report(**changes) -> EvaluationReport:
    fields = dict(method="ais", event_shape=(2,), support="real", log_z=1.84, log_z_stderr=0.02, ess=90.0,
                  num_temperatures=50, num_runs=100, log_z_upper=1.83, log_z_upper_stderr=0.01,
                  upper_bound_source="exact", reliable=True)
    return EvaluationReport(**{**fields, **changes})


def test_a_crossed_bracket_is_called_noise_in_one_sentence():
    lines = format_report(_ais_report()).splitlines()
    note = [line for line in lines if "note:" in line]
    assert len(note) == 1 and "above the upper" in note[0] and "Monte-Carlo noise" in note[0]
    assert note[0].count(". ") == 0 and "0.4 combined standard errors" in note[0]
    heuristic = format_report(_ais_report(upper_bound_source="data (heuristic)", reliable=None))
    assert "no bound" in heuristic and "Monte-Carlo noise" not in heuristic
    assert "note:" not in format_report(_ais_report(log_z_upper=1.90))  # not crossed
    assert "note:" not in format_report(_ais_report(reliable=False, warning="unreliable AIS estimate: ..."))


def test_the_exact_log_z_is_printed_when_known(tmp_path, user_file):
    analytic = invoke("evaluate", "--energy", "gaussian:2", "--log-partition", "ais", "--temperatures", "5",
                      "--runs", "20")
    assert analytic.exit_code == 0, analytic.output
    assert f"exact log Z = {math.log(2 * math.pi):.4f} nats" in analytic.output
    ising = invoke("evaluate", "--energy", "ising:3", "--log-partition", "ais", "--temperatures", "5", "--runs", "20",
                   "--json")
    assert ising.exit_code == 0, ising.output
    assert json.loads(ising.stdout)["exact_log_z"] == pytest.approx(Ising(3, 0.3).log_z, abs=1e-9)
    # a user's module of 2^9 states declares no log_z: enumerated
    user = invoke("evaluate", "--energy", f"{user_file}:Spins", "--support", "binary", "--event-shape", "3,3",
                  "--log-partition", "ais", "--temperatures", "5", "--runs", "20", "--json")
    assert user.exit_code == 0, user.output
    assert json.loads(user.stdout)["exact_log_z"] == pytest.approx(Ising(3, 0.3).log_z, abs=1e-6)
    unknown = invoke("evaluate", "--energy", f"{user_file}:Quad", "--event-shape", "2", "--log-partition", "ais",
                     "--temperatures", "5", "--runs", "20", "--base-std", "2")
    assert unknown.exit_code == 0 and "exact log Z" not in unknown.output


# ------------------------------------------------------------------ --progress and --device auto everywhere


def test_sample_progress_flag(tmp_path):
    args = ["sample", "--energy", "gaussian:2", "--chains", "2", "--steps", "5", "--burn-in", "0"]
    shown = invoke(*args, "--progress", "--out", tmp_path / "a.npz")
    assert shown.exit_code == 0, shown.output
    assert "mala:" in shown.stderr and "/5 " in shown.stderr
    quiet = invoke(*args, "--no-progress", "--out", tmp_path / "b.npz")
    assert quiet.exit_code == 0 and "mala:" not in quiet.stderr


def test_device_auto_and_progress_on_every_command(tmp_path):
    for command in ("train", "sample", "evaluate"):
        helptext = invoke(command, "--help").output
        assert "--progress / --no-progress" in helptext and "auto" in helptext, command
    sampled = invoke("sample", "--energy", "gaussian:2", "--chains", "2", "--steps", "3", "--burn-in", "0",
                     "--device", "auto", "--out", tmp_path / "s.npz")
    assert sampled.exit_code == 0, sampled.output
    assert meta(tmp_path / "s.npz")["device"] == "auto"
    evaluated = invoke("evaluate", "--energy", "gaussian:2", "--log-partition", "quadrature", "--bounds", "-6,6",
                       "--device", "auto")
    assert evaluated.exit_code == 0, evaluated.output
    trained = invoke("train", "--steps", "2", "--hidden", "8", "--batch-size", "16", "--no-plots", "--no-progress",
                     "--set", "num_samples=100", "--device", "auto", "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.output


# ------------------------------------------------------------------ default sampler and steps


def test_sample_picks_the_sampler_of_the_support_and_its_steps(tmp_path):
    assert (default_sampler("real"), default_sampler("binary"), default_sampler("categorical")) == \
        ("mala", "gibbs", "gibbs")
    assert (default_steps("mala"), default_steps("gibbs"), default_steps("nuts")) == (1000, 1000, 500)
    for spec, sampler in (("gaussian:2", "mala"), ("ising:3", "gibbs"), ("potts:2:3", "gibbs")):
        out = tmp_path / f"{sampler}-{spec.replace(':', '_')}.npz"
        result = invoke("sample", "--energy", spec, "--chains", "2", "--burn-in", "0", "--thin", "100", "--out", out)
        assert result.exit_code == 0, result.output
        assert f"with {sampler}" in result.output
        assert (meta(out)["sampler"], meta(out)["num_steps"]) == (sampler, 1000)
    out = tmp_path / "nuts.npz"
    result = invoke("sample", "--energy", "gaussian:2", "--sampler", "nuts", "--max-tree-depth", "2", "--chains", "2",
                    "--burn-in", "0", "--thin", "100", "--out", out)
    assert result.exit_code == 0, result.output
    assert meta(out)["num_steps"] == 500
    helptext = " ".join(invoke("sample", "--help").output.split())
    assert "nuts 500" in helptext and "annealed 100 per noise level" in helptext and "mala for real" in helptext


def test_annealed_langevin_defaults_to_100_steps_per_level(tmp_path):
    run_dir = tmp_path / "run"
    trained = invoke("train", "--objective", "ncsn", "--steps", "5", "--batch-size", "32", "--no-plots",
                     "--no-progress", "--set", "num_samples=100", "--out", run_dir)
    assert trained.exit_code == 0, trained.output
    result = invoke("sample", "--energy", run_dir, "--chains", "4", "--device", "auto", "--progress",
                    "--out", tmp_path / "s.npz")
    assert result.exit_code == 0, result.output
    assert meta(tmp_path / "s.npz")["steps_per_level"] == 100
    assert "annealed" in result.stderr  # the bar over the steps


# ------------------------------------------------------------------ --compile


def test_compile_says_it_is_compiling_and_how_long_it_took(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **_: fn)  # the message, not the compiler, is under test
    result = invoke("sample", "--energy", "gaussian:2", "--chains", "2", "--steps", "3", "--burn-in", "0",
                    "--compile", "--out", tmp_path / "c.npz")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "compiling" in line]
    assert len(lines) == 1 and "torch.compile" in lines[0]
    assert lines[0].rstrip().endswith(" s") and "done in" in lines[0]
    plain = invoke("sample", "--energy", "gaussian:2", "--chains", "2", "--steps", "3", "--burn-in", "0",
                   "--out", tmp_path / "p.npz")
    assert "compiling" not in plain.stderr


# ------------------------------------------------------------------ a user's module: shape and support


def test_event_shape_from_init_and_from_data(tmp_path, user_file):
    np.save(tmp_path / "init.npy", np.zeros((3, 4), dtype=np.float32))  # (chains, *event)
    result = invoke("sample", "--energy", f"{user_file}:Quad", "--init", tmp_path / "init.npy", "--chains", "3",
                    "--steps", "4", "--burn-in", "0", "--out", tmp_path / "a.npz")
    assert result.exit_code == 0, result.output
    assert meta(tmp_path / "a.npz")["event_shape"] == [4]
    np.save(tmp_path / "one.npy", np.zeros((2, 5), dtype=np.float32))  # one start (*event), for every chain
    result = invoke("sample", "--energy", f"{user_file}:Quad", "--init", tmp_path / "one.npy", "--chains", "3",
                    "--steps", "4", "--burn-in", "0", "--out", tmp_path / "b.npz")
    assert result.exit_code == 0, result.output
    assert meta(tmp_path / "b.npz")["event_shape"] == [2, 5]
    np.save(tmp_path / "data.npy", np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32))
    result = invoke("evaluate", "--energy", f"{user_file}:Quad", "--data", tmp_path / "data.npy",
                    "--log-partition", "quadrature", "--bounds", "-6,6", "--no-metrics", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["event_shape"] == [2] and report["log_z"] == pytest.approx(math.log(2 * math.pi), abs=1e-3)
    missing = invoke("sample", "--energy", f"{user_file}:Quad", "--out", tmp_path / "c.npz")
    assert missing.exit_code == 2 and "--event-shape" in missing.output and "--init" in missing.output


def test_support_option_lets_a_users_module_be_gibbs_sampled(tmp_path, user_file):
    out = tmp_path / "spins.npz"
    result = invoke("sample", "--energy", f"{user_file}:Spins", "--support", "binary", "--event-shape", "3,3",
                    "--chains", "4", "--steps", "20", "--burn-in", "0", "--out", out)
    assert result.exit_code == 0, result.output
    assert "with gibbs" in result.output and meta(out)["support"] == "binary"
    with np.load(out) as data:
        assert set(np.unique(data["samples"])) <= {0.0, 1.0}
    out = tmp_path / "colours.npz"
    result = invoke("sample", "--energy", f"{user_file}:Colours", "--support", "categorical:3", "--event-shape", "2,2",
                    "--chains", "4", "--steps", "20", "--burn-in", "0", "--out", out)
    assert result.exit_code == 0, result.output
    with np.load(out) as data:
        assert set(np.unique(data["samples"])) <= {0.0, 1.0, 2.0} and len(np.unique(data["samples"])) == 3
    for bad, named in (("categorical:1", "categorical:K"), ("ternary", "--support")):
        refused = invoke("sample", "--energy", f"{user_file}:Spins", "--support", bad, "--event-shape", "3,3",
                         "--out", tmp_path / "x.npz")
        assert refused.exit_code == 2 and named in refused.output and "Traceback" not in refused.output
    clash = invoke("sample", "--energy", "ising:3", "--support", "categorical:3", "--out", tmp_path / "x.npz")
    assert clash.exit_code == 2 and "declares support binary" in clash.output
    same = invoke("sample", "--energy", "ising:3", "--support", "binary", "--chains", "2", "--steps", "2",
                  "--burn-in", "0", "--out", tmp_path / "y.npz")
    assert same.exit_code == 0, same.output


# ------------------------------------------------------------------ lean thread defaults


def test_lean_threads_follows_the_problem_size():
    energy = Gaussian(torch.zeros(2))
    torch.set_num_threads(2)
    assert T.lean_threads(16, energy, (2,)) == 1
    torch.set_num_threads(2)
    assert T.lean_threads(10**12, energy, (2,)) == 2  # a huge problem keeps torch's setting
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128), torch.nn.SiLU(),
                              torch.nn.Linear(128, 1))
    assert T.multiply_adds(mlp, (2,)) == 2 * 128 + 128 * 128 + 128
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 1))
    assert T.multiply_adds(conv, (1, 8, 8)) == 4 * 8 * 8 * 9 + 4 * 8 * 8
    assert mlp.training  # counted in eval mode, the mode restored


@pytest.mark.parametrize("command", [
    ["sample", "--energy", "gaussian:2", "--chains", "2", "--steps", "2", "--burn-in", "0", "--out", "{tmp}/s.npz"],
    ["evaluate", "--energy", "gaussian:2", "--log-partition", "quadrature", "--bounds", "-6,6"],
    ["train", "--steps", "1", "--hidden", "8", "--batch-size", "16", "--no-plots", "--no-progress",
     "--set", "num_samples=100", "--out", "{tmp}/run"],
])
def test_commands_choose_one_thread_for_small_problems_unless_told(tmp_path, command):
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    torch.set_num_threads(2)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1
    assert "one thread" in " ".join(invoke(args[0], "--help").output.split())
    torch.set_num_threads(2)
    told = invoke(*[a.replace("s.npz", "t.npz").replace("/run", "/run2") for a in args], "--threads", "2")
    assert told.exit_code == 0, told.output
    assert torch.get_num_threads() == 2


def test_rbm_ais_shows_a_progress_bar(tmp_path):
    from ebmlab.cli import main as cli_main

    runner = CliRunner()
    assert runner.invoke(cli_main, ["train", "--model", "rbm", "--hidden", "6", "--steps", "5", "--no-plots",
                                    "--out", str(tmp_path / "rbm")]).exit_code == 0
    result = runner.invoke(cli_main, ["evaluate", "--energy", str(tmp_path / "rbm"), "--log-partition", "ais",
                                      "--temperatures", "30", "--runs", "20", "--progress"])
    assert result.exit_code == 0, result.output
    assert "RBM AIS" in result.output
