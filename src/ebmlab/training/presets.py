"""Recommended settings by model and data kind, for the settings a user leaves unset.

``ebmlab train`` layers its settings as defaults < recommended < ``--config`` file < options <
``--set``: :func:`recommend` fills in only what none of the later layers names, so every
recommendation can be overridden, and the run's ``config.toml`` holds the values used.

* ``--model rbm`` (:class:`~ebmlab.energy.rbm.BernoulliRBM`): persistent CD with one block-Gibbs
  sweep per update (Tieleman 2008), SGD with momentum and L2 weight decay as in Hinton's
  practical guide (2010): learning rate 0.05, momentum 0.5, weight decay 1e-4, mini-batches of
  100; no standardisation (the visible units are binary). Measured on ``digits-binary`` with 16
  hidden units (exact log Z), these reach a held-out NLL of 18.4 nats per image in 10,000
  updates, where Adam at 1e-3 stays at 20.9. Real-valued image sets with a binarised
  variant (``digits``, ``mnist:DIR``, ``fashion-mnist:DIR``) are replaced by it (pixels
  thresholded at ½), and the data default to ``digits-binary``.
* Contrastive objectives on real-valued vectors: the energy-magnitude penalty α = 0.1.
* ``--model mlp`` on the built-in 2-D toy sets (:data:`TOY_SETTINGS`): NCE with 4 noise draws per
  data point and an MLP of 3×256, also the objective when none is named (0.009 nats above the
  true cross-entropy on 8 gaussians, 0.035 on 2 spirals, in 5,000 updates); DSM with σ annealed
  geometrically from 1 to 0.03, an MLP of 3×256 and learning rate 5e-3; CD-20 from the data
  with α = 0.1 over 6,000 updates. Per data set (:data:`TOY_DATA_SETTINGS`): NCE on the
  checkerboard on the raw data with an MLP of 4×256 for 10,000 updates; CD on 2 spirals and the
  checkerboard with short MALA chains on the raw data and an MLP of 4×256 (9,000 updates on the
  checkerboard). Measurements and causes: docs/likelihood.md.
* Contrastive objectives (``cd``, ``pcd``, ``replay``) on real-valued image data: short-run
  Langevin in the pixel range [0, 1] as in Du & Mordatch (2019) — no standardisation,
  unadjusted Langevin with a large step on the gradient and small tempered noise,
  ``x ← x - ε∇E(x) + s√(2ε) ξ`` with ε = 1, s = 0.005 (noise std ≈ 0.007), 30 steps per
  update, negatives clipped to the data range, the energy-magnitude penalty α = 0.1, Adam with
  β₁ = 0 and learning rate 1e-3 (cosine decay) over 3,000 updates of 64 images; ``conv`` on the
  8×8 ``digits`` gets base width 16. On ``digits`` with ``--model conv --objective replay``
  this gives recognisable digits in about 4 minutes on one CPU core; at learning rate 2e-3
  the same run diverged (the energy gap ran to the penalty's limit, 1/α) after 1,500 updates,
  and base width 32 gave worse samples for the same CPU time (1,500 updates).
"""

from __future__ import annotations

from typing import Any, Iterable

from ebmlab.data.toy2d import TOY_NAMES

#: Image data sets (by spec) whose values are real, mapped to their binarised variant.
BINARY_VARIANTS = {"digits": "digits-binary", "digits-flat": "digits-binary-flat", "mnist": "mnist-binary",
                   "fashion-mnist": "fashion-mnist-binary"}
IMAGE_SCHEMES = ("digits", "digits-binary", "mnist", "mnist-binary", "fashion-mnist", "fashion-mnist-binary", "images")
CONTRASTIVE = ("cd", "pcd", "replay")

RBM_SETTINGS: dict[str, Any] = {
    "data": "digits-binary", "objective": "pcd", "sampler": "block_gibbs", "sampler_steps": 1,
    "standardize": False, "optimizer": "sgd", "lr": 0.05, "momentum": 0.5, "weight_decay": 1e-4,
    "batch_size": 100,
}

