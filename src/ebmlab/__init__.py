"""ebmlab: energy-based models in PyTorch — define, sample, train and evaluate.

An energy ``E(x)`` defines ``p(x) = exp(-E(x)) / Z``. See :mod:`ebmlab.energy` for energies,
:mod:`ebmlab.samplers` for MCMC, :mod:`ebmlab.diagnostics` for ESS and R-hat.
"""

from ebmlab import energy, samplers
from ebmlab.energy import (
    Banana, BernoulliRBM, ClassifierEnergy, ConditionalEnergy, ConvEnergy, Energy, Funnel, Gaussian, GaussianMixture, Ising, MLPEnergy, Potts,
    compile_energy, eight_gaussians, log_prob, log_ratio, score,
)
from ebmlab.samplers import (
    HMC, MALA, NUTS, ULA, BlockGibbs, ChainRecord, Gibbs, GibbsWithGradients, ParallelTempering,
    RandomWalkMetropolis, SingleSiteMetropolis, sample, window_adaptation,
)

__version__ = "0.1.0"

# Loading trained runs, imported on first use (it pulls in the data stack).
_LAZY = {"load": "training.loading", "load_run": "training.loading", "TrainConfig": "training.config",
         "fit": "training.fit", "FitResult": "training.loop", "Callback": "training.loop", "train": "training.run"}


#: Subpackages importable as attributes (``ebmlab.data.load_dataset``), loaded on first use.
_SUBPACKAGES = ("data", "diagnostics", "distributed", "jobs", "metrics", "objectives", "partition", "testing",
                "training")


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # energies
    "Banana", "BernoulliRBM", "ClassifierEnergy", "ConditionalEnergy", "ConvEnergy", "Energy", "Funnel", "Gaussian", "GaussianMixture", "Ising",
    "MLPEnergy", "Potts", "compile_energy", "eight_gaussians", "log_prob", "log_ratio", "score",
    # samplers
    "BlockGibbs", "ChainRecord", "Gibbs", "GibbsWithGradients", "HMC", "MALA", "NUTS", "ParallelTempering",
    "RandomWalkMetropolis", "SingleSiteMetropolis", "ULA", "sample", "window_adaptation",
    # training (loaded on first use)
    *_LAZY,
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))
