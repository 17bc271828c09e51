"""The batched NUTS kernel against a recursive single-chain reference, step for step.

Reference: :class:`ReferenceTree` is Stan's recursive ``base_nuts`` (Betancourt 2017, as in
Stan ≥ 2.26; with ``robust_uturn=False`` without the extra sub-tree checks) for one chain, in
plain 1-chain tensors and Python floats, drawing its random numbers in the order :mod:`ebmlab.samplers.nuts` documents; it matches the batched kernel to
1e-12 in float64, with both generators in the same state after every transition.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import Gaussian
from ebmlab.energy.base import value_and_grad
from ebmlab.samplers import ChainState
from ebmlab.samplers.metric import Metric
from ebmlab.samplers.nuts import NUTS

from nuts_targets import SCALES, correlated, ring, scaled_10d


# --------------------------------------------------------------------------------------
# A recursive single-chain reference (Stan's base_nuts) that must match step for step
# --------------------------------------------------------------------------------------


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def _criterion(p_sharp_minus: torch.Tensor, p_sharp_plus: torch.Tensor, rho: torch.Tensor) -> bool:
    """Stan's ``compute_criterion``: no U-turn iff both ends move along ρ."""
    return float(p_sharp_plus @ rho) > 0 and float(p_sharp_minus @ rho) > 0


