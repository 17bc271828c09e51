"""Energies: the base helpers, analytic targets, discrete models and neural networks."""

from ebmlab.energy.analytic import Banana, Funnel, Gaussian, GaussianMixture, eight_gaussians
from ebmlab.energy.base import (
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
from ebmlab.energy.classifier import ClassifierEnergy, ConditionalEnergy, jem_energy
from ebmlab.energy.compiled import CompiledEnergy, compile_energy
from ebmlab.energy.discrete import Ising, Potts
from ebmlab.energy.enumeration import enumerate_states, exact_log_z, exact_sample
from ebmlab.energy.neural import ConvEnergy, MLPEnergy
from ebmlab.energy.rbm import BernoulliRBM

__all__ = [
    "BernoulliRBM", "Banana", "ClassifierEnergy", "CompiledEnergy", "ConditionalEnergy", "ConvEnergy", "Energy", "EnergyShapeError", "Funnel", "Gaussian",
    "GaussianMixture", "Ising", "MLPEnergy", "Potts", "check_energy_output", "compile_energy",
    "delta_energy_flip", "eight_gaussians", "energy", "enumerate_states", "exact_log_z", "exact_sample", "event_shape_of", "grad", "jem_energy",
    "log_prob", "log_ratio", "score", "site_energies", "value_and_grad",
]
