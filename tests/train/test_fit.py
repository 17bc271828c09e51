"""``ebmlab.fit``: any module, any data, one objective of each family, exact resume, reloading.

The target is a diagonal Gaussian ``N(m, diag(s²))``, m = (1, -2), s = (0.5, 2), modelled by a
user's own module (:mod:`user_model_file`, ``E(x) = ½ Σ ((x - μ)/s)²``). Every objective's
population optimum is μ = m (DSM's too: noise changes the variance, not the mean), and with
N = 2,000 draws the sample mean has standard error ``s / √N``; a fitted mean must lie within
4.5 of those standard errors of m. Measured |z| were ≤ 2.2 (dsm, nce, pcd). Negative control: the
same check on the untrained module (μ = 0) gives |z| of 28 and 45.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ebmlab
from ebmlab.energy import MLPEnergy
from ebmlab.training import fit
from ebmlab.training.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from user_model_file import DiagonalGaussian  # noqa: E402

SPEC = f"{HERE / 'user_model_file.py'}:DiagonalGaussian"
MEAN, STD, N = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0]), 2000
Z = 4.5


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return MEAN + STD * torch.randn(N, 2, generator=g)


def mean_z(module: DiagonalGaussian) -> torch.Tensor:
    """``(μ̂ - m) / (s/√N)`` per coordinate."""
    return (module.mu.detach() - MEAN) / (STD / math.sqrt(N))


FAMILIES = {
    "dsm": {"sigma": 0.1},                                              # score matching
    "nce": {},                                                          # noise-contrastive
    "pcd": {"kernel": ebmlab.MALA(step_size=0.3), "num_steps": 5},      # contrastive divergence
}


@pytest.mark.parametrize("objective", sorted(FAMILIES))
def test_fit_recovers_the_mean_with_each_family(data, objective):
    module = DiagonalGaussian(2)
    assert mean_z(module).abs().max() > 20  # negative control: the untrained module fails the check
    result = fit(module, objective, data, steps=800, lr=0.05, batch_size=500, seed=1, lr_schedule="cosine",
                 objective_options=FAMILIES[objective])
    assert result.model is module and result.step == 800 and len(result.history) == 800
    assert all(math.isfinite(r["loss"]) for r in result.history)
    assert mean_z(module).abs().max() < Z, mean_z(module)


@pytest.mark.parametrize("kind", ["numpy", "dataset", "dataloader"])
def test_every_input_kind_trains_the_same_as_a_tensor(data, kind):
    """A numpy array, a Dataset of (x, label) pairs and a DataLoader (its batch size used) give
    the same updates as the tensor: the batches are drawn by the loop's own generator."""
    inputs = {"numpy": data.numpy(), "dataset": TensorDataset(data, torch.zeros(N)),
              "dataloader": DataLoader(TensorDataset(data), batch_size=100, shuffle=True)}
    reference, other = DiagonalGaussian(2), DiagonalGaussian(2)
    fit(reference, "nce", data, steps=5, batch_size=100, seed=3)
    fit(other, "nce", inputs[kind], steps=5, seed=3, **({} if kind == "dataloader" else {"batch_size": 100}))
    assert torch.equal(reference.mu, other.mu) and torch.equal(reference.log_s, other.log_s)


def test_a_data_name_works_too():
    module = MLPEnergy(2, (8,))
    result = fit(module, "ssm", "8gaussians", steps=3, batch_size=32)
    assert result.step == 3


@pytest.mark.parametrize("objective", ["pcd", "dsm"])
def test_resume_through_run_dir_is_exact(tmp_path, data, objective):
    options = dict(steps=12, lr=0.05, batch_size=64, seed=4, checkpoint_every=3, ema_decay=0.5,
                   objective_options=FAMILIES[objective])
    straight = DiagonalGaussian(2)
    full = fit(straight, objective, data, run_dir=tmp_path / "full", **options)
    first = DiagonalGaussian(2)
    fit(first, objective, data, run_dir=tmp_path / "split", **{**options, "steps": 7})
    again = DiagonalGaussian(2)  # a fresh module, as a new process would have
    resumed = fit(again, objective, data, run_dir=tmp_path / "split", resume=True, **options)
    assert resumed.step == 12
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    no_time = [{k: v for k, v in r.items() if k != "time"} for r in resumed.history]
    assert no_time == [{k: v for k, v in r.items() if k != "time"} for r in full.history]
    saved, other = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    for key in saved["objective"]:
        assert torch.equal(torch.as_tensor(saved["objective"][key]), torch.as_tensor(other["objective"][key])), key