class ReferenceTree:
    """One chain's NUTS transition, recursive and written after Stan's ``base_nuts::transition``
    and ``build_tree`` (multinomial sampling, generalised criterion, the extra sub-tree checks
    when the kernel's ``robust_uturn`` is set). The one departure from Stan: inside a subtree, each leaf replaces the candidate
    with probability ``w / Σw`` (one uniform per leaf) instead of one uniform per merge — the
    same distribution, and the draw order of the batched kernel. Forward iff ``u < 0.5``.
    """

    def __init__(self, energy, kernel: NUTS, x, p, e, g, inv_mass, eps: float):
        self.energy, self.inv_mass = energy, inv_mass
        self.robust = kernel.robust_uturn
        self.eps, self.max_error = eps, kernel.max_energy_error
        self.h0 = float(e) + self.kinetic(p)
        self.z = self.z_fwd = self.z_bck = (x, p, g, float(e))
        sharp = inv_mass * p
        self.p_sharp_fwd_fwd = self.p_sharp_fwd_bck = self.p_sharp_bck_fwd = self.p_sharp_bck_bck = sharp
        self.p_fwd_fwd = self.p_fwd_bck = self.p_bck_fwd = self.p_bck_bck = p
        self.rho = p
        self.log_sum_weight = 0.0
        self.sample = (x, float(e), g, 0.0)  # position, energy, gradient, energy error
        self.moved, self.depth, self.n_leapfrog, self.sum_metro_prob = False, 0, 0, 0.0
        self.divergent, self.active = False, True

    def kinetic(self, p: torch.Tensor) -> float:
        return 0.5 * float(p @ (self.inv_mass * p))

    def evolve(self, sign: int) -> None:
        x, p, g, _ = self.z
        eps = sign * self.eps
        p = p - 0.5 * eps * g
        x = x + eps * (self.inv_mass * p)
        e, g = value_and_grad(self.energy, x[None])
        g = g[0]
        p = p - 0.5 * eps * g
        self.z = (x, p, g, float(e[0]))

    def extend(self, forward: bool, uniform) -> None:
        """Build this doubling's subtree (the first half of Stan's loop body)."""
        self.uniform, self.leaf = uniform, 0
        self.sub_log_weight, self.sub_sample = -math.inf, None
        if forward:
            self.z = self.z_fwd
            self.rho_bck = self.rho
            self.p_bck_fwd, self.p_sharp_bck_fwd = self.p_fwd_fwd, self.p_sharp_fwd_fwd
            (self.valid, self.p_sharp_fwd_bck, self.p_sharp_fwd_fwd, self.rho_fwd, self.p_fwd_bck,
             self.p_fwd_fwd) = self.build_tree(self.depth, 1)
            self.z_fwd = self.z
        else:
            self.z = self.z_bck
            self.rho_fwd = self.rho
            self.p_fwd_bck, self.p_sharp_fwd_bck = self.p_bck_bck, self.p_sharp_bck_bck
            (self.valid, self.p_sharp_bck_fwd, self.p_sharp_bck_bck, self.rho_bck, self.p_bck_fwd,
             self.p_bck_bck) = self.build_tree(self.depth, -1)
            self.z_bck = self.z

    def build_tree(self, depth: int, sign: int):
        """Returns ``(valid, p♯_beg, p♯_end, ρ, p_beg, p_end)`` of a subtree of ``2^depth`` leaves."""
        if depth == 0:
            self.evolve(sign)
            self.n_leapfrog += 1
            x, p, g, e = self.z
            h = e + self.kinetic(p)
            if math.isnan(h):
                h = math.inf
            divergent = h - self.h0 > self.max_error
            self.divergent |= divergent
            log_w = self.h0 - h
            u = self.uniform(self.leaf)
            self.leaf += 1
            new_log_weight = _logaddexp(self.sub_log_weight, log_w)
            if u < math.exp(log_w - new_log_weight):
                self.sub_sample = (x, e, g, h - self.h0)
            self.sub_log_weight = new_log_weight
            self.sum_metro_prob += 1.0 if log_w > 0 else math.exp(log_w)
            sharp = self.inv_mass * p
            return not divergent, sharp, sharp, p, p, p
        valid, p_sharp_beg, p_sharp_init_end, rho_init, p_beg, p_init_end = self.build_tree(depth - 1, sign)
        if not valid:
            return (False,) + (None,) * 5
        valid, p_sharp_final_beg, p_sharp_end, rho_final, p_final_beg, p_end = self.build_tree(depth - 1, sign)
        if not valid:
            return (False,) + (None,) * 5
        rho_subtree = rho_init + rho_final
        persist = _criterion(p_sharp_beg, p_sharp_end, rho_subtree)
        if self.robust:
            persist &= _criterion(p_sharp_beg, p_sharp_final_beg, rho_init + p_final_beg)
            persist &= _criterion(p_sharp_init_end, p_sharp_end, rho_final + p_init_end)
        return persist, p_sharp_beg, p_sharp_end, rho_subtree, p_beg, p_end

    def merge(self, u: float) -> None:
        """Stan's loop body after the subtree: biased progressive sampling and the U-turn checks."""
        if not self.valid:
            self.active = False
            return
        self.depth += 1
        if self.sub_log_weight > self.log_sum_weight or u < math.exp(self.sub_log_weight - self.log_sum_weight):
            self.sample, self.moved = self.sub_sample, True
        self.log_sum_weight = _logaddexp(self.log_sum_weight, self.sub_log_weight)
        self.rho = self.rho_bck + self.rho_fwd
        persist = _criterion(self.p_sharp_bck_bck, self.p_sharp_fwd_fwd, self.rho)
        if self.robust:
            persist &= _criterion(self.p_sharp_bck_bck, self.p_sharp_fwd_bck, self.rho_bck + self.p_fwd_bck)
            persist &= _criterion(self.p_sharp_bck_fwd, self.p_sharp_fwd_fwd, self.rho_fwd + self.p_bck_fwd)
        self.active = persist


