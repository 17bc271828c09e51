"""The top-level facade: every advertised name resolves, and the main kernels and entry points are there."""

from __future__ import annotations

import importlib

import pytest

import ebmlab


@pytest.mark.parametrize("name", ebmlab.__all__)
def test_every_name_in_all_resolves(name):
    assert getattr(ebmlab, name) is not None


def test_star_import_brings_the_kernels_and_fit():
    namespace: dict = {}
    exec("from ebmlab import *", namespace)
    for name in ("NUTS", "ParallelTempering", "HMC", "MALA", "sample", "fit", "TrainConfig", "window_adaptation"):
        assert name in namespace, name


@pytest.mark.parametrize("package", ["energy", "samplers", "objectives", "partition", "diagnostics"])
def test_subpackage_all_lists_only_real_names(package):
    module = importlib.import_module(f"ebmlab.{package}")
    names = getattr(module, "__all__", [])
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"ebmlab.{package}.__all__ names missing attributes: {missing}"


def test_dir_lists_lazy_entry_points_and_subpackages():
    listing = dir(ebmlab)
    assert {"fit", "load_run", "metrics", "partition"} <= set(listing)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        ebmlab.NotAThing  # noqa: B018
