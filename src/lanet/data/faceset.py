"""FaceSet: the one in-memory form every dataset loader produces.

Data flow: dataset on disk --(loader)--> FaceSet --(noise)--> training labels --(sampler, augmentation)-->
batches. A FaceSet holds every split of a dataset at one image size, so noise, landmarks and caches can
address images by a single index.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..classes import class_names
from ..errors import LanetError

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class FaceSet:
    """Images with labels, optional crowd votes and landmarks, and a split per image.

    Attributes:
        images: ``N x H x W x C`` uint8, C = 1 (grayscale) or 3 (RGB); all images share one size.
        labels: ``N`` int64 class ids in the canonical order of :mod:`lanet.classes` (the dataset's own
            labels, always: a ``--labels`` file and training-label noise are applied later and recorded
            separately, so these stay the reference every diagnostic compares with).
        split: ``N`` int8 index into :data:`SPLITS` (0 train, 1 val, 2 test).
        names: ``N`` source file names as the dataset names them (e.g. ``fer0000000.png``).
        num_classes: 7 or 8.
        votes: optional ``N x num_classes`` float32 vote counts per canonical class (FERPlus's 10
            annotators); the human label distribution is ``votes / votes.sum(1)``.
        landmarks: optional ``N x P x 2`` float32 (x, y) pixel coordinates in the stored image, pixel centres at
            integers: (x, y) = (j, i) is the centre of ``images[n, i, j]``.
        landmark_found: optional ``N`` bool, False where the detector found no face and a fixed face box
            was used instead.
        file_labels: optional ``N`` int64: the labels of a ``--labels`` file (``data.labels``,
            :func:`lanet.data.labels.apply_label_file`): the file's label on the training images it names, the
            dataset's label everywhere else. The run trains on these (plus any injected noise); None without a
            label file.
        name: dataset name (``ferplus``, ``rafdb``, ``affectnet8``, ``synthetic``, ...).
        meta: free-form provenance (root folder, protocol, counts of dropped images, ...).
    """

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    names: np.ndarray
    num_classes: int
    votes: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    landmark_found: np.ndarray | None = None
    file_labels: np.ndarray | None = None
    name: str = "dataset"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.dtype != np.uint8 or self.images.shape[-1] not in (1, 3):
            raise LanetError(f"{self.name}: images must be N x H x W x C uint8 with C in (1, 3), got "
                             f"{self.images.shape} {self.images.dtype}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.split = np.asarray(self.split, dtype=np.int8)
        self.names = np.asarray(self.names, dtype=object)
        for key in ("labels", "split", "names"):
            if len(getattr(self, key)) != n:
                raise LanetError(f"{self.name}: {key} has {len(getattr(self, key))} entries for {n} images")
        if n and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise LanetError(f"{self.name}: labels outside 0..{self.num_classes - 1}")
        if self.file_labels is not None:
            self.file_labels = np.asarray(self.file_labels, dtype=np.int64)
            if self.file_labels.shape != (n,):
                raise LanetError(f"{self.name}: file_labels has {len(self.file_labels)} entries for {n} images")
        if self.votes is not None:
            self.votes = np.asarray(self.votes, dtype=np.float32)
            if self.votes.shape != (n, self.num_classes):
                raise LanetError(f"{self.name}: votes must be {n} x {self.num_classes}, got {self.votes.shape}")
        if self.landmarks is not None:
            self.set_landmarks(self.landmarks, self.landmark_found)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def class_names(self) -> tuple[str, ...]:
        return class_names(self.num_classes)

    @property
    def num_landmarks(self) -> int:
        return 0 if self.landmarks is None else int(self.landmarks.shape[1])

    def indices(self, split: str) -> np.ndarray:
        """Indices of the images in ``split`` (``train``, ``val`` or ``test``)."""
        if split not in SPLITS:
            raise LanetError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.split == SPLITS.index(split))

    @property
    def given_labels(self) -> np.ndarray:
        """The labels training starts from, before injected noise: :attr:`file_labels` where a label file was
        given, else the dataset's :attr:`labels`."""
        return self.labels if self.file_labels is None else self.file_labels

    def human_distribution(self) -> np.ndarray | None:
        """Votes normalised to a distribution per image (rows without votes become uniform)."""
        if self.votes is None:
            return None
        total = self.votes.sum(1, keepdims=True)
        uniform = np.full_like(self.votes, 1.0 / self.num_classes)
        return np.where(total > 0, self.votes / np.maximum(total, 1e-12), uniform)

    def subset(self, index: np.ndarray) -> FaceSet:
        """A new FaceSet holding only ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return replace(
            self,
            images=self.images[index],
            labels=self.labels[index],
            split=self.split[index],
            names=self.names[index],
            votes=take(self.votes),
            landmarks=take(self.landmarks),
            landmark_found=take(self.landmark_found),
            file_labels=take(self.file_labels),
            meta=dict(self.meta),
        )

    def set_landmarks(self, landmarks: np.ndarray, found: np.ndarray | None = None) -> None:
        """Attach ``N x P x 2`` landmarks (pixel coordinates of the stored images)."""
        landmarks = np.asarray(landmarks, dtype=np.float32)
        if landmarks.ndim != 3 or landmarks.shape[0] != len(self) or landmarks.shape[2] != 2:
            raise LanetError(f"{self.name}: landmarks must be {len(self)} x P x 2, got {landmarks.shape}")
        self.landmarks = landmarks
        self.landmark_found = (np.ones(len(self), dtype=bool) if found is None
                               else np.asarray(found, dtype=bool).reshape(len(self)))

    def summary(self) -> str:
        parts = [f"{self.name}: {len(self)} images {self.image_size[0]}x{self.image_size[1]}x{self.channels}"]
        for s in SPLITS:
            k = int((self.split == SPLITS.index(s)).sum())
            if k:
                parts.append(f"{s} {k}")
        if self.landmarks is not None:
            parts.append(f"{self.num_landmarks} landmarks")
        if self.votes is not None:
            parts.append("votes")
        return ", ".join(parts)


def data_report(faceset: FaceSet) -> str:
    """What the loader and label file left out, for the console: ``dropped 12 rows (missing_image 2, ...)``.

    Reads ``meta["dropped"]`` (reason -> count: rows the loader skipped, including removed duplicates) and
    ``meta["label_file"]`` (rows of a ``--labels`` file that were not applied, and why). Empty when nothing was.
    """
    parts = []
    dropped = {k: int(v) for k, v in faceset.meta.get("dropped", {}).items() if v}
    if dropped:
        parts.append(f"dropped {sum(dropped.values())} row(s) ("
                     + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())) + ")")
    lf = faceset.meta.get("label_file")
    if lf:
        ignored = {k: lf.get(k, 0) for k in ("ignored_not_train", "ignored_dropped", "ignored_not_loaded",
                                               "duplicate_rows") if lf.get(k, 0)}
        text = f"label file {lf['path']}: {lf['applied']} label(s) applied, {lf['changed']} changed"
        if ignored:
            text += ", ignored: " + ", ".join(f"{k} {v}" for k, v in ignored.items())
        parts.append(text)
    missing_val = faceset.meta.get("missing_val")  # a validation split the dataset should have had
    if missing_val and not (faceset.split == SPLITS.index("val")).any():
        parts.append(f"warning: no {missing_val}, so no validation split: model_val_selected.pt is not written "
                     "(data.val_fraction carves one from train)")
    return "; ".join(parts)