def reference_step(energy, kernel: NUTS, state: ChainState, generator: torch.Generator) -> list[ReferenceTree]:
    """One transition of every chain, one chain at a time, drawing from ``generator`` in the
    documented order: momenta; per doubling the directions ``(C,)``, then one ``(C,)`` uniform
    per leaf that any chain builds (drawn when the first chain needs it), then one ``(C,)``."""
    x = state.x
    c, dtype = x.shape[0], x.dtype
    metric = kernel.metric or Metric()
    inv_mass = torch.ones(x.shape[1], dtype=dtype) if metric.inverse_mass_matrix is None else metric.inverse_mass_matrix
    p = metric.sample_momentum(x, generator)
    step = kernel.step_size  # a float, or one per chain

    def chain(values, i):
        return values[i] if isinstance(values, torch.Tensor) and values.dim() == 2 else values

    trees = [ReferenceTree(energy, kernel, x[i], p[i], state.energy[i], state.grad[i], chain(inv_mass, i),
                           float(step[i]) if isinstance(step, torch.Tensor) else step) for i in range(c)]
    for _ in range(kernel.max_tree_depth):
        building = [t.active for t in trees]
        if not any(building):
            break
        u_dir = torch.rand((c,), generator=generator, dtype=dtype)
        tape: list[torch.Tensor] = []

        def uniform(chain: int, leaf: int) -> float:
            while len(tape) <= leaf:
                tape.append(torch.rand((c,), generator=generator, dtype=dtype))
            return float(tape[leaf][chain])

        for i, tree in enumerate(trees):
            if building[i]:
                tree.extend(bool(u_dir[i] < 0.5), lambda leaf, i=i: uniform(i, leaf))
        u_top = torch.rand((c,), generator=generator, dtype=dtype)
        for i, tree in enumerate(trees):
            if building[i]:
                tree.merge(float(u_top[i]))
    return trees


REFERENCE_CASES = {
    "gaussian-2d": (correlated, NUTS(step_size=0.3)),
    "gaussian-2d-large-step": (correlated, NUTS(step_size=1.2)),
    "gaussian-2d-divergent": (correlated, NUTS(step_size=3.0)),
    "eight-gaussians": (ring, NUTS(step_size=0.2)),
    "gaussian-10d-diagonal-metric": (scaled_10d, NUTS(step_size=0.8, metric=Metric(SCALES**2))),
    "gaussian-10d-depth-limit": (scaled_10d, NUTS(step_size=0.1, max_tree_depth=5)),
    # without Stan's extra U-turn checks
    "gaussian-2d-whole-node-uturn": (correlated, NUTS(step_size=0.3, robust_uturn=False)),
    "eight-gaussians-whole-node-uturn": (ring, NUTS(step_size=0.2, robust_uturn=False)),
    "gaussian-10d-whole-node-uturn": (scaled_10d, NUTS(step_size=0.8, metric=Metric(SCALES**2), robust_uturn=False)),
    "gaussian-10d-whole-node-uturn-depth-limit": (scaled_10d, NUTS(step_size=0.1, max_tree_depth=5,
                                                                   robust_uturn=False)),
    # one ε per chain (0.05 … 3.0: short trees, long trees and divergent ones in one batch)
    "gaussian-10d-per-chain-step": (scaled_10d, NUTS(step_size=torch.tensor([0.05, 0.1, 0.3, 0.6, 0.8, 1.0, 1.5, 3.0],
                                                                           dtype=torch.float64),
                                                      metric=Metric(SCALES**2))),
    # one ε and one diagonal metric per chain ((C, D), per_chain=True)
    "gaussian-10d-per-chain-metric": (scaled_10d, NUTS(step_size=torch.linspace(0.2, 1.2, 8, dtype=torch.float64),
                                                        metric=Metric(SCALES**2 * torch.linspace(0.5, 2.0, 8,
                                                                      dtype=torch.float64)[:, None], per_chain=True))),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_CASES))
