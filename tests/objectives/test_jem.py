"""JEM: the loss is exactly CE + λ·CD, labels reach it through the row lookup, and on the 8×8
digits the generative term is what makes the classifier's marginal E(x) a model of the digits.

Fast, exact checks (oracles: ``F.cross_entropy`` and the library's ``ReplayCD`` run from the
same generator state; a hand-computed ECE) come first, with the config trainer end to end. Then one module-scoped pair of runs on
scikit-learn's digits (1437 training rows, 360 held out, the same split and seed for both):

* JEM (λ = 0.5, 10 SGLD steps per update from a replay buffer) and its negative control, the
  same classifier without the contrastive term (λ = 0), each 800 updates of batch 64
  (EMA weights);
* both reach held-out accuracy >= 0.95 (the classifier is not sacrificed), ECE (15 bins) is
  reported;
* the contrastive term is what shapes E(x): the gap mean E(noise) - mean E(held-out digits) is
  larger with it, and 20 SGLD steps on E(x) from uniform noise give samples whose MMD² to the
  held-out digits is smaller with it than without; without it an MMD permutation test rejects
  "digit-like" at p <= 1/201 (the smallest p-value 200 permutations can give, far below the
  1e-2 threshold), so this control detects an MMD² above the permutation null's spread
  (about 0.002 here; the control's MMD² is about 0.6);
* class-conditional samples (SGLD on E(x | y) from noise) are written as a PNG grid.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

import ebmlab
from ebmlab.data import load_dataset
from ebmlab.energy.classifier import mlp_classifier
from ebmlab.jobs.jem_report import (
    class_conditional_samples, classification_metrics, expected_calibration_error, jem_report, noise_samples,
)
from ebmlab.metrics import mmd_test
from ebmlab.objectives import JEMObjective, ReplayCD, available_objectives, make_objective
from ebmlab.samplers import ULA
from ebmlab.training.models import available_models

#: the test's SGLD: step 0.1 on the energy, noise standard deviation 0.01 per step
KERNEL = ULA(step_size=0.1, noise_scale=0.01 / math.sqrt(0.2))


def clone(g: torch.Generator) -> torch.Generator:
    copy = torch.Generator()
    copy.set_state(g.get_state())
    return copy


@pytest.fixture
def small_case(generator):
    torch.manual_seed(0)
    energy = mlp_classifier((1, 4, 4), num_classes=3, hidden=(16,)).double()
    x = torch.rand(40, 1, 4, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=generator)
    return energy, x, y


# ---------------------------------------------------------------------- the loss against its oracles


def test_without_the_contrastive_term_the_loss_is_the_cross_entropy(small_case, generator):
    energy, x, y = small_case
    objective = JEMObjective(contrastive=0.0)
    objective.setup(energy, x, generator, labels=y)
    assert objective.replay.buffer is None  # no sampler, no buffer
    loss, metrics = objective.loss(energy, (x[5:21], y[5:21]), generator)
    expected = F.cross_entropy(energy.logits(x[5:21]), y[5:21])
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
    assert metrics["labelled"] == 1.0 and metrics["ce"] == pytest.approx(float(expected.detach()))
    assert "cd_gap" not in metrics


def test_the_loss_is_ce_plus_lambda_times_replay_cd(small_case, generator):
    """Same generator state: JEM's loss − CE = λ × ReplayCD's loss (same buffer, same negatives)."""
    energy, x, y = small_case
    options = dict(kernel=ULA(step_size=0.05), num_steps=3, alpha=0.2, buffer_size=30, restart_prob=0.3)
    jem, replay = JEMObjective(contrastive=0.7, **options), ReplayCD(clamp=True, **options)
    g_setup = clone(generator)
    jem.setup(energy, x, generator, labels=y)
    replay.setup(energy, x, g_setup)
    batch = x[10:26]
    g_loss = clone(generator)
    loss, metrics = jem.loss(energy, (batch, y[10:26]), generator)
    cd, cd_metrics = replay.loss(energy, batch, g_loss)
    ce = F.cross_entropy(energy.logits(batch), y[10:26])
    torch.testing.assert_close(loss, ce + 0.7 * cd, rtol=1e-10, atol=1e-10)
    assert metrics["cd_gap"] == pytest.approx(cd_metrics["cd_gap"], abs=1e-10)
    torch.testing.assert_close(jem.state_dict()["buffer"], replay.state_dict()["buffer"], rtol=0, atol=0)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in energy.parameters())


def test_unlabelled_rows_enter_only_the_contrastive_term(small_case, generator):
    """Rows labelled -1 get no cross-entropy; a plain tensor batch is all unlabelled."""
    energy, x, y = small_case
    objective = JEMObjective(contrastive=0.0)
    objective.setup(energy, x, generator, labels=y)
    labels = y[:8].clone()
    labels[:3] = -1
    loss, metrics = objective.loss(energy, (x[:8], labels), generator)
    torch.testing.assert_close(loss, F.cross_entropy(energy.logits(x[3:8]), y[3:8]), rtol=0, atol=1e-12)
    assert metrics["labelled"] == pytest.approx(5 / 8)
    semi = JEMObjective(contrastive=1.0, kernel=ULA(step_size=0.05), num_steps=2, buffer_size=20)
    semi.setup(energy, x, generator)
    loss, metrics = semi.loss(energy, x[20:30], generator)
    assert metrics["labelled"] == 0.0 and "ce" not in metrics and torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"a labelled batch is \(x \(B, \*event\), y \(B,\)\)"):
        semi.loss(energy, (x[:4], y[:3]), generator)


def test_bad_set_ups_are_refused(small_case, generator):
    energy, x, y = small_case
    with pytest.raises(ValueError, match="40 labels for 39 data rows"):
        JEMObjective(contrastive=0).setup(energy, x[:39], generator, labels=y)
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        JEMObjective(contrastive=0).setup(energy, x, generator, labels=y + 1)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        JEMObjective(contrastive=0).setup(energy, x, generator, labels=y.double())
    with pytest.raises(ValueError, match="contrastive must be >= 0"):
        JEMObjective(contrastive=-1.0)
    plain = ebmlab.training.models.build_model("mlp", (2,), hidden=[4])
    with pytest.raises(ValueError, match="need a classifier energy"):
        JEMObjective().setup(plain, torch.randn(8, 2), generator, labels=torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="nothing to train"):
        JEMObjective(contrastive=0).setup(plain, torch.randn(8, 2), generator)


def test_registered_and_round_trips_its_state(small_case, generator):
    energy, x, y = small_case
    assert "jem" in available_objectives() and "jem" in available_models()
    objective = make_objective("jem", num_steps=2, buffer_size=25, kernel=ULA(step_size=0.05))
    objective.setup(energy, x, generator, labels=y)
    objective.loss(energy, (x[:8], y[:8]), generator)
    state = {k: v.clone() for k, v in objective.state_dict().items()}
    assert set(state) == {"buffer"} and state["buffer"].shape == (25, 1, 4, 4)
    again = make_objective("jem", num_steps=2, buffer_size=25)
    again.load_state_dict(state)
    torch.testing.assert_close(again.state_dict()["buffer"], state["buffer"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="unexpected objective state keys"):
        again.load_state_dict({"chains": state["buffer"]})


def test_the_config_trainer_trains_jem_on_the_digits_labels(tmp_path):
    """``ebmlab train --objective jem --data digits`` end to end: the trainer routes the labels
    (every batch row labelled), the model alias builds the ``jem`` classifier, held-out loss is logged."""
    from ebmlab.energy.classifier import ClassifierEnergy
    from ebmlab.training.run import train

    config = {"data": "digits", "objective": "jem", "steps": 4, "batch_size": 16, "sampler_steps": 2,
              "step_size": 0.1, "noise_scale": 0.0224, "model_kwargs": {"width": 4},
              "objective_kwargs": {"buffer_size": 256}}  # held-out loss: one batch of 180 rows
    result = train(config, out=tmp_path / "run", heldout_every=2)
    assert isinstance(result.model, ClassifierEnergy)
    last = result.metrics[-1]
    assert last["labelled"] == 1.0 and math.isfinite(last["ce"]) and math.isfinite(last["heldout_loss"])


def test_a_fitted_run_loads_back_as_the_classifier(tmp_path):
    """``fit`` with ``run_dir`` and the factory as ``model_spec``: ``ebmlab.load`` rebuilds the classifier."""
    data = load_dataset("digits", num_samples=128)
    torch.manual_seed(0)
    energy = mlp_classifier((1, 8, 8), num_classes=10, hidden=(16,))
    result = ebmlab.fit(energy, JEMObjective(num_steps=2, buffer_size=64), data.x, labels=data.labels, steps=3,
                        batch_size=32, run_dir=tmp_path / "run", model_spec="ebmlab.energy.classifier:mlp_classifier",
                        model_kwargs={"num_classes": 10, "hidden": [16]})
    loaded = ebmlab.load(tmp_path / "run")
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(data.x[:4]), result.model.logits(data.x[:4]))


# ---------------------------------------------------------------------- calibration


def test_expected_calibration_error_against_a_hand_computation():
    """Top probabilities 0.62 ✗, 0.57 ✓, 0.83 ✓ alone in bins 9, 8, 12 of 15, and 0.9 ✓, 0.91 ✓,
    0.93 ✗ sharing bin 13 ((13/15, 14/15]): ECE = (0.62 + 0.43 + 0.17 + 3·|2/3 - 0.91333|) / 6."""
    p = torch.tensor([[0.9, 0.1], [0.38, 0.62], [0.57, 0.43], [0.17, 0.83], [0.91, 0.09], [0.07, 0.93]])
    y = torch.tensor([0, 0, 0, 1, 0, 0])
    expected = (0.62 + 0.43 + 0.17 + 3 * abs(2 / 3 - (0.9 + 0.91 + 0.93) / 3)) / 6
    assert expected_calibration_error(p, y) == pytest.approx(expected, abs=1e-7)  # float32 inputs
    assert expected_calibration_error(torch.tensor([[1.0, 0.0]] * 3), torch.zeros(3, dtype=torch.long)) == 0.0
    with pytest.raises(ValueError, match=r"probabilities \(N, K\) and labels \(N,\)"):
        expected_calibration_error(p, y[:3])


# ---------------------------------------------------------------------- digits: JEM and its negative control

TRAIN_STEPS = 800


@pytest.fixture(scope="module")
def digits_runs():
    """``{"data": (x_train, y_train, x_test, y_test), "on": (model, seconds), "off": (model, seconds)}``."""
    data = load_dataset("digits")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    test, train = perm[:360], perm[360:]
    x_train, y_train, x_test, y_test = data.x[train], data.labels[train], data.x[test], data.labels[test]
    runs = {"data": (x_train, y_train, x_test, y_test)}
    for key, weight in (("on", 0.5), ("off", 0.0)):
        torch.manual_seed(0)
        energy = mlp_classifier((1, 8, 8), num_classes=10, hidden=(128, 128))
        objective = JEMObjective(contrastive=weight, kernel=KERNEL, num_steps=10, alpha=0.1, buffer_size=2000)
        start = time.perf_counter()
        result = ebmlab.fit(energy, objective, x_train, labels=y_train, steps=TRAIN_STEPS, batch_size=64, lr=3e-3, ema_decay=0.99,
                            seed=0)
        runs[key] = (result.model, time.perf_counter() - start)
    return runs


def test_jem_classifies_digits_and_reports_calibration_and_class_samples(digits_runs, tmp_path):
    x_train, y_train, x_test, y_test = digits_runs["data"]
    (model, seconds), (control, control_seconds) = digits_runs["on"], digits_runs["off"]
    report = jem_report(model, x_test, y_test, tmp_path, kernel=KERNEL, num_steps=20, per_class=6,
                        generator=torch.Generator().manual_seed(2))
    plain = classification_metrics(control, x_test, y_test)
    print(f"\nJEM λ=0.5: accuracy {report['accuracy']:.3f}, ECE {report['ece']:.3f}, NLL {report['nll']:.3f} "
          f"({seconds:.1f} s); λ=0: accuracy {plain['accuracy']:.3f}, ECE {plain['ece']:.3f}, "
          f"NLL {plain['nll']:.3f} ({control_seconds:.1f} s)")
    assert report["accuracy"] >= 0.95 and plain["accuracy"] >= 0.95
    assert 0.0 <= report["ece"] <= 1.0 and 0.0 <= plain["ece"] <= 1.0
    samples = report["samples"]
    assert samples.shape == (60, 1, 8, 8) and torch.isfinite(samples).all()
    assert float(samples.min()) >= float(x_test.min()) and float(samples.max()) <= float(x_test.max())
    png = report["class_samples"]
    assert png.name == "class_samples.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_contrastive_term_makes_e_of_x_a_model_of_the_digits(digits_runs):
    """Energy gap noise − data larger with the term; SGLD samples of E(x) closer to held-out digits
    by MMD² with it; without it the MMD test rejects (the negative control)."""
    _, _, x_test, _ = digits_runs["data"]
    (model, _), (control, _) = digits_runs["on"], digits_runs["off"]
    g = torch.Generator().manual_seed(3)
    noise = torch.rand(360, 1, 8, 8, generator=g)
    with torch.no_grad():
        gap_on = float(model(noise).mean() - model(x_test).mean())
        gap_off = float(control(noise).mean() - control(x_test).mean())
    on = mmd_test(noise_samples(model, x_test, 360, KERNEL, 20, g), x_test, num_permutations=200, generator=g)
    off = mmd_test(noise_samples(control, x_test, 360, KERNEL, 20, g), x_test, num_permutations=200, generator=g)
    print(f"\nE(noise) - E(data): {gap_on:.2f} with the term, {gap_off:.2f} without; MMD² of SGLD samples to "
          f"held-out digits: {on.mmd2:.4f} (p = {on.p_value:.3f}) with, {off.mmd2:.4f} (p = {off.p_value:.3f}) without")
    assert gap_on > gap_off + 5.0
    assert off.p_value <= 1e-2  # the negative control: not digit-like
    assert on.mmd2 < 0.5 * off.mmd2


def test_class_conditional_samples_are_classified_as_their_class(digits_runs):
    """SGLD on E(x | y) from noise: the classifier assigns most samples their own class
    (chance is 1/10; a sampler ignoring y would sit near it)."""
    _, _, x_test, _ = digits_runs["data"]
    model, _ = digits_runs["on"]
    x, classes = class_conditional_samples(model, x_test, 20, KERNEL, 20, torch.Generator().manual_seed(4))
    with torch.no_grad():
        agree = float((model.logits(x).argmax(1) == classes).float().mean())
    print(f"\nclass-conditional samples classified as their class: {agree:.3f}")
    assert agree >= 0.5
