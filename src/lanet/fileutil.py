"""File helpers shared by caches, landmark files and checkpoints."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it is synced and renamed onto ``path``.

    Readers see either the old complete file or the new complete file, never a partial one; on any error
    (including KeyboardInterrupt) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cache_root(cache_dir: str | os.PathLike = "") -> Path | None:
    """The cache folder: ``cache_dir``, else ``$LANET_CACHE``, else ``~/.cache/lanet``; None if set to ``none``."""
    value = str(cache_dir) if cache_dir else os.environ.get("LANET_CACHE", "")
    if value.strip().lower() in ("none", "off", "0"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "lanet"
