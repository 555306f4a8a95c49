"""Training and inference throughput: baseline vs LA-Net, exported LA-Net vs a plain ResNet, in one run.

Steps of the methods being compared are interleaved (A, B, A, B, ...) on the same batches so that machine
noise hits both alike; the script reports per-step medians and the ratios of those medians.

    python benchmarks/throughput.py --sizes 48 224 --out benchmarks/results/throughput-cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from lanet.bench import machine
from lanet.methods.base import Batch, MethodSpec
from lanet.methods.registry import build_method
from lanet.models.resnet import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_batch(n: int, size: int, chans: int, num_train: int, device: torch.device, g: torch.Generator) -> Batch:
    return Batch(images=torch.randn(n, chans, size, size, generator=g).to(device),
                 labels=torch.randint(0, 8, (n,), generator=g).to(device),
                 index=torch.randperm(num_train, generator=g)[:n].to(device),
                 landmarks=(torch.rand(n, 68, 2, generator=g) * size).to(device),
                 landmark_found=torch.ones(n, dtype=torch.bool, device=device),
                 clean_labels=torch.randint(0, 8, (n,), generator=g).to(device))


def time_training(size: int, batch: int, steps: int, warmup: int, device: torch.device, chans: int,
                  amp: bool, width: int, arch: str = "resnet18", channels_last: bool = True,
                  pretrained: str = "", method_names: tuple[str, ...] = ("baseline", "lanet")) -> dict:
    num_train = 4096
    labels = np.random.default_rng(0).integers(0, 8, num_train)
    spec = MethodSpec(num_classes=8, num_train=num_train, in_chans=chans, image_size=size, num_landmarks=68,
                      arch=arch, pretrained=pretrained, dropout=0.0, epochs=1, width=width, train_labels=labels)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    names = ("baseline", *[n for n in method_names if n != "baseline"])  # the baseline is every ratio's reference
    methods = {name: build_method(name, spec, {}).to(device).to(memory_format=fmt) for name in names}
    opts = {k: torch.optim.Adam(m.param_groups(1e-4)) for k, m in methods.items()}
    times: dict[str, list[float]] = {k: [] for k in methods}
    g = torch.Generator().manual_seed(0)
    for step in range(warmup + steps):
        b = make_batch(batch, size, chans, num_train, device, g)
        b.images = b.images.contiguous(memory_format=fmt)
        b.step = step
        for name, m in methods.items():
            _sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, _ = m(b)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            m.after_step(b)
            _sync(device)
            if step >= warmup:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": batch, "steps": steps,
            "step_seconds_median": med,
            "images_per_second": {k: batch / v for k, v in med.items()},
            "over_baseline_step_time": {k: v / med["baseline"] for k, v in med.items()},
            **({"lanet_over_baseline_step_time": med["lanet"] / med["baseline"]} if "lanet" in med else {})}


@torch.no_grad()
def conv_macs(size: int, chans: int, width: int, arch: str) -> dict:
    """Multiply-accumulates per image of every convolution: the baseline's forward, LA-Net's query forward
    (backbone + landmark branch) and its momentum (key) encoder's forward; and the step-cost floor they imply.

    A training step costs about 3x the forward convolutions (the backward is about twice the forward); LA-Net
    adds the key encoder's forward, which has no backward. The floor ratio (3 q + k) / (3 b) is what LA-Net's
    step would cost against the baseline's if everything but the convolutions were free.
    """
    spec = MethodSpec(num_classes=8, num_train=8, in_chans=chans, image_size=size, num_landmarks=68, arch=arch,
                      pretrained="", dropout=0.0, epochs=1, width=width, train_labels=np.zeros(8, dtype=np.int64))
    counts: dict[str, int] = {}

    def count(name: str, model: torch.nn.Module, run) -> None:
        total = [0]

        def hook(mod, inp, out):
            total[0] += out[0].numel() * (mod.weight[0].numel())

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        run(torch.zeros(1, chans, size, size))
        for h in handles:
            h.remove()
        counts[name] = total[0]

    base = build_method("baseline", spec, {}).eval()  # eval: one image through BatchNorm; MACs do not change
    count("baseline_forward", base, lambda x: base.model(x))
    la = build_method("lanet", spec, {}).eval()
    count("lanet_query_forward", la.encoder, lambda x: la._encode(la.encoder, x))
    count("lanet_key_forward", la.encoder_k, lambda x: la._encode(la.encoder_k, x))
    floor = (3 * counts["lanet_query_forward"] + counts["lanet_key_forward"]) / (3 * counts["baseline_forward"])
    return {"macs_per_image": counts, "conv_floor_ratio": floor}


@torch.no_grad()
def time_inference(size: int, batch: int, steps: int, warmup: int, device: torch.device, chans: int,
                   amp: bool, width: int) -> dict:
    num_train = 256
    spec = MethodSpec(num_classes=8, num_train=num_train, in_chans=chans, image_size=size, num_landmarks=68,
                      arch="resnet18", pretrained="", dropout=0.0, epochs=1, width=width,
                      train_labels=np.zeros(num_train, dtype=np.int64))
    exported = build_method("lanet", spec, {}).export().to(device).eval()
    plain = create_model("resnet18", 8, chans, width=width).to(device).eval()
    models = {"lanet_exported": exported, "plain_resnet18": plain}
    times: dict[str, list[float]] = {k: [] for k in models}
    x = torch.randn(batch, chans, size, size, device=device)
    for step in range(warmup + steps):
        for name, m in models.items():
            _sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                m(x)
            _sync(device)
            if step >= warmup:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": batch, "steps": steps, "images_per_second": {k: batch / v for k, v in med.items()},
            "exported_over_plain_time": med["lanet_exported"] / med["plain_resnet18"],
            "exported_parameters": sum(p.numel() for p in exported.parameters()),
            "plain_parameters": sum(p.numel() for p in plain.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[48, 224])
    ap.add_argument("--batch", type=int, default=64, help="training batch (a quarter of it above 112 px on CPU)")
    ap.add_argument("--width", type=int, default=64, help="ResNet base width (64 standard, 32 laptop)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per size (after warm-up)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", default="resnet18", help="backbone (the trainer's model.arch)")
    ap.add_argument("--pretrained", default="", help="the trainer's model.pretrained (e.g. dlib)")
    ap.add_argument("--channels-last", type=int, default=1, help="1 = channels-last memory format (the trainer's "
                    "default train.channels_last), 0 = contiguous")
    ap.add_argument("--methods", default="baseline,lanet",
                    help="comma-separated methods to time, interleaved step by step (ratios against the baseline)")
    ap.add_argument("--note", default="", help="what else was running on the machine (recorded in the JSON)")
    ap.add_argument("--out", default="benchmarks/results/throughput.json")
    ap.add_argument("--macs-only", action="store_true", help="count the convolutions' multiply-accumulates and "
                    "the step-cost floor they imply; time nothing (safe while other jobs run)")
    args = ap.parse_args()
    if args.macs_only:
        conv = {str(size): conv_macs(size, args.channels, args.width, args.arch) for size in args.sizes}
        out = {"arch": args.arch, "width": args.width, "channels": args.channels, "conv": conv,
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        for size, c in conv.items():
            print(f"{args.arch} at {size} px: LA-Net step >= {c['conv_floor_ratio']:.2f}x the baseline's from "
                  f"convolutions alone")
        print(f"written {args.out}")
        return
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    amp = device.type == "cuda"
    m = machine()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{m['cpu']}, {m['nproc']} cores"
    result = {"width": args.width, "arch": args.arch, "channels_last": bool(args.channels_last), "note": args.note,
              "device": name, "machine": m,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "amp_bf16": amp,
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip(),
              "command": "python benchmarks/throughput.py " + " ".join(
                  f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in vars(args).items()),
              "train": {}, "inference": {}}
    for size in args.sizes:
        small = size <= 112 or device.type == "cuda"
        steps = args.steps if small else max(3, args.steps // 2)
        batch = args.batch if small else max(8, args.batch // 4)
        result["train"][str(size)] = time_training(size, batch, steps, args.warmup, device, args.channels, amp,
                                                   args.width, args.arch, bool(args.channels_last), args.pretrained,
                                                   tuple(m.strip() for m in args.methods.split(",") if m.strip()))
        result.setdefault("conv", {})[str(size)] = conv_macs(size, args.channels, args.width, args.arch)
        result["inference"][str(size)] = time_inference(size, 256 if size <= 112 else 64, steps, args.warmup,
                                                        device, args.channels, amp, args.width)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"device {result['device']} ({result['threads']} threads), torch {result['torch']}")
    for size in args.sizes:
        t = result["train"][str(size)]
        print(f"{size:>5} px, training step against the baseline's (median of {t['steps']}, batch {t['batch']}): "
              + ", ".join(f"{k} {v:.2f}x ({t['images_per_second'][k]:.0f} img/s)"
                          for k, v in t["over_baseline_step_time"].items()))
    print(f"{'size':>5} {'baseline img/s':>15} {'LA-Net img/s':>13} {'step ratio':>11} "
          f"{'exported img/s':>15} {'plain img/s':>12} {'infer ratio':>12}")
    for size in args.sizes:
        t, i = result["train"][str(size)], result["inference"][str(size)]
        if "lanet" not in t["images_per_second"]:
            continue
        print(f"{size:>5} {t['images_per_second']['baseline']:>15.1f} {t['images_per_second']['lanet']:>13.1f} "
              f"{t['lanet_over_baseline_step_time']:>10.2f}x {i['images_per_second']['lanet_exported']:>15.1f} "
              f"{i['images_per_second']['plain_resnet18']:>12.1f} {i['exported_over_plain_time']:>11.2f}x")
    for size in args.sizes:
        c = result["conv"][str(size)]
        print(f"{size:>5} convolutions alone: LA-Net step >= {c['conv_floor_ratio']:.2f}x the baseline's "
              f"({c['macs_per_image']['lanet_query_forward'] / 1e6:.1f} MMAC query + "
              f"{c['macs_per_image']['lanet_key_forward'] / 1e6:.1f} key vs "
              f"{c['macs_per_image']['baseline_forward'] / 1e6:.1f} baseline forward per image)")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
