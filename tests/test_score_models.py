"""Noise-conditional models: shapes, the two parametrisations, levels, registry, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import score as energy_score
from ebmlab.training.models import build_model
from ebmlab.samplers import MALA, sample
from ebmlab.energy.noise_conditional import NCSNConv, NCSNMLP, geometric_sigmas

MODELS = {
    "mlp": (lambda p: NCSNMLP(3, hidden=(16, 16, 16), parametrization=p), (3,)),
    "mlp-image": (lambda p: NCSNMLP((1, 4, 4), hidden=(16, 16), parametrization=p), (1, 4, 4)),
    "conv": (lambda p: NCSNConv(2, 5, 6, base_width=8, num_blocks=2, parametrization=p), (2, 5, 6)),
}


def build(name: str, parametrization: str):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        factory, event = MODELS[name]
        return factory(parametrization), event


def test_geometric_sigmas():
    """σ_1 = σ_max, σ_L = σ_min, constant ratio σ_{i+1}/σ_i = (σ_min/σ_max)^{1/(L-1)}."""
    sigmas = geometric_sigmas(10.0, 0.01, 4)
    assert torch.allclose(sigmas, torch.tensor([10.0, 1.0, 0.1, 0.01]))
    assert torch.equal(geometric_sigmas(0.3, 0.3, 1), torch.tensor([0.3]))
    for args, match in [((0.1, 1.0, 3), "sigma_max must be > sigma_min"), ((1.0, 0.0, 3), "sigma_min"),
                        ((1.0, 0.1, 0), "num_levels")]:
        with pytest.raises(ValueError, match=match):
            geometric_sigmas(*args)


@pytest.mark.parametrize("parametrization", ["score", "energy"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_and_finiteness(name, parametrization):
    """score: x.shape for a float σ or a (B,) σ; energy (energy parametrisation): (B,)."""
    model, event = build(name, parametrization)
    x = torch.randn(5, *event, generator=torch.Generator().manual_seed(1))
    for sigma in (0.3, torch.linspace(0.01, 3.0, 5)):
        s = model.score(x, sigma)
        assert s.shape == x.shape and torch.isfinite(s).all() and not s.requires_grad
    if parametrization == "energy":
        assert model(x).shape == (5,) and model.energy(x, 0.5).shape == (5,)
    else:
        with pytest.raises(ValueError, match="no energy"):
            model(x)
    with pytest.raises(ValueError, match="sigma"):
        model.score(x, torch.ones(4))
    with pytest.raises(ValueError, match="x must have shape"):
        model.score(torch.zeros(5, 7), 0.3)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_energy_parametrisation_score_is_minus_energy_gradient(name):
    """``score(x, σ) = -∇ₓ E(x, σ)`` (checked against the library's autograd score, float64)."""
    model, event = build(name, "energy")
    model = model.double()
    x = torch.randn(4, *event, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for sigma in (2.0, 0.05):
        expected = energy_score(model.at_sigma(sigma), x)
        assert torch.allclose(model.score(x, sigma), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("parametrization", ["score", "energy"])
def test_score_scales_like_one_over_sigma_at_initialisation(parametrization):
    """The NCSNv2 output scaling: for x of scale √(1 + σ²), σ‖s(x, σ)‖ does not depend on σ.

    At initialisation the σ-embedding is switched off (FiLM starts at the identity), so the
    network sees the same preconditioned input at every σ; a wrong power of σ in the output
    scaling would change the figure 10⁵-fold between σ = 100 and σ = 0.001.
    """
    model, _ = build("mlp", parametrization)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(3))
    scaled = [float((sigma * model.score(x * math.hypot(1, sigma), sigma)).norm(dim=1).mean())
              for sigma in (100.0, 1.0, 0.001)]
    assert min(scaled) > 0 and max(scaled) / min(scaled) < 1.01, scaled


@pytest.mark.parametrize("parametrization", ["score", "energy"])
def test_training_graph(parametrization):
    """With ``create_graph=True`` the score is differentiable in the parameters."""
    model, _ = build("mlp", parametrization)
    s = model.score(torch.randn(4, 3, generator=torch.Generator().manual_seed(4)), 0.5, create_graph=True)
    s.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_levels_and_checkpoint_round_trip():
    """The levels are a buffer: set, validated, and restored even when L differs from the default."""
    model, _ = build("mlp", "energy")
    assert model.sigmas.numel() == 10
    model.set_sigmas(geometric_sigmas(5.0, 0.1, 4))
    other, _ = build("mlp", "energy")
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.sigmas, model.sigmas)
    with pytest.raises(ValueError, match="strictly decreasing"):
        model.set_sigmas([0.1, 1.0])


def test_registry_factories():
    """``ncsn_mlp`` and ``ncsn_conv`` (both score by default) build from event shapes."""
    mlp = build_model("ncsn_mlp", (2,), hidden=[8, 8, 8])
    conv = build_model("ncsn_conv", (1, 8, 8), base_width=8, num_blocks=1)
    assert isinstance(mlp, NCSNMLP) and mlp.parametrization == "score" and mlp.event_shape == (2,)
    assert isinstance(conv, NCSNConv) and conv.parametrization == "score" and conv.event_shape == (1, 8, 8)
    with pytest.raises(ValueError, match="image events"):
        build_model("ncsn_conv", (64,))
    with pytest.raises(ValueError, match="parametrization"):
        build_model("ncsn_mlp", (2,), parametrization="density")


def test_energy_model_runs_with_mcmc_kernels(generator):
    """An energy-parametrised model is an ordinary energy (at σ_L) for the library's samplers."""
    model, _ = build("mlp", "energy")
    record = sample(model, MALA(step_size=1e-4), torch.zeros(8, 3), num_steps=3, generator=generator)
    assert record.samples.shape == (3, 8, 3) and torch.isfinite(record.energy).all()
