"""A random Bernoulli RBM for tests (float64, biases ~ N(0, 0.5²), weights scaled by ``scale``)."""

from __future__ import annotations

import torch

from ebmlab.energy.rbm import BernoulliRBM


def random_rbm(num_visible: int, num_hidden: int, scale: float = 1.0, seed: int = 0,
               event_shape=None) -> BernoulliRBM:
    g = torch.Generator().manual_seed(seed)
    rbm = BernoulliRBM(num_visible, num_hidden, event_shape=event_shape, weight_scale=scale, generator=g)
    with torch.no_grad():
        rbm.b.normal_(0.0, 0.5, generator=g)
        rbm.c.normal_(0.0, 0.5, generator=g)
    return rbm.double()
