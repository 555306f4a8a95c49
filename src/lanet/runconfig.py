"""A configuration checked against the rest of lanet: the dataset, noise and method registries.

:mod:`lanet.config` is plain data (dataclasses, YAML, overrides) and imports neither :mod:`lanet.data` nor
:mod:`lanet.methods`; each registry validates its own sections (:func:`lanet.data.checks.check_data_config`,
:func:`lanet.methods.registry.check_method_config`), and :func:`validate_config` runs them with the plain checks
of :func:`lanet.config.check_model_train` in one fixed order. Reading a run directory's configuration back
(:func:`read_run_config`) and comparing two configurations with the method's defaults filled in
(:func:`config_differences`) need the registries too, so they live here. The registries are imported on first
use (``lanet --help`` need not load torch).
"""

from __future__ import annotations

from pathlib import Path

from .config import RUN_INDEPENDENT_KEYS, Config, check_model_train, config_from_dict, flatten, read_yaml_mapping
from .errors import LanetError


def validate_config(cfg: Config, machine: bool = True) -> None:
    """Check every value's type and range before anything is loaded or written; the first bad key raises a
    one-line :class:`LanetError` naming it. Method hyperparameters are checked against the method's own
    parameter list (:meth:`lanet.methods.base.Method.parse_params`) and against the rest of the configuration
    (:meth:`lanet.methods.base.Method.check_config`, e.g. LA-Net's K against the batch size); checks that need
    the data (e.g. LA-Net's landmark count) happen when the method is built, still before the run directory is
    written. ``machine``: also check values against this machine (``train.threads`` at most its cores); off for
    a saved run's configuration, which another machine may have written."""
    from .data.checks import check_data_config
    from .methods.registry import check_method_config

    check_data_config(cfg)  # data, noise, augment
    check_model_train(cfg, machine)  # model, train
    check_method_config(cfg)  # method


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved configuration a run directory holds (``RUN_DIR/config.yaml``), validated."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise LanetError(f"{run_dir} holds no run (config.yaml missing)")
    data = read_yaml_mapping(path)
    try:
        cfg = config_from_dict(data)
        validate_config(cfg, machine=False)
    except LanetError as exc:
        raise LanetError(f"{path}: {exc}") from exc
    return cfg


def config_differences(run: Config, command: Config, keys: set[str] | None = None) -> list[str]:
    """``key: run X, command Y`` for every key (of ``keys``; all when None) whose value differs between the
    two configurations, ignoring :data:`RUN_INDEPENDENT_KEYS`. Method parameters compare with defaults filled."""
    from .methods.registry import method_params

    a, b = flatten(run.to_dict()), flatten(command.to_dict())
    a = {k: v for k, v in a.items() if not k.startswith("method.params")}
    b = {k: v for k, v in b.items() if not k.startswith("method.params")}
    if run.method.name == command.method.name:
        a.update({f"method.params.{k}": v for k, v in method_params(run).items()})
        b.update({f"method.params.{k}": v for k, v in method_params(command).items()})
    wanted = set(a) | set(b)
    if keys is not None:
        wanted = {k for k in wanted if k in keys or any(k.startswith(f"{key}.") for key in keys)}
    return [f"{k}: run {a.get(k)!r}, command {b.get(k)!r}" for k in sorted(wanted - RUN_INDEPENDENT_KEYS)
            if a.get(k) != b.get(k)]
