"""Data: built-in 2-D toy sets, user files, image sets, and standardisation.

``load_dataset(spec)`` is the single entry point; it returns a :class:`Dataset` holding the
data tensor ``x`` ``(N, *event)``, its event shape and support, and, for toy sets, a fresh
sampler and the true log-density. See :mod:`ebmlab.data.datasets` for the accepted specs.
"""

from ebmlab.data.datasets import DEFAULT_TOY_SAMPLES, Dataset, available_datasets, load_dataset
from ebmlab.data.files import load_array, validate_array
from ebmlab.data.images import binarize, is_image_like, load_digits, load_image_folder, load_mnist, read_idx
from ebmlab.data.toy2d import TOY_NAMES, TOY_SETS, sample_toy, toy_sampler, true_log_density
from ebmlab.data.transforms import Standardizer, split_indices, train_heldout_split

__all__ = [
    "DEFAULT_TOY_SAMPLES", "Dataset", "Standardizer", "TOY_NAMES", "TOY_SETS", "available_datasets",
    "binarize", "is_image_like", "load_array", "load_dataset", "load_digits", "load_image_folder", "load_mnist",
    "read_idx", "sample_toy", "split_indices", "toy_sampler", "train_heldout_split", "true_log_density",
    "validate_array",
]
