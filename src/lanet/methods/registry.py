"""Methods registered by name. Adding a method means one file and one ``@register`` line; the trainer
never changes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..config import Config
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


def check_method_config(cfg: Config) -> None:
    """The method section of a configuration: ``method.params`` a mapping, the method's own parameter list
    (:meth:`~lanet.methods.base.Method.parse_params`) and its checks against the rest of the configuration
    (:meth:`~lanet.methods.base.Method.check_config`). Part of :func:`lanet.runconfig.validate_config`."""
    if not isinstance(cfg.method.params, dict):
        raise LanetError(f"method.params must be a mapping, got {cfg.method.params!r}")
    method = get_method_class(cfg.method.name)
    method.check_config(method.parse_params(dict(cfg.method.params)), cfg)


def method_params(cfg: Config) -> dict[str, Any]:
    """Every hyperparameter of the configured method, defaults filled in."""
    return asdict(get_method_class(cfg.method.name).parse_params(dict(cfg.method.params)))
