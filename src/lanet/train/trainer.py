"""The training loop: data -> noise -> sampler + augmentation -> method -> optimiser -> run directory.

It knows nothing about landmarks, queues or label distributions: a method (``lanet.methods``) owns those.
Run it in one process or under ``torchrun --nproc_per_node N`` (DistributedDataParallel, gloo on CPU,
NCCL on CUDA); the global batch is split across processes and every process draws the same augmentation
parameters for the global batch, so N processes see exactly the images one process would.

Run directory::

    config.yaml            resolved configuration
    noise.json             what changed the training labels (label file, injected noise) against the dataset's
                           labels; noise_changes.csv lists every changed label
    metrics.jsonl          one JSON line per epoch
    checkpoint.pt          method + optimiser state after the last finished epoch (for --resume)
    model_final.pt         exported expression classifier after the last epoch
    model_val_selected.pt  exported classifier at the epoch with the best validation accuracy
    summary.json           the final numbers (see ``summarise``)
    .lock                  while a process writes the run: its PID (see ``lanet.fileutil.run_lock``)

``config.yaml`` is written only once the configuration, the data and the method have been checked, and it
marks the directory as holding a run; every file is written atomically (old or new version, never half).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from ..config import RUN_INDEPENDENT_KEYS, Config
from ..data.augment import BatchAugment
from ..data.faceset import FaceSet, data_report
from ..data.loaders import load_faceset
from ..data.noise import NoiseRecord, apply_noise, save_noise
from ..data.sampler import epoch_order
from ..errors import LanetError
from ..fileutil import read_text, remove_stale_tmp, run_lock
from ..methods.base import Batch, Method, MethodSpec
from ..methods.registry import build_method, get_method_class
from ..runconfig import config_differences, read_run_config, validate_config
from .checkpoint import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    metrics_by_epoch,
    save_checkpoint,
)
from .distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from .metrics import confusion_matrix, metrics_from_confusion, top_prediction_share


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
    source = f" ({faceset.meta['root']})" if faceset.meta.get("root") else ""
    for split, what in (("train", "training"), ("test", "test")):
        if len(faceset.indices(split)) == 0:
            listing = faceset.meta.get("split_files", {}).get(split)  # the file that should have listed them
            if listing:
                raise LanetError(f"{listing}: no {what} images (dataset {faceset.name!r})")
            raise LanetError(f"dataset {faceset.name!r}{source} has no {what} images")
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


#: an epoch whose most-predicted class takes at least this share of the test predictions is flagged as collapsed
COLLAPSE_SHARE = 0.9


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
    from ..predict.crop import crop_metadata

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
        # how new photos are cropped to look like this dataset's images (lanet.predict.crop)
        **crop_metadata(faceset.name, faceset.images.shape[1]),
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


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class Run:
    """Everything the epoch loop needs, built by :func:`setup_run` before anything is written."""

    cfg: Config
    out: Path
    info: DistInfo
    device: torch.device
    data: PreparedData
    aug: BatchAugment
    method: Method
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]  # the optimiser groups' learning rates before the schedule
    steps_per_epoch: int
    total_steps: int
    resume: bool
    model: nn.Module | None = None  # the method, wrapped in DistributedDataParallel under torchrun
    start_epoch: int = 0
    best_val: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_model: nn.Module | None = None  # with train.precise_bn: the last evaluated copy of the classifier

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.cfg.train.channels_last else torch.contiguous_format

    @property
    def amp(self) -> bool:
        return self.cfg.train.amp and self.device.type == "cuda"


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True,
          explicit_keys: set[str] | None = None) -> dict[str, Any]:
    """Train ``cfg.method.name`` and write the run directory ``out``. Returns the summary dict.

    Every value, the data and the method are checked before the run directory is written, so a mistake leaves
    nothing behind that blocks the corrected command. ``out`` is locked for the whole run (a second process
    gets a :class:`LanetError` naming the holder's PID). ``resume`` continues the run in ``out`` from its last
    checkpoint with the run's own configuration: a value of ``cfg`` that differs from it is an error, except
    :data:`~lanet.config.RUN_INDEPENDENT_KEYS` (device, threads, ...), which are taken from ``cfg``.
    ``explicit_keys`` names the keys the user set (the CLI's flags, ``-o`` and ``--config``); only they are
    compared and taken over. None means every key of ``cfg`` counts.
    """
    out = Path(out)
    validate_config(cfg)
    device_type = "cuda" if (cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())) \
        else "cpu"
    info = init_distributed(device_type)
    with _locked_run_directory(out, info):
        cfg = resolve_run_config(cfg, out, resume, explicit_keys)
        barrier()  # under torchrun: every process has looked at ``out`` before the main one writes into it
        if resume and (out / "summary.json").is_file():
            _log(f"{out}: run already finished; nothing to resume", info)
            return _read_summary(out)
        device = init_device(cfg, info)
        run = setup_run(cfg, out, resume, device, info, progress)
        start_run_directory(run)
        try:
            train_epochs(run, progress)
        except LanetError:
            if not resume and not run.history:
                undo_run_directory(run)  # e.g. a loss that diverged at once: the corrected command just runs
            raise
        return finish_run(run)


@contextmanager
def _locked_run_directory(out: Path, info: DistInfo) -> Iterator[None]:
    """Hold ``out``'s run lock (main process) for the run; remove ``out`` again if this call created it and the
    run failed before writing anything into it."""
    if not info.main:
        yield
        return
    existed = out.exists()
    failed = True
    try:
        with run_lock(out):
            remove_stale_tmp(out)  # left by a killed writer; none of this process's writes is in flight
            yield
            failed = False
    finally:
        if failed and not existed:
            try:
                out.rmdir()  # only succeeds while empty
            except OSError:
                pass


def _read_summary(out: Path) -> dict[str, Any]:
    try:
        return json.loads(read_text(out / "summary.json"))
    except (OSError, ValueError, LanetError) as exc:
        raise LanetError(f"{out / 'summary.json'} is unreadable ({exc}); delete it to finish the run again") from exc


def resolve_run_config(cfg: Config, out: Path, resume: bool, explicit_keys: set[str] | None) -> Config:
    """The configuration the run uses: ``cfg`` for a new run (``out`` must hold none), the saved one on resume."""
    if not resume:
        if (out / "config.yaml").exists():
            raise LanetError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return cfg
    if not (out / "config.yaml").is_file():
        raise LanetError(f"--resume: {out} holds no run (config.yaml missing)")
    saved = read_run_config(out)
    diff = config_differences(saved, cfg, explicit_keys)
    if diff:
        raise LanetError(f"--resume: the command differs from the run in {out}: {'; '.join(diff)}. A resumed run "
                         f"keeps its configuration (only {', '.join(sorted(RUN_INDEPENDENT_KEYS))} may change); "
                         "drop those options, or start a new run with another --out")
    for key in RUN_INDEPENDENT_KEYS:
        if explicit_keys is None or key in explicit_keys:
            section, name = key.split(".")
            setattr(getattr(saved, section), name, getattr(getattr(cfg, section), name))
    return saved


def init_device(cfg: Config, info: DistInfo) -> torch.device:
    """The device, thread count and determinism of this process."""
    device = resolve_device(cfg.train.device, info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.train.threads > 0:
        torch.set_num_threads(min(cfg.train.threads, os.cpu_count() or 1))  # a resumed run's may exceed ours
    set_deterministic(cfg.train.deterministic, device)
    return device


def setup_run(cfg: Config, out: Path, resume: bool, device: torch.device, info: DistInfo, progress: bool) -> Run:
    """Load the data, build the method and optimiser, restore a checkpoint: every check before any write."""
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
    run = Run(cfg, out, info, device, data, aug, method, optimizer, [g["lr"] for g in optimizer.param_groups],
              steps_per_epoch, steps_per_epoch * cfg.train.epochs, resume)
    if resume and (out / "checkpoint.pt").is_file():
        restore_checkpoint(run)
    # every check has passed: report the data (an error above is the only line a failed command prints)
    _log(f"{fs.summary()}; {data.noise.describe()}; {info.world} process(es) on {device}", info)
    report = data_report(fs)
    if report:
        _log(f"data: {report}", info)
    if run.start_epoch:
        _log(f"resuming {out} at epoch {run.start_epoch + 1}/{cfg.train.epochs}", info)
    run.model = method
    if info.enabled:
        run.model = nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=getattr(method, "ddp_find_unused", False))
    return run


def restore_checkpoint(run: Run) -> None:
    """Method, optimiser and RNG state from ``checkpoint.pt``; the finished epochs' lines from ``metrics.jsonl``."""
    path = run.out / "checkpoint.pt"
    state = load_checkpoint(path)
    try:
        run.method.load_state_dict(state["method"])
        run.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LanetError(f"{path} does not fit this run's {run.cfg.method.name} model: {first}") from exc
    torch.set_rng_state(state["torch_rng"].cpu())
    run.start_epoch, run.best_val = state["epoch"] + 1, float(state["best_val"])
    run.history = read_history(run.out / "metrics.jsonl", run.start_epoch)


def read_history(path: Path, epochs: int) -> list[dict[str, Any]]:
    """The lines of epochs ``0 .. epochs-1`` from ``metrics.jsonl``; a missing file or epoch is an error. A
    damaged last line (a crash mid-write by an older version) is dropped when it is not needed."""
    if not path.is_file():
        raise LanetError(f"{path} is missing, but checkpoint.pt holds {epochs} finished epoch(s); the run cannot be "
                         "resumed without their metrics (restore the file, or delete checkpoint.pt to restart)")
    by_epoch = {e: line for e, line in metrics_by_epoch(path).items() if e < epochs}
    absent = [e + 1 for e in range(epochs) if e not in by_epoch]
    if absent:
        raise LanetError(f"{path} lacks the line of epoch {absent[0]} of the {epochs} the checkpoint has finished")
    return [by_epoch[e] for e in range(epochs)]


def start_run_directory(run: Run) -> None:
    """Write what a run starts with: noise record and (empty) metrics, then ``config.yaml`` last, since its
    presence marks the directory as holding a run. On resume, ``metrics.jsonl`` keeps the restored epochs."""
    if run.info.main:
        out, fs = run.out, run.data.faceset
        if not run.resume:
            save_noise(out, fs, run.data.noisy_all, run.data.noise)
        atomic_write_text("".join(json.dumps(h) + "\n" for h in run.history), out / "metrics.jsonl")
        if not run.resume:
            run.cfg.save(out / "config.yaml")
    barrier()


def undo_run_directory(run: Run) -> None:
    """Remove what :func:`start_run_directory` wrote for a new run that failed before finishing an epoch (a
    value that turned out wrong, such as a learning rate that makes the loss non-finite), so that the corrected
    command is not refused as "already holds a run". ``config.yaml`` goes first: it marks the run."""
    if run.info.main and not run.resume:
        for name in ("config.yaml", "metrics.jsonl", "noise.json", "noise_changes.csv"):
            (run.out / name).unlink(missing_ok=True)


def train_epochs(run: Run, progress: bool) -> None:
    """The epoch loop: train, evaluate, append the metrics line, save exports and the checkpoint."""
    try:
        for epoch in range(run.start_epoch, run.cfg.train.epochs):
            sums, seconds = train_one_epoch(run, epoch, progress)
            line = epoch_metrics(run, epoch, sums, seconds)
            run.history.append(line)
            if run.info.main:
                save_epoch(run, epoch, line)
            barrier()
    except KeyboardInterrupt:
        _log(f"\ninterrupted; the last finished epoch is saved. Continue with: lanet train --out {run.out} --resume",
             run.info)
        raise


def train_one_epoch(run: Run, epoch: int, progress: bool) -> tuple[dict[str, float], float]:
    """One pass over the training split; returns the summed losses/logs and the seconds spent in steps."""
    cfg, fs, data, info, method = run.cfg, run.data.faceset, run.data, run.info, run.method
    B, fmt, device = cfg.train.batch_size, run.memory_format, run.device
    local = B // info.world
    lo, hi = info.rank * local, (info.rank + 1) * local
    images_t = torch.from_numpy(fs.images)  # N x H x W x C uint8, shared, no copy
    lms_t = None if fs.landmarks is None else torch.from_numpy(fs.landmarks)
    found_t = None if fs.landmark_found is None else torch.from_numpy(fs.landmark_found)
    labels_t = torch.from_numpy(data.train_labels)
    clean_t = torch.from_numpy(fs.labels[data.train_idx])  # the dataset's labels, also under a --labels file
    train_idx_t = torch.from_numpy(data.train_idx)

    method.train()
    order = epoch_order(data.train_labels, fs.num_classes, epoch, cfg.train.epochs, cfg.train.seed,
                        cfg.augment.balanced)
    sums: dict[str, float] = {}
    t_train = 0.0
    bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="step",
               disable=not (progress and info.main), mininterval=1.0, dynamic_ncols=True, file=sys.stderr)
    for step in bar:
        t0 = time.perf_counter()
        gstep = epoch * run.steps_per_epoch + step
        for g, base in zip(run.optimizer.param_groups, run.base_lrs):
            g["lr"] = base * linear_lr(gstep, run.total_steps, cfg.train.warmup_steps)
        sel = torch.from_numpy(order[step * B:(step + 1) * B][lo:hi])  # this process's share, train-local
        params = run.aug.sample(B, step_generator(cfg.train.seed, epoch, step))
        params = {k: v[lo:hi] for k, v in params.items()}
        gidx = train_idx_t[sel]
        x, lm = run.aug.apply(images_t[gidx], None if lms_t is None else lms_t[gidx], params)
        batch = Batch(images=x.to(device, non_blocking=True).contiguous(memory_format=fmt),
                      labels=labels_t[sel].to(device),
                      index=sel.to(device),
                      landmarks=None if lm is None else lm.to(device),
                      landmark_found=None if found_t is None else found_t[gidx].to(device),
                      clean_labels=clean_t[sel].to(device), epoch=epoch, step=gstep,
                      total_steps=run.total_steps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.amp):
            loss, logs = run.model(batch)
        if not torch.isfinite(loss):
            raise LanetError(f"loss became {loss.item()} at epoch {epoch + 1} step {step}; try a lower train.lr")
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        method.after_step(batch)
        t_train += time.perf_counter() - t0
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if step % max(1, cfg.train.log_every) == 0:
            bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", ips=f"{(step + 1) * B / t_train:.0f}")
    bar.close()
    return sums, t_train


def epoch_metrics(run: Run, epoch: int, sums: dict[str, float], seconds: float) -> dict[str, Any]:
    """The epoch's ``metrics.jsonl`` line: training averages, method diagnostics, val and test accuracy."""
    cfg, fs = run.cfg, run.data.faceset
    B = cfg.train.batch_size
    line: dict[str, Any] = {"epoch": epoch, "lr": run.optimizer.param_groups[0]["lr"]}
    line.update({f"train_{k}": v / run.steps_per_epoch for k, v in sums.items()})
    line["train_images_per_second"] = run.steps_per_epoch * B / max(seconds, 1e-9)
    line["train_seconds"] = seconds
    line.update({k: float(v) for k, v in run.method.epoch_diagnostics().items()})
    exported = run.method.export()
    val_idx, test_idx = fs.indices("val"), fs.indices("test")
    ev = (run.aug, run.device, cfg.train.eval_batch_size, run.info, run.amp, run.memory_format)
    if cfg.train.precise_bn:
        # the running averages' number first, for comparison; then a copy with the statistics of the weights as
        # they are, which is evaluated and exported (training keeps its own running averages untouched)
        if cfg.train.running_bn_test:
            line["test_accuracy_running_bn"] = evaluate(exported, fs, test_idx, *ev)["accuracy"]
        exported = run.eval_model = copy.deepcopy(exported)
        line["precise_bn_layers"] = precise_bn(run, exported)
    if len(val_idx):
        val = evaluate(exported, fs, val_idx, *ev)
        line["val_accuracy"] = val["accuracy"]
        line["val_mean_class_accuracy"] = val["mean_class_accuracy"]
    test = evaluate(exported, fs, test_idx, *ev)
    line["test_accuracy"] = test["accuracy"]
    line["test_mean_class_accuracy"] = test["mean_class_accuracy"]
    line["test_per_class_accuracy"] = test["per_class_accuracy"]
    line["test_confusion_matrix"] = test["confusion_matrix"]
    line["test_top_prediction_share"] = top_prediction_share(test["confusion_matrix"])
    return line


def evaluated_model(run: Run) -> nn.Module:
    """The classifier the last evaluation measured, to export: the method's own, or with ``train.precise_bn`` its
    copy with re-estimated BatchNorm statistics (made now if no epoch ran in this process, e.g. a resumed run
    whose epochs had all finished)."""
    if not run.cfg.train.precise_bn:
        return run.method.export()
    if run.eval_model is None:
        run.eval_model = copy.deepcopy(run.method.export())
        precise_bn(run, run.eval_model)
    return run.eval_model


def precise_bn(run: Run, model: nn.Module) -> int:
    """``train.precise_bn``: set ``model``'s BatchNorm running statistics to the population statistics of the
    first ``train.precise_bn`` images of a seeded shuffle of the training split (the same images every epoch;
    :mod:`lanet.train.precise_bn`). Returns the number of layers updated."""
    from .precise_bn import recompute_bn_statistics

    cfg, fs = run.cfg, run.data.faceset
    pick = np.random.default_rng(cfg.train.seed).permutation(len(run.data.train_idx))[:cfg.train.precise_bn]
    images = fs.images[run.data.train_idx[np.sort(pick)]]
    return recompute_bn_statistics(model, images, run.aug, cfg.train.batch_size, run.device, run.amp,
                                   run.memory_format)


def save_epoch(run: Run, epoch: int, line: dict[str, Any]) -> None:
    """Main process: the metrics (rewritten atomically, so a full disk cannot leave half a line), the
    validation-selected export and the checkpoint; then the console line."""
    cfg, out = run.cfg, run.out
    atomic_write_text("".join(json.dumps(h) + "\n" for h in run.history), out / "metrics.jsonl")
    if "val_accuracy" in line and line["val_accuracy"] > run.best_val:
        run.best_val = line["val_accuracy"]
        atomic_torch_save(export_payload(evaluated_model(run), cfg, run.data.faceset, run.aug, epoch),
                          out / "model_val_selected.pt")
    if cfg.train.checkpoint:
        save_checkpoint(out / "checkpoint.pt", run.method.state_dict(), run.optimizer.state_dict(), epoch,
                        run.best_val)
    msg = f"epoch {epoch + 1}/{cfg.train.epochs}: loss {line['train_loss']:.4f}"
    if "val_accuracy" in line:
        msg += f"  val {100 * line['val_accuracy']:.2f}%"
    msg += f"  test {100 * line['test_accuracy']:.2f}%  {line['train_images_per_second']:.0f} img/s"
    share = line.get("test_top_prediction_share", 0.0)
    if share >= COLLAPSE_SHARE:
        msg += f"  WARNING: one class takes {100 * share:.0f}% of the test predictions (collapsed onto a class)"
    _log(msg, run.info)


def finish_run(run: Run) -> dict[str, Any]:
    """Main process: the final export, the method's artifacts and ``summary.json`` (written last)."""
    summary: dict[str, Any] = {}
    if run.info.main:
        cfg, fs, out = run.cfg, run.data.faceset, run.out
        atomic_torch_save(export_payload(evaluated_model(run), cfg, fs, run.aug, cfg.train.epochs - 1),
                          out / "model_final.pt")
        run.method.save_artifacts(out)
        summary = summarise(cfg, fs, run.data.noise, run.history, run.info.world, str(run.device))
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
        "realised_noise_rate": noise.realised_rate,  # training labels that differ from the dataset's (any cause)
        "label_file_noise_rate": None if noise.label_file is None else noise.label_file["realised_rate"],
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
        "dropped": dict(fs.meta.get("dropped", {})),
        "label_file": fs.meta.get("label_file"),
        "image_size": cfg.data.image_size,
        "arch": cfg.model.arch,
        "batch_size": cfg.train.batch_size,
        "world_size": world,
        "device": device,
        "torch": torch.__version__,
        "config": asdict(cfg),
    }

