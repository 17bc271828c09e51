"""The recommended settings of every objective family on the 2-D toy sets (:mod:`ebmlab.training.presets`).

Each preset trains (a few dozen updates, small data) and lowers the held-out NLL between its first
and its last evaluation by more than the same run with a learning rate too small to move the
weights (the negative control, which must not pass the same bar); the preset layer fills only the
settings a user leaves unset. The long runs that reach the floor are benchmarks/likelihood.py's
(docs/likelihood.md).
"""

from __future__ import annotations

import json

import pytest
import torch

from ebmlab.cli.train import build_config
from ebmlab.objectives.mixture_noise import fit_gaussian_mixture
from ebmlab.training.config import TrainConfig
from ebmlab.training.presets import TOY_OBJECTIVE, TOY_SETTINGS, recommend
from ebmlab.training.run import train

STEPS = 60
#: the fall of the held-out NLL (nats) a preset must show in STEPS updates; the control stays below.
#: Every evaluation scores the same held-out points, so the fall is a paired difference with no
#: sampling noise between evaluations: the frozen run (lr 1e-7) measured 1e-4 (rounding and the
#: quadrature grid), the presets 0.044 (dsm, the smallest) to 0.33 (replay). 0.03 lies between the
#: two, 300x the frozen run's fall.
MIN_IMPROVEMENT = 0.03


def preset_run(tmp_path, objective: str, **explicit) -> list[float]:
    """Held-out NLLs every 10 updates of ``ebmlab train --data 8gaussians --objective OBJECTIVE``."""
    options = {"data": "8gaussians", "objective": objective, "steps": STEPS, "num_samples": 1200, **explicit}
    config = build_config(None, None, {}, tuple(f"{k}={json.dumps(v)}" for k, v in options.items()))
    result = train(config, out=tmp_path / f"{objective}-{config.lr:g}", heldout_every=10)
    return [r["heldout_nll"] for r in result.metrics if "heldout_nll" in r]


@pytest.mark.parametrize("objective", sorted(TOY_SETTINGS))
def test_each_preset_lowers_the_heldout_nll(tmp_path, objective):
    torch.manual_seed(0)
    nll = preset_run(tmp_path, objective)
    assert len(nll) == STEPS // 10 and all(map(torch.isfinite, torch.tensor(nll)))
    assert nll[0] - nll[-1] > MIN_IMPROVEMENT, nll


def test_negative_control_a_frozen_run_does_not_improve(tmp_path):
    nll = preset_run(tmp_path, TOY_OBJECTIVE, lr=1e-7)
    assert nll[0] - nll[-1] < MIN_IMPROVEMENT, nll


def test_presets_fill_only_unset_settings():
    defaults = TrainConfig().to_dict()
    objective = TOY_OBJECTIVE
    filled, _ = recommend(defaults, set())
    assert filled["objective"] == objective  # the toy sets' recommended objective when none is named
    for key, value in TOY_SETTINGS[objective].items():
        table, _, sub = key.partition(".")
        assert (filled[table][sub] if sub else filled[key]) == value, key
    explicit, _ = recommend({**defaults, "objective": "sm", "lr": 0.5}, {"objective", "lr"})
    assert (explicit["objective"], explicit["lr"]) == ("sm", 0.5)  # the user's choices win
    one_option, _ = recommend(defaults, {"objective_kwargs.noise_ratio"})
    assert one_option["objective_kwargs"].get("noise_ratio", None) == defaults["objective_kwargs"].get("noise_ratio")
    whole_table, _ = recommend(defaults, {"objective_kwargs"})
    assert whole_table["objective_kwargs"] == {}  # a table named as a whole is left alone
    elsewhere, _ = recommend({**defaults, "data": "digits-flat"}, set())
    assert elsewhere["objective"] == defaults["objective"]  # not a toy set: no toy preset


def test_cli_options_beat_the_preset():
    config = build_config(None, None, {"lr": 0.01, "steps": 7}, ("ema_decay=0.5",))
    assert (config.lr, config.steps, config.ema_decay) == (0.01, 7, 0.5)
    assert config.objective == TOY_OBJECTIVE


def test_gaussian_mixture_noise_recovers_two_components():
    """EM on 4,000 draws of ¼ N(-2, 0.5²) + ¾ N(3, 1) (2-D, independent coordinates): weights within
    0.03 and means within 0.1 (about 4.5 standard errors); the log-density integrates to 1."""
    g = torch.Generator().manual_seed(0)
    n = 4000
    first = torch.rand(n, generator=g) < 0.25
    x = torch.where(first[:, None], -2 + 0.5 * torch.randn(n, 2, generator=g), 3 + torch.randn(n, 2, generator=g))
    mixture = fit_gaussian_mixture(x, 2, torch.Generator().manual_seed(1))
    order = mixture.means[:, 0].argsort()
    assert torch.allclose(mixture.log_weights.exp()[order], torch.tensor([0.25, 0.75], dtype=torch.float64), atol=0.03)
    assert torch.allclose(mixture.means[order], torch.tensor([[-2.0, -2.0], [3.0, 3.0]], dtype=torch.float64), atol=0.1)
    axis = torch.linspace(-8, 10, 401, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    mass = float(mixture.log_prob(grid).exp().sum() * (axis[1] - axis[0]) ** 2)
    assert abs(mass - 1) < 1e-3


def test_dsm_sigma_annealing_is_geometric_and_survives_a_checkpoint():
    from ebmlab.energy.neural import MLPEnergy
    from ebmlab.objectives import make_objective

    dsm = make_objective("dsm", sigma=0.01, sigma_max=1.0, anneal_steps=4)
    assert [dsm.sigma_at(t) for t in (0, 2, 4, 9)] == pytest.approx([1.0, 0.1, 0.01, 0.01])
    energy, batch, g = MLPEnergy(2, (8,)), torch.randn(16, 2), torch.Generator().manual_seed(0)
    sigmas = [dsm.loss(energy, batch, g)[1]["sigma"] for _ in range(3)]
    assert sigmas == pytest.approx([1.0, 10 ** -0.5, 0.1])
    resumed = make_objective("dsm", sigma=0.01, sigma_max=1.0, anneal_steps=4)
    resumed.load_state_dict(dsm.state_dict())
    assert resumed.loss(energy, batch, g)[1]["sigma"] == pytest.approx(10 ** -1.5)
    assert make_objective("dsm").state_dict() == {}  # no annealing: no state, as before
    with pytest.raises(ValueError, match="sigma_max must be >= sigma"):
        make_objective("dsm", sigma=0.5, sigma_max=0.1, anneal_steps=3)
