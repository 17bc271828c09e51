"""Plots: bounds, the density grid, image grids, trace and loss plots, atomic saving.

Deterministic tests on the numbers behind each picture (grid values and layout) plus checks
that every saving function writes a readable image and leaves no temporary file behind.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.image import imread

from ebmlab.energy import Gaussian, Ising

from ebmlab.jobs.plots import (
    GRID_MARGINS, bounds_from_samples, density_grid, image_grid, image_grid_figure, is_constant, loss_curve_figure,
    plot_chain_trace, plot_density_2d, plot_energy_2d, plot_loss_curve, plot_samples, plot_samples_2d,
    save_image_grid, smooth,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_size: int = 1) -> np.ndarray:
    """``path`` is a readable PNG of at least ``min_size`` pixels a side, and alone in its folder."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    assert image.ndim in (2, 3) and min(image.shape[:2]) >= min_size
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return image


def test_bounds_from_samples_pads_and_widens():
    samples = torch.tensor([[0.0, 2.0], [1.0, 5.0], [0.5, 3.0]])
    assert bounds_from_samples(samples, pad=0.1) == pytest.approx((-0.1, 1.1, 1.7, 5.3))
    tight = np.array([[[1.0, 1.0]], [[1.0, 1.0]], [[np.nan, 0.0]]])  # (draws, chains, 2)
    assert bounds_from_samples(tight, pad=0.0, min_width=2.0) == pytest.approx((0.0, 2.0, 0.0, 2.0))
    with pytest.raises(ValueError, match="no finite 2-D samples"):
        bounds_from_samples(np.full((3, 2), np.nan))


def test_density_grid_is_exp_minus_energy_with_correct_orientation():
    """An off-centre, correlated Gaussian: a transposed grid or a wrong sign would move the peak."""
    energy = Gaussian(torch.tensor([1.0, -0.5]), covariance=torch.tensor([[1.0, 0.3], [0.3, 0.5]]))
    xs, ys, density = density_grid(energy, (-2.0, 3.0, -3.0, 2.0), resolution=51)
    assert xs.shape == ys.shape == (51,) and density.shape == (51, 51)
    i, j = np.unravel_index(np.argmax(density), density.shape)
    assert (xs[j], ys[i]) == pytest.approx((1.0, -0.5), abs=1e-9)
    pts = torch.tensor([[xs[j], ys[i]] for i, j in [(0, 0), (10, 40), (45, 3)]], dtype=torch.float32)
    e = energy(pts).double().numpy()
    expected = np.exp(-(e - energy(torch.tensor([[1.0, -0.5]])).item()))
    assert density[[0, 10, 45], [0, 40, 3]] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="min < max"):
        density_grid(energy, (1.0, 0.0, 0.0, 1.0))


def test_plot_density_2d_and_samples_on_axes():
    fig = Figure()
    ax = fig.subplots()
    samples = torch.randn(10_000, 2, generator=torch.Generator().manual_seed(0))
    plot_density_2d(Gaussian(torch.zeros(2)), ax, (-3.0, 3.0, -2.0, 2.0), samples=samples[:100], resolution=30)
    assert ax.get_xlim() == (-3.0, 3.0) and ax.get_ylim() == (-2.0, 2.0)
    (scatter,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert scatter.get_offsets().shape == (100, 2)
    thinned = plot_samples_2d(samples, fig.subplots(), max_points=500)
    assert thinned.get_offsets().shape == (500, 2)


def test_image_grid_layout_and_values():
    images = torch.arange(5 * 2 * 3, dtype=torch.float32).reshape(5, 1, 2, 3)
    grid = image_grid(images, nrow=3, padding=1, value_range=(0.0, 29.0))
    assert grid.shape == (2 * 2 + 3, 3 * 3 + 4)
    np.testing.assert_allclose(grid[1:3, 1:4], images[0, 0].numpy() / 29.0)
    np.testing.assert_allclose(grid[4:6, 5:8], images[4, 0].numpy() / 29.0)  # row 1, column 1
    assert (grid[4:6, 9:12] == 0.5).all() and (grid[0] == 0.5).all()  # empty slot and padding
    default = image_grid(images[:, 0], nrow=3)  # (N, H, W) and the min/max default range
    assert default.min() == 0.0 and default.max() == 1.0


def test_image_grid_colour_and_bad_shapes():
    rgb = image_grid(np.random.default_rng(0).random((2, 3, 4, 4)))
    assert rgb.shape == (1 * 4 + 2, 2 * 4 + 3, 3)
    for bad in (np.zeros((5, 2, 3, 3)), np.zeros((3, 4)), np.zeros((0, 4, 4))):
        with pytest.raises(ValueError, match="image_grid: images must be"):
            image_grid(bad)


def test_save_image_grid_writes_an_upscaled_labelled_png(tmp_path):
    """The grid at least 600 pixels wide, each pixel an exact 67 × 67 block (2·3 + 3 = 9 pixels,
    times ⌈600 / 9⌉ = 67), rows and columns labelled around it."""
    states = Ising(3).sample_uniform(4, torch.Generator().manual_seed(0))
    image = assert_png(save_image_grid(states, tmp_path / "grid.png"), min_size=600)
    margins = GRID_MARGINS
    assert image.shape[:2] == (603 + margins["top"] + margins["bottom"], 603 + margins["left"] + margins["right"])
    inside = image[margins["top"]:margins["top"] + 603, margins["left"]:margins["left"] + 603, 0]
    np.testing.assert_allclose(inside, image_grid(states).repeat(67, 0).repeat(67, 1), atol=1 / 255)
    ax = image_grid_figure(states, title="states").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]  # columns
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1–2", "3–4"]  # the images each row holds
    assert ax.get_title() == "states"


