"""One entry point from a :class:`~lanet.config.DataConfig` to a :class:`~lanet.data.faceset.FaceSet`.

``load_faceset(cfg)`` dispatches on ``cfg.name``, then applies, in order: the user's label file
(``cfg.labels``, training images only), a carved validation split (``cfg.val_fraction``, only for datasets
without one; seed 0 so every run of an experiment validates on the same images) and ``cfg.limit``.

Label ids of every source, mapped to the canonical order of :mod:`lanet.classes`
(0 anger, 1 disgust, 2 fear, 3 happiness, 4 sadness, 5 surprise, 6 neutral, 7 contempt):

==============  ================================================================================
source          source id / column -> canonical id
==============  ================================================================================
ferplus         vote columns neutral->6, happiness->3, surprise->5, sadness->4, anger->0,
                disgust->1, fear->2, contempt->7; unknown / NF tops dropped (8 classes)
rafdb           1 Surprise->5, 2 Fear->2, 3 Disgust->1, 4 Happiness->3, 5 Sadness->4, 6 Anger->0,
                7 Neutral->6 (7 classes)
affectnet7/8    0 Neutral->6, 1 Happy->3, 2 Sad->4, 3 Surprise->5, 4 Fear->2, 5 Disgust->1, 6 Anger->0,
                7 Contempt->7 (dropped for affectnet7); 8 None, 9 Uncertain, 10 Non-Face dropped
csv, folders    canonical names, aliases (happy, angry, ...) or canonical ids; 8 classes if any
                contempt, else 7
synthetic       generated directly in canonical ids
==============  ================================================================================

Splits: FERPlus Training/PublicTest/PrivateTest -> train/val/test; RAF-DB train_/test_ -> train/test;
AffectNet training.csv/validation.csv -> train/test; csv: the split column (default train); folders: the
split folder (default train).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from ..config import DataConfig
from ..errors import LanetError
from . import affectnet, ferplus, generic, rafdb
from .faceset import SPLITS, FaceSet
from .labels import apply_label_file, carve_val, limit_per_split, limit_train

__all__ = ["DATASETS", "apply_label_file", "carve_val", "limit_per_split", "load_faceset"]

#: Seed of the carved validation split (fixed: every training seed validates on the same images).
VAL_SEED = 0


def _ferplus(cfg: DataConfig) -> FaceSet:
    return ferplus.load_ferplus(cfg.root, protocol=cfg.protocol, load_size=cfg.load_size, channels=cfg.channels,
                                limit=cfg.limit, cache_dir=cfg.cache_dir)


def _rafdb(cfg: DataConfig) -> FaceSet:
    return rafdb.load_rafdb(cfg.root, load_size=cfg.load_size, channels=cfg.channels, limit=cfg.limit,
                            cache_dir=cfg.cache_dir)


def _affectnet(num_classes: int) -> Callable[[DataConfig], FaceSet]:
    def load(cfg: DataConfig) -> FaceSet:
        return affectnet.load_affectnet(cfg.root, num_classes=num_classes, load_size=cfg.load_size,
                                        channels=cfg.channels, limit=cfg.limit, cache_dir=cfg.cache_dir)

    return load


def _csv(cfg: DataConfig) -> FaceSet:
    return generic.load_csv(cfg.root, load_size=cfg.load_size, channels=cfg.channels, limit=cfg.limit,
                            cache_dir=cfg.cache_dir)


def _folders(cfg: DataConfig) -> FaceSet:
    return generic.load_folders(cfg.root, load_size=cfg.load_size, channels=cfg.channels, limit=cfg.limit,
                                cache_dir=cfg.cache_dir)


def _synthetic(cfg: DataConfig) -> FaceSet:
    try:
        from .synthetic import make_synthetic
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.synthetic":
            raise
        raise LanetError("the synthetic dataset generator (lanet.data.synthetic) is not available in this "
                         "installation; choose another data.name") from exc
    return make_synthetic(n=cfg.synthetic_size, seed=cfg.synthetic_seed, size=cfg.load_size or 48,
                          channels=cfg.channels or 1)


#: dataset name -> (loader, expected layout of data.root; "" when no root is needed)
DATASETS: dict[str, tuple[Callable[[DataConfig], FaceSet], str]] = {
    "ferplus": (_ferplus, ferplus.LAYOUT),
    "rafdb": (_rafdb, rafdb.LAYOUT),
    "affectnet7": (_affectnet(7), affectnet.LAYOUT),
    "affectnet8": (_affectnet(8), affectnet.LAYOUT),
    "csv": (_csv, generic.CSV_LAYOUT),
    "folders": (_folders, generic.FOLDERS_LAYOUT),
    "synthetic": (_synthetic, ""),
}


def load_faceset(cfg: DataConfig) -> FaceSet:
    """Load the dataset ``cfg`` describes, with label file, carved val split and limit applied.

    Raises:
        LanetError: unknown ``cfg.name`` (listing the known ones), empty or missing ``cfg.root`` (naming the
            path and the expected layout), and every loader's own input errors.
    """
    name = cfg.name.strip().lower()
    if name not in DATASETS:
        raise LanetError(f"unknown dataset {cfg.name!r}; known: {', '.join(DATASETS)}")
    loader, layout = DATASETS[name]
    if layout:
        if not cfg.root:
            raise LanetError(f"data.root is empty; dataset {name} expects {layout}")
        root = Path(cfg.root).expanduser()
        if not root.exists():
            raise LanetError(f"data.root not found: {root}; dataset {name} expects {layout}")
    faceset = loader(cfg)
    if cfg.labels:
        faceset = apply_label_file(faceset, cfg.labels, allow_missing=cfg.limit > 0)
    if cfg.val_fraction > 0:
        if (faceset.split == SPLITS.index("val")).any():
            warnings.warn(f"data.val_fraction={cfg.val_fraction} ignored: {faceset.name} has its own val split",
                          stacklevel=2)
        else:
            faceset = carve_val(faceset, cfg.val_fraction, VAL_SEED)
    faceset = limit_per_split(faceset, cfg.limit)
    return limit_train(faceset, cfg.train_limit)