def test_batched_kernel_matches_recursive_reference(name):
    """Eight chains, four transitions: positions, energies and every per-chain statistic of the
    batched kernel equal the recursive reference's (to 1e-12), with both generators in the
    same state after each transition (the draw order is the documented one)."""
    make_target, kernel = REFERENCE_CASES[name]
    target = make_target()
    x0 = target.sample(8, torch.Generator().manual_seed(31)).to(torch.float64)
    state = ref_state = kernel.init(target, x0)
    g_kernel, g_ref = torch.Generator().manual_seed(32), torch.Generator().manual_seed(32)
    saw = {"moved": 0, "depths": set()}
    for _ in range(4):
        state, info = kernel.step(target, state, g_kernel)
        trees = reference_step(target, kernel, ref_state, g_ref)
        assert torch.equal(g_kernel.get_state(), g_ref.get_state()), "the draw order differs"
        ref_x = torch.stack([t.sample[0] for t in trees])
        ref_state = ChainState(ref_x, torch.tensor([t.sample[1] for t in trees], dtype=torch.float64),
                               torch.stack([t.sample[2] for t in trees]))
        torch.testing.assert_close(state.x, ref_x, rtol=0, atol=1e-12)
        torch.testing.assert_close(state.energy, ref_state.energy, rtol=0, atol=1e-12)
        torch.testing.assert_close(state.grad, ref_state.grad, rtol=0, atol=1e-12)
        assert info.tree_depth.tolist() == [t.depth for t in trees]
        assert info.num_grad_evals.tolist() == [t.n_leapfrog for t in trees]
        assert info.diverged.tolist() == [t.divergent for t in trees]
        assert info.accepted.tolist() == [t.moved for t in trees]
        expected = torch.tensor([t.sum_metro_prob / t.n_leapfrog for t in trees], dtype=torch.float64)
        torch.testing.assert_close(info.accept_prob, expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(info.energy_error, torch.tensor([t.sample[3] for t in trees], dtype=torch.float64),
                                   rtol=0, atol=1e-10)
        saw["moved"] += int(info.accepted.sum())
        saw["depths"] |= set(info.tree_depth.tolist())
    assert saw["moved"] > 0
    if name == "gaussian-2d-divergent":
        assert info.diverged.any()


@pytest.mark.parametrize("make_target,step", [(correlated, 0.3), (ring, 0.02), (scaled_10d, 0.1)])
def test_robust_uturn_checks_only_stop_trees_earlier(make_target, step):
    """From the same state, momentum and draws (one chain at a time, so that the batch does not
    couple the draws), Stan's extra checks can only stop a trajectory at or before the point
    the whole-node checks stop it, and on these targets they stop some earlier: the option is
    live, and it adds stopping conditions, nothing else."""
    target = make_target()
    x0 = target.sample(48, torch.Generator().manual_seed(5)).to(torch.float64)
    plain, robust = NUTS(step_size=step, robust_uturn=False), NUTS(step_size=step)
    counts = []
    for i in range(x0.shape[0]):
        row = x0[i:i + 1]
        _, info_plain = plain.step(target, plain.init(target, row), torch.Generator().manual_seed(6 + i))
        _, info_robust = robust.step(target, robust.init(target, row), torch.Generator().manual_seed(6 + i))
        counts.append((int(info_robust.num_grad_evals), int(info_plain.num_grad_evals)))
    assert all(r <= p for r, p in counts), counts
    assert any(r < p for r, p in counts), counts


def test_robust_uturn_must_be_a_bool():
    with pytest.raises(ValueError, match="robust_uturn must be True or False"):
        NUTS(step_size=0.1, robust_uturn="yes").validate()


def test_without_the_extra_checks_nuts_runs_in_circles_on_an_isotropic_gaussian():
    """Why the extra checks are the default: on a 100-D standard normal at ε = 0.4 the
    whole-node checks miss the U-turns (Stan's "runs in circles" failure): measured 377
    gradients a draw against 14 with the extra checks (32 chains, 10 draws: 370 against 14).
    Both must hold: the robust kernel's trees stay short, the whole-node kernel's do not."""
    target = Gaussian(torch.zeros(100), torch.eye(100)).double()
    x0 = target.sample(32, torch.Generator().manual_seed(0)).double()
    per_draw = {}
    for robust in (True, False):
        state, kernel = None, NUTS(step_size=0.4, robust_uturn=robust)
        state, generator, grads = kernel.init(target, x0), torch.Generator().manual_seed(1), 0.0
        for _ in range(10):
            state, info = kernel.step(target, state, generator)
            grads += float(info.num_grad_evals.double().mean())
        per_draw[robust] = grads / 10
    assert per_draw[True] < 20, per_draw
    assert per_draw[False] > 10 * per_draw[True], per_draw
