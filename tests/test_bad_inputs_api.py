"""Bad input to the library: each row one call, one exception type, a message naming the argument.

The command line's rows are in ``tests/test_bad_inputs.py``; these are the same promises for
Python callers — validation once, at the boundary, with a ``TypeError``/``ValueError`` (or the
library's own error types) whose message says what, where and what was received.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ebmlab.data.files import load_array, read_npy
from ebmlab.energy import Gaussian, Ising
from ebmlab.energy.base import value_and_grad
from ebmlab.energy.errors import EnergyRaisedError, describe_load_error, missing_entries, raised_by
from ebmlab.jobs.sampling import SampleJob, run_sampling_job, validate
from ebmlab.samplers import MALA, Gibbs, sample
from ebmlab.training.config import TrainConfig


class Detached(nn.Module):
    event_shape = (2,)

    def forward(self, x):
        return 0.5 * x.detach().pow(2).sum(-1)


class Constant(nn.Module):
    """Depends on its parameter, not on x: no gradient reaches the input."""

    event_shape = (2,)

    def __init__(self):
        super().__init__()
        self.c = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.c.expand(x.shape[0])


class Raises(nn.Module):
    event_shape = (2,)

    def __init__(self, after: int, error: Exception):
        super().__init__()
        self.after, self.error, self.calls = after, error, 0

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise self.error
        return 0.5 * x.pow(2).sum(-1)


def gaussian() -> Gaussian:
    return Gaussian(torch.zeros(2))


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


API_ROWS = [
    # samplers: x0 and the generator (validated once, in sample / kernel.init)
    ("x0-numpy", lambda: sample(gaussian(), MALA(0.1), np.zeros((2, 2)), 2, generator=gen()), TypeError, "x0"),
    ("x0-integer", lambda: sample(gaussian(), MALA(0.1), torch.zeros(2, 2, dtype=torch.long), 2, generator=gen()),
     TypeError, "x0"),
    ("x0-event-shape", lambda: sample(gaussian(), MALA(0.1), torch.zeros(2, 3), 2, generator=gen()), ValueError,
     "event shape"),
    ("x0-outside-support", lambda: sample(Ising(3), Gibbs(), torch.full((2, 3, 3), 2.0), 2, generator=gen()),
     ValueError, "0"),
    ("x0-nan", lambda: sample(gaussian(), MALA(0.1), torch.full((2, 2), float("nan")), 2, generator=gen()),
     ValueError, "x0"),
    ("num-steps-negative", lambda: sample(gaussian(), MALA(0.1), torch.zeros(2, 2), -1, generator=gen()),
     ValueError, "num_steps"),
    ("thin-0", lambda: sample(gaussian(), MALA(0.1), torch.zeros(2, 2), 2, thin=0, generator=gen()), ValueError,
     "thin"),
    ("adapt-unknown", lambda: sample(gaussian(), MALA(0.1), torch.zeros(2, 2), 2, adapt="sometimes", generator=gen()),
     ValueError, "adapt"),
    ("kernel-vs-support", lambda: sample(Ising(3), MALA(0.1), torch.zeros(2, 3, 3), 2, generator=gen()), ValueError,
     "binary"),
    # an energy that detaches its input: named, once, by value_and_grad
    ("energy-detached", lambda: value_and_grad(Detached(), torch.zeros(2, 2)), ValueError, "energy Detached"),
    ("energy-constant-in-x", lambda: value_and_grad(Constant(), torch.zeros(2, 2)), ValueError, "energy Constant"),
    ("energy-lambda-detached", lambda: value_and_grad(lambda x: x.detach().sum(-1), torch.zeros(2, 2)), ValueError,
     "does not depend on x"),
    # the sampling job (the library behind `ebmlab sample`)
    ("job-seed-negative", lambda: validate(SampleJob(energy="gmm8", sampler="mala", out="o.npz", seed=-1)),
     ValueError, "--seed"),
    ("job-step-size-overflow", lambda: validate(SampleJob(energy="gmm8", sampler="mala", out="o.npz", step_size=1e300)),
     ValueError, "--step-size"),
    ("job-unknown-sampler", lambda: validate(SampleJob(energy="gmm8", sampler="nosuch", out="o.npz")), ValueError,
     "nosuch"),
    # training settings
    ("config-wrong-type", lambda: TrainConfig().with_overrides(["lr=abc"]), ValueError, "--set lr=abc"),
    ("config-int-as-float", lambda: TrainConfig().with_overrides(["optim.steps=1.5"]), ValueError, "steps"),
    ("config-seed-2**40", lambda: TrainConfig.from_dict({"seed": 2**40}), ValueError, "seed"),
    ("config-lr-inf", lambda: TrainConfig.from_dict({"lr": float("inf")}), ValueError, "lr"),
    ("config-step-size-1e300", lambda: TrainConfig.from_dict({"step_size": 1e300}), ValueError, "step_size"),
    ("config-empty-data", lambda: TrainConfig.from_dict({"data": " "}), ValueError, "data"),
    ("config-int-2**70", lambda: TrainConfig.from_dict({"steps": 2**70}), ValueError, "steps"),
]


@pytest.mark.parametrize("call, error, needle", [row[1:] for row in API_ROWS], ids=[row[0] for row in API_ROWS])
def test_bad_library_call_raises_a_named_error(call, error, needle):
    with pytest.raises(error) as caught:
        call()
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value).strip()


@pytest.mark.parametrize("make, tmp_name, needle", [
    (lambda p: p.write_text("1,2\n3,4\n"), "text.npy", "looks like text"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 60), "zip.npy", "zip archive"),
    (lambda p: np.save(p, np.full((4, 2), 1e300)), "huge.npy", "row 0 holds 1e+300"),
    (lambda p: np.save(p, np.array([[1.0, 2.0], [3.0, -1e20]])), "big.npy", "row 1"),
    (lambda p: p.write_text("1,2\n1e300,3\n"), "huge.csv", "line 2"),
], ids=["text-as-npy", "zip-as-npy", "huge-npy", "large-second-row", "huge-csv"])
def test_data_files_name_the_file_and_the_row(tmp_path, make, tmp_name, needle):
    path = tmp_path / tmp_name
    make(path)
    with pytest.raises(ValueError) as caught:
        load_array(path)
    assert str(caught.value).startswith(str(path)) and needle in str(caught.value)


def test_read_npy_names_what_the_caller_says():
    with pytest.raises(ValueError, match="^--init 'x.npy': not a .npy array file"):
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".npy") as f:
            f.write(b"hello")
            f.flush()
            read_npy(f.name, "--init 'x.npy'")


@pytest.mark.parametrize("after, error, step", [(0, IndexError("index 9"), 0), (4, ValueError("too far"), 4)],
                         ids=["at-the-start", "mid-run"])
def test_an_energy_raising_in_a_sampling_job_is_named_with_the_step(tmp_path, monkeypatch, after, error, step):
    """``run_sampling_job`` names the energy's class, the exception and the step (0: the start);
    no output is written."""
    from ebmlab.jobs import sampling

    energy = Raises(after, error)  # MALA: one call for the start, then one per step

    def resolve(spec, event_shape=None):
        return energy, (2,), "real"

    monkeypatch.setattr(sampling, "resolve_energy", resolve)
    job = SampleJob(energy="raises", sampler="mala", out=str(tmp_path / "o.npz"), num_chains=2, num_steps=10,
                    burn_in=0)
    with pytest.raises(EnergyRaisedError) as caught:
        run_sampling_job(job)
    message = str(caught.value)
    assert message.startswith(f"energy Raises raised {type(error).__name__}: {error}")
    assert message.endswith("at the start (step 0)" if step == 0 else f" at step {step}")
    assert not (tmp_path / "o.npz").exists()


def test_the_library_s_own_errors_are_not_blamed_on_the_energy():
    """Negative control: an error raised outside the energy passes through unchanged."""
    energy = gaussian()
    try:
        raise ValueError("the sampler's own check")
    except ValueError as err:
        assert not raised_by(err, energy)
    try:
        energy(torch.zeros(2, 3))  # the energy itself fails
    except RuntimeError as err:
        assert raised_by(err, energy)


def test_checkpoint_mismatches_name_entries_and_shapes():
    model = nn.Sequential(nn.Linear(2, 8), nn.Linear(8, 1))
    saved = nn.Sequential(nn.Linear(2, 16), nn.Linear(16, 1)).state_dict()
    saved.pop("1.bias")
    saved["extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError) as caught:
        model.load_state_dict(saved)
    text = describe_load_error(caught.value)
    assert "missing entry 1.bias" in text and "unexpected entry extra" in text
    assert "0.weight has shape (16, 2) in the checkpoint but (8, 2) in the model" in text
    assert missing_entries({"model": {}, "rng": {"batches": 1}}, ("model", "rng.batches", "rng.objective", "step")) \
        == ["rng.objective", "step"]
