"""Writing prediction records (CSV or JSON lines) and annotated copies of the inputs (Pillow)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageDraw, ImageFont

from ..errors import LanetError
from ..fileutil import csv_cell
from .images import Source

#: Box colours, one per canonical class id (anger, disgust, fear, happiness, sadness, surprise, neutral, contempt).
PALETTE = ((230, 25, 75), (60, 180, 75), (145, 30, 180), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (200, 200, 200), (240, 50, 230))
_SAVE_AS_IS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class RecordWriter:
    """Streams records to ``path`` (``.csv`` or ``.jsonl``; ``-`` or None: JSON lines on stdout), flushed as they
    come, so a long video's results are on disk while it runs.

    CSV columns: ``file, frame, time, face, status, width, height, x0, y0, x1, y1, crop_x0 .. crop_y1, score, top,
    top_probability, p_<class> ..., error`` (empty where a value does not apply). A text cell that a spreadsheet
    would read as a formula (``=``, ``+``, ``-``, ``@`` first) starts with ``'`` (:func:`lanet.fileutil.csv_cell`).

    A failed write (a full disk) is a :class:`LanetError` naming the file; a file that holds no record yet is
    removed rather than left empty.
    """

    def __init__(self, path: str | Path | None, class_names: list[str]) -> None:
        self.class_names = list(class_names)
        self.path = None if path in (None, "-") else Path(path)  # type: ignore[arg-type]
        self.kind = "jsonl"
        self.records = 0
        if self.path is not None:
            suffix = self.path.suffix.lower()
            if suffix not in (".csv", ".jsonl", ".json"):
                raise LanetError(f"--out must end in .csv or .jsonl, got {self.path}")
            self.kind = "csv" if suffix == ".csv" else "jsonl"
            if self.path.parent and not self.path.parent.is_dir():
                raise LanetError(f"--out: folder {self.path.parent} does not exist")
        self._fh: IO[str] = sys.stdout if self.path is None else open(self.path, "w", newline="", encoding="utf-8")
        self._csv: Any = None
        if self.kind == "csv":
            self._csv = csv.writer(self._fh)
            self._guard(lambda: (self._csv.writerow(self.columns()), self._fh.flush()))

    def _guard(self, write: Any) -> None:
        """Run ``write``; an OSError (ENOSPC, EIO) becomes one error naming the file."""
        try:
            write()
        except OSError as exc:
            if self.path is None:
                raise
            try:
                self._fh.close()
            except OSError:
                pass
            kept = f"; its first {self.records} record(s) are kept" if self.records else ""
            if not self.records:
                self.path.unlink(missing_ok=True)
            raise LanetError(f"cannot write {self.path}: {exc.strerror or exc}{kept}") from exc

    def columns(self) -> list[str]:
        return (["file", "frame", "time", "face", "status", "width", "height", "x0", "y0", "x1", "y1", "crop_x0",
                 "crop_y0", "crop_x1", "crop_y1", "score", "top", "top_probability"]
                + [f"p_{c}" for c in self.class_names] + ["error"])

    def write(self, rec: dict[str, Any]) -> None:
        if self._csv is None:
            line = json.dumps(rec, ensure_ascii=False) + "\n"
            self._guard(lambda: (self._fh.write(line), self._fh.flush()))
        else:
            box = rec.get("box") or [None] * 4
            crop = rec.get("crop_box") or [None] * 4
            probs = rec.get("probabilities") or {}
            row = [rec["file"], rec["frame"], rec["time"], rec["face"], rec["status"], rec["width"], rec["height"],
                   *box, *crop, rec["score"], rec["top"], rec["top_probability"],
                   *(probs.get(c) for c in self.class_names), rec["error"]]
            cells = ["" if v is None else csv_cell(v) for v in row]
            self._guard(lambda: (self._csv.writerow(cells), self._fh.flush()))
        self.records += 1

    def close(self) -> None:
        if self.path is not None and not self._fh.closed:
            self._guard(self._fh.close)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def annotate(image: Image.Image, records: list[dict[str, Any]], class_names: list[str]) -> Image.Image:
    """A copy of ``image`` with each face's box and ``class probability`` drawn; ``no face`` where none was."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    line = max(2, round(max(out.size) / 300))
    font = _font(max(12, round(max(out.size) / 40)))
    for rec in records:
        if rec["status"] != "ok":
            draw.text((line, line), "no face" if rec["status"] == "no_face" else "error", fill=(255, 0, 0), font=font,
                      stroke_width=max(1, line // 2), stroke_fill=(0, 0, 0))
            continue
        cid = class_names.index(rec["top"]) if rec["top"] in class_names else 0
        colour = PALETTE[cid % len(PALETTE)]
        x0, y0, x1, y1 = rec["box"]
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        label = f"{rec['top']} {rec['top_probability']:.2f}"
        tx, ty = x0, max(0.0, y0 - font.size - 2 * line) if hasattr(font, "size") else max(0.0, y0 - 14)
        draw.text((tx, ty), label, fill=colour, font=font, stroke_width=max(1, line // 2), stroke_fill=(0, 0, 0))
    return out


class Annotator:
    """Saves annotated copies under ``folder``: an image as ``folder/<its name or path below the input folder>``,
    a video frame as ``folder/<video name>/frame_<number>.jpg``. Names that would collide get ``_1``, ``_2`` ..."""

    def __init__(self, folder: str | Path, class_names: list[str]) -> None:
        self.folder = Path(folder)
        self.class_names = class_names
        self._used: dict[str, str] = {}  # source name -> chosen relative stem, so frames of one video stay together
        self._taken: set[str] = set()
        self.folder.mkdir(parents=True, exist_ok=True)

    def _target(self, source: Source, frame: int | None) -> Path:
        if source.name not in self._used:
            rel = source.rel or Path(source.name).name
            base, n = rel, 1
            while base in self._taken:
                stem, suffix = Path(rel).with_suffix(""), Path(rel).suffix
                base, n = f"{stem}_{n}{suffix}", n + 1
            self._taken.add(base)
            self._used[source.name] = base
        rel = self._used[source.name]
        if source.video:
            return self.folder / rel / f"frame_{frame:06d}.jpg"
        path = self.folder / rel
        return path if path.suffix.lower() in _SAVE_AS_IS else path.with_suffix(path.suffix + ".png")

    def __call__(self, image: Image.Image | None, records: list[dict[str, Any]], source: Source) -> None:
        if image is None:
            return
        target = self._target(source, records[0]["frame"] if records else None)
        target.parent.mkdir(parents=True, exist_ok=True)
        out = annotate(image, records, self.class_names)
        if target.suffix.lower() in (".jpg", ".jpeg"):
            out.save(target, quality=92)
        else:
            out.save(target)
