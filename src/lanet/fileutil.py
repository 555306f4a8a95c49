"""File helpers shared by caches, landmark files, checkpoints and run directories.

* :func:`atomic_open`: write a file so that readers see the old or the new complete version, never half.
* :func:`run_lock`: an exclusive, process-wide lock on a run directory (one writer per run).
* :func:`remove_stale_tmp`: delete the temporary files a killed writer left behind.
* :func:`open_text` / :func:`read_text`: read a text file as UTF-8; a byte that is not is a one-line error
  naming the file and line.
* :func:`csv_cell` / :func:`csv_value`: neutralise spreadsheet formulas in CSV cells, and undo it on reading.
* :func:`load_torch_file`: ``torch.load`` of tensors and plain values only (never code).
"""

from __future__ import annotations

import codecs
import errno
import fcntl
import os
import re
import tempfile
import warnings
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


# ---------------------------------------------------------------------------------------------- text files
def _not_utf8(path: Path, line_no: int, byte: int, column: int) -> LanetError:
    return LanetError(f"{path}:{line_no}: not UTF-8 text (byte 0x{byte:02x} at column {column}); save the file as "
                      "UTF-8")


def _utf8_lines(fh: IO[bytes], path: Path) -> Iterator[str]:
    for line_no, raw in enumerate(fh, 1):
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, line_no, raw[exc.start], exc.start + 1) from None


@contextmanager
def open_text(path: str | os.PathLike) -> Iterator[Iterator[str]]:
    """The lines of a UTF-8 text file (a leading byte-order mark dropped, line endings kept, as ``csv.reader``
    wants them). A byte sequence that is not UTF-8 raises a one-line :class:`LanetError` naming the file and the
    line when the reader reaches it; a missing file raises ``FileNotFoundError`` as ``open`` does."""
    path = Path(path)
    with open(path, "rb") as fh:
        yield _utf8_lines(fh, path)


def read_text(path: str | os.PathLike) -> str:
    """A whole UTF-8 text file (see :func:`open_text`) as one string."""
    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        raise _not_utf8(path, raw.count(b"\n", 0, exc.start) + 1, raw[exc.start], exc.start - line_start + 1) \
            from None


#: First characters that make a spreadsheet read a cell as a formula (OWASP's CSV-injection list).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _formula_like(text: str) -> bool:
    bare = text.lstrip("'")
    return bare.startswith(FORMULA_START) and not _NUMBER.fullmatch(bare)


def csv_cell(value: Any) -> Any:
    """``value`` made safe for a CSV cell a spreadsheet may open: a string starting with ``=``, ``+``, ``-``, ``@``,
    a tab or a carriage return (after any leading ``'``) gets a leading ``'``, so it is shown as text and never
    evaluated. Numbers, and strings that are plain decimal numbers (``-0.5``), are returned unchanged.
    :func:`csv_value` undoes it."""
    if isinstance(value, str) and _formula_like(value):
        return "'" + value
    return value


def csv_value(text: str) -> str:
    """The original string of a cell written with :func:`csv_cell`."""
    return text[1:] if text.startswith("'") and _formula_like(text[1:]) else text


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
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 32).strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


#: Flags of every open of a lock file: never through a symbolic link (which could point at any file).
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


def _open_lock(lock: Path, extra: int = 0) -> int:
    try:
        return os.open(lock, _LOCK_FLAGS | extra, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or lock.is_symlink():
            raise _link_refused(lock) from None
        raise


def _link_refused(path: Path) -> LanetError:
    target = os.readlink(path) if path.is_symlink() else "?"
    return LanetError(f"{path} is a symbolic link (to {target}); lanet never writes through links in a run "
                      "directory: remove the link")


def refuse_symlink(path: str | os.PathLike) -> None:
    """Raise a one-line :class:`LanetError` if ``path`` is a symbolic link (dangling or not)."""
    if Path(path).is_symlink():
        raise _link_refused(Path(path))


class RunDirectoryBusy(LanetError):
    """Another process holds the run directory's lock."""


def _busy(directory: Path, lock: Path, pid: int | None) -> LanetError:
    who = f"process {pid}" if pid else "another process"
    return RunDirectoryBusy(f"{directory} is in use by {who} (lock file {lock}); wait for it to finish, stop it, or "
                      "choose another --out")


def _lock_flock(directory: Path, lock: Path) -> int | None:
    """Take ``lock`` with ``fcntl.flock``; None where the file system does not support it."""
    for _ in range(20):  # retry when the holder released (and unlinked) between our open and our flock
        fd = _open_lock(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(directory, lock, _read_pid(lock)) from None
            return None  # ENOLCK / EOPNOTSUPP: fall back to O_EXCL
        try:
            same = os.lstat(lock).st_ino == os.fstat(fd).st_ino
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
            fd = _open_lock(lock, os.O_EXCL)
        except FileExistsError:
            refuse_symlink(lock)
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
    process names in its error (:class:`RunDirectoryBusy`, a :class:`LanetError`). The lock file is never opened
    through a symbolic link: a ``.lock`` that is one is refused, naming it. Where flock is not
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
    refuse_symlink(lock)
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


def torch_file_kind(path: str | os.PathLike) -> str:
    """What ``path`` holds, from its first bytes: ``torch`` (a ``torch.save`` zip archive or legacy pickle),
    ``torchscript`` (a TorchScript archive: code), ``zip`` (another zip archive) or ``other`` (an ONNX model, a
    text file, ...). Reads nothing but the zip directory."""
    import zipfile

    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "torch"  # a damaged archive: torch.load names the damage
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "torch" if any(n.endswith("data.pkl") for n in names) or not names else "zip"
    if head[:1] == b"\x80" or not head:
        return "torch"  # a legacy pickle (refused below unless it holds only plain values), or an empty file
    return "other"


def load_torch_file(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain Python types only, never code.

    A file that needs anything else (a crafted pickle, a foreign object, a TorchScript archive) is refused; a
    truncated, empty or corrupt file, a file of another format (ONNX, text) and a missing one are one-line
    :class:`LanetError` s naming ``path`` and ``what`` it should be. torch's warnings are not shown.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise LanetError(f"{what} not found: {path}")
    kind = torch_file_kind(path)
    if kind == "torchscript":
        raise LanetError(f"{path} is not a plain {what}: it is a TorchScript archive, which is code, and lanet never "
                         "runs code from a run directory (only a TorchScript export you trust, named as --model FILE "
                         "and not as a run's model_*.pt, is loaded)")
    if kind != "torch":
        raise LanetError(f"{path} is not a {what}: not a PyTorch file at all (an ONNX export, a text file or "
                         "another format?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
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