IMAGE_LANGEVIN_SETTINGS: dict[str, Any] = {
    "standardize": False, "sampler": "ula", "step_size": 1.0, "noise_scale": 0.005, "sampler_steps": 30,
    "objective_kwargs.alpha": 0.1, "objective_kwargs.clamp": True,
    "optimizer": "adam", "lr": 1e-3, "betas": [0.0, 0.999], "batch_size": 64, "steps": 3000,
}
#: Added to :data:`IMAGE_LANGEVIN_SETTINGS` for ``--model conv`` on the 8×8 digits.
SMALL_CONV_SETTINGS: dict[str, Any] = {"model_kwargs.base_width": 16}


#: Contrastive objectives on real-valued vectors: without the energy penalty, cd, pcd and
#: replay on the 2-D toy sets run away within a minute (the loss falls to -1e7 and beyond while
#: staying finite); α = 0.1 kept all three stable in 60 s runs (benchmarks/objectives.py).
VECTOR_CONTRASTIVE_SETTINGS: dict[str, Any] = {"objective_kwargs.alpha": 0.1}


#: The 2-D toy sets (:mod:`ebmlab.data.toy2d`, real-valued, known density), per objective, for
#: ``--model mlp``: what brings the held-out NLL closest to the true cross-entropy in a few minutes
#: on 2 CPU cores (benchmarks/likelihood.py; the measurements and the reasons are in docs/likelihood.md).
#:
#: * ``nce``: 4 noise draws per data point (ν = 1 left 0.12 nats on 8 gaussians after 5,000
#:   updates) and an MLP of three layers of 256 (128×128 stayed 0.2 nats short on 2 spirals after
#:   10,000 updates; 256×3 reaches 0.035 in 5,000): the Gaussian noise law of the data.
#: * ``dsm``: the noise level annealed geometrically from σ = 1 (the data's scale after
#:   standardisation: the modes merge and the score sees their weights) to σ = 0.03 over the
#:   first 70% of the updates, σ²-weighted. A fixed σ = 0.15 smooths the density by N(0, σ²):
#:   KL(p ‖ p * N(0, σ²)) = 0.23 nats on 8 gaussians, the whole of its 0.245 gap; σ = 0.03 alone
#:   (no annealing) gets the mode weights wrong (0.81). Score matching cannot fix the weights of
#:   far-apart modes at a small σ at all, so this stays above the floor on 8 gaussians.
#:   An MLP of 3×256 at learning rate 5e-3 (the defaults, 128×128 at 2e-3, left 1.14 nats on
#:   2 spirals and 0.36 on the checkerboard, almost all of it neither noise floor nor weights):
#:   2 spirals 0.055-0.120 and the checkerboard 0.100-0.112 over four seeds, whose noise floor
#:   at σ = 0.03 is 0.065 by itself; on 8 gaussians 0.085-0.33, all but 0.02 of it the mode
#:   weights. 1e-2 lost modes on 8 gaussians (326 nats) and 7e-3 was worse on two sets.
#:   Not kept (2 spirals, gaps by seed): EMA 0.999 (seed 0: 0.115 against 0.055), batches of 1,024
#:   (0.067), the raw data for 10,000 updates (0.038 / 0.046 / 0.082 at seeds 0 / 1 / 2); 15,000
#:   updates ran the energy away at the box's edge (1549 nats), as 10,000 on the raw checkerboard did.
#:   On 2 spirals (:data:`TOY_DATA_SETTINGS`): antithetic noise pairs (±σε), lr 3.5e-3 and 10,000
#:   updates give 0.038 / 0.031 / 0.029 / 0.053 at seeds 0 / 1 / 2 / 3 in 118-142 s on one core
#:   (plain, 10,000 updates: 0.036 / 0.034 / 0.064 at seeds 0-2; antithetic at lr 5e-3 diverged;
#:   15,000 plain updates ran the energy away, 3,363 nats). On the checkerboard antithetic pairs at
#:   σ = 0.015 or 0.02 gave 0.097 / 0.095 (3-4 % of the mass left the squares), no better.
#:   On the checkerboard (:data:`TOY_DATA_SETTINGS`): the raw data (σ = 0.03 in data units is
#:   0.013 standardised: noise floor 0.065 -> 0.028), 4×256, antithetic pairs, lr 3.5e-3 and
#:   10,000 updates give 0.081 / 0.076 / 0.055 at seeds 0 / 1 / 2 in 258-307 s on one core,
#:   of which floor and weight KL (0.006-0.022) are 0.034-0.050 (standardised 4×256 at σ 0.02 or
#:   0.015 ran away, 570 / 154 nats; raw 3×256 at σ 0.02: 0.311; raw σ 0.02, lr 2.5e-3, 15,000
#:   updates: 0.089 in 263 s; σ_max = 2: 0.066 / 0.083 / 0.086, and with σ = 0.025 0.062 / 0.105 / 0.090;
#:   seed 0: σ held for the last half, 0.096; EMA 0.999, 0.076; random Fourier features ran away).
#:   Batches of 128 and 15,000 updates (the setting used) give 0.059 / 0.066 / 0.063 in 140-156 s
#:   (weight KL 0.002-0.017); batches of 512 gave 0.102 (357 s) at seed 0, and longer runs ran the
#:   energy away where there is no data or got worse (64 × 30,000: 16,926 nats; 128 × 20,000:
#:   0.068; at σ 0.02, 0.058 with floor 0.019 and rest 0.035).
#: * ``cd``: CD-20 from the data with ULA and the energy penalty α = 0.1 (pcd and replay keep
#:   the penalty; their chains leave mass unexplored: see docs/likelihood.md).
#:
#: :data:`TOY_DATA_SETTINGS` changes these on two sets (benchmarks/likelihood.py, one thread; gaps in nats):
#:
#: * ``nce`` on the checkerboard: the raw data (no standardisation: inputs 2.3 times larger, so
#:   the same weights make sharper edges between the squares; 0.091 -> 0.070 at 5,000 updates)
#:   and 10,000 updates (0.053 ± 0.004; 14,000 gave 0.053 too), with a fourth layer of 256
#:   (0.048 / 0.037 / 0.039 at seeds 0 / 1 / 2, 226-264 s on one core). A noise law mixing the data Gaussian with a uniform on the data's box
#:   (weight ½) did not help (0.069 against 0.070 at 5,000 updates).
#: * ``cd`` on 2 spirals and the checkerboard: ULA's step 0.01 (standardised) moves a chain
#:   √0.02 = 0.14 per step, twice the arms' width (0.064), and ULA's bias then sets the model.
#:   MALA (exact for the current model) with small steps on the raw data (steps in data units)
#:   and the MLP of 3×256: 2 spirals 1.17 -> 0.050 (step 0.005, 10 steps, 5,000 updates; 0.063
#:   after 3,000), checkerboard 0.28 -> 0.052 ± 0.003 (step 0.01, 5 steps, 12,000 updates in
#:   243 s on an idle core; 0.058 after 8,000; 10 steps were no better; EMA 0.999 no better, 0.052);
#:   with a fourth layer of 256 and 9,000 updates 0.043 / 0.034 / 0.034 at seeds 0 / 1 / 2 in
#:   273-305 s on one core, the setting used; on 2 spirals the fourth layer (5,000 updates) gives
#:   0.044 / 0.042 / 0.046 at seeds 0 / 1 / 2 (3×256: 0.050 at seed 0). On 8 gaussians MALA
#:   with short chains was far worse (0.605: chains that move 0.14 in all never reach the mass
#:   the model puts between the modes), so it keeps CD-20 with ULA. Standardised with MALA
#:   step 0.002 × 5, 2 spirals reached 0.095 after 3,000 updates and 0.154 after 6,000, with
#:   mass leaking to the edge of the plane.
TOY_SETTINGS: dict[str, dict[str, Any]] = {
    "nce": {"objective_kwargs.noise_ratio": 4.0, "model_kwargs.hidden": [256, 256, 256]},
    "dsm": {"objective_kwargs.sigma": 0.03, "objective_kwargs.sigma_max": 1.0, "objective_kwargs.weighting": "sigma2",
            "model_kwargs.hidden": [256, 256, 256], "lr": 0.005},
    "cd": {"objective_kwargs.alpha": 0.1, "steps": 6000},
    "pcd": dict(VECTOR_CONTRASTIVE_SETTINGS),
    "replay": dict(VECTOR_CONTRASTIVE_SETTINGS),
}
_CD_MALA: dict[str, Any] = {"sampler": "mala", "standardize": False, "model_kwargs.hidden": [256, 256, 256]}
#: Per data set, on top of :data:`TOY_SETTINGS` for the same objective: ``{objective: {data: settings}}``.
TOY_DATA_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "nce": {"checkerboard": {"standardize": False, "steps": 10000, "model_kwargs.hidden": [256, 256, 256, 256]}},
    "dsm": {"2spirals": {"objective_kwargs.antithetic": True, "lr": 0.0035, "steps": 10000},
            "checkerboard": {"standardize": False, "model_kwargs.hidden": [256, 256, 256, 256],
                             "objective_kwargs.antithetic": True, "lr": 0.0035, "batch_size": 128,
                             "steps": 15000}},
    "cd": {"2spirals": {**_CD_MALA, "step_size": 0.005, "sampler_steps": 10, "steps": 5000,
                        "model_kwargs.hidden": [256, 256, 256, 256]},
           "checkerboard": {**_CD_MALA, "step_size": 0.01, "sampler_steps": 5, "steps": 9000,
                            "model_kwargs.hidden": [256, 256, 256, 256]}},
}
#: Settings given as a fraction of the run's ``steps`` (resolved by :func:`recommend`).
TOY_STEP_FRACTIONS: dict[str, dict[str, float]] = {"dsm": {"objective_kwargs.anneal_steps": 0.7}}
#: The objective of ``ebmlab train`` on a toy set when none is named: NCE (the only family that
#: reaches the true cross-entropy on 8 gaussians within 0.05 nats in a few minutes on 2 cores).
TOY_OBJECTIVE = "nce"


