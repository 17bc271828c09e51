"""Training objectives: one interface, ``loss, metrics = objective.loss(energy, batch, generator)``.

Registered names: ``cd``, ``pcd``, ``replay`` (contrastive divergence and its persistent and
replay-buffer variants), ``sm``, ``ssm``, ``dsm`` (score matching: exact, sliced, denoising),
``nce`` (noise-contrastive estimation), ``pl`` (pseudo-likelihood) and ``ratio_matching``
(binary data); ``ncsn`` too when :mod:`ebmlab.objectives.ncsn`
is present. Build one with ``make_objective(name, **options)``.
"""

import importlib as _importlib

from ebmlab.objectives.base import Objective, frozen
from ebmlab.objectives.buffers import NoiseSource, ReplayBuffer
from ebmlab.objectives.contrastive import ContrastiveDivergence, PersistentCD, ReplayCD, run_chains
from ebmlab.objectives.jem import JEMObjective
from ebmlab.objectives.nce import NoiseContrastiveEstimation
from ebmlab.objectives.pseudo_likelihood import PseudoLikelihood
from ebmlab.objectives.ratio_matching import RatioMatching
from ebmlab.objectives.registry import available_objectives, get_objective_class, make_objective, register_objective
from ebmlab.objectives.score_matching import DenoisingScoreMatching, ScoreMatching, SlicedScoreMatching

for _cls in (ContrastiveDivergence, PersistentCD, ReplayCD, ScoreMatching, SlicedScoreMatching,
             DenoisingScoreMatching, NoiseContrastiveEstimation, PseudoLikelihood, RatioMatching):
    register_objective(_cls)
register_objective(JEMObjective)  # JEM: classifier cross-entropy + contrastive divergence on E(x)

try:  # noise-conditional score networks register themselves when their module exists
    _importlib.import_module(f"{__name__}.ncsn")
except ModuleNotFoundError as _err:
    if _err.name != f"{__name__}.ncsn":
        raise

__all__ = [
    "ContrastiveDivergence", "DenoisingScoreMatching", "NoiseContrastiveEstimation", "NoiseSource", "Objective",
    "PersistentCD", "PseudoLikelihood", "RatioMatching", "ReplayBuffer", "ReplayCD", "ScoreMatching", "SlicedScoreMatching", "available_objectives",
    "frozen", "get_objective_class", "make_objective", "register_objective", "run_chains",
]
__all__ += ["JEMObjective"]
