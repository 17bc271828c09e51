"""ClassifierEnergy: the marginal, joint and conditional energies of a classifier, and samplers on them.

Identities tested exactly (to float rounding): ``E(x) = -logsumexp f(x)``,
``E(x, y) = -f(x)[y]``, ``exp(E(x) - E(x, y)) = softmax f(x)[y]`` (= p(y|x), summing to 1 over
y), and the conditional module equals the joint energy for a fixed class and for one class per
chain. Every registered real-valued sampler runs on the marginal and on a per-chain conditional
(shapes and finiteness), and the conditional's gradient is the joint energy's. NUTS, which
evaluates only the chains still building their trees, asks the conditional for those rows: on a
classifier whose class-k conditional is N(μ_k, I), its chains with one class each keep their
class's mean (z = 4.5 on ArviZ's MCSE); a conditional that ignores the rows asked for fails.
"""

from __future__ import annotations

import pytest
import torch

from ebmlab.energy.base import value_and_grad
from ebmlab.energy.classifier import ClassifierEnergy, ConditionalEnergy, digit_classifier, jem_energy, mlp_classifier
from ebmlab.samplers import available, make_kernel, sample
from ebmlab.training.models import build_model

REAL_SAMPLERS = [n for n in available() if make_kernel(n).support == "real"]


@pytest.fixture
def conv():
    torch.manual_seed(0)
    return digit_classifier((1, 8, 8), num_classes=10, width=8).double()


@pytest.fixture
def images(generator):
    return torch.rand(6, 1, 8, 8, generator=generator, dtype=torch.float64)


def test_marginal_is_minus_logsumexp_of_logits(conv, images):
    logits = conv.logits(images)
    assert logits.shape == (6, 10)
    torch.testing.assert_close(conv(images), -torch.logsumexp(logits, 1), rtol=0, atol=1e-12)
    assert conv.event_shape == (1, 8, 8) and conv.num_classes == 10


