"""Shared fixtures: a seeded generator and the exact targets the sampler tests run on.

Every random draw in the tests comes from a ``torch.Generator`` with a fixed seed, so a
statistical test gives the same verdict on every run; a seed is never changed to make a
test pass.

The suite runs PyTorch with one intra-op thread: its tensors are small (thousands of chains
of a few dimensions), where a second thread adds synchronisation cost and, on a busy
two-core machine, multiplies CPU time many times over through spinning worker threads.
"""

from __future__ import annotations

import pytest
import torch

from ebmlab.energy import Gaussian, Ising
from ebmlab.testing import enumerate_probabilities

torch.set_num_threads(1)


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU generator with a fixed seed, fresh for each test."""
    return torch.Generator().manual_seed(20240601)


@pytest.fixture
def correlated_gaussian() -> Gaussian:
    """``N(μ, Σ)``, ``μ = (0.5, -1)``, ``Σ = [[1, 0.5], [0.5, 1]]``, float64.

    The eigenvalues of Σ are 1.5 and 0.5, so the precision's largest eigenvalue is 2 and
    gradient samplers are stable for ``step_size < 1``.
    """
    return Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).double()


@pytest.fixture(scope="session")
def small_ising() -> Ising:
    """The 3×3 periodic Ising model of the discrete tests: 512 states, J = 0.3, h = 0.1."""
    return Ising(3, coupling=0.3, field=0.1)


@pytest.fixture(scope="session")
def small_ising_probs(small_ising: Ising) -> torch.Tensor:
    """Exact probabilities of the 512 states of ``small_ising``, enumeration order, float64."""
    return enumerate_probabilities(small_ising, (3, 3), 2)


@pytest.fixture
def float64():
    """Run the test with float64 as torch's default dtype, restoring the previous one after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
