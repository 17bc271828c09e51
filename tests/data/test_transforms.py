"""Tests for the Standardizer (round trip, Jacobian, checkpoints) and the train/held-out split."""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.data import Standardizer, load_dataset, split_indices, train_heldout_split
from ebmlab.energy import Gaussian


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def vectors():
    scale = torch.tensor([0.5, 2.0, 10.0])
    return torch.randn(200, 3, generator=gen(0), dtype=torch.float64) * scale + torch.tensor([1.0, -3.0, 7.0])


@pytest.fixture
def images():
    scale = torch.tensor([0.2, 3.0])[:, None, None]
    return torch.randn(50, 2, 3, 4, generator=gen(1), dtype=torch.float64) * scale + 0.5


def test_feature_standardization(vectors):
    st = Standardizer.fit(vectors)
    assert st.per == "feature" and st.mean.shape == (3,) and st.std.shape == (3,)
    z = st.transform(vectors)
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=z.dtype), atol=1e-12)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(3, dtype=z.dtype), atol=1e-12)
    assert torch.allclose(st.inverse_transform(z), vectors, atol=1e-12)
    assert st.log_det_jacobian() == pytest.approx(-float(torch.log(vectors.std(0, unbiased=False)).sum()))


@pytest.mark.parametrize("per, shape", [("channel", (2, 1, 1)), ("scalar", (1, 1, 1)), ("feature", (2, 3, 4))])
def test_image_standardization(images, per, shape):
    st = Standardizer.fit(images, per=per)
    assert st.mean.shape == shape and st.std.shape == shape and st.event_shape == (2, 3, 4)
    z = st.transform(images)
    dims = {"channel": (0, 2, 3), "scalar": (0, 1, 2, 3), "feature": (0,)}[per]
    assert torch.allclose(z.mean(dims), torch.zeros((), dtype=z.dtype), atol=1e-12)
    assert torch.allclose(z.square().mean(dims), torch.ones((), dtype=z.dtype), atol=1e-12)
    assert torch.allclose(st.inverse_transform(z), images, atol=1e-12)
    # log |det ∂z/∂x| counts a per-channel std once per pixel: -H·W·Σ_c log s_c for "channel"
    assert st.log_det_jacobian() == pytest.approx(-float(torch.log(st.std.expand(2, 3, 4)).sum()))


def test_default_per_is_channel_for_images(images):
    assert Standardizer.fit(images).per == "channel"


@pytest.mark.parametrize("per", ["feature", "channel", "scalar"])
def test_log_det_jacobian_matches_autograd(images, per):
    """``log_det_jacobian`` equals log |det J| of the transform, computed by autograd."""
    st = Standardizer.fit(images[:, :, :2, :2], per=per)
    jac = torch.autograd.functional.jacobian(lambda v: st.transform(v.reshape(1, 2, 2, 2)).reshape(-1),
                                             images[0, :, :2, :2].reshape(-1))
    assert st.log_det_jacobian() == pytest.approx(float(torch.linalg.slogdet(jac).logabsdet), abs=1e-12)


def test_log_density_maps_between_spaces(vectors):
    """For x ~ N(μ, diag s²) standardised with (μ, s), z ~ N(0, I) and
    log p_raw(x) = log p_std(z) + log |det ∂z/∂x| exactly."""
    mean = torch.tensor([1.0, -3.0, 7.0], dtype=torch.float64)
    std = torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64)
    st = Standardizer(mean, std, (3,), "feature")
    raw = Gaussian(mean, torch.diag(std**2)).double()
    unit = Gaussian(torch.zeros(3, dtype=torch.float64)).double()
    x = vectors[:10]
    log_p_raw = -raw(x) - raw.log_z
    log_p_std = -unit(st.transform(x)) - unit.log_z
    assert torch.allclose(st.log_prob_to_raw(log_p_std), log_p_raw, atol=1e-10)
    assert torch.allclose(st.log_prob_to_standardized(log_p_raw), log_p_std, atol=1e-10)
    wrong = Standardizer(mean, 1.1 * std, (3,), "feature")  # negative control: a mis-scaled std
    assert not torch.allclose(wrong.log_prob_to_raw(-unit(wrong.transform(x)) - unit.log_z), log_p_raw, atol=1e-3)


