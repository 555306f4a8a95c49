"""``lanet predict INPUT... --model RUN_DIR|MODEL_FILE``: records to CSV / JSON lines, annotated copies.

Exit status: 0 when every input was read, 1 when some could not be (their records carry ``status: error`` and
they are listed on stderr at the end), 2 when none could (``lanet: error: ...``) or on a usage error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..errors import LanetError
from .output import Annotator, RecordWriter
from .predictor import Predictor


def run_predict(inputs: list[str], model: str, out: str | None = None, annotate: str | None = None,
                detector: str = "hog", every: int = 1, batch_size: int = 64, device: str = "auto",
                upsample: int = 1, threshold: float = 0.0, max_side: int = 1024, max_pixels: int = 0,
                progress: bool = True) -> int:
    """Run the CLI command; returns the exit status."""
    from .images import MAX_PIXELS

    if every < 1:
        raise LanetError(f"--every must be a positive integer, got {every}")
    if max_pixels < 0:
        raise LanetError(f"--max-pixels must be positive, got {max_pixels}")
    predictor = Predictor(model, detector=detector, device=device, batch_size=batch_size, upsample=upsample,
                          threshold=threshold, max_side=max_side, max_pixels=max_pixels or MAX_PIXELS, verbose=True)
    sources = predictor.sources(inputs)  # missing inputs are errors before anything is written
    if annotate and out and Path(annotate).resolve() == Path(out).resolve():
        raise LanetError("--annotate must be a folder, not the --out file")
    annotator = Annotator(annotate, predictor.class_names) if annotate else None
    counts = {"ok": 0, "no_face": 0, "error": 0}
    errors: dict[str, str] = {}
    images: set[tuple[str, Any]] = set()
    t0 = time.perf_counter()
    with RecordWriter(out, predictor.class_names) as writer:
        for rec in predictor.iter_predict(sources, every=every, progress=progress, on_image=annotator):
            writer.write(rec)
            counts[rec["status"]] += 1
            images.add((rec["file"], rec["frame"]))
            if rec["status"] == "error":
                errors[rec["file"]] = rec["error"]
    seconds = time.perf_counter() - t0
    read = len(images) - counts["error"]
    dest = f" -> {out}" if out else ""
    print(f"lanet: {read} image(s)/frame(s), {counts['ok']} face(s), {counts['no_face']} without a face, "
          f"{len(errors)} unreadable{dest} ({seconds:.1f} s, {predictor.backend}, detector {detector})",
          file=sys.stderr)
    if annotator is not None:
        print(f"lanet: annotated copies in {annotate}", file=sys.stderr)
    if errors:
        if read == 0 and not counts["ok"] and not counts["no_face"]:
            first = next(iter(errors.values()))
            more = f" (and {len(errors) - 1} more input(s) failed)" if len(errors) > 1 else ""
            raise LanetError(first + more)
        print(f"lanet: {len(errors)} input(s) could not be read:", file=sys.stderr)
        for msg in errors.values():
            print(f"  {msg}", file=sys.stderr)
        return 1
    return 0
