"""Shared test configuration: tiny synthetic runs that train in seconds on one CPU thread."""

from lanet.config import Config
from lanet.train import trainer as trainer_mod


def tiny_config(method: str = "baseline", epochs: int = 2, size: int = 240, width: int = 64, **params) -> Config:
    cfg = Config()
    cfg.data.name = "synthetic"
    cfg.data.synthetic_size = size
    cfg.data.image_size = 32
    cfg.model.width = width
    cfg.noise.type, cfg.noise.rate = "symmetric", 0.3
    cfg.train.epochs = epochs
    cfg.train.batch_size = 32
    cfg.train.device = "cpu"
    cfg.train.threads = 1
    cfg.method.name = method
    cfg.method.params = dict(params)
    return cfg


def interrupt_second_epoch(monkeypatch):
    """Make training raise KeyboardInterrupt as its second epoch starts, as if the process were killed there.
    Returns a function that restores normal training."""
    real = trainer_mod.epoch_order

    def killed(labels, num_classes, epoch, *a, **kw):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(labels, num_classes, epoch, *a, **kw)

    monkeypatch.setattr(trainer_mod, "epoch_order", killed)
    return lambda: monkeypatch.setattr(trainer_mod, "epoch_order", real)
