"""Chains over time as image grids: ``plots.save_chain_grid``, ``runs.chain_snapshots``, ``sample --plot-chains``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib.image import imread

from ebmlab.cli import main
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.jobs.plots import GRID_MARGINS, chain_grid_figure, chain_grid_images, image_grid, image_grid_figure, save_chain_grid
from ebmlab.jobs.pictures import chain_snapshots
from ebmlab.samplers import BlockGibbs


def labelled_snapshots(num_snapshots: int, num_chains: int) -> torch.Tensor:
    """``(S, C, 1, 2, 2)`` images whose every pixel holds ``100·chain + time``."""
    t = torch.arange(num_snapshots, dtype=torch.float64)[:, None]
    c = torch.arange(num_chains, dtype=torch.float64)[None, :]
    return (100 * c + t)[:, :, None, None, None].expand(num_snapshots, num_chains, 1, 2, 2)


def test_rows_are_chains_and_columns_are_times():
    images = chain_grid_images(labelled_snapshots(31, 12), max_chains=3, max_snapshots=4)
    values = images[:, 0, 0, 0].reshape(3, 4)  # row r = chain r, column = snapshot time
    np.testing.assert_array_equal(values, [[0, 10, 20, 30], [100, 110, 120, 130], [200, 210, 220, 230]])
    few = chain_grid_images(labelled_snapshots(2, 2), max_chains=8, max_snapshots=10)  # fewer than asked: all
    np.testing.assert_array_equal(few[:, 0, 0, 0], [0, 1, 100, 101])
    with pytest.raises(ValueError, match="snapshots must be"):
        chain_grid_images(torch.zeros(3, 4))


def test_save_chain_grid_shape_and_labels(tmp_path):
    """4 rows (chains) and 6 columns (times) of 2×2 images with 1-pixel gaps, scaled ×⌈600 / 19⌉
    = 32 to at least 600 pixels wide; rows labelled by chain, columns by sampler step."""
    path = save_chain_grid(labelled_snapshots(20, 5), tmp_path / "c.png", max_chains=4, max_snapshots=6,
                           times=range(0, 200, 10))
    grid = image_grid(chain_grid_images(labelled_snapshots(20, 5), 4, 6), nrow=6)
    assert grid.shape == (4 * 2 + 5, 6 * 2 + 7)
    m = GRID_MARGINS
    assert imread(path).shape[:2] == (32 * 13 + m["top"] + m["bottom"], 32 * 19 + m["left"] + m["right"])
    fig = image_grid_figure(chain_grid_images(labelled_snapshots(20, 5), 4, 6), nrow=6)  # the default labels
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["1–6", "7–12", "13–18", "19–24"]
    (ax,) = chain_grid_figure(labelled_snapshots(20, 5), 4, 6, times=range(0, 200, 10)).axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["chain 1", "chain 2", "chain 3", "chain 4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "40", "80", "110", "150", "190"]
    assert ax.get_xlabel() == "sampler step →" and ax.get_ylabel() == "chain"
    with pytest.raises(ValueError, match="one time per snapshot"):
        save_chain_grid(labelled_snapshots(20, 5), tmp_path / "e.png", times=range(3))


def test_chain_snapshots_start_and_times(generator):
    rbm = BernoulliRBM(9, 4, event_shape=(1, 3, 3), weight_scale=1.0, generator=generator)
    x0 = torch.bernoulli(torch.full((5, 1, 3, 3), 0.5), generator=generator)
    snapshots = chain_snapshots(rbm, BlockGibbs(), x0, num_steps=30, generator=generator, num_snapshots=4)
    assert snapshots.shape == (4, 5, 1, 3, 3) and torch.equal(snapshots[0], x0)
    assert set(snapshots.unique().tolist()) <= {0.0, 1.0}
    again = chain_snapshots(rbm, BlockGibbs(), x0, 30, torch.Generator().manual_seed(1), num_snapshots=4)
    same = chain_snapshots(rbm, BlockGibbs(), x0, 30, torch.Generator().manual_seed(1), num_snapshots=4)
    assert torch.equal(again, same)
    assert chain_snapshots(rbm, BlockGibbs(), x0, 2, generator, num_snapshots=10).shape[0] == 3  # times 0, 1, 2


def test_sample_plot_chains(tmp_path):
    (tmp_path / "m.py").write_text("import torch\nfrom ebmlab.energy.rbm import BernoulliRBM\n"
                                   "def rbm():\n    return BernoulliRBM(16, 4, event_shape=(1, 4, 4), weight_scale=1.0,\n"
                                   "                        generator=torch.Generator().manual_seed(0))\n")
    for spec, sampler in ((f"{tmp_path / 'm.py'}:rbm", "block_gibbs"), ("gmm8", "mala")):
        out = tmp_path / f"{sampler}.png"
        result = CliRunner().invoke(main, ["sample", "--energy", spec, "--sampler", sampler, "--chains", 4, "--steps",
                                           20, "--burn-in", 0, "--out", tmp_path / "s.npz", "--plot-chains", out])
        assert result.exit_code == 0, result.output
        assert out.is_file() and f"wrote {out}" in result.output
    grid = imread(tmp_path / "block_gibbs.png")
    assert grid.shape[1] > grid.shape[0]  # 4 chains (rows) by 10 snapshots (columns)
    result = CliRunner().invoke(main, ["sample", "--energy", "gmm8", "--sampler", "mala", "--out", tmp_path / "t.npz",
                                       "--plot-chains", tmp_path / "c.txt"])
    assert result.exit_code == 2 and "--plot-chains" in result.output and not (tmp_path / "t.npz").exists()


def test_objective_chains_default_and_annealed():
    """The base objective leaves chains to the trainer; NCSN returns annealed Langevin snapshots
    from ``N(0, σ_1² I)`` ending at the denoised samples."""
    from ebmlab.objectives import make_objective
    from ebmlab.energy.noise_conditional import NCSNMLP

    assert make_objective("pcd").model_chains(BernoulliRBM(4, 2), 3, None) is None
    model = NCSNMLP((1, 2, 2), hidden=(8, 8), sigmas=[1.0, 0.5, 0.1], parametrization="score")
    frames = make_objective("ncsn", sample_steps_per_level=3).model_chains(model, 3, torch.Generator().manual_seed(0))
    assert frames.shape == (10, 3, 1, 2, 2) and torch.isfinite(frames).all()