def test_trace_and_loss_plots(tmp_path):
    samples = np.random.default_rng(1).normal(size=(50, 3, 6))
    assert_png(plot_chain_trace(samples, tmp_path / "trace.png"))
    assert_png(plot_loss_curve({"loss": [3.0, 2.0, 1.5], "energy_gap": np.ones(3)}, tmp_path / "a.png"))
    records = [{"step": 10 * i, "loss": 1.0 / (i + 1), "phase": "train"} for i in range(5)]
    assert_png(plot_loss_curve(records, tmp_path / "b.png"))
    with pytest.raises(ValueError, match="no numeric metrics"):
        plot_loss_curve([{"phase": "train"}], tmp_path / "c.png")
    with pytest.raises(ValueError, match="plot_chain_trace: samples must be"):
        plot_chain_trace(np.zeros(5), tmp_path / "d.png")
    assert not (tmp_path / "c.png").exists() and not (tmp_path / "d.png").exists()


def test_smooth_is_a_debiased_moving_average():
    values = np.array([1.0, 3.0, np.nan, 5.0])
    out = smooth(values, window=2)  # β = 1/2: (1), (½·1 + 3)/(1.5)... skipping the NaN
    m1, w1 = 0.5, 0.5
    m2, w2 = 0.5 * m1 + 1.5, 0.5 * w1 + 0.5
    m4, w4 = 0.5 * m2 + 2.5, 0.5 * w2 + 0.5
    np.testing.assert_allclose(out, [1.0, m2 / w2, m2 / w2, m4 / w4])
    np.testing.assert_array_equal(smooth(values[:2], window=1), [1.0, 3.0])  # window 1: the raw values
    assert is_constant([1.0, 1.0, np.nan, 1.0]) and not is_constant([1.0, 0.99]) and not is_constant([2.0])
    with pytest.raises(ValueError, match="window must be >= 1"):
        smooth(values, window=0.5)


def test_loss_curve_has_no_panel_for_a_constant_metric():
    """Acceptance 1 throughout (ULA, block Gibbs) gets a note instead of a panel; each panel shows
    the raw values (faint) and the smoothed curve."""
    records = [{"step": i, "loss": 1.0 / i, "accept": 1.0, "grad_norm": float(i % 3)} for i in range(1, 31)]
    fig = loss_curve_figure(records)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in shown] == ["loss", "grad_norm"]
    raw, smoothed = shown[0].get_lines()
    assert raw.get_alpha() < smoothed.get_alpha() if smoothed.get_alpha() is not None else raw.get_alpha() < 1
    np.testing.assert_allclose(raw.get_ydata(), [1.0 / i for i in range(1, 31)])
    np.testing.assert_allclose(smoothed.get_ydata(), smooth(raw.get_ydata()))
    assert "accept = 1" in fig._supxlabel.get_text() and shown[-1].get_xlabel() == "update step"


def test_density_and_energy_have_labelled_colour_bars():
    fig = Figure()
    left, right = fig.subplots(1, 2)
    plot_energy_2d(Gaussian(torch.zeros(2)), left, (-3.0, 3.0, -3.0, 3.0), resolution=30)
    plot_density_2d(Gaussian(torch.zeros(2)), right, (-3.0, 3.0, -3.0, 3.0), resolution=30)
    bars = [ax.get_ylabel() for ax in fig.axes[2:]]
    assert bars[0].startswith("energy E(x) − min E (nats") and bars[1].startswith("density exp(−E)")
    assert (left.get_xlabel(), left.get_ylabel()) == ("x₁", "x₂")


@pytest.mark.parametrize(
    "energy, event, name",
    [(Gaussian(torch.zeros(2)), (2,), "density"), (Ising(3), (3, 3), "grid"), (Gaussian(torch.zeros(5)), (5,), "trace")],
)
def test_plot_samples_picks_a_picture_per_event_shape(tmp_path, energy, event, name):
    samples = torch.randint(0, 2, (6, 4, *event)).float()
    image = assert_png(plot_samples(energy, samples, tmp_path / f"{name}.png"))
    if name == "grid":
        assert image.shape[0] == image.shape[1]  # 2 × 2 grid of square states


def test_failed_save_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):  # matplotlib refuses the unknown format while writing
        plot_chain_trace(np.zeros((5, 2, 2)), tmp_path / "trace.unknownformat")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        save_image_grid(np.zeros((1, 4, 4)), tmp_path / "missing" / "grid.png")
