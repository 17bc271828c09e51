"""MCMC samplers: kernels (``state, info = kernel.step(energy, state, generator)``) and the run driver."""

from .adaptation import DualAveraging, DualAveragingState
from .base import ChainState, Kernel, StepInfo, metropolis_accept
from .block_gibbs import BlockGibbs
from .gibbs import Gibbs, SingleSiteMetropolis
from .gwg import GibbsWithGradients
from .hmc import HMC, leapfrog
from .langevin import MALA, ULA
from .random_walk import RandomWalkMetropolis
from .registry import available, get_kernel_class, make_kernel, register
from .run import ChainDivergedError, ChainRecord, sample

for _cls in (RandomWalkMetropolis, ULA, MALA, HMC, SingleSiteMetropolis, Gibbs, BlockGibbs, GibbsWithGradients):
    register(_cls)

__all__ = [
    "BlockGibbs", "GibbsWithGradients", "ChainDivergedError", "ChainRecord", "ChainState", "DualAveraging", "DualAveragingState", "Gibbs",
    "HMC", "Kernel", "MALA", "RandomWalkMetropolis", "SingleSiteMetropolis", "StepInfo", "ULA",
    "available", "get_kernel_class", "leapfrog", "make_kernel", "metropolis_accept", "register", "sample",
]
