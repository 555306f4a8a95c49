"""The training loop: data -> noise -> sampler + augmentation -> method -> optimiser -> run directory.

It knows nothing about landmarks, queues or label distributions: a method (``lanet.methods``) owns those.
Run it in one process or under ``torchrun --nproc_per_node N`` (DistributedDataParallel, gloo on CPU,
NCCL on CUDA); the global batch is split across processes and every process draws the same augmentation
parameters for the global batch, so N processes see exactly the images one process would.

Run directory::

    config.yaml            resolved configuration
    noise.json             requested/realised noise; noise_changes.csv lists every changed label
    metrics.jsonl          one JSON line per epoch
    checkpoint.pt          method + optimiser state after the last finished epoch (for --resume)
    model_final.pt         exported expression classifier after the last epoch
    model_val_selected.pt  exported classifier at the epoch with the best validation accuracy
    summary.json           the final numbers (see ``summarise``)
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from ..config import Config, config_from_dict
from ..data.augment import BatchAugment
from ..data.faceset import FaceSet
from ..data.loaders import load_faceset
from ..data.noise import NoiseRecord, apply_noise, save_noise
from ..data.sampler import epoch_order
from ..errors import LanetError
from ..methods.base import Batch, Method, MethodSpec
from ..methods.registry import build_method, get_method_class
from .checkpoint import atomic_torch_save, atomic_write_json, atomic_write_text
from .distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from .metrics import confusion_matrix, metrics_from_confusion


# ---------------------------------------------------------------------------------------------- data
@dataclass
class PreparedData:
    faceset: FaceSet
    train_idx: np.ndarray  # indices of the training images in the FaceSet
    train_labels: np.ndarray  # training labels after noise, aligned with train_idx
    noise: NoiseRecord
    noisy_all: np.ndarray  # labels of every image with noise applied to the training split


def prepare_data(cfg: Config, need_landmarks: bool, progress: bool = True) -> PreparedData:
    """Load the dataset, attach landmarks if the method needs them, apply seeded label noise."""
    faceset = load_faceset(cfg.data)
    if len(faceset.indices("train")) == 0:
        raise LanetError(f"dataset {faceset.name!r} has no training images")
    if len(faceset.indices("test")) == 0:
        raise LanetError(f"dataset {faceset.name!r} has no test images")
    if need_landmarks:
        from ..landmarks.provider import ensure_landmarks

        ensure_landmarks(faceset, cfg.data.landmarks or "auto", cfg.data.cache_dir, progress=progress)
        if faceset.landmarks is None:
            raise LanetError(f"method {cfg.method.name!r} needs landmarks, but data.landmarks is "
                             f"{cfg.data.landmarks!r}")
    seed = cfg.noise.seed if cfg.noise.seed >= 0 else cfg.train.seed
    noisy_all, record = apply_noise(faceset, cfg.noise.type, cfg.noise.rate, seed)
    train_idx = faceset.indices("train")
    return PreparedData(faceset, train_idx, noisy_all[train_idx], record, noisy_all)


def make_augment(cfg: Config, faceset: FaceSet) -> BatchAugment:
    flip_perm = None
    if faceset.landmarks is not None:
        from ..landmarks.ibug68 import flip_permutation

        flip_perm = flip_permutation(faceset.landmarks)
    return BatchAugment(cfg.augment, cfg.data.image_size, faceset.channels, flip_perm=flip_perm)


# ---------------------------------------------------------------------------------------------- eval
@torch.no_grad()
def evaluate(model: nn.Module, faceset: FaceSet, idx: np.ndarray, aug: BatchAugment, device: torch.device,
             batch_size: int, dist_info: DistInfo | None = None, amp: bool = False,
             memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, Any]:
    """Accuracy, per-class and mean class accuracy and the confusion matrix of ``model`` on ``idx``.

    Under torchrun every process evaluates a contiguous share and the confusion matrices are summed.
    """
    was_training = model.training
    model.eval()
    c = faceset.num_classes
    if dist_info is not None and dist_info.enabled:
        idx = np.array_split(idx, dist_info.world)[dist_info.rank]
    preds = []
    for a in range(0, len(idx), batch_size):
        chunk = idx[a:a + batch_size]
        x, _ = aug.eval(torch.from_numpy(faceset.images[chunk]))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x.to(device, non_blocking=True).contiguous(memory_format=memory_format))
        preds.append(logits.float().argmax(1).cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    cm = torch.from_numpy(confusion_matrix(faceset.labels[idx], pred, c)).to(device)
    cm = all_reduce_sum(cm).cpu().numpy()
    model.train(was_training)
    return metrics_from_confusion(cm, faceset.class_names)


def export_payload(model: nn.Module, cfg: Config, faceset: FaceSet, aug: BatchAugment, epoch: int) -> dict[str, Any]:
    """Everything a predictor needs to run the exported classifier on new photos."""
    from ..models.dlib_resnet import DlibResNet
    from ..models.resnet import ResNet

    return {
        "format": "lanet-classifier-v1",
        # a plain backbone classifier (create_model(arch)) for most methods; methods whose inference path is
        # their own module (RUL) say so
        "module": "resnet" if isinstance(model, (ResNet, DlibResNet)) else "method",
        "method": cfg.method.name,
        "method_params": dict(cfg.method.params),
        "arch": cfg.model.arch,
        "width": cfg.model.width,
        "num_classes": faceset.num_classes,
        "in_chans": faceset.channels,
        "image_size": cfg.data.image_size,
        "class_names": list(faceset.class_names),
        "mean": list(aug.mean),
        "std": list(aug.std),
        "epoch": epoch,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


# ---------------------------------------------------------------------------------------------- train
def resolve_device(name: str, dist_info: DistInfo | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise LanetError("--device cuda requested but no CUDA device is available")
        return torch.device("cuda", dist_info.local_rank if dist_info else 0)
    if name != "cpu":
        raise LanetError(f"unknown device {name!r}; expected auto, cpu or cuda")
    return torch.device("cpu")


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The augmentation generator of one global step: identical on every process and across resumes."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 100_003 + step) % (2**63 - 1))


def linear_lr(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then linear decay to 0 at ``total`` (per step)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))


def _log(msg: str, info: DistInfo) -> None:
    if info.main:
        print(msg, file=sys.stderr, flush=True)


def set_deterministic(mode: str, device: torch.device) -> bool:
    """Apply ``train.deterministic`` (auto | on | off) for ``device``; returns whether it is on.

    On CPU the only nondeterminism left after seeding is multithreaded accumulation (the backward of LA-Net's
    neighbour/memory indexing): deterministic mode makes reruns bit-identical at a fixed thread count. On CUDA,
    ``on`` also disables cuDNN autotuning and sets ``CUBLAS_WORKSPACE_CONFIG`` if unset; kernels without a
    deterministic version warn instead of failing.
    """
    if mode not in ("auto", "on", "off"):
        raise LanetError(f"train.deterministic must be auto, on or off, got {mode!r}")
    on = mode == "on" or (mode == "auto" and device.type == "cpu")
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(on, warn_only=device.type == "cuda")
    return on


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.method.name`` and write the run directory ``out``. Returns the summary dict."""
    out = Path(out)
    device_type = "cuda" if (cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())) \
        else "cpu"
    info = init_distributed(device_type)
    device = resolve_device(cfg.train.device, info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    set_deterministic(cfg.train.deterministic, device)

    ckpt_path = out / "checkpoint.pt"
    if resume:
        if not (out / "config.yaml").is_file():
            raise LanetError(f"--resume: {out} holds no run (config.yaml missing)")
        import yaml

        saved = config_from_dict(yaml.safe_load((out / "config.yaml").read_text()))
        saved.train.device, saved.train.threads = cfg.train.device, cfg.train.threads
        cfg = saved
        if (out / "summary.json").is_file():
            _log(f"{out}: run already finished; nothing to resume", info)
            return json.loads((out / "summary.json").read_text())
    elif out.exists() and any(out.iterdir()) and (out / "config.yaml").exists():
        raise LanetError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    method_cls = get_method_class(cfg.method.name)
    data = prepare_data(cfg, method_cls.needs_landmarks, progress=progress and info.main)
    fs = data.faceset
    aug = make_augment(cfg, fs)
    B = cfg.train.batch_size
    if B % info.world:
        raise LanetError(f"train.batch_size {B} is not divisible by the {info.world} processes")
    n_train = len(data.train_idx)
    if B > n_train:
        raise LanetError(f"train.batch_size {B} exceeds the {n_train} training images")
    steps_per_epoch = n_train // B
    total_steps = steps_per_epoch * cfg.train.epochs
    local = B // info.world
    lo, hi = info.rank * local, (info.rank + 1) * local

    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            cfg.save(out / "config.yaml")
            save_noise(out, fs, data.noisy_all, data.noise)
    barrier()
    _log(f"{fs.summary()}; noise {data.noise.type} requested {data.noise.rate:.2f} realised "
         f"{data.noise.realised_rate:.4f}; {info.world} process(es) on {device}", info)

    torch.manual_seed(cfg.train.seed)
    spec = MethodSpec(num_classes=fs.num_classes, num_train=n_train, in_chans=fs.channels,
                      image_size=cfg.data.image_size, num_landmarks=fs.num_landmarks, arch=cfg.model.arch,
                      pretrained=cfg.model.pretrained, dropout=cfg.model.dropout, epochs=cfg.train.epochs,
                      width=cfg.model.width,
                      train_labels=data.train_labels, train_names=fs.names[data.train_idx])
    method: Method = build_method(cfg.method.name, spec, cfg.method.params).to(device)
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    method = method.to(memory_format=fmt)
    optimizer = torch.optim.Adam(method.param_groups(cfg.train.lr), lr=cfg.train.lr,
                                 weight_decay=cfg.train.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    start_epoch, best_val, history = 0, -1.0, []
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best_val = state["epoch"] + 1, state["best_val"]
        history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        history = [h for h in history if h["epoch"] < start_epoch]
        _log(f"resuming {out} at epoch {start_epoch + 1}/{cfg.train.epochs}", info)
    if info.main:
        atomic_write_text("".join(json.dumps(h) + "\n" for h in history), out / "metrics.jsonl")

    model: nn.Module = method
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=getattr(method, "ddp_find_unused", False))
    amp = cfg.train.amp and device.type == "cuda"
    val_idx, test_idx = fs.indices("val"), fs.indices("test")
    images_t = torch.from_numpy(fs.images)  # N x H x W x C uint8, shared, no copy
    lms_t = None if fs.landmarks is None else torch.from_numpy(fs.landmarks)
    found_t = None if fs.landmark_found is None else torch.from_numpy(fs.landmark_found)
    labels_t = torch.from_numpy(data.train_labels)
    clean_t = torch.from_numpy(fs.labels[data.train_idx])

    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            method.train()
            order = epoch_order(data.train_labels, fs.num_classes, epoch, cfg.train.epochs, cfg.train.seed,
                                cfg.augment.balanced)
            sums: dict[str, float] = {}
            t_train = 0.0
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="step",
                       disable=not (progress and info.main), mininterval=1.0, dynamic_ncols=True, file=sys.stderr)
            for step in bar:
                t0 = time.perf_counter()
                gstep = epoch * steps_per_epoch + step
                for g, base in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = base * linear_lr(gstep, total_steps, cfg.train.warmup_steps)
                sel = torch.from_numpy(order[step * B:(step + 1) * B][lo:hi])  # this process's share, train-local
                params = aug.sample(B, step_generator(cfg.train.seed, epoch, step))
                params = {k: v[lo:hi] for k, v in params.items()}
                gidx = torch.from_numpy(data.train_idx)[sel]
                x, lm = aug.apply(images_t[gidx], None if lms_t is None else lms_t[gidx], params)
                batch = Batch(images=x.to(device, non_blocking=True).contiguous(memory_format=fmt),
                              labels=labels_t[sel].to(device),
                              index=sel.to(device),
                              landmarks=None if lm is None else lm.to(device),
                              landmark_found=None if found_t is None else found_t[gidx].to(device),
                              clean_labels=clean_t[sel].to(device), epoch=epoch, step=gstep,
                              total_steps=total_steps)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss, logs = model(batch)
                if not torch.isfinite(loss):
                    raise LanetError(f"loss became {loss.item()} at epoch {epoch + 1} step {step}; "
                                     f"try a lower train.lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                method.after_step(batch)
                t_train += time.perf_counter() - t0
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                if step % max(1, cfg.train.log_every) == 0:
                    bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", ips=f"{(step + 1) * B / t_train:.0f}")
            bar.close()
            line: dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
            line.update({f"train_{k}": v / steps_per_epoch for k, v in sums.items()})
            line["train_images_per_second"] = steps_per_epoch * B / max(t_train, 1e-9)
            line["train_seconds"] = t_train
            line.update({k: float(v) for k, v in method.epoch_diagnostics().items()})
            exported = method.export()
            if len(val_idx):
                val = evaluate(exported, fs, val_idx, aug, device, cfg.train.eval_batch_size, info, amp, fmt)
                line["val_accuracy"] = val["accuracy"]
                line["val_mean_class_accuracy"] = val["mean_class_accuracy"]
            test = evaluate(exported, fs, test_idx, aug, device, cfg.train.eval_batch_size, info, amp, fmt)
            line["test_accuracy"] = test["accuracy"]
            line["test_mean_class_accuracy"] = test["mean_class_accuracy"]
            line["test_per_class_accuracy"] = test["per_class_accuracy"]
            line["test_confusion_matrix"] = test["confusion_matrix"]
            history.append(line)
            if info.main:
                with open(out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(line) + "\n")
                payload = export_payload(exported, cfg, fs, aug, epoch)
                if len(val_idx) and line["val_accuracy"] > best_val:
                    best_val = line["val_accuracy"]
                    atomic_torch_save(payload, out / "model_val_selected.pt")
                if cfg.train.checkpoint:
                    atomic_torch_save({"method": method.state_dict(), "optimizer": optimizer.state_dict(),
                                       "epoch": epoch, "best_val": best_val, "torch_rng": torch.get_rng_state()},
                                      ckpt_path)
                msg = f"epoch {epoch + 1}/{cfg.train.epochs}: loss {line['train_loss']:.4f}"
                if "val_accuracy" in line:
                    msg += f"  val {100 * line['val_accuracy']:.2f}%"
                msg += f"  test {100 * line['test_accuracy']:.2f}%  {line['train_images_per_second']:.0f} img/s"
                _log(msg, info)
            barrier()
    except KeyboardInterrupt:
        _log(f"\ninterrupted; the last finished epoch is saved. Continue with: lanet train --out {out} --resume", info)
        raise

    summary: dict[str, Any] = {}
    if info.main:
        atomic_torch_save(export_payload(method.export(), cfg, fs, aug, cfg.train.epochs - 1), out / "model_final.pt")
        method.save_artifacts(out)
        summary = summarise(cfg, fs, data.noise, history, info.world, str(device))
        atomic_write_json(summary, out / "summary.json")
    barrier()
    return summary


def summarise(cfg: Config, fs: FaceSet, noise: NoiseRecord, history: list[dict[str, Any]], world: int,
              device: str) -> dict[str, Any]:
    """The run's headline numbers. The validation-selected epoch is chosen on validation accuracy only."""
    final = history[-1]
    sel = None
    if history and "val_accuracy" in history[0]:
        sel = max(range(len(history)), key=lambda i: (history[i]["val_accuracy"], -i))
    ips = [h["train_images_per_second"] for h in history]
    return {
        "method": cfg.method.name,
        "dataset": fs.name,
        "noise": {"type": noise.type, "rate": noise.rate},
        "realised_noise_rate": noise.realised_rate,
        "seed": cfg.train.seed,
        "epochs": cfg.train.epochs,
        "test_accuracy": final["test_accuracy"],
        "test_accuracy_val_selected": None if sel is None else history[sel]["test_accuracy"],
        "val_selected_epoch": None if sel is None else sel + 1,
        "val_accuracy_selected": None if sel is None else history[sel]["val_accuracy"],
        "mean_class_accuracy": final["test_mean_class_accuracy"],
        "per_class_accuracy": final["test_per_class_accuracy"],
        "confusion_matrix": final["test_confusion_matrix"],
        "val_selected": None if sel is None else {
            "epoch": sel + 1,
            "test_accuracy": history[sel]["test_accuracy"],
            "mean_class_accuracy": history[sel]["test_mean_class_accuracy"],
            "per_class_accuracy": history[sel]["test_per_class_accuracy"],
            "confusion_matrix": history[sel]["test_confusion_matrix"],
        },
        "class_names": list(fs.class_names),
        "train_images_per_second": float(np.median(ips)) if ips else 0.0,
        "train_seconds": float(sum(h["train_seconds"] for h in history)),
        "num_train": int(len(fs.indices("train"))),
        "num_val": int(len(fs.indices("val"))),
        "num_test": int(len(fs.indices("test"))),
        "image_size": cfg.data.image_size,
        "arch": cfg.model.arch,
        "batch_size": cfg.train.batch_size,
        "world_size": world,
        "device": device,
        "torch": torch.__version__,
        "config": asdict(cfg),
    }

