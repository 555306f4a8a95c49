"""The data, noise and augment sections of a configuration checked against what :mod:`lanet.data` knows: the
dataset names (:data:`lanet.data.loaders.DATASETS`), FERPlus label protocols, noise types and the augmentation's
own ranges (:class:`lanet.data.augment.BatchAugment`), with every other value of those sections. Part of
:func:`lanet.runconfig.validate_config`; the configuration itself (:mod:`lanet.config`) is plain data."""

from __future__ import annotations

from ..config import (
    IMAGE_SIZE_RANGE,
    MAX_SEED,
    MAX_SYNTHETIC,
    MAX_SYNTHETIC_BYTES,
    Config,
    at_least,
    between,
    number,
    one_of,
)
from ..errors import LanetError
from .augment import BatchAugment
from .ferplus import PROTOCOLS
from .loaders import DATASETS
from .noise import NOISE_TYPES


def check_data_config(cfg: Config) -> None:
    """The data, noise and augment sections, in that order; the first bad key raises a one-line
    :class:`LanetError` naming it."""
    d, n = cfg.data, cfg.noise
    one_of("data.name", str(d.name).strip().lower(), tuple(DATASETS))
    one_of("data.protocol", d.protocol, PROTOCOLS)
    if number("data.load_size", d.load_size, integer=True) != 0:
        between("data.load_size", d.load_size, 16, 1024, integer=True)
    between("data.image_size", d.image_size, *IMAGE_SIZE_RANGE, integer=True)
    one_of("data.channels", d.channels, (0, 1, 3))
    between("data.val_fraction", d.val_fraction, 0.0, 1.0, hi_open=True)
    at_least("data.limit", d.limit, 0, why=" (0 = all images)")
    at_least("data.train_limit", d.train_limit, 0, why=" (0 = all training images)")
    between("data.synthetic_size", d.synthetic_size, 20, MAX_SYNTHETIC, integer=True)
    between("data.synthetic_seed", d.synthetic_seed, 0, MAX_SEED, integer=True)
    if str(d.name).strip().lower() == "synthetic":
        need = d.synthetic_size * (d.load_size or 48) ** 2 * (d.channels or 1)
        if need > MAX_SYNTHETIC_BYTES:
            raise LanetError(f"data.synthetic_size={d.synthetic_size} at data.load_size {d.load_size or 48} needs "
                             f"{need / 2**30:.0f} GiB of images (at most {MAX_SYNTHETIC_BYTES / 2**30:.0f}); "
                             "lower one of them")

    one_of("noise.type", n.type, NOISE_TYPES)
    between("noise.rate", n.rate, 0.0, 1.0, hi_open=True)
    if n.rate > 0 and n.type == "none":
        raise LanetError(f"noise.rate={n.rate:g} needs a noise type (--noise symmetric or asymmetric); "
                         "with noise.type none no label would change")
    if n.rate > 0 and n.type == "annotator":
        raise LanetError(f"noise.rate={n.rate:g} is not used by annotator noise (each label is one of the image's "
                         "own votes); leave it at 0")
    between("noise.seed", n.seed, -1, MAX_SEED, integer=True)  # -1 = train.seed

    BatchAugment(cfg.augment, d.image_size, 1)  # the augmentation ranges (crop, ratio, flip, jitter, erasing)
    if not isinstance(cfg.augment.balanced, bool):
        raise LanetError(f"augment.balanced must be true or false, got {cfg.augment.balanced!r}")
