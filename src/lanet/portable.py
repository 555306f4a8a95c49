"""Paths and command lines fit for a committed result: no folder of the machine that made it.

A result file is read on other machines, so an absolute path in it (``/work/runs/...``, ``/tmp/x``, a home
folder) says nothing useful and leaks the maker's layout. :func:`portable_path` rewrites one path,
:func:`portable_command` every path inside a command line:

* a relative path stays as it is;
* a path with a ``runs`` folder in it becomes relative to that folder's parent (``runs/bench/cpu/table1/x``):
  the runs folder is the one place run directories live;
* a path at most one level above the working directory becomes relative to it (``../shared/data/ferplus``:
  the layout the project documents);
* anything else keeps only its name, marked as elided: ``<abs>/model.pt``.

:func:`machine_paths` finds what slipped through, for the test that guards the committed results.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

__all__ = ["machine_paths", "portable_command", "portable_path"]

#: Absolute paths in text: a slash-started path with at least two components (``/work/x``, ``/tmp/y``),
#: or a Windows drive path. Used to find machine paths in committed files.
_ABSOLUTE = re.compile(r"(?<![\w.:/~<>-])(/(?:work|tmp|home|root|Users|var|mnt|opt|private|data|scratch)/"
                       r"[^\s\"'`,;)\]]+|[A-Za-z]:\\[^\s\"'`,;)\]]+)")


def portable_path(path: str | os.PathLike[str], start: str | os.PathLike[str] | None = None) -> str:
    """``path`` as a committed result may hold it (the rules are in the module docstring)."""
    text = os.fspath(path)
    p = Path(text)
    if not p.is_absolute():
        return text
    parts = p.parts
    if "runs" in parts:
        i = len(parts) - 1 - parts[::-1].index("runs")
        return "/".join(parts[i:])
    base = Path(start) if start is not None else Path.cwd()
    try:
        rel = os.path.relpath(p, base)
    except ValueError:  # another drive
        rel = None
    if rel is not None and rel.split(os.sep).count("..") <= 1:
        return rel.replace(os.sep, "/")
    return f"<abs>/{p.name}"


def _portable_token(token: str, start: str | os.PathLike[str] | None) -> str:
    if token.startswith("-") and "=" in token:
        opt, value = token.split("=", 1)
        return f"{opt}={_portable_token(value, start)}"
    if token.startswith("/") or re.match(r"^[A-Za-z]:\\", token):
        return portable_path(token, start)
    return token


def portable_command(argv: Sequence[str] | str, start: str | os.PathLike[str] | None = None) -> str:
    """A shell-quoted command line with every absolute path argument made portable. The program itself (the
    first word) keeps only its name (``/work/main/.venv/bin/python3`` becomes ``python3``)."""
    words = shlex.split(argv) if isinstance(argv, str) else list(argv)
    if not words:
        return ""
    head = Path(words[0]).name if words[0].startswith("/") else words[0]
    return shlex.join([head, *(_portable_token(w, start) for w in words[1:])])


def machine_paths(text: str) -> list[str]:
    """The absolute machine paths in ``text`` (empty when it is fit to commit)."""
    return _ABSOLUTE.findall(text)