def test_a_fit_run_reloads_in_a_fresh_process(tmp_path, data):
    module = DiagonalGaussian(2)
    fit(module, "nce", data, steps=30, lr=0.05, batch_size=200, run_dir=tmp_path / "run", model_spec=SPEC,
        model_kwargs={"dim": 2})
    mlp = MLPEnergy(2, (8, 8))  # importable class: its module path and `config` are recorded by default
    fit(mlp, "dsm", data, steps=3, batch_size=64, run_dir=tmp_path / "mlp")
    code = ("import sys, torch, ebmlab\n"
            "e = ebmlab.load(sys.argv[1]); m = ebmlab.load(sys.argv[2])\n"
            "x = torch.tensor([[0.5, -1.0], [2.0, 0.0]])\n"
            "print(type(e).__name__, e.learned_log_z is not None, *e(x).tolist(), *m(x).tolist())\n")
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), str(tmp_path / "mlp")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    name, learned, *values = done.stdout.split()
    x = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    with torch.no_grad():
        expected = module(x).tolist() + mlp(x).tolist()
    assert name == "DiagonalGaussian" and learned == "True"
    assert [float(v) for v in values] == pytest.approx(expected, rel=1e-6)


def test_a_class_defined_in_a_script_says_how_to_make_the_run_loadable(tmp_path, data):
    class Local(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mu = torch.nn.Parameter(torch.zeros(2))

        def forward(self, x):
            return 0.5 * (x - self.mu).square().sum(-1)

    fit(Local(), "sm", data, steps=2, run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match="defined in a script.*model_spec="):
        ebmlab.load(tmp_path / "run")


@pytest.mark.parametrize("call,error,message", [
    (lambda d: fit(lambda x: x.sum(1), "sm", d, steps=1), TypeError, "energy must be a torch.nn.Module"),
    (lambda d: fit(DiagonalGaussian(2), 3, d, steps=1), TypeError, "objective must be a name"),
    (lambda d: fit(DiagonalGaussian(2), "nope", d, steps=1), ValueError, "unknown objective 'nope'"),
    (lambda d: fit(DiagonalGaussian(2), "sm", {"x": 1}, steps=1), TypeError, "data must be a tensor"),
    (lambda d: fit(DiagonalGaussian(2), "sm", d[:, :1], steps=1), ValueError, r"declares event_shape \(2,\)"),
    (lambda d: fit(DiagonalGaussian(2), "sm", d[:1], steps=1), ValueError, r"N >= 2"),
    (lambda d: fit(DiagonalGaussian(2), "sm", torch.full((4, 2), math.nan), steps=1), ValueError, "NaN"),
    (lambda d: fit(DiagonalGaussian(2), "sm", d, steps=-1), ValueError, "steps must be an integer >= 0"),
    (lambda d: fit(DiagonalGaussian(2), "sm", d, steps=1, lr=0), ValueError, "lr must be"),
    (lambda d: fit(DiagonalGaussian(2), "sm", d, steps=1, resume=True), ValueError, "resume=True needs run_dir"),
    (lambda d: fit(DiagonalGaussian(2), "sm", d, steps=1, seed=1, generator=torch.Generator()), ValueError,
     "generator or seed"),
    (lambda d: fit(DiagonalGaussian(2), "sm", d, steps=1, objective_options={"nope": 1}), ValueError,
     "unknown option"),
])
def test_bad_arguments_name_the_problem(data, call, error, message):
    with pytest.raises(error, match=message):
        call(data)


def test_an_existing_run_is_never_overwritten(tmp_path, data):
    fit(DiagonalGaussian(2), "sm", data, steps=1, run_dir=tmp_path / "run")
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        fit(DiagonalGaussian(2), "sm", data, steps=1, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_callbacks_see_every_update(data):
    seen = []

    class Hooks(ebmlab.Callback):
        def on_fit_start(self, loop):
            seen.append("start")

        def on_fit_end(self, loop):
            seen.append("end")

    fit(DiagonalGaussian(2), "sm", np.asarray(data), steps=4, callbacks=[Hooks(), lambda step, record, loop: seen.append(step)])
    assert seen == ["start", 1, 2, 3, 4, "end"]


def test_resume_refuses_to_stretch_a_cosine_schedule_and_names_the_fixes(tmp_path, data):
    """A cosine spanning ``steps`` cannot silently change length on resume (the resumed updates
    would get other rates than the run as started); the refusal names the settings that would do,
    and each of them runs."""
    from ebmlab.training.settings import SettingsError

    options = dict(lr=0.05, batch_size=64, seed=4, lr_schedule="cosine")
    fit(DiagonalGaussian(2), "nce", data, steps=6, run_dir=tmp_path / "run", **options)
    with pytest.raises(SettingsError, match=r"cosine learning-rate schedule over its 6 steps.*lr_decay_steps=10 "
                                            r".*lr_schedule='constant'"):
        fit(DiagonalGaussian(2), "nce", data, steps=10, run_dir=tmp_path / "run", resume=True, **options)
    assert load_checkpoint(tmp_path / "run")["step"] == 6  # nothing was changed
    again = fit(DiagonalGaussian(2), "nce", data, steps=10, run_dir=tmp_path / "run", resume=True,
                **{**options, "lr_decay_steps": 10})
    assert again.step == 10
    same = fit(DiagonalGaussian(2), "nce", data, steps=4, run_dir=tmp_path / "cut", **options)
    assert same.step == 4
    fit(DiagonalGaussian(2), "nce", data, steps=4, run_dir=tmp_path / "cut", resume=True, **options)  # the same total: nothing to refuse


def test_a_module_that_keeps_no_constructor_config_says_how_to_make_the_run_loadable(tmp_path, data):
    """ClassifierEnergy(net, K) built by hand cannot be rebuilt from what fit records: the load
    error names the fix (a factory as model_spec), and with it the run loads."""
    from ebmlab.energy import ClassifierEnergy

    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.SiLU(), torch.nn.Linear(8, 3))
    labels = torch.arange(len(data)) % 3
    fit(ClassifierEnergy(net, 3, event_shape=(2,)), "jem", data, labels=labels, steps=2, batch_size=64,
        run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match=r"missing 2 required.*to make such a run loadable, pass "
                                         r"fit\(\.\.\., model_spec='package.module:factory'"):
        ebmlab.load(tmp_path / "run")
    from ebmlab.energy.classifier import mlp_classifier

    fit(mlp_classifier((2,), num_classes=3, hidden=(8,)), "jem", data, labels=labels, steps=2, batch_size=64, run_dir=tmp_path / "factory",
        model_spec="ebmlab.energy.classifier:mlp_classifier", model_kwargs={"num_classes": 3, "hidden": [8]})
    assert ebmlab.load(tmp_path / "factory")(data[:4]).shape == (4,)


def test_a_float64_run_loads_back_in_float64(tmp_path, data):
    model = MLPEnergy(2, (8,)).double()
    trained = fit(model, "dsm", data.double(), steps=3, batch_size=64, run_dir=tmp_path / "run").model
    loaded = ebmlab.load(tmp_path / "run")
    assert next(loaded.parameters()).dtype == torch.float64
    x = data[:5].double()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x), rtol=0, atol=0)


