"""MCMC samplers: kernels (``state, info = kernel.step(energy, state, generator)``) and the run driver."""

from ebmlab.samplers.adaptation import DualAveraging, DualAveragingState
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, metropolis_accept
from ebmlab.samplers.block_gibbs import BlockGibbs
from ebmlab.samplers.gibbs import Gibbs, SingleSiteMetropolis
from ebmlab.samplers.gwg import GibbsWithGradients
from ebmlab.samplers.hmc import HMC, leapfrog
from ebmlab.samplers.langevin import MALA, ULA
from ebmlab.samplers.nuts import NUTS
from ebmlab.samplers.random_walk import RandomWalkMetropolis
from ebmlab.samplers.tempering import ParallelTempering
from ebmlab.samplers.registry import available, get_kernel_class, kernel_options, make_kernel, register
from ebmlab.samplers.driver import ChainDivergedError, ChainRecord, sample
from ebmlab.samplers.compiled_loop import StepCompiler
from ebmlab.samplers.window_adaptation import WindowAdaptationInfo, window_adaptation

for _cls in (RandomWalkMetropolis, ULA, MALA, HMC, SingleSiteMetropolis, Gibbs, BlockGibbs, GibbsWithGradients, ParallelTempering, NUTS):
    register(_cls)

__all__ = [
    "BlockGibbs", "GibbsWithGradients", "ChainDivergedError", "ChainRecord", "ChainState", "DualAveraging", "DualAveragingState", "Gibbs",
    "HMC", "Kernel", "MALA", "ParallelTempering", "RandomWalkMetropolis", "SingleSiteMetropolis", "StepCompiler", "StepInfo", "ULA",
    "available", "get_kernel_class", "kernel_options", "leapfrog", "make_kernel", "metropolis_accept", "register", "sample",
    "WindowAdaptationInfo", "window_adaptation",
]