def test_constant_feature_is_only_centred():
    x = torch.cat([torch.randn(20, 1, generator=gen(2)), torch.full((20, 1), 3.0)], 1)
    st = Standardizer.fit(x)
    assert st.std[1] == 1.0 and torch.allclose(st.transform(x)[:, 1], torch.zeros(20))
    assert torch.isfinite(torch.tensor(st.log_det_jacobian()))


def test_state_dict_round_trip(tmp_path, images):
    st = Standardizer.fit(images.float(), per="channel")
    torch.save(st.state_dict(), tmp_path / "st.pt")
    back = Standardizer.from_state_dict(torch.load(tmp_path / "st.pt", weights_only=True))
    assert back.per == "channel" and back.event_shape == (2, 3, 4)
    assert torch.equal(back.mean, st.mean) and torch.equal(back.std, st.std)
    assert torch.equal(back.transform(images.float()), st.transform(images.float()))
    assert st.to(dtype=torch.float64).mean.dtype == torch.float64


def test_standardizer_errors(vectors):
    st = Standardizer.fit(vectors)
    with pytest.raises(ValueError, match=r"Standardizer.transform: expected input \(B, 3\), got shape \(5, 2\)"):
        st.transform(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="per must be one of feature, channel, scalar"):
        Standardizer.fit(vectors, per="pixel")
    with pytest.raises(ValueError, match="N >= 2"):
        Standardizer.fit(vectors[:1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        Standardizer.fit(torch.tensor([[1.0], [math.nan]]))
    with pytest.raises(ValueError, match="missing entries std"):
        Standardizer.from_state_dict({"mean": st.mean, "event_shape": [3], "per": "feature"})
    with pytest.raises(ValueError, match="do not broadcast"):
        Standardizer.from_state_dict({"mean": torch.zeros(4), "std": torch.ones(4), "event_shape": [3], "per": "feature"})


def test_split_indices_partition_and_determinism():
    train, held = split_indices(100, heldout_fraction=0.2, generator=gen(3))
    assert held.numel() == 20 and train.numel() == 80
    assert torch.equal(torch.cat([train, held]).sort().values, torch.arange(100))
    assert torch.equal(train, train.sort().values)
    again, _ = split_indices(100, heldout_fraction=0.2, generator=gen(3))
    other, _ = split_indices(100, heldout_fraction=0.2, generator=gen(4))
    assert torch.equal(train, again) and not torch.equal(train, other)
    assert split_indices(3, heldout_fraction=0.01, generator=gen(0))[1].numel() == 1  # at least one
    with pytest.raises(ValueError, match=r"heldout_fraction must be in \(0, 1\)"):
        split_indices(10, heldout_fraction=1.0, generator=gen(0))
    with pytest.raises(ValueError, match="at least 2 data points"):
        split_indices(1, heldout_fraction=0.5, generator=gen(0))


def test_train_heldout_split_and_dataset_split():
    x = torch.arange(30.0).reshape(15, 2)
    train, held = train_heldout_split(x, heldout_fraction=0.2, generator=gen(5))
    assert train.shape == (12, 2) and held.shape == (3, 2)
    data = load_dataset("digits", num_samples=40, generator=gen(6))
    tr, ho = data.split(0.25, generator=gen(7))
    assert len(tr) == 30 and len(ho) == 10 and tr.event_shape == (1, 8, 8) and ho.name == "digits"
    for part in (tr, ho):  # labels stay aligned with their images
        rows = (part.x[:, None] == data.x[None]).flatten(2).all(-1).float().argmax(1)
        assert torch.equal(part.labels, data.labels[rows])
