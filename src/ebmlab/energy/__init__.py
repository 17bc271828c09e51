"""Energies: the base helpers, analytic targets, discrete models and neural networks."""

from .analytic import Banana, Funnel, Gaussian, GaussianMixture, eight_gaussians
from .base import (
    Energy,
    EnergyShapeError,
    check_energy_output,
    delta_energy_flip,
    energy,
    event_shape_of,
    grad,
    log_prob,
    log_ratio,
    score,
    site_energies,
    value_and_grad,
)
from .compiled import CompiledEnergy, compile_energy
from .discrete import Ising, Potts, enumerate_states
from .neural import ConvEnergy, MLPEnergy
from .rbm import BernoulliRBM

__all__ = [
    "BernoulliRBM", "Banana", "CompiledEnergy", "ConvEnergy", "Energy", "EnergyShapeError", "Funnel", "Gaussian",
    "GaussianMixture", "Ising", "MLPEnergy", "Potts", "check_energy_output", "compile_energy",
    "delta_energy_flip", "eight_gaussians", "energy", "enumerate_states", "event_shape_of", "grad",
    "log_prob", "log_ratio", "score", "site_energies", "value_and_grad",
]
