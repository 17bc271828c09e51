"""Registries (objectives, models), noise sources, the replay buffer and objective state."""

from __future__ import annotations

import math

import pytest
import torch
from quadratic_energy_helpers import single_thread  # noqa: F401

from ebmlab.energy.neural import MLPEnergy
from ebmlab.energy.neural import FlattenedEnergy
from ebmlab.training.models import available_models, build_model, register_model
from ebmlab.objectives import (
    NoiseContrastiveEstimation, NoiseSource, Objective, PersistentCD, ReplayBuffer, ReplayCD, available_objectives,
    get_objective_class, make_objective, register_objective,
)
from ebmlab.samplers import ULA

pytestmark = pytest.mark.usefixtures("single_thread")


def test_objective_registry():
    assert {"cd", "pcd", "replay", "sm", "ssm", "dsm", "nce"} <= set(available_objectives())
    assert get_objective_class("replay") is ReplayCD

    class Duplicate(Objective):
        name = "dsm"

    with pytest.raises(ValueError, match="already exists"):
        register_objective(Duplicate)
    with pytest.raises(ValueError, match="has no name"):
        register_objective(type("Nameless", (Objective,), {}))
    with pytest.raises(ValueError, match="unknown objective 'nope'; choose one of .*dsm"):
        make_objective("nope")
    with pytest.raises(ValueError, match=r"objective 'dsm': unknown option\(s\) 'steps'; it accepts sigma, weighting"):
        make_objective("dsm", steps=3)


@pytest.mark.parametrize("name, options, message", [
    ("dsm", {"sigma": 0}, "sigma must be > 0"),
    ("dsm", {"weighting": "x"}, "weighting"),
    ("ssm", {"num_projections": 0}, "num_projections"),
    ("ssm", {"projection": "sphere"}, "projection"),
    ("nce", {"noise_ratio": -1}, "noise_ratio"),
    ("cd", {"num_steps": 0}, "num_steps"),
    ("cd", {"alpha": -1}, "alpha"),
    ("replay", {"restart_prob": 2}, "restart_prob"),
    ("replay", {"noise": "pink"}, "noise must be one of"),
    ("pcd", {"init": "zeros"}, "init"),
])
def test_objective_options_are_validated(name, options, message):
    with pytest.raises(ValueError, match=message):
        make_objective(name, **options)


def test_kernel_can_be_given_by_name_or_table():
    assert make_objective("cd", kernel="mala").kernel.name == "mala"
    cd = make_objective("cd", kernel={"name": "ula", "step_size": 0.2, "noise_scale": 0.5})
    assert (cd.kernel.step_size, cd.kernel.noise_scale) == (0.2, 0.5)


def test_model_registry():
    assert {"mlp", "conv"} <= set(available_models())
    mlp = build_model("mlp", (3,), hidden=[4])
    assert isinstance(mlp, MLPEnergy) and mlp(torch.zeros(5, 3)).shape == (5,)
    flat = build_model("mlp", (1, 4, 4), hidden=[4])
    assert isinstance(flat, FlattenedEnergy) and flat(torch.zeros(2, 1, 4, 4)).shape == (2,)
    conv = build_model("conv", (1, 8, 8), base_width=4, spectral_norm=True)
    assert conv(torch.zeros(2, 1, 8, 8)).shape == (2,) and conv.event_shape == (1, 8, 8)
    assert build_model("conv", (8, 8), base_width=4)(torch.zeros(2, 8, 8)).shape == (2,)
    with pytest.raises(ValueError, match="already exists"):
        register_model("mlp", lambda event_shape: None)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope", (2,))
    with pytest.raises(ValueError, match="unknown option.*it accepts hidden, spectral_norm"):
        build_model("mlp", (2,), width=3)


def test_noise_sources():
    g = torch.Generator().manual_seed(0)
    data = torch.tensor([[0.0, -1.0], [2.0, 3.0], [1.0, 0.0]])
    uniform = NoiseSource("uniform").fit(data).sample(1000, g)
    assert uniform.shape == (1000, 2)
    assert (uniform.min(0).values >= torch.tensor([0.0, -1.0])).all()
    assert (uniform.max(0).values <= torch.tensor([2.0, 3.0])).all()
    gaussian = NoiseSource("gaussian").fit(data).sample(10, g)
    assert gaussian.shape == (10, 2)
    binary = NoiseSource(support="binary").fit(torch.zeros(4, 1, 3, 3)).sample(7, g)
    assert binary.shape == (7, 1, 3, 3) and set(binary.unique().tolist()) <= {0.0, 1.0}
    states = NoiseSource(support="categorical").fit(torch.tensor([[0.0, 4.0]])).sample(200, g)
    assert set(states.unique().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}
    with pytest.raises(ValueError, match="kind"):
        NoiseSource("pink")
    with pytest.raises(RuntimeError, match="fit"):
        NoiseSource().sample(3, g)


def test_replay_buffer_draws_distinct_slots_and_writes_back():
    buffer = ReplayBuffer(torch.arange(10.0).view(10, 1))
    x, index = buffer.draw(10, torch.Generator().manual_seed(0))
    assert sorted(index.tolist()) == list(range(10))
    buffer.update(index[:3], torch.full((3, 1), -1.0))
    assert (buffer.samples[index[:3]] == -1).all() and (buffer.samples[index[3:]] >= 0).all()
    with pytest.raises(ValueError, match="cannot draw 11"):
        buffer.draw(11, None)


def test_replay_restart_rate():
    """Restarts are Bernoulli(p) per chain: over 200 updates of 50 chains the count is
    Binomial(10000, p) — within z = 4.5 standard deviations (±98) of 10000p for p = 0.05;
    the negative control (the count expected for p = 0.07, +200) lies far outside. Smallest
    detectable error in p: 4.5·√(p(1-p)/10000) ≈ 0.01."""
    torch.manual_seed(0)
    energy = MLPEnergy(dim=2, hidden=(4,))
    g = torch.Generator().manual_seed(1)
    objective = ReplayCD(ULA(step_size=1e-3), num_steps=1, buffer_size=100, restart_prob=0.05)
    objective.setup(energy, torch.randn(20, 2, generator=g), g)
    batch = torch.zeros(50, 2)
    count = sum(round(objective.loss(energy, batch, g)[1]["restarted"] * 50) for _ in range(200))
    sd = math.sqrt(10000 * 0.05 * 0.95)
    assert abs(count - 500) < 4.5 * sd
    assert abs(count - 700) > 4.5 * sd


def test_objective_state_round_trips():
    g = torch.Generator().manual_seed(0)
    energy = MLPEnergy(dim=2, hidden=(4,))
    data = torch.randn(30, 2, generator=g)
    for objective in (PersistentCD(num_steps=1), ReplayCD(num_steps=1, buffer_size=40), NoiseContrastiveEstimation()):
        objective.setup(energy, data, g)
        objective.loss(energy, data[:8], g)
        state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in objective.state_dict().items()}
        twin = type(objective)()
        twin.load_state_dict(state)
        for k, v in twin.state_dict().items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(state[k])), k
        with pytest.raises(ValueError, match="unexpected"):
            twin.load_state_dict({**state, "extra": 1})
