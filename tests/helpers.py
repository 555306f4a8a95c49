"""Shared test configuration: tiny synthetic runs that train in seconds on one CPU thread."""

import torch

from lanet.config import Config
from lanet.methods.base import Batch
from lanet.train import trainer as trainer_mod

#: (arch, input size, width) of every backbone family, at the smallest size each accepts: one training step each
BACKBONES = [("resnet18", 32, 8), ("resnet18", 32, 16), ("dlib_resnet_small", 48, 64), ("dlib_resnet", 104, 64)]


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


def lanet_steps(m, labels, images, lms, g, steps, opt, clean=None, check=None, batch=16):
    """Train a method for ``steps`` steps on random batches of ``batch`` drawn with generator ``g``; ``clean``
    (default: ``labels``) are the diagnostics' clean labels; ``check(m, logs)`` runs after every step."""
    clean = labels if clean is None else clean
    for step in range(steps):
        idx = torch.randperm(len(labels), generator=g)[:batch]
        b = Batch(images=images[idx], labels=labels[idx], index=idx, landmarks=lms[idx],
                  landmark_found=torch.ones(batch, dtype=torch.bool), clean_labels=clean[idx], step=step)
        loss, logs = m(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_step(b)
        if check is not None:
            check(m, logs)
    return opt


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
