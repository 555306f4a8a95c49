"""Who made a result: the machine, the git commit, torch, the command line and the date."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def git_commit() -> tuple[str, bool | None]:
    """(short commit of the lanet source tree, whether it has uncommitted changes); ("unknown", None) outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0 or not commit.stdout.strip():
            return "unknown", None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def machine() -> dict[str, Any]:
    """The machine: OS, CPU model and the cores this process may use (``nproc``), GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - provenance must never fail a run
        gpu = None
    return {"platform": platform.platform(), "cpu": cpu, "nproc": nproc, "gpu": gpu,
            "python": platform.python_version()}


def provenance(preset: str, command: str) -> dict[str, Any]:
    import torch

    commit, dirty = git_commit()
    return {"machine": machine(), "torch": torch.__version__, "preset": preset, "commit": commit,
            "uncommitted_changes": dirty, "command": command,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _machine_text(m: dict[str, Any]) -> str:
    text = f"{m.get('cpu', '?')}, {m.get('nproc', '?')} CPU cores"
    if m.get("gpu"):
        text += f", GPU {m['gpu']}"
    return f"{text} ({m.get('platform', '?')})"
