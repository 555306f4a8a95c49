"""Precise BatchNorm statistics: re-estimate the running statistics of a trained network before evaluating it.

In training, BatchNorm normalises with each batch's statistics and keeps an exponential moving average of them
(``momentum`` 0.1: the last ~10 batches weigh 65%) for evaluation. While the weights still move, that average
mixes statistics of several recent networks and of a handful of batches, so the network evaluated is not quite
the one trained. *Precise BN* (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, sec. 3) replaces the
average by the population statistics of the final weights: the network is run over many training images with
every BatchNorm layer normalising by batch statistics (as in training), and each layer's running mean and
variance become the mean and variance of its input over all those images::

    mu_c    = E[x_c]                       over every image and position the layer saw
    var_c   = E[x_c^2] - mu_c^2            (the population variance: within-batch plus between-batch spread)

Here the images go through the evaluation transform (resize + normalisation, no augmentation), so the
statistics describe inputs like the test images, and nothing random is drawn (training's RNG streams are
untouched). Only the running statistics change; weights and every other buffer stay as they were.
``train.precise_bn`` switches it on in the trainer (see :func:`lanet.train.trainer.epoch_metrics`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, images: np.ndarray, transform: Any, batch_size: int = 256,
                            device: torch.device | str = "cpu", amp: bool = False,
                            memory_format: torch.memory_format = torch.contiguous_format) -> int:
    """Set every BatchNorm layer's running statistics to its input's population statistics over ``images``.

    Args:
        model: the network (any module; its BatchNorm layers are found by type).
        images: ``N x H x W x C`` uint8 training images.
        transform: a :class:`~lanet.data.augment.BatchAugment`; its deterministic ``eval`` path is used.
        batch_size: images per forward pass (the layers normalise with the statistics of these batches).

    Returns the number of layers updated (0 when the model has none or ``images`` is empty). A layer still
    waiting for its first-batch calibration (:class:`~lanet.models.dlib_resnet.FoldedBatchNorm2d` before any
    training step) is left alone and kept in eval mode, so it is not calibrated here.
    """
    layers = [m for m in batchnorm_layers(model) if not bool(getattr(m, "pending_calibration", False))]
    if not layers or len(images) == 0:
        return 0
    device = torch.device(device)
    was_training = {m: m.training for m in model.modules()}
    sums: dict[nn.Module, list[torch.Tensor | int]] = {}

    def accumulate(module: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        x = inp[0].detach().double()
        dims = [0] + list(range(2, x.ndim))  # every axis but the channel
        entry = sums.setdefault(module, [torch.zeros_like(module.running_mean, dtype=torch.float64),
                                         torch.zeros_like(module.running_mean, dtype=torch.float64), 0])
        entry[0] += x.sum(dims)
        entry[1] += (x * x).sum(dims)
        entry[2] += x.numel() // x.shape[1]

    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()
              if m.num_batches_tracked is not None else None) for m in layers]
    hooks = [m.register_forward_pre_hook(accumulate) for m in layers]
    try:
        model.eval()
        for m in layers:
            m.train()  # batch statistics, as in training; the running update is overwritten below
        for a in range(0, len(images), batch_size):
            x, _ = transform.eval(torch.from_numpy(np.ascontiguousarray(images[a:a + batch_size])))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                model(x.to(device).contiguous(memory_format=memory_format))
    finally:
        for h in hooks:
            h.remove()
        for m, state in was_training.items():
            m.train(state)
    for m, (momentum, mean, var, tracked) in zip(layers, saved):
        m.momentum = momentum
        if tracked is not None:
            m.num_batches_tracked.copy_(tracked)
        if m not in sums:  # the layer is not on the forward path (e.g. a branch the classifier skips)
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            continue
        s, sq, n = sums[m]
        mu = s / n
        m.running_mean.copy_(mu.to(m.running_mean.dtype))
        m.running_var.copy_(((sq / n - mu * mu).clamp(min=0) * n / max(n - 1, 1)).to(m.running_var.dtype))
    return len(sums)
