"""Methods registered by name. Adding a method means one file and one ``@register`` line; the trainer
never changes."""

from __future__ import annotations

from typing import Any

from ..errors import LanetError
from .base import Method, MethodSpec

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    import importlib

    for mod in ("baseline", "lanet", "scn", "rul", "eac", "nla", "resup"):
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{mod}":
                raise


def available() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_method_class(name: str) -> type[Method]:
    _load_builtin()
    if name not in _REGISTRY:
        raise LanetError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_method(name: str, spec: MethodSpec, params: dict[str, Any] | None = None) -> Method:
    return get_method_class(name)(spec, params)
