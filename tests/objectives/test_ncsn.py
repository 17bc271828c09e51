"""The NCSN objective: σ²-weighted denoising score matching over noise levels (Song & Ermon 2019).

Oracles: a loss computed by hand from the same draws; the closed-form expected loss of the
exact noised score of a Gaussian; and the closed-form noised score ``-(Σ + σ²I)⁻¹(x - μ)`` of
``N(μ, Σ)``, which a briefly trained model must match at every level.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ebmlab.energy import Gaussian, MLPEnergy
from ebmlab.objectives import make_objective
from ebmlab.objectives.ncsn import NCSNObjective, dsm_terms, max_pairwise_distance
from ebmlab.training.loading import load_run
from ebmlab.jobs.annealed_sampling import sample_run
from ebmlab.energy.noise_conditional import NCSNMLP, NoiseConditionalModel, geometric_sigmas
from train_helpers import train

Z = 4.5


class GaussianNoisedScore(NoiseConditionalModel):
    """``s(x, σ) = -x/(λ + σ²)``, the exact noised score of ``N(0, λI)``,
    times ``factor`` (1 = exact; other values are deliberately wrong models)."""

    def __init__(self, dim: int, lam: float, sigmas, factor: float = 1.0):
        super().__init__((dim,), sigmas, "score", 1.0)
        self.lam, self.factor = lam, factor

    def score(self, x, sigma, create_graph=False):
        sigma = self._sigma_batch(x, sigma)
        return -self.factor * x / (self.lam + sigma.square())[:, None]


def test_dsm_terms_by_hand():
    """x = 1, σ = 0.5, z = 2 (x̃ = 2), s = -2: ½ σ² (s + (x̃ - x)/σ²)² = ½ · 0.25 · (-2 + 4)² = 0.5."""
    terms = dsm_terms(torch.tensor([[-2.0], [0.0]]), torch.tensor([[2.0], [1.0]]), torch.tensor([0.5, 2.0]))
    assert torch.allclose(terms, torch.tensor([0.5, 0.5]))


def test_loss_matches_hand_computation_from_the_same_draws():
    """The loss is the mean of ½ σ_k² ‖s(x̃) + (x̃ - x)/σ_k²‖², recomputed here element by element.

    The objective draws the level indices ``k ~ U{0..L-1}`` (B,) and then the noise ``z`` (B, d)
    from the generator; the reference replays the same draws and evaluates the textbook form
    in plain Python floats (float64 throughout).
    """
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]], dtype=torch.float64)
    sigmas = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    model = GaussianNoisedScore(2, 1.0, sigmas).double()
    loss, metrics = NCSNObjective().loss(model, x, torch.Generator().manual_seed(7))

    g = torch.Generator().manual_seed(7)
    levels = torch.randint(0, 3, (3,), generator=g).tolist()
    noise = torch.randn((3, 2), generator=g, dtype=torch.float64).tolist()
    total = 0.0
    for b in range(3):
        sigma = sigmas[levels[b]].item()
        x_noisy = [x[b, j].item() + sigma * noise[b][j] for j in range(2)]
        score = [-v / (1.0 + sigma**2) for v in x_noisy]
        total += 0.5 * sigma**2 * sum((score[j] + (x_noisy[j] - x[b, j].item()) / sigma**2) ** 2 for j in range(2))
    assert loss.item() == pytest.approx(total / 3, rel=1e-12)
    assert metrics["loss"] == pytest.approx(total / 3, rel=1e-12)
    assert metrics["loss_per_dim"] == pytest.approx(total / 6, rel=1e-12)


def test_expected_loss_of_the_exact_score(generator):
    """For data N(0, λI) in d dims and the exact noised score, E[loss] = ½ mean_i d λ / (λ + σ_i²).

    (With x̃ = x + σz and s = -x̃/(λ+σ²): σs + z = (λz - σx)/(λ+σ²), whose mean square is
    dλ/(λ+σ²).) 50 independent batches of 1000; tolerance z = 4.5 standard errors of their
    mean (SE ≈ 0.004, so a shift of ≈ 0.02 in the expected loss is detected — e.g. a score
    off by a factor 1 + δ for δ ≳ 0.26, whose excess is ½δ² mean_i dσ_i²/(λ+σ_i²)).
    Negative control: the score scaled by 1.5 must fail.
    """
    lam, dim = 1.0, 2
    sigmas = geometric_sigmas(2.0, 0.1, 5).double()
    reference = 0.5 * float((dim * lam / (lam + sigmas.square())).mean())
    data = Gaussian(torch.zeros(dim, dtype=torch.float64), std=math.sqrt(lam)).double()
    objective = NCSNObjective()

    def z_score(factor: float) -> float:
        model = GaussianNoisedScore(dim, lam, sigmas, factor).double()
        losses = torch.tensor([objective.loss(model, data.sample(1000, generator), generator)[0].item()
                               for _ in range(50)], dtype=torch.float64)
        return float((losses.mean() - reference) / (losses.std() / math.sqrt(losses.numel())))

    assert abs(z_score(1.0)) < Z
    assert abs(z_score(1.5)) > Z


# ---------------------------------------------------------------------- learned score vs closed form

MU = torch.tensor([1.0, -0.5])
COV = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
LEVELS = geometric_sigmas(2.0, 0.1, 6)
STEPS, BATCH = 1500, 256


def dsm_floor(sigma: float, num_examples: int) -> float:
    """Relative L2 error of the best affine least-squares fit of the DSM targets at level σ.

    DSM regresses the targets ``y = -z/σ`` on ``x̃``; for Gaussian data ``E[y | x̃]`` is the
    noised score (affine in x̃) and the residual covariance ``Cov(z | x̃)/σ² =
    Σ(Σ + σ²I)⁻¹/σ²`` is constant, so ordinary least squares with p = d + 1 regressors per
    output on n examples has expected excess risk ``p tr(Σ(Σ+σ²I)⁻¹) / (σ² n)``; relative to
    ``E‖s‖² = tr((Σ + σ²I)⁻¹)`` and square-rooted, that is the floor returned here.
    """
    noised = COV + sigma**2 * torch.eye(2)
    residual = torch.trace(COV @ torch.linalg.inv(noised)) / sigma**2
    signal = torch.trace(torch.linalg.inv(noised))
    return math.sqrt(3 * float(residual) / (num_examples * float(signal)))


def relative_errors(model: NCSNMLP, query_levels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per level i: ``√(E‖s_θ(x, σ'_i) - s*(x, σ_i)‖² / E‖s*(x, σ_i)‖²)``, x ~ q_{σ_i} (4000 points)."""
    errors = []
    for sigma, query in zip(LEVELS.tolist(), query_levels.tolist()):
        noised = COV + sigma**2 * torch.eye(2)
        x = Gaussian(MU, noised).sample(4000, generator)
        exact = -(x - MU) @ torch.linalg.inv(noised)
        estimate = model.score(x, query).detach()
        errors.append(((estimate - exact).square().sum(1).mean() / exact.square().sum(1).mean()).sqrt())
    return torch.stack(errors)