def is_toy_data(data: str) -> bool:
    """Whether the data spec names a built-in 2-D toy set (``8gaussians``, ``2spirals``...)."""
    return data.strip().lower() in TOY_NAMES


def _scheme(data: str) -> tuple[str, str]:
    """``("mnist", "/dir")`` for ``"mnist:/dir"``, ``("digits", "")`` for ``"digits"`` (scheme lower-cased)."""
    scheme, _, arg = data.strip().partition(":")
    return scheme.lower(), arg


def is_image_data(data: str) -> bool:
    """Whether the data spec names an image set (events ``(C, H, W)``): digits, MNIST, PNG folders."""
    return _scheme(data)[0] in IMAGE_SCHEMES


def binary_variant(data: str) -> str | None:
    """The binarised variant of a real-valued image data spec (``mnist:D`` -> ``mnist-binary:D``), else ``None``."""
    scheme, arg = _scheme(data)
    if scheme not in BINARY_VARIANTS:
        return None
    return BINARY_VARIANTS[scheme] + (f":{arg}" if ":" in data else "")


def _set(values: dict[str, Any], key: str, value: Any) -> None:
    table, dot, sub = key.partition(".")
    if dot:
        values[table][sub] = value
    else:
        values[key] = value


#: ``--model jem`` or ``--objective jem`` (Grathwohl et al. 2019): the JEM objective on the raw pixel
#: range, short-run Langevin negatives with a small step and tempered noise (ε = 0.1, noise std
#: 0.01 per step: JEM's ε = 1 sent chains far outside [0, 1] on the 8×8 digits), 10 steps per
#: update, contrastive weight 0.5, a 2,000-image replay buffer, Adam at 3e-3 over 1,000 updates of 64
#: images, EMA weights (the settings of tests/objectives/test_jem.py: held-out accuracy 0.978, ECE 0.026).
JEM_SETTINGS: dict[str, Any] = {
    "objective": "jem", "standardize": False, "sampler": "ula", "step_size": 0.1, "noise_scale": 0.0224,
    "sampler_steps": 10, "optimizer": "adam", "lr": 3e-3, "lr_schedule": "constant", "batch_size": 64, "steps": 1000,
    "ema_decay": 0.99, "objective_kwargs.contrastive": 0.5, "objective_kwargs.alpha": 0.1,
    "objective_kwargs.buffer_size": 2000,
}


