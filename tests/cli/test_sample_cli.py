"""``ebmlab sample``: success paths, output files, and one-line errors (exit code 2).

Small runs (a few chains, tens of steps): these test the plumbing — options reach the
sampler, the ``.npz`` holds consistent arrays, bad input is refused before anything is
written — not the samplers' statistics, which their own tests cover.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ebmlab.cli import main
from ebmlab.energy import Ising, eight_gaussians

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

USER_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Quad(nn.Module):
        event_shape = (3,)

        def forward(self, x):
            return 0.5 * x.pow(2).sum(-1)


    class NoShape(nn.Module):
        def forward(self, x):
            return 0.5 * x.flatten(1).pow(2).sum(-1)


    def factory():
        return Quad()


    class WrongShape(nn.Module):
        event_shape = (2,)

        def forward(self, x):
            return x


    class LogBarrier(nn.Module):
        event_shape = (2,)

        def forward(self, x):
            return -torch.log(x).sum(-1)
    """
)


@pytest.fixture(scope="module")
def user_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli_user") / "cli_energies.py"
    path.write_text(USER_FILE)
    return path


def run(*args: str):
    return CliRunner().invoke(main, ["sample", *map(str, args)])


def ok(*args: str):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_gmm8_mala_with_plot(tmp_path):
    out, plot = tmp_path / "gmm.npz", tmp_path / "gmm.png"
    result = ok("--energy", "gmm8", "--sampler", "mala", "--chains", 4, "--steps", 60, "--burn-in", 40,
                "--thin", 2, "--seed", 3, "--out", out, "--plot", plot)
    data = load(out)
    assert data["samples"].shape == (30, 4, 2) and data["energy"].shape == (30, 4)
    assert data["acceptance_rate"].shape == (4,) and ((data["acceptance_rate"] >= 0) & (data["acceptance_rate"] <= 1)).all()
    step = float(data["step_size"])
    assert np.isfinite(step) and step > 0 and step != 0.01  # tuned away from MALA's default during burn-in
    recomputed = eight_gaussians()(torch.as_tensor(data["samples"]).reshape(-1, 2)).reshape(30, 4)
    np.testing.assert_allclose(data["energy"], recomputed.numpy(), rtol=1e-5, atol=1e-5)
    meta = json.loads(str(data["metadata"]))
    assert (meta["energy"], meta["sampler"], meta["seed"], meta["num_kept"]) == ("gmm8", "mala", 3, 30)
    assert meta["step_size"] == pytest.approx(step)
    assert str(data["sampler"]) == "mala" and tuple(data["event_shape"]) == (2,)
    assert plot.read_bytes()[:8] == PNG_MAGIC
    # the one run summary (ebmlab.diagnostics.format_summary) between the job's header and footer
    for text in ("sampled gmm8 with mala: 4 chains, 30 kept draws each", "r_hat", "x[1]", "energy",
                 "mala: acceptance mean", "divergences 0", "step_size", "samples/s", f"wrote {out} and {plot}"):
        assert text in result.output
    assert no_temp_files(tmp_path)


def test_ising_gibbs_with_image_grid(tmp_path):
    out, plot = tmp_path / "ising.npz", tmp_path / "ising.png"
    ok("--energy", "ising:3", "--sampler", "gibbs", "--chains", 4, "--steps", 30, "--burn-in", 10,
       "--out", out, "--plot", plot)
    data = load(out)
    samples = data["samples"]
    assert samples.shape == (30, 4, 3, 3) and set(np.unique(samples)) <= {0.0, 1.0}
    np.testing.assert_allclose(data["energy"], Ising(3)(torch.as_tensor(samples).reshape(-1, 3, 3)).reshape(30, 4).numpy(),
                               atol=1e-5)
    assert (data["acceptance_rate"] == 1).all() and np.isnan(data["step_size"])
    assert str(data["support"]) == "binary"
    assert plot.read_bytes()[:8] == PNG_MAGIC


def test_potts_metropolis_states_are_categories(tmp_path):
    out = tmp_path / "potts.npz"
    ok("--energy", "potts:2:3", "--sampler", "metropolis", "--chains", 3, "--steps", 20, "--burn-in", 0, "--out", out)
    assert set(np.unique(load(out)["samples"])) <= {0.0, 1.0, 2.0}


@pytest.mark.parametrize("name, extra", [("Quad", []), ("factory", []), ("NoShape", ["--event-shape", "3"])])
def test_user_file_energy(tmp_path, user_file, name, extra):
    out = tmp_path / "user.npz"
    ok("--energy", f"{user_file}:{name}", "--sampler", "hmc", "--leapfrog", 3, "--chains", 2, "--steps", 10,
       "--burn-in", 5, "--out", out, *extra)
    data = load(out)
    assert data["samples"].shape == (10, 2, 3)
    np.testing.assert_allclose(data["energy"], 0.5 * (data["samples"] ** 2).sum(-1), rtol=1e-5, atol=1e-6)