@pytest.mark.parametrize("parametrization", ["score", "energy"])
def test_learned_score_matches_the_noised_gaussian_score(parametrization, generator):
    """A small model trained by the NCSN objective on N(μ, Σ) learns ``-(Σ + σ²I)⁻¹(x - μ)``.

    An MLP without Fourier features (the target is affine in x), trained by 1500 Adam steps
    (batch 256, cosine-decayed learning rate) over 6 levels σ = 2 … 0.1, i.e.
    n = 64,000 examples per level. Check: the relative L2 error averaged over the levels is
    below twice the DSM floor of the hardest (smallest) level, ``2 · dsm_floor(0.1, n) ≈ 0.096``
    — the error that even the best affine least-squares fit of the same number of noisy DSM
    targets would make (the estimator noise grows like 1/σ); the factor 2 leaves room for the
    network's optimisation error (measured here: 0.043 for the score and 0.052 for the energy
    parametrisation, largest at the two smallest levels). So a score wrong by ≈ 10 % on average is detected. Negative controls: the
    untrained model and the trained model queried at the neighbouring level must fail
    the same bound (measured: ≈ 0.96 and ≈ 0.6).
    """
    n_per_level = STEPS * BATCH // LEVELS.numel()
    bound = 2 * max(dsm_floor(s, n_per_level) for s in LEVELS.tolist())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = NCSNMLP(2, hidden=(64, 64), sigmas=LEVELS, parametrization=parametrization, fourier_features=0)
    untrained = relative_errors(model, LEVELS, generator).mean()

    data, objective = Gaussian(MU, COV), NCSNObjective()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, STEPS)
    for _ in range(STEPS):
        loss, _ = objective.loss(model, data.sample(BATCH, generator), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()

    trained = relative_errors(model, LEVELS, generator)
    neighbours = torch.cat([LEVELS[1:], LEVELS[-2:-1]])
    wrong_level = relative_errors(model, neighbours, generator).mean()
    assert trained.mean() < bound, f"errors per level {trained.tolist()}, bound {bound:.3f}"
    assert untrained > bound and wrong_level > bound, (float(untrained), float(wrong_level), bound)


# ---------------------------------------------------------------------- set-up, registry, integration


def test_setup_sets_the_levels_from_the_data():
    """σ_max defaults to the largest pairwise distance (NCSNv2); explicit σ_max wins."""
    data = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    assert max_pairwise_distance(data) == pytest.approx(5.0)
    model = NCSNMLP(2, hidden=(8, 8, 8))
    NCSNObjective(sigma_min=0.1, num_levels=4).setup(model, data)
    assert torch.allclose(model.sigmas, geometric_sigmas(5.0, 0.1, 4))
    make_objective("ncsn", sigma_max=2.0, sigma_min=0.5, num_levels=3).setup(model, data)
    assert torch.allclose(model.sigmas, torch.tensor([2.0, 1.0, 0.5]))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"sigma_max": 0.01, "sigma_min": 0.1}, "sigma_max"), ({"num_levels": 1}, "num_levels"),
     ({"sigma_min": 0.0}, "sigma_min")],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_objective("ncsn", **kwargs)


