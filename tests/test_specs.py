"""Energy SPEC resolution: built-ins, user files and modules, run directories, shape checks.

Deterministic tests: each SPEC must resolve to the right energy, event shape and support, and
each bad SPEC must raise a one-line error that names it.
"""

from __future__ import annotations

import textwrap

import pytest
import torch

from ebmlab.energy import Banana, Funnel, Gaussian, GaussianMixture, Ising, Potts
from ebmlab.jobs.specs import describe_builtin, list_builtin, parse_event_shape, resolve_energy

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


    class Column(nn.Module):
        event_shape = (2,)

        def forward(self, x):
            return x.sum(-1, keepdim=True)


    class Categorical(nn.Module):
        event_shape = (4,)
        support = "categorical"
        num_states = 3

        def forward(self, x):
            return x.sum(-1)


    class WrongShape(nn.Module):
        event_shape = (2,)

        def forward(self, x):
            return x


    class Scalar(nn.Module):
        event_shape = (2,)

        def forward(self, x):
            return x.pow(2).sum()


    class Raises(nn.Module):
        event_shape = (2,)

        def forward(self, x):
            raise RuntimeError("boom\\nsecond line")


    class BadSupport(nn.Module):
        event_shape = (2,)
        support = "complex"

        def forward(self, x):
            return x.sum(-1)


    class NotAModule:
        pass


    instance = Quad()


    def factory():
        return Quad()


    def bad_factory():
        return 42


    def failing_factory():
        raise ValueError("no weights here")


    def needs_args(scale):
        return Quad()


    NOT_CALLABLE = 3
    """
)


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("specs") / "user_energies.py"
    path.write_text(USER_FILE)
    return path


@pytest.mark.parametrize(
    "spec, cls, event_shape, support",
    [
        ("gaussian:3", Gaussian, (3,), "real"),
        ("gaussian2d-corr", Gaussian, (2,), "real"),
        ("gmm8", GaussianMixture, (2,), "real"),
        ("banana", Banana, (2,), "real"),
        ("funnel", Funnel, (2,), "real"),
        ("funnel:5", Funnel, (5,), "real"),
        ("ising:3", Ising, (3, 3), "binary"),
        ("ising:4:0.5:0.1", Ising, (4, 4), "binary"),
        ("potts:3:4", Potts, (3, 3), "categorical"),
        ("potts:2:3:1.5", Potts, (2, 2), "categorical"),
    ],
)
def test_builtin_specs_resolve(spec, cls, event_shape, support):
    energy, shape, supp = resolve_energy(spec, None)
    assert isinstance(energy, cls)
    assert shape == event_shape and supp == support


def test_builtin_parameters_are_parsed():
    gauss = resolve_energy("gaussian:3", None)[0]
    assert torch.equal(gauss.covariance, torch.eye(3)) and torch.equal(gauss.mean, torch.zeros(3))
    corr = resolve_energy("gaussian2d-corr", None)[0]
    assert torch.allclose(corr.covariance, torch.tensor([[1.0, 0.8], [0.8, 1.0]]))
    assert resolve_energy("gmm8", None)[0].means.shape == (8, 2)
    ising = resolve_energy("ising:4:0.5:-0.25", None)[0]
    assert (ising.size, ising.coupling, ising.field) == (4, 0.5, -0.25)
    potts = resolve_energy("potts:2:3:1.5", None)[0]
    assert (potts.size, potts.num_states, potts.coupling) == (2, 3, 1.5)


def test_list_builtin_matches_descriptions():
    names = list_builtin()
    assert {"gaussian:D", "gaussian2d-corr", "gmm8", "banana"} <= set(names)
    assert any(n.startswith("ising:L") for n in names) and any(n.startswith("potts:L:K") for n in names)
    assert list(describe_builtin()) == names


def test_explicit_event_shape_must_agree_with_declared():
    assert resolve_energy("gmm8", (2,))[1] == (2,)
    with pytest.raises(ValueError, match=r"'gmm8' has event shape \(2,\), but --event-shape \(3,\)"):
        resolve_energy("gmm8", (3,))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gaussian", "expected the form gaussian:D"),
        ("gaussian:0", "D must be >= 1"),
        ("gaussian:two", "D must be an integer"),
        ("funnel:1", "D must be >= 2"),
        ("gmm8:2", "expected the form gmm8"),
        ("ising:1", "L must be >= 2"),
        ("ising:3:strong", "J must be a number"),
        ("ising:3:0.1:0.2:0.3", "expected the form ising:L"),
        ("potts:3", "expected the form potts:L:K"),
        ("nosuch", "unknown energy 'nosuch'"),
        ("", "empty SPEC"),
    ],
)
def test_bad_builtin_specs(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        resolve_energy(spec, None)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["Quad", "instance", "factory"])
def test_user_file_class_instance_and_factory(user_file, name):
    energy, shape, support = resolve_energy(f"{user_file}:{name}", None)
    assert shape == (3,) and support == "real"
    x = torch.ones(4, 3)
    assert torch.allclose(energy(x), torch.full((4,), 1.5))


def test_user_file_instance_is_the_module_attribute(user_file):
    first = resolve_energy(f"{user_file}:instance", None)[0]
    assert resolve_energy(f"{user_file}:instance", None)[0] is first


def test_user_file_event_shape_from_argument(user_file):
    energy, shape, _ = resolve_energy(f"{user_file}:NoShape", (2, 5))
    assert shape == (2, 5)
    with pytest.raises(ValueError, match="does not declare an event_shape; pass --event-shape"):
        resolve_energy(f"{user_file}:NoShape", None)


def test_column_output_and_categorical_support(user_file):
    assert resolve_energy(f"{user_file}:Column", None)[1] == (2,)
    _, shape, support = resolve_energy(f"{user_file}:Categorical", None)
    assert shape == (4,) and support == "categorical"


@pytest.mark.parametrize(
    "name, exc, message",
    [
        ("WrongShape", ValueError, r"must map x of shape \(2, 2\) to shape \(2,\), got \(2, 2\)"),
        ("Scalar", ValueError, r"to shape \(2,\), got \(\)"),
        ("Raises", ValueError, "failed on a trial batch of shape .*RuntimeError: boom$"),
        ("BadSupport", ValueError, "support must be one of real, binary, categorical, got 'complex'"),
        ("NotAModule", ValueError, "expected an nn.Module subclass, instance or a factory"),
        ("bad_factory", ValueError, "the factory returned int, not an nn.Module"),
        ("failing_factory", ValueError, r"calling failing_factory\(\) failed: ValueError: no weights here"),
        ("needs_args", ValueError, "a factory taking no arguments"),
        ("NOT_CALLABLE", ValueError, "got int"),
        ("Missing", ValueError, "has no attribute 'Missing'"),
    ],
)
def test_bad_user_objects(user_file, name, exc, message):
    spec = f"{user_file}:{name}"
    with pytest.raises(exc, match=message) as info:
        resolve_energy(spec, None)
    assert spec in str(info.value) and "\n" not in str(info.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_energy(f"{tmp_path}/absent.py:E", None)
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    with pytest.raises(ValueError, match="importing .*broken.py' failed: SyntaxError"):
        resolve_energy(f"{broken}:E", None)
    failing = tmp_path / "failing_import.py"
    failing.write_text("raise ImportError('needs a missing package')\n")
    with pytest.raises(ValueError, match="failed: ImportError: needs a missing package"):
        resolve_energy(f"{failing}:E", None)


def test_package_module_specs():
    energy, shape, support = resolve_energy("ebmlab.energy.analytic:Banana", None)
    assert isinstance(energy, Banana) and shape == (2,) and support == "real"
    assert isinstance(resolve_energy("ebmlab.energy:eight_gaussians", None)[0], GaussianMixture)
    with pytest.raises(ValueError, match="cannot import module 'no_such_package_xyz.energies'"):
        resolve_energy("no_such_package_xyz.energies:E", None)
    with pytest.raises(ValueError, match="has no attribute 'NoSuchEnergy'"):
        resolve_energy("ebmlab.energy:NoSuchEnergy", None)


def test_run_directory_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no checkpoint.pt"):
        resolve_energy(str(tmp_path), None)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    # Whether or not ebmlab.training.loading is installed, an unreadable checkpoint is a clear one-line error.
    with pytest.raises(ValueError, match=f"energy '{tmp_path}'") as info:
        resolve_energy(str(tmp_path), None)
    assert "\n" not in str(info.value)


def test_run_directory_is_loaded_with_ebmlab_runs(tmp_path, monkeypatch):
    """The run's own loader is used, and its module's event shape and support are kept."""
    import ebmlab.training.loading

    loaded = Ising(3)
    calls = []
    monkeypatch.setattr(ebmlab.training.loading, "load", lambda run_dir: calls.append(run_dir) or loaded)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    energy, shape, support = resolve_energy(str(tmp_path), None)
    assert energy is loaded and (shape, support) == ((3, 3), "binary")
    assert [str(p) for p in calls] == [str(tmp_path)]


@pytest.mark.parametrize(
    "text, shape", [("1,28,28", (1, 28, 28)), ("2", (2,)), ("(3, 4)", (3, 4)), (None, None), ("", None)]
)
def test_parse_event_shape(text, shape):
    assert parse_event_shape(text) == shape


@pytest.mark.parametrize("text", ["a,b", "0", "1,-2", ",", "2.5"])
def test_parse_event_shape_rejects(text):
    with pytest.raises(ValueError, match="--event-shape must be comma-separated positive integers"):
        parse_event_shape(text)
