"""Shared test configuration: tiny synthetic runs that train in seconds on one CPU thread."""

from lanet.config import Config


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
