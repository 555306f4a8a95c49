"""``lanet.Predictor``: a trained expression classifier applied to photos, videos and face crops.

Pipeline per image: read (:mod:`lanet.predict.images`) -> detect faces (:mod:`lanet.predict.detect`) -> crop each
face as the training data was cropped (:mod:`lanet.predict.crop`) -> the model's evaluation transform
(``BatchAugment.eval``) -> classifier (:mod:`lanet.predict.backends`), batched across images -> one record per
face (:func:`record_fields`).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import LanetError
from .backends import Backend, load_backend
from .crop import crop_box, crop_resize
from .detect import HOG_EQUIVALENT, Detection, FaceDetector
from .images import MAX_PIXELS, Source, as_image, collect_sources, iter_video, open_image

#: Fields of every record, in CSV column order (probabilities become one ``p_<class>`` column per class).
RECORD_FIELDS = ("file", "frame", "time", "face", "status", "width", "height", "box", "crop_box", "score", "top",
                 "top_probability", "probabilities", "error")
#: Retained full images (for annotation) are flushed once they hold this many pixels.
_RETAINED_PIXELS = 100_000_000


@dataclass
class _Item:
    """One image to process: a file, a video frame or an in-memory image (or the error reading it)."""

    source: Source
    frame: int | None = None
    time: float | None = None
    image: Image.Image | None = None
    error: str | None = None
    size: tuple[int, int] | None = None  # width, height (kept when the image is released)
    detections: list[Detection] = field(default_factory=list)
    crop_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)


def _round(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(float(v), nd)


class Predictor:
    """Load a trained classifier once; predict expressions on images, folders, videos, arrays and face crops.

    Args:
        model: a run directory (its ``model_val_selected.pt`` if present, else ``model_final.pt``, read as weights
            only), an exported ``.pt`` file, a TorchScript file from ``lanet export --format torchscript`` (code:
            loaded only from a file named here, not named ``model_*.pt``; pass only files you trust) or an
            ``.onnx`` file from ``lanet export --format onnx`` (run on ONNX Runtime).
        detector: ``hog`` (dlib's HOG detector, default), ``cnn`` (dlib's MMOD CNN detector, slower, finds more
            faces in hard poses) or ``none`` (every input is already a face crop, e.g. FER2013 images).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: faces per classifier call.
        upsample, threshold, max_side: detector settings (see :class:`lanet.predict.detect.FaceDetector`);
            ``threshold`` must be finite.
        max_pixels: images with more pixels are refused (decompression-bomb guard).
        threads: ONNX Runtime intra-op threads (0 = its default).
        verbose: say on stderr which model file of a run directory is used.

    Attributes: ``model_path`` (the file loaded), ``backend`` (``torch``, ``torchscript`` or ``onnxruntime``),
    ``meta`` (the model's metadata: class names, image size, normalisation, crop geometry), ``class_names``.
    """

    def __init__(self, model: str | os.PathLike, detector: str = "hog", device: str = "auto", batch_size: int = 64,
                 upsample: int = 1, threshold: float = 0.0, max_side: int = 1024, max_pixels: int = MAX_PIXELS,
                 threads: int = 0, verbose: bool = False) -> None:
        from ..config import AugmentConfig
        from ..data.augment import BatchAugment
        from ..train.trainer import resolve_device

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LanetError(f"batch size must be a positive integer, got {batch_size!r}")
        if max_pixels < 1:
            raise LanetError(f"max_pixels must be positive, got {max_pixels}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise LanetError(f"the detection threshold (--threshold) must be a finite number, got {threshold!r}")
        self.device = resolve_device(device)
        self._backend: Backend = load_backend(model, self.device, verbose=verbose, threads=threads)
        self.model_path: Path = self._backend.path
        self.backend: str = self._backend.name
        self.meta: dict[str, Any] = self._backend.meta
        self.class_names: list[str] = list(self.meta["class_names"])
        self.batch_size, self.max_pixels = batch_size, int(max_pixels)
        self.channels = int(self.meta["in_chans"])
        self.source_size = int(self.meta["source_size"])
        self._aug = BatchAugment(AugmentConfig(), int(self.meta["image_size"]), self.channels,
                                 mean=tuple(self.meta["mean"]), std=tuple(self.meta["std"]))
        self.detector_kind = detector
        self._detector_args = {"upsample": upsample, "threshold": threshold, "max_side": max_side}
        self._detector: FaceDetector | None = None
        self._none = FaceDetector("none")
        self.detector  # noqa: B018 - build it now, so a missing dlib is reported before any input is read

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.detector_kind, **self._detector_args)
        return self._detector

    # ------------------------------------------------------------------------------------------ public API
    def predict(self, inputs: Any, every: int = 1, progress: bool = False) -> list[dict[str, Any]]:
        """Records for ``inputs``: a path (image, folder searched recursively, video), a numpy array (``H x W``,
        ``H x W x C``, or ``N x H x W x C`` for several images), a ``PIL.Image``, a tensor, or a list of these.

        One record per detected face; an image without a face gets one record with ``status`` ``no_face``; a file
        that cannot be read gets one with ``status`` ``error`` and the reason in ``error`` (nothing is raised for
        it). Video files give records for every ``every``-th frame (``frame``, ``time`` in seconds).
        """
        return list(self.iter_predict(inputs, every=every, progress=progress))

    def predict_faces(self, faces: Any, progress: bool = False) -> list[dict[str, Any]]:
        """Records for inputs that are already face crops (no detection; the whole image is the face), like the
        images of FER2013: the same inputs as :meth:`predict` except videos."""
        return list(self.iter_predict(faces, progress=progress, detector=self._none))

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """Class probabilities (``N x K`` float64) for ``N x S x S x C`` uint8 crops at ``source_size``."""
        out = []
        for a in range(0, len(crops), self.batch_size):
            x, _ = self._aug.eval(torch.from_numpy(np.require(crops[a:a + self.batch_size], requirements=["C", "W"])))
            logits = torch.from_numpy(self._backend(x)).double()
            out.append(torch.softmax(logits, 1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)))

    def iter_predict(self, inputs: Any, every: int = 1, progress: bool = False, detector: FaceDetector | None = None,
                     on_image: Callable[[Image.Image | None, list[dict[str, Any]], Source], None] | None = None
                     ) -> Iterator[dict[str, Any]]:
        """:meth:`predict` as a generator, streaming records in input order. ``on_image(image, records, source)``
        is called once per image or frame after its faces are classified (``image`` is None for a read error)."""
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise LanetError(f"every must be a positive integer, got {every!r}")
        sources = self.sources(inputs)
        det = detector or self.detector
        from tqdm.auto import tqdm

        n_video = sum(s.video for s in sources)
        bar = tqdm(total=None if n_video else len(sources), unit="img", desc="predict", disable=not progress,
                   dynamic_ncols=True, mininterval=0.5, file=sys.stderr)
        faces = 0
        pending: list[_Item] = []
        crops: list[np.ndarray] = []
        retained = 0
        try:
            for item in self._items(sources, every):
                if item.image is not None:
                    self._detect_and_crop(item, det, crops)
                    if on_image is not None:
                        retained += item.image.width * item.image.height
                    else:
                        item.image = None
                pending.append(item)
                bar.update(1)
                if len(crops) >= self.batch_size or retained > _RETAINED_PIXELS or (not crops and on_image is None):
                    for rec in self._flush(pending, crops, on_image):
                        faces += rec["status"] == "ok"
                        yield rec
                    pending, crops, retained = [], [], 0
                    bar.set_postfix(faces=faces, refresh=False)
            for rec in self._flush(pending, crops, on_image):
                yield rec
        finally:
            bar.close()

    def sources(self, inputs: Any) -> list[Source]:
        """The :class:`~lanet.predict.images.Source` list for :meth:`predict`'s ``inputs``."""
        if isinstance(inputs, (str, os.PathLike)):
            return collect_sources([inputs])[0]
        if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
            inputs = list(inputs)
        elif isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            inputs = list(inputs)
        if not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        out: list[Source] = []
        for i, obj in enumerate(inputs):
            if isinstance(obj, Source):
                out.append(obj)
            elif isinstance(obj, (str, os.PathLike)):
                out += collect_sources([obj])[0]
            elif isinstance(obj, (np.ndarray, Image.Image, torch.Tensor)):
                out.append(Source(f"<image {i}>", image=obj, rel=f"image_{i:05d}.png"))
            else:
                raise LanetError(f"cannot predict on a {type(obj).__name__}: pass paths, numpy arrays or PIL images")
        return out

    # ------------------------------------------------------------------------------------------ pipeline
    def _items(self, sources: Iterable[Source], every: int) -> Iterator[_Item]:
        for src in sources:
            if src.video:
                try:
                    for frame, t, img in iter_video(src.path, every, self.max_pixels):  # type: ignore[arg-type]
                        yield _Item(src, frame, t, image=img)
                except LanetError as exc:  # frames already yielded stay; the record says where decoding stopped
                    yield _Item(src, error=str(exc))
                continue
            try:
                img = open_image(src.path, self.max_pixels) if src.path is not None else \
                    as_image(src.image, self.max_pixels)
            except LanetError as exc:
                yield _Item(src, error=" ".join(str(exc).split()))
                continue
            yield _Item(src, image=img)

    def _detect_and_crop(self, item: _Item, det: FaceDetector, crops: list[np.ndarray]) -> None:
        img = item.image
        assert img is not None
        item.size = img.size
        item.detections = det(img)
        if det.kind == "none":
            item.crop_boxes = [d.box for d in item.detections]
        else:
            margin, offset = float(self.meta["crop_margin"]), float(self.meta["crop_offset_y"])
            item.crop_boxes = [crop_box(d.box, margin, offset, HOG_EQUIVALENT[det.kind]) for d in item.detections]
        for box in item.crop_boxes:
            crops.append(crop_resize(img, box, self.source_size, self.channels))

    def _flush(self, pending: list[_Item], crops: list[np.ndarray],
               on_image: Callable[[Image.Image | None, list[dict[str, Any]], Source], None] | None
               ) -> Iterator[dict[str, Any]]:
        probs = self.classify(np.stack(crops)) if crops else np.zeros((0, len(self.class_names)))
        k = 0
        for item in pending:
            recs = []
            base = {"file": item.source.name, "frame": item.frame, "time": _round(item.time, 3)}
            if item.error is not None:
                recs.append(self.record(base, "error", error=item.error))
            elif not item.detections:
                recs.append(self.record(base, "no_face", size=item.size))
            else:
                for i, (d, cb) in enumerate(zip(item.detections, item.crop_boxes)):
                    recs.append(self.record(base, "ok", face=i, det=d, crop=cb, probs=probs[k],
                                            size=item.size))
                    k += 1
            if on_image is not None:
                on_image(item.image, recs, item.source)
            item.image = None
            yield from recs

    def record(self, base: dict[str, Any], status: str, face: int | None = None, det: Detection | None = None,
               crop: tuple[float, ...] | None = None, probs: np.ndarray | None = None,
               size: tuple[int, int] | None = None, error: str | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
        rec.update(base)
        rec.update(status=status, face=face, error=error)
        if size is not None:
            rec["width"], rec["height"] = int(size[0]), int(size[1])
        if det is not None:
            rec["box"] = [_round(v) for v in det.box]
            rec["score"] = _round(det.score, 4)
            rec["crop_box"] = [_round(v) for v in crop] if crop is not None else None
        if probs is not None:
            rec["probabilities"] = {c: round(float(p), 6) for c, p in zip(self.class_names, probs)}
            top = int(np.argmax(probs))
            rec["top"], rec["top_probability"] = self.class_names[top], round(float(probs[top]), 6)
        return rec
