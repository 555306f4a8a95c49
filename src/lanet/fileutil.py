"""File helpers shared by caches, landmark files, checkpoints and run directories.

* :func:`atomic_open`: write a file so that readers see the old or the new complete version, never half.
* :func:`run_lock`: an exclusive, process-wide lock on a run directory (one writer per run).
* :func:`remove_stale_tmp`: delete the temporary files a killed writer left behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import LanetError

_UMASK = os.umask(0o022)
os.umask(_UMASK)
TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"  # inside a run directory: the PID of the process that writes the run


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it is synced and renamed onto ``path``.

    Readers see either the old complete file or the new complete file, never a partial one; on any error
    (including KeyboardInterrupt and a full disk) the temporary file is removed and ``path`` is untouched.
    An ``OSError`` (e.g. ENOSPC) is re-raised naming ``path`` rather than the temporary file.
    """
    path = Path(path)
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; the file gets the mode open() would give it
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise OSError(exc.errno, f"cannot write {path}: {os.strerror(exc.errno)}", os.fspath(path)) from exc
        raise


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_open` leaves when its process is killed (``.NAME.xxxx.tmp``).

    Call it only while holding the folder's :func:`run_lock`, so no live writer owns them. Returns the removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


# ---------------------------------------------------------------------------------------------- run lock
_held: dict[str, list[int]] = {}  # real path of a locked directory -> [lock fd, nesting depth]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class RunDirectoryBusy(LanetError):
    """Another process holds the run directory's lock."""


def _busy(directory: Path, lock: Path, pid: int | None) -> LanetError:
    who = f"process {pid}" if pid else "another process"
    return RunDirectoryBusy(f"{directory} is in use by {who} (lock file {lock}); wait for it to finish, stop it, or "
                      "choose another --out")


def _lock_flock(directory: Path, lock: Path) -> int | None:
    """Take ``lock`` with ``fcntl.flock``; None where the file system does not support it."""
    for _ in range(20):  # retry when the holder released (and unlinked) between our open and our flock
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(directory, lock, _read_pid(lock)) from None
            return None  # ENOLCK / EOPNOTSUPP: fall back to O_EXCL
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # a stale PID from a dead holder is overwritten
            return fd
        os.close(fd)
    raise LanetError(f"cannot lock {directory}: {lock} keeps changing")


def _lock_excl(directory: Path, lock: Path) -> int:
    """Fallback without flock: create ``lock`` with O_EXCL; take over a lock whose PID is dead."""
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            pid = _read_pid(lock)
            if pid is not None and (pid == os.getpid() or _pid_alive(pid)):
                raise _busy(directory, lock, pid) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd
    raise LanetError(f"cannot lock {directory}: {lock} keeps changing")


@contextmanager
def run_lock(directory: str | os.PathLike) -> Iterator[bool]:
    """Hold an exclusive lock on ``directory`` (created if missing) for the ``with`` block.

    The lock is ``directory/.lock``, held with ``fcntl.flock`` (the kernel releases it when the process dies,
    so a lock left by a killed process is simply taken over) and holding the holder's PID, which a second
    process names in its error (:class:`RunDirectoryBusy`, a :class:`LanetError`). Where flock is not
    supported, the file is created with ``O_EXCL`` and a lock whose PID no longer runs is taken over.
    Re-entrant within one process (the benchmark holds a run's lock while the trainer takes it again).
    Yields True when this call took the lock, False when an enclosing ``run_lock`` of this process held it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(directory)
    if key in _held:
        _held[key][1] += 1
        try:
            yield False
        finally:
            _held[key][1] -= 1
        return
    lock = directory / LOCK_NAME
    fd = _lock_flock(directory, lock)
    if fd is None:
        fd = _lock_excl(directory, lock)
    _held[key] = [fd, 1]
    try:
        yield True
    finally:
        del _held[key]
        lock.unlink(missing_ok=True)  # unlink before unlocking: a waiter that opened it re-checks the inode
        os.close(fd)


def cache_root(cache_dir: str | os.PathLike = "") -> Path | None:
    """The cache folder: ``cache_dir``, else ``$LANET_CACHE``, else ``~/.cache/lanet``; None if set to ``none``."""
    value = str(cache_dir) if cache_dir else os.environ.get("LANET_CACHE", "")
    if value.strip().lower() in ("none", "off", "0"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "lanet"


def load_torch_file(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain Python types only, never code.

    A file that needs anything else (a crafted pickle, a foreign object) is refused; a truncated, empty or
    corrupt file and a missing one are one-line :class:`LanetError` s naming ``path`` and ``what`` it should be.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise LanetError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights only" in first.lower() or "weights_only" in first.lower():
            raise LanetError(f"{path} is not a plain {what}: it holds Python objects other than tensors and plain "
                             "types, which lanet never loads (they could run code)") from exc
        raise LanetError(f"{path}: unreadable {what} (truncated or corrupt: {first})") from exc
    except Exception as exc:  # noqa: BLE001 - zip, EOF and storage errors of a damaged file
        lines = str(exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        raise LanetError(f"{path}: unreadable {what} (truncated or corrupt: {detail})") from exc