def test_refuses_a_model_that_is_not_noise_conditional(generator):
    with pytest.raises(ValueError, match="ncsn_mlp or ncsn_conv"):
        NCSNObjective().loss(MLPEnergy(2), torch.zeros(4, 2), generator)


def test_trains_through_the_trainer_and_the_levels_survive_the_checkpoint(tmp_path):
    """``train`` with objective ncsn and model ncsn_mlp: finite losses, pictures from annealed
    Langevin, the levels set from the data stored with the model, and annealed samples of
    the loaded run in data space (:func:`sample_run`)."""
    config = {"data": "8gaussians", "num_samples": 500, "model": "ncsn_mlp", "model_kwargs": {"hidden": [16, 16, 16], "parametrization": "energy"},
              "objective": "ncsn", "objective_kwargs": {"num_levels": 4, "sigma_min": 0.05, "sample_steps_per_level": 5},
              "steps": 5, "batch_size": 64, "plot_samples": 100, "progress": "off", "out": str(tmp_path / "run")}
    result = train(config)
    assert all(math.isfinite(r["loss"]) for r in result.metrics) and len(result.metrics) == 5
    assert {p.name for p in result.pictures} >= {"samples.png", "density.png"}
    run = load_run(tmp_path / "run")
    assert torch.equal(run.model.sigmas, result.model.sigmas)
    assert run.model.sigmas.numel() == 4 and run.model.sigmas[-1].item() == pytest.approx(0.05)
    assert run.energy(torch.zeros(3, 2)).shape == (3,)
    draws = sample_run(run, 7, torch.Generator().manual_seed(0), steps_per_level=3)
    assert draws.shape == (7, 2) and torch.isfinite(draws).all()
    with pytest.raises(ValueError, match="noise-conditional"):
        sample_run(SimpleNamespace(model=MLPEnergy(2)), 7)