def recommended_settings(model: str, objective: str, data: str) -> dict[str, Any]:
    """The recommended settings (keys as in ``--set``: ``lr``, ``objective_kwargs.alpha``...)."""
    if model == "rbm":
        return dict(RBM_SETTINGS)
    if model == "jem" or objective == "jem":
        return {**JEM_SETTINGS, "model": "jem"}
    if objective in CONTRASTIVE and is_image_data(data) and not _scheme(data)[0].endswith("-binary"):
        small = model == "conv" and _scheme(data)[0] == "digits"
        return {**IMAGE_LANGEVIN_SETTINGS, **(SMALL_CONV_SETTINGS if small else {})}
    if model == "mlp" and is_toy_data(data) and objective in TOY_SETTINGS:
        return {**TOY_SETTINGS[objective], **TOY_DATA_SETTINGS.get(objective, {}).get(data.strip().lower(), {})}
    if objective in CONTRASTIVE and not _scheme(data)[0].endswith("-binary"):
        return dict(VECTOR_CONTRASTIVE_SETTINGS)
    return {}


def recommended_picture_steps(model: str, objective: str, data: str) -> int:
    """Sampler transitions for a run's picture samples: 1,000 block-Gibbs sweeps for RBMs (their
    chains mix slowly), 200 short-run Langevin steps on images (the training chains' length
    scale), else 500."""
    if model == "rbm":
        return 1000
    if objective in CONTRASTIVE and is_image_data(data) and not _scheme(data)[0].endswith("-binary"):
        return 200
    return 500