def test_package_module_energy_with_trace_plot(tmp_path):
    out, plot = tmp_path / "banana.npz", tmp_path / "banana.png"
    ok("--energy", "ebmlab.energy.analytic:Banana", "--sampler", "rwmh", "--chains", 2, "--steps", 10, "--burn-in", 5,
       "--out", out, "--plot", plot)
    assert load(out)["samples"].shape == (10, 2, 2) and plot.read_bytes()[:8] == PNG_MAGIC
    ok("--energy", "gaussian:3", "--sampler", "rwmh", "--chains", 2, "--steps", 10, "--burn-in", 0,
       "--out", out, "--plot", tmp_path / "trace.png")
    assert (tmp_path / "trace.png").read_bytes()[:8] == PNG_MAGIC


def test_init_zeros_and_files(tmp_path):
    """A tiny random-walk step and no burn-in keep the chains at their start, so the start shows."""
    common = ["--energy", "gaussian:2", "--sampler", "rwmh", "--step-size", "1e-6", "--burn-in", 0, "--steps", 1,
              "--chains", 3]
    out = tmp_path / "init.npz"
    ok(*common, "--init", "zeros", "--out", out)
    np.testing.assert_allclose(load(out)["samples"][0], 0.0, atol=1e-4)
    starts = np.array([[1.0, 2.0], [3.0, 4.0], [-5.0, 6.0]])
    np.save(tmp_path / "starts.npy", starts)
    ok(*common, "--init", tmp_path / "starts.npy", "--out", out)
    np.testing.assert_allclose(load(out)["samples"][0], starts, atol=1e-4)
    np.save(tmp_path / "one.npy", np.array([7.0, -7.0]))
    ok(*common, "--init", tmp_path / "one.npy", "--out", out)
    np.testing.assert_allclose(load(out)["samples"][0], np.tile([7.0, -7.0], (3, 1)), atol=1e-4)


def test_too_few_draws_for_the_diagnostics_still_succeeds(tmp_path):
    result = ok("--energy", "gaussian:2", "--sampler", "rwmh", "--chains", 2, "--steps", 2, "--burn-in", 0,
                "--out", tmp_path / "short.npz")
    assert "diagnostics: n/a (summary: need at least 4 draws per chain, got 2)" in result.output
    assert load(tmp_path / "short.npz")["samples"].shape == (2, 2, 2)


