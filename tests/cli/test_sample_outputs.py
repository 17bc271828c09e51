"""``ebmlab sample``'s output contract: which existing files it may replace, the file suffixes,
the annealed-Langevin path's files and refusals, and the one-line messages of bad SPECs and
sampler choices.

Plumbing only (a few chains, a few steps); every refusal also checks that nothing was written
and that the user's file is unchanged, and every "replaced" case has a "refused" twin.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib.figure import Figure

from ebmlab.cli import main
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.jobs.image_grids import is_own_figure
from ebmlab.jobs.plots import save_figure
from ebmlab.jobs.guards import is_own_netcdf, is_sample_file
from ebmlab.jobs.sampling_defaults import check_sampler_options, check_sampler_support
from ebmlab.jobs.specs import resolve_energy
from ebmlab.samplers import make_kernel

GAUSS = ("--energy", "gaussian:2", "--chains", "4", "--steps", "20", "--burn-in", "10")
NPZ_FIELDS = {"samples", "energy", "acceptance_rate", "divergences", "step_size", "wall_time", "event_shape",
              "metadata", "energy_spec", "sampler", "init", "support", "seed", "num_chains", "num_steps",
              "burn_in", "thin"}


def run(*args):
    return CliRunner().invoke(main, ["sample", *map(str, args)])


def refused(*args, message: str):
    """Exit status 2, one line naming ``message``, no traceback."""
    result = run(*args)
    text = result.output.strip()
    assert result.exit_code == 2, (args, result.output, result.exception)
    assert len(text.splitlines()) == 1 and text.startswith("ebmlab: error: "), text
    assert message in text and "Traceback" not in text, text
    return text


def foreign_png(path):
    """A picture matplotlib wrote, not ebmlab (no creator metadata)."""
    fig = Figure()
    fig.subplots().plot([0, 1])
    fig.savefig(path)
    return path.read_bytes()


# ------------------------------------------------------------------ pictures (defect 1)

@pytest.mark.parametrize("option", ["--plot", "--plot-chains"])
@pytest.mark.parametrize("content", ["text", "png"])
def test_a_picture_option_never_replaces_a_users_file(tmp_path, option, content):
    target = tmp_path / "notes.png"
    if content == "text":
        target.write_text("notes\n")
        before = target.read_bytes()
    else:
        before = foreign_png(target)
    out = tmp_path / "g5.npz"
    refused(*GAUSS, "--out", out, option, target, message=f"{option} '{target}' exists and is not a picture ebmlab wrote")
    assert target.read_bytes() == before and not out.exists()  # refused before sampling: nothing written


@pytest.mark.parametrize("option", ["--plot", "--plot-chains"])
def test_a_picture_option_replaces_its_own_picture_and_an_empty_file(tmp_path, option):
    target = tmp_path / "p.png"
    target.touch()
    first = run(*GAUSS, "--out", tmp_path / "a.npz", option, target)
    assert first.exit_code == 0 and f"{target}" in first.output, first.output
    assert is_own_figure(target)
    before = target.read_bytes()
    again = run(*GAUSS, "--seed", "1", "--out", tmp_path / "a.npz", option, target)  # other draws, other picture
    assert again.exit_code == 0, again.output
    assert target.read_bytes() != before and is_own_figure(target)


def test_two_outputs_may_not_name_one_file(tmp_path):
    refused(*GAUSS, "--out", tmp_path / "s.npz", "--plot", tmp_path / "p.png", "--plot-chains", tmp_path / "p.png",
            message="name the same file")
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("suffix", ["png", "pdf", "svg"])
def test_ebmlab_pictures_name_their_creator_and_others_do_not(tmp_path, suffix):
    fig = Figure()
    fig.subplots().plot([0, 1])
    save_figure(fig, tmp_path / f"own.{suffix}")
    fig.savefig(tmp_path / f"other.{suffix}")
    assert is_own_figure(tmp_path / f"own.{suffix}")
    assert not is_own_figure(tmp_path / f"other.{suffix}")
    (tmp_path / f"text.{suffix}").write_text("ebmlab notes\n")
    assert not is_own_figure(tmp_path / f"text.{suffix}")


# ------------------------------------------------------------------ --out (defects 2, 7)

def test_out_refuses_a_netcdf_file_ebmlab_did_not_write(tmp_path):
    az = pytest.importorskip("arviz")
    mine = tmp_path / "mine.nc"
    az.from_dict(posterior={"x": np.zeros((2, 5))}).to_netcdf(str(mine))
    before = mine.read_bytes()
    assert not is_own_netcdf(mine) and not is_sample_file(mine)
    refused(*GAUSS, "--out", mine, message=f"--out '{mine}' exists and is not an ebmlab sample file")
    assert mine.read_bytes() == before
    own = tmp_path / "own.nc"
    for seed in ("0", "1"):  # the second run replaces the first's file
        result = run(*GAUSS, "--seed", seed, "--out", own)
        assert result.exit_code == 0 and f"wrote {own}" in result.output, result.output
    assert is_own_netcdf(own)


@pytest.mark.parametrize("name", ["x.txt", "x", "x.npy", "x.npz.bak"])
def test_out_must_end_in_npz_or_nc(tmp_path, name):
    refused(*GAUSS, "--out", tmp_path / name, message="the file name must end in .npz or .nc")
    assert not (tmp_path / name).exists()
    assert run(*GAUSS, "--out", tmp_path / "x.npz").exit_code == 0


def test_help_says_an_earlier_sample_file_is_replaced():
    text = " ".join(CliRunner().invoke(main, ["sample", "--help"]).output.split())
    assert "An earlier ebmlab sample file of that name is replaced" in text


# ------------------------------------------------------------------ annealed Langevin (defect 3)

@pytest.fixture(scope="module")
def ncsn_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ncsn") / "o_ncsn"
    result = CliRunner().invoke(main, ["train", "--data", "8gaussians", "--objective", "ncsn", "--steps", "20",
                                       "--hidden", "32,32", "--batch-size", "64", "--no-plots", "--no-progress",
                                       "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


def test_annealed_npz_has_the_documented_fields_and_a_wrote_line(tmp_path, ncsn_run):
    out, chains = tmp_path / "a.npz", tmp_path / "chains.png"
    result = run("--energy", ncsn_run, "--chains", 8, "--steps", 3, "--seed", 5, "--out", out, "--plot-chains", chains)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and f"wrote {chains}" in result.output
    assert is_own_figure(chains)
    with np.load(out) as data:
        assert NPZ_FIELDS <= set(data.files), NPZ_FIELDS - set(data.files)
        assert data["samples"].shape == (1, 8, 2) and data["energy"].shape == (1, 8)
        np.testing.assert_array_equal(data["divergences"], np.zeros(8, dtype=np.int64))
        assert (str(data["sampler"]), str(data["init"]), str(data["support"])) == ("annealed", "noise", "real")
        assert str(data["energy_spec"]) == str(ncsn_run)
        assert (int(data["seed"]), int(data["num_chains"]), int(data["num_steps"])) == (5, 8, 3)
        assert (int(data["burn_in"]), int(data["thin"])) == (0, 1)
        assert np.isfinite(data["step_size"]) and data["step_size"] > 0  # the ε used, not NaN
        meta = json.loads(str(data["metadata"]))
    assert meta["steps_per_level"] == 3 and meta["num_levels"] >= 2 and "ebmlab_version" in meta


def test_annealed_nc_is_netcdf(tmp_path, ncsn_run):
    az = pytest.importorskip("arviz")
    out = tmp_path / "a.nc"
    result = run("--energy", ncsn_run, "--chains", 6, "--steps", 2, "--out", out)
    assert result.exit_code == 0 and f"wrote {out}" in result.output, result.output
    assert out.read_bytes()[:4] != b"PK\x03\x04"  # not a zip (.npz) under a .nc name
    data = az.from_netcdf(str(out))
    assert data.posterior["x"].shape == (6, 1, 2)
    assert data.posterior.attrs["sampler"] == "annealed" and is_own_netcdf(out)


def test_annealed_init_file_is_the_start(tmp_path, ncsn_run):
    """A start far from the data, with a negligible step, stays where it began; the noise start
    (the negative control) does not end there."""
    start = tmp_path / "far.npy"
    np.save(start, np.full((4, 2), 50.0))
    common = ("--energy", ncsn_run, "--chains", 4, "--steps", 1, "--step-size", "1e-12")
    assert run(*common, "--init", start, "--out", tmp_path / "far.npz").exit_code == 0
    assert run(*common, "--out", tmp_path / "noise.npz").exit_code == 0
    with np.load(tmp_path / "far.npz") as far, np.load(tmp_path / "noise.npz") as noise:
        assert str(far["init"]) == str(start)
        assert np.abs(far["samples"] - 50.0).max() < 1.0
        assert np.abs(noise["samples"] - 50.0).min() > 1.0


@pytest.mark.parametrize("args, named", [
    (["--thin", "2"], "--thin does not apply to annealed Langevin"),
    (["--burn-in", "10"], "--burn-in does not apply"),
    (["--burn-in", "500"], "--burn-in does not apply"),  # named, even at its default value
    (["--metric", "diag"], "--metric does not apply"),
    (["--target-accept", "0.6"], "--target-accept does not apply"),
    (["--compile"], "--compile does not apply"),
    (["--base", "mala", "--temperatures", "4"], "--base, --temperatures do not apply"),
    (["--support", "binary"], "declares support real, but --support binary was given; drop --support"),
    (["--event-shape", "3"], "has event shape (2,), but --event-shape (3,)"),
    (["--out", "a.txt"], "must end in .npz or .nc"),
])
def test_annealed_refuses_options_it_cannot_honour(tmp_path, ncsn_run, args, named):
    args = [tmp_path / arg if arg == "a.txt" else arg for arg in args]
    out = tmp_path / "a.npz"
    full = ["--energy", ncsn_run, "--chains", 4, "--steps", 2, *args]
    refused(*full, *([] if "--out" in args else ["--out", out]), message=named)
    assert not out.exists() and not (tmp_path / "a.txt").exists()


def test_annealed_refuses_a_users_picture(tmp_path, ncsn_run):
    target = tmp_path / "notes.png"
    before = foreign_png(target)
    refused("--energy", ncsn_run, "--chains", 4, "--steps", 2, "--out", tmp_path / "a.npz", "--plot", target,
            message="--plot")
    assert target.read_bytes() == before and not (tmp_path / "a.npz").exists()


# ------------------------------------------------------------------ --support (defect 4)

def test_support_may_not_override_a_builtin_real_energy(tmp_path):
    refused(*GAUSS, "--support", "binary", "--out", tmp_path / "s.npz",
            message="energy 'gaussian:2' declares support real, but --support binary was given; drop --support")
    assert not (tmp_path / "s.npz").exists()
    with pytest.raises(ValueError, match="declares support real"):
        resolve_energy("gaussian:2", support="categorical:3")
    assert resolve_energy("ising:3", support="binary")[2] == "binary"  # the same support is no clash


# ------------------------------------------------------------------ sampler messages (defect 5)

@pytest.mark.parametrize("args, wanted, unwanted", [
    (["--energy", "ising:4", "--sampler", "pt"], "use --base gibbs, gwg or metropolis", ["--sampler gibbs", "block_gibbs"]),
    (["--energy", "ising:4", "--sampler", "mala"], "use --sampler gibbs, gwg or metropolis", ["block_gibbs"]),
    (["--energy", "gaussian:2", "--sampler", "pt", "--base", "pt"], "--base pt: parallel tempering cannot run itself",
     ["block Gibbs"]),
    (["--energy", "gaussian:2", "--sampler", "pt", "--base", "bogus"], "--base 'bogus' is not a sampler; choose --base",
     [" pt,", "block_gibbs"]),
    (["--energy", "gaussian:2", "--sampler", "rwmh", "--metric", "diag"],
     "--metric diag applies to --sampler hmc, mala or nuts", ["window_adaptation"]),
])
def test_sampler_choices_are_named_by_their_option(tmp_path, args, wanted, unwanted):
    text = refused(*args, "--chains", 4, "--steps", 5, "--burn-in", 5, "--out", tmp_path / "s.npz", message=wanted)
    assert not any(word in text for word in unwanted), text


def test_block_gibbs_is_advised_only_for_two_layer_models():
    rbm = BernoulliRBM(4, 2)
    mala = make_kernel("mala")
    with pytest.raises(ValueError, match="block_gibbs"):
        check_sampler_support("mala", None, mala, rbm, "rbm", "binary")
    ising, _, _ = resolve_energy("ising:3")
    with pytest.raises(ValueError) as err:
        check_sampler_support("mala", None, mala, ising, "ising:3", "binary")
    assert "block_gibbs" not in str(err.value)
    check_sampler_support("gibbs", None, make_kernel("gibbs"), ising, "ising:3", "binary")  # a match passes
    check_sampler_options("nuts", "diag", None)
    with pytest.raises(ValueError, match="--metric"):
        check_sampler_options("ula", "diag", None)


# ------------------------------------------------------------------ bad SPEC values (defect 6)

@pytest.mark.parametrize("spec, parameter", [
    ("ising:4:nan", "J"), ("ising:4:inf", "J"), ("ising:4:-inf", "J"), ("ising:4:0.3:nan", "h"),
    ("potts:3:3:nan", "J"), ("potts:3:3:inf", "J"),
])
def test_non_finite_spec_parameters_are_refused_when_parsed(tmp_path, spec, parameter):
    with pytest.raises(ValueError, match=f"energy '{spec}': {parameter} must be a finite number"):
        resolve_energy(spec)
    refused("--energy", spec, "--chains", 2, "--steps", 2, "--out", tmp_path / "s.npz",
            message=f"energy '{spec}': {parameter} must be a finite number")


def test_finite_spec_parameters_are_accepted():
    for spec in ("ising:4:0.5:-0.1", "ising:4:-1e3", "potts:3:3:1e3"):
        assert resolve_energy(spec)[2] in ("binary", "categorical")


def test_init_file_with_nan_is_named(tmp_path):
    start = tmp_path / "start.npy"
    values = np.zeros((4, 2))
    values[1, 0] = np.nan
    np.save(start, values)
    refused(*GAUSS, "--init", start, "--out", tmp_path / "s.npz",
            message=f"--init '{start}': 1 of 8 values are NaN or infinite")
    np.save(start, np.zeros((4, 2)))  # the same file, finite: accepted
    assert run(*GAUSS, "--init", start, "--out", tmp_path / "s.npz").exit_code == 0
    assert torch.isfinite(torch.as_tensor(np.load(tmp_path / "s.npz")["samples"])).all()
