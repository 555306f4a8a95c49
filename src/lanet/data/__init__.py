"""Datasets in one in-memory form (:class:`FaceSet`), label noise, sampling and batched augmentation."""

from .faceset import SPLITS, FaceSet

__all__ = ["SPLITS", "FaceSet"]