def test_seed_makes_runs_reproducible(tmp_path):
    args = ["--energy", "banana", "--sampler", "mala", "--chains", 2, "--steps", 15, "--burn-in", 5]
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        ok(*args, "--seed", seed, "--out", tmp_path / f"{name}.npz")
    a, b, c = (load(tmp_path / f"{n}.npz")["samples"] for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def bad_input_cases(tmp_path: Path, user_file: Path) -> list[tuple[list, str]]:
    gauss = ["--energy", "gaussian:2", "--sampler", "rwmh", "--steps", 5, "--burn-in", 0]
    (tmp_path / "a_file").write_text("")
    np.save(tmp_path / "bad_shape.npy", np.zeros((4, 3)))
    (tmp_path / "no_checkpoint").mkdir()
    return [
        (["--energy", "gaussian:2", "--sampler", "nope", "--steps", 5], "unknown sampler 'nope'"),
        (["--energy", "nosuch", "--sampler", "rwmh", "--steps", 5], "unknown energy 'nosuch'"),
        (["--energy", "no_such_package_xyz.mod:E", "--sampler", "rwmh"], "cannot import module"),
        (["--energy", f"{tmp_path}/absent.py:E", "--sampler", "rwmh"], "not found"),
        (["--energy", f"{user_file}:WrongShape", "--sampler", "rwmh"], "must map x of shape (2, 2) to shape (2,)"),
        (["--energy", f"{user_file}:LogBarrier", "--sampler", "rwmh"], "NaN or infinite at the start"),
        (["--energy", f"{user_file}:NoShape", "--sampler", "rwmh"], "pass --event-shape"),
        (["--energy", str(tmp_path / "no_checkpoint"), "--sampler", "mala"], "has no checkpoint.pt"),
        ([*gauss, "--step-size", "0"], "--step-size must be a finite number > 0, got 0.0"),
        ([*gauss, "--step-size", "-1"], "--step-size must be a finite number > 0, got -1.0"),
        ([*gauss, "--chains", "0"], "--chains must be >= 1, got 0"),
        ([*gauss, "--thin", "10"], "--thin 10 is larger than --steps 5"),
        ([*gauss, "--target-accept", "1.5"], "--target-accept must be in (0, 1)"),
        ([*gauss, "--event-shape", "2,x"], "--event-shape must be comma-separated"),
        ([*gauss, "--event-shape", "3"], "has event shape (2,), but --event-shape (3,)"),
        ([*gauss, "--init", tmp_path / "missing.npy"], "expected noise, zeros or an existing FILE.npy"),
        ([*gauss, "--init", tmp_path / "bad_shape.npy"], "expected a real array of shape (16, 2) or (2,)"),
        ([*gauss, "--device", "nosuchdevice"], "--device 'nosuchdevice' is not a device name"),
        ([*gauss, "--chains", "many"], "'many' is not a valid integer"),
        # checked by the job in option terms (ebmlab.samplers.sample checks it for library callers)
        (["--energy", "ising:3", "--sampler", "mala"], "--sampler mala samples real states, but energy 'ising:3' has "
                                                       "support binary; use --sampler gibbs, gwg or metropolis"),
        (["--energy", "gmm8", "--sampler", "gibbs"], "use --sampler mala, hmc"),
        ([*gauss, "--sampler", "gibbs", "--step-size", "0.1"], "unknown option(s) 'step_size'"),
        ([*gauss, "--out", tmp_path / "missing_dir" / "s.npz"], "does not exist"),
        ([*gauss, "--out", tmp_path / "a_file" / "s.npz"], "is not a directory"),
        ([*gauss, "--out", tmp_path], "is a directory"),
        ([*gauss, "--plot", tmp_path / "missing_dir" / "s.png"], "--plot"),
        ([*gauss, "--plot", tmp_path / "s.gif"], "must end in .png, .pdf or .svg"),
        (["--sampler", "rwmh"], "Missing option '--energy'"),
    ]


def test_bad_input_is_one_line_with_exit_code_2(tmp_path, user_file):
    """Every case: exit code 2, one line on stderr naming the problem, no traceback, no output file."""
    out = tmp_path / "out.npz"
    for args, message in bad_input_cases(tmp_path, user_file):
        full = [*args] if "--out" in args else [*args, "--out", out]
        result = run(*full)
        text = result.output.strip()
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert len(text.splitlines()) == 1 and text.startswith("ebmlab: error: "), (args, text)
        assert message in text, (args, text)
        assert "Traceback" not in text and not out.exists(), args
    assert no_temp_files(tmp_path)


def test_unwritable_output_directory_is_refused_before_sampling(tmp_path, monkeypatch):
    """Permission bits do not stop root, so the directory's write probe is made to fail instead;
    resolving the energy or sampling first would raise AssertionError (exit code 1)."""
    import ebmlab.jobs.sample_files as file_module
    import ebmlab.jobs.sampling as job_module

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    def must_not_run(*args, **kwargs):
        raise AssertionError("ran before checking the output path")

    monkeypatch.setattr(file_module.tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(job_module, "resolve_energy", must_not_run)
    monkeypatch.setattr(job_module, "sample", must_not_run)
    result = run("--energy", "gmm8", "--sampler", "mala", "--out", tmp_path / "s.npz")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"ebmlab: error: --out '{tmp_path / 's.npz'}': directory '{tmp_path}' "
                                     "is not writable (Permission denied)")


def test_diverging_chain_stops_with_step_and_chain_and_writes_nothing(tmp_path):
    """ULA with ε = 5 on N(0, I) multiplies x by (1 - ε) = -4 per step: the energy overflows."""
    out = tmp_path / "ula.npz"
    result = run("--energy", "gaussian:2", "--sampler", "ula", "--step-size", 5, "--chains", 3, "--steps", 200,
                 "--burn-in", 0, "--out", out, "--plot", tmp_path / "ula.png")
    text = result.output.strip()
    assert result.exit_code == 2 and len(text.splitlines()) == 1 and "Traceback" not in text
    assert "sampling stopped, nothing written" in text and "at step" in text and "chain(s) 0, 1, 2" in text
    assert list(tmp_path.iterdir()) == []


def test_console_script(tmp_path):
    """The installed ``ebmlab`` entry point: one success and one bad input, in real processes."""
    exe = Path(sys.executable).with_name("ebmlab")
    out = tmp_path / "cs.npz"
    done = subprocess.run([exe, "sample", "--energy", "gaussian:2", "--sampler", "rwmh", "--chains", "2", "--steps", "5",
                           "--burn-in", "0", "--out", out], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "acceptance mean" in done.stdout and load(out)["samples"].shape == (5, 2, 2)
    bad = subprocess.run([exe, "sample", "--energy", "nosuch", "--sampler", "rwmh", "--out", tmp_path / "x.npz"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().startswith("ebmlab: error: unknown energy 'nosuch'")
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_negative_thread_count_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["sample", "--energy", "gmm8", "--sampler", "mala", "--threads", "-1",
                                       "--out", str(tmp_path / "x.npz")])
    assert result.exit_code == 2 and "--threads must be >= 0" in result.output
    assert not (tmp_path / "x.npz").exists()