def test_an_explicit_batch_size_wins_over_the_dataloaders_even_at_256(data):
    loader = DataLoader(TensorDataset(data), batch_size=17)
    seen = []
    fit(DiagonalGaussian(2), "sm", loader, steps=1, callbacks=[lambda step, record, loop: seen.append(
        loop.settings.batch_size)], log_every=1)
    fit(DiagonalGaussian(2), "sm", loader, steps=1, batch_size=256, callbacks=[lambda step, record, loop: seen.append(
        loop.settings.batch_size)], log_every=1)
    assert seen == [17, 256]


def test_a_dataset_of_dicts_is_refused_in_one_line(data):
    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return {"x": data[i]}

    with pytest.raises(TypeError, match=r"the Dataset's items are dicts \(keys \['x'\]\)"):
        fit(DiagonalGaussian(2), "sm", Dicts(), steps=1)


@pytest.mark.parametrize("optimizer, change", [("adam", {"weight_decay": 0.5}), ("adam", {"betas": (0.5, 0.6)}),
                                               ("sgd", {"momentum": 0.0})])
def test_resume_refuses_optimiser_settings_its_state_would_override(tmp_path, data, optimizer, change):
    """The optimiser's state holds momentum, betas and weight decay: a changed value would be
    silently ignored, so it is refused; the same call with the run's values resumes."""
    base = dict(steps=6, lr=0.05, batch_size=64, seed=4, optimizer=optimizer, momentum=0.9)
    fit(DiagonalGaussian(2), "nce", data, run_dir=tmp_path / "run", **{**base, "steps": 3})
    with pytest.raises(ValueError, match=r"resume with other settings than the run's: " + next(iter(change))):
        fit(DiagonalGaussian(2), "nce", data, run_dir=tmp_path / "run", resume=True, **{**base, **change})
    assert fit(DiagonalGaussian(2), "nce", data, run_dir=tmp_path / "run", resume=True, **base).step == 6