def test_joint_and_conditional_give_the_softmax(conv, images):
    """p(y|x) = exp(E(x) - E(x, y)) is softmax f(x), a distribution over y; conditional(y) = E(x, y)."""
    e = conv(images)
    joint = torch.stack([conv.joint_energy(images, torch.full((6,), y)) for y in range(10)], 1)
    p = torch.exp(e.unsqueeze(1) - joint)
    torch.testing.assert_close(p, torch.softmax(conv.logits(images), 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(p.sum(1), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(conv.class_probabilities(images), p, rtol=0, atol=1e-12)
    for y in (0, 7):
        torch.testing.assert_close(conv.conditional(y)(images), joint[:, y], rtol=0, atol=0)
    per_chain = torch.tensor([3, 1, 4, 1, 5, 9])
    torch.testing.assert_close(conv.conditional(per_chain)(images), joint[torch.arange(6), per_chain], rtol=0, atol=0)
    # a batch that stacks the chains twice (parallel tempering's replicas) reads class y[i mod C]
    twice = torch.cat([images, images])
    torch.testing.assert_close(conv.conditional(per_chain)(twice), joint[torch.arange(6), per_chain].repeat(2))


def test_conditional_gradient_is_the_joint_energy_gradient(conv, images):
    y = torch.arange(6)
    _, g_cond = value_and_grad(conv.conditional(y), images)
    x = images.clone().requires_grad_(True)
    (g_joint,) = torch.autograd.grad(conv.joint_energy(x, y).sum(), x)
    torch.testing.assert_close(g_cond, g_joint, rtol=0, atol=1e-12)


def test_bad_classes_and_shapes_are_refused(conv, images):
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        ClassifierEnergy(torch.nn.Identity(), 1)
    with pytest.raises(ValueError, match="class in 0..9"):
        conv.conditional(10)
    with pytest.raises(ValueError, match="in 0..9"):
        conv.conditional(torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="not a multiple of the 4 classes"):
        conv.conditional(torch.arange(4))(images)
    with pytest.raises(ValueError, match="6 inputs but 2 labels"):
        conv.joint_energy(images, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"must return logits \(6, 3\)"):
        ClassifierEnergy(mlp_classifier((1, 8, 8), 10, (4,)).net, 3)(images.float())


def test_factories_and_the_registered_model():
    """``jem`` builds a conv classifier for images and an MLP for vectors; ``(H, W)`` images work too."""
    torch.manual_seed(0)
    image = build_model("jem", (1, 8, 8), num_classes=10, width=4)
    vector = build_model("jem", (5,), num_classes=3, hidden=[8])
    flat = jem_energy((8, 8), num_classes=4, width=4)
    assert isinstance(image, ClassifierEnergy) and image.event_shape == (1, 8, 8)
    assert image(torch.rand(2, 1, 8, 8)).shape == (2,) and image.logits(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert vector(torch.randn(4, 5)).shape == (4,) and vector.logits(torch.randn(4, 5)).shape == (4, 3)
    assert flat(torch.rand(3, 8, 8)).shape == (3,) and flat.event_shape == (8, 8)


@pytest.mark.parametrize("conditional", [False, True], ids=["marginal", "conditional"])
@pytest.mark.parametrize("name", REAL_SAMPLERS)
def test_every_real_sampler_runs_on_classifier_energies(name, conditional):
    """Shapes ``(S, C, *event)``, finite draws and energies on E(x) and on E(x | y), one class per chain."""
    torch.manual_seed(0)
    energy = mlp_classifier((4,), num_classes=3, hidden=(8,)).double()
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    if not conditional:
        target = energy
    else:
        target = energy.conditional(torch.tensor([0, 1, 2, 0, 1, 2]))
    record = sample(target, make_kernel(name), x0, num_steps=4, burn_in=2, generator=generator)
    assert record.samples.shape == (4, 6, 4) and torch.isfinite(record.samples).all()
    assert record.energy.shape == (4, 6) and torch.isfinite(record.energy).all()


class GaussianLogits(torch.nn.Module):
    """Logits ``f(x)[k] = -‖x - μ_k‖²/2``: class k's conditional energy is that of N(μ_k, I)."""

    def __init__(self, means: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x[:, None, :] - self.means[None]) ** 2).sum(-1)


class PrefixRows(ConditionalEnergy):
    """Negative control: answers ``select_rows(index)`` with the first n classes, whatever was asked."""

    def select_rows(self, index):
        return ConditionalEnergy(self.classifier, self.y[: index.shape[0]])


def nuts_class_means(conditional_cls, max_tree_depth: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ebmlab.diagnostics import mcse_mean

    means = torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, -1.0]], dtype=torch.float64)
    classifier = ClassifierEnergy(GaussianLogits(means), num_classes=3, event_shape=(2,))
    y = torch.arange(24) % 3
    generator = torch.Generator().manual_seed(5)
    record = sample(conditional_cls(classifier, y), make_kernel("nuts", max_tree_depth=max_tree_depth),
                    torch.zeros(24, 2, dtype=torch.float64),
                    num_steps=400, burn_in=200, generator=generator)
    per_class, se = [], []
    for k in range(3):
        draws = record.samples[:, y == k]  # (draws, chains of class k, 2)
        per_class.append(draws.mean((0, 1)))
        se.append(torch.as_tensor(mcse_mean(draws)))
    return torch.stack(per_class), torch.stack(se), means


def test_nuts_on_a_conditional_with_one_class_per_chain_keeps_each_class_mean():
    got, se, means = nuts_class_means(ConditionalEnergy)
    z = (got - means) / se
    assert float(z.abs().max()) <= 4.5, z


def test_a_conditional_that_ignores_the_rows_asked_for_fails_the_same_check():
    """Mislabelled rows make the energy change under the chains: the class means are off by
    more than 1 (measured 2.4; the correct run's error is 0.03 with SEs of 0.02). Trees are
    capped at depth 4 here, since the changing energy never lets them U-turn."""
    got, _, means = nuts_class_means(PrefixRows, max_tree_depth=4)
    assert float((got - means).abs().max()) > 1.0