def recommend(values: dict[str, Any], explicit: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """Fill the settings not named in ``explicit`` with :func:`recommended_settings`.

    ``values`` is a config as a dict (:meth:`ebmlab.training.config.TrainConfig.to_dict`); ``explicit``
    the keys set by the user (``"lr"``, ``"objective_kwargs.alpha"``; a bare table name counts
    for all its keys). Returns the new dict and notes for the user (data that were replaced).
    """
    explicit = set(explicit)
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}

    def chosen(key: str) -> bool:
        return key in explicit or key.partition(".")[0] in explicit

    notes: list[str] = []
    if not chosen("objective") and values["model"] == "mlp" and is_toy_data(values["data"]):
        values["objective"] = TOY_OBJECTIVE
    settings = recommended_settings(values["model"], values["objective"], values["data"])
    for key, value in settings.items():
        if not chosen(key):
            _set(values, key, value)
    if settings and is_toy_data(values["data"]):
        for key, fraction in TOY_STEP_FRACTIONS.get(values["objective"], {}).items():
            if not chosen(key):
                _set(values, key, max(1, round(fraction * values["steps"])))
    if values["model"] == "rbm":
        binary = binary_variant(values["data"])
        if binary is not None:
            notes.append(f"model 'rbm' has binary visible units: training on {binary} "
                         f"({values['data']} with pixels thresholded at 1/2)")
            values["data"] = binary
    return values, notes


__all__ = ["BINARY_VARIANTS", "IMAGE_LANGEVIN_SETTINGS", "RBM_SETTINGS", "SMALL_CONV_SETTINGS",
           "TOY_DATA_SETTINGS", "TOY_OBJECTIVE", "TOY_SETTINGS", "VECTOR_CONTRASTIVE_SETTINGS", "binary_variant",
           "recommended_picture_steps", "is_image_data", "is_toy_data", "recommend", "recommended_settings"]
