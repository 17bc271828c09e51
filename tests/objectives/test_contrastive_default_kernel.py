"""The contrastive objectives' default kernel follows the data's support; a given kernel is kept.

Without a kernel, ``setup(..., support=)`` picks ULA for real data, block Gibbs for a two-layer
model (BernoulliRBM: the lean closed-form path then applies to cd/pcd) and single-site Gibbs for
other discrete energies — the choice of the trainer's ``sampler = "auto"``. The kernel that
actually draws the negatives is read where they are drawn (``run_chains``) or, on the lean
path, from the loop. The negative control is the old default: ULA given explicitly on the RBM is
still refused at step 1 with the kernel's own message.
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch

import ebmlab
import ebmlab.objectives.contrastive as contrastive
from ebmlab.energy import Ising
from ebmlab.energy.discrete import Potts
from ebmlab.energy.neural import MLPEnergy
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.objectives import ContrastiveDivergence, PersistentCD, ReplayCD, make_objective
from ebmlab.samplers import ULA, BlockGibbs, Gibbs
from ebmlab.training.run import AUTO_SAMPLER

V, H = 12, 4


@pytest.fixture
def binary() -> torch.Tensor:
    return torch.randint(0, 2, (80, V), generator=torch.Generator().manual_seed(0)).float()


@pytest.fixture
def used_kernels(monkeypatch) -> list:
    """The kernels ``run_chains`` is called with (the general path's negatives)."""
    seen, original = [], contrastive.run_chains

    def spy(energy, kernel, x0, num_steps, generator):
        seen.append(kernel)
        return original(energy, kernel, x0, num_steps, generator)

    monkeypatch.setattr(contrastive, "run_chains", spy)
    return seen


def rbm() -> BernoulliRBM:
    return BernoulliRBM(V, H, weight_scale=0.1, generator=torch.Generator().manual_seed(1))


def lean_flags() -> tuple[list, Callable]:
    flags = []
    return flags, lambda step, record, loop: flags.append(loop.lean is not None)


@pytest.mark.parametrize("name", ["cd", "pcd"])
def test_an_rbm_trains_by_default_with_block_gibbs_on_the_lean_path(binary, name):
    model, (flags, callback) = rbm(), lean_flags()
    before = [p.detach().clone() for p in model.parameters()]
    result = ebmlab.fit(model, name, binary, steps=4, batch_size=20, callbacks=[callback],
                        objective_options={"num_steps": 1})
    assert result.step == 4 and type(result.objective.kernel) is BlockGibbs
    assert flags and all(flags)
    assert all(math.isfinite(v) for r in result.history for v in r.values() if isinstance(v, float))
    assert any(not torch.equal(p.detach(), q) for p, q in zip(model.parameters(), before))


def test_an_rbm_on_the_general_path_samples_with_block_gibbs(binary, used_kernels):
    result = ebmlab.fit(rbm(), "replay", binary, steps=2, batch_size=20,
                        objective_options={"num_steps": 1, "buffer_size": 40})
    assert result.step == 2 and used_kernels and all(type(k) is BlockGibbs for k in used_kernels)


def test_real_data_still_gets_ula(used_kernels):
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    result = ebmlab.fit(MLPEnergy(2, hidden=(8,)), "pcd", x, steps=2, batch_size=16, objective_options={"num_steps": 2})
    assert used_kernels and all(k == ULA(step_size=0.01, noise_scale=1.0) for k in used_kernels)
    assert result.objective.kernel is used_kernels[0]


@pytest.mark.parametrize("energy, data", [
    (Ising(size=3), torch.randint(0, 2, (30, 3, 3), generator=torch.Generator().manual_seed(3)).float()),
    (Potts(size=2, num_states=3), torch.randint(0, 3, (30, 2, 2), generator=torch.Generator().manual_seed(4)).float()),
], ids=["binary", "categorical"])
def test_other_discrete_energies_get_gibbs_as_the_trainer_auto_sampler(energy, data, used_kernels):
    objective = PersistentCD(num_steps=3)
    objective.setup(energy, data, torch.Generator().manual_seed(5), support=energy.support)
    assert type(objective.kernel) is Gibbs and objective.kernel.name == AUTO_SAMPLER[energy.support]
    loss, metrics = objective.loss(energy, data[:10], torch.Generator().manual_seed(6))
    assert used_kernels == [objective.kernel] and math.isfinite(float(loss))
    assert set(torch.unique(objective.chains).tolist()) <= set(range(energy.num_states))


def test_the_default_is_chosen_again_at_each_setup(binary):
    objective = ContrastiveDivergence()
    objective.setup(rbm(), binary, support="binary")
    assert type(objective.kernel) is BlockGibbs
    objective.setup(MLPEnergy(V, hidden=(4,)), torch.randn(10, V), support="real")
    assert type(objective.kernel) is ULA


@pytest.mark.parametrize("kernel", [ULA(step_size=0.01), "ula", {"name": "ula", "step_size": 0.01}],
                         ids=["object", "name", "table"])
def test_an_incompatible_kernel_given_is_still_refused(binary, kernel):
    with pytest.raises(ValueError, match="ULA samples real states but the energy BernoulliRBM has support 'binary'"):
        ebmlab.fit(rbm(), "pcd", binary, steps=2, batch_size=20, objective_options={"kernel": kernel, "num_steps": 1})


@pytest.mark.parametrize("cls", [ContrastiveDivergence, PersistentCD, ReplayCD])
def test_a_kernel_given_is_never_replaced(binary, cls):
    given = Gibbs()
    objective = cls(kernel=given, num_steps=1)
    objective.setup(rbm(), binary, torch.Generator().manual_seed(7), support="binary")
    assert objective.kernel is given
    named = make_objective(cls.name, kernel="gibbs")
    named.setup(rbm(), binary, torch.Generator().manual_seed(7), support="binary")
    assert type(named.kernel) is Gibbs
