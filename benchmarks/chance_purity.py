"""The neighbour purity that neighbours drawn at random would have: the yardstick for LA-Net's purity diagnostics.

``neighbour_purity_expression`` and ``neighbour_purity_landmark`` (lanet bench tables) are the share of an anchor's
K neighbours whose clean label equals the anchor's. A space whose neighbours carry no information about the
expression still scores ``sum_c P(clean = c)^2``, where P is the clean-label mix of the images a batch holds:
- instance sampling: the training split's clean-label frequencies;
- class-balanced sampling by the given (noisy) labels, what the progressive sampler reaches at its last epoch:
  each given class fills 1/C of the batch, so P(clean = c) = (1/C) sum_g P(clean = c | given = g).
The script prints both, with the share of clean labels among the images each sampler draws (the diagnostics'
``given = clean``), for a preset's training split under one noise setting, and writes them as JSON::

    python benchmarks/chance_purity.py --preset faithful --noise symmetric --rate 0.3 --seeds 0 100 \\
        --out benchmarks/results/faithful/chance_purity.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lanet.errors import LanetError


def chance_purity(clean: np.ndarray, given: np.ndarray, num_classes: int) -> dict[str, float]:
    """Purity of random neighbours and the clean share of the drawn images, for both samplers."""
    clean, given = np.asarray(clean), np.asarray(given)
    if clean.shape != given.shape or clean.ndim != 1 or not len(clean):
        raise LanetError(f"clean and given labels must be equal-length vectors, got {clean.shape} and {given.shape}")
    p_inst = np.bincount(clean, minlength=num_classes) / len(clean)
    p_bal = np.zeros(num_classes)
    clean_bal = 0.0
    present = [g for g in range(num_classes) if (given == g).any()]
    for g in present:
        m = given == g
        p_bal += np.bincount(clean[m], minlength=num_classes) / m.sum() / len(present)
        clean_bal += float((clean[m] == g).mean()) / len(present)
    return {"instance_chance_purity": float((p_inst ** 2).sum()),
            "instance_given_is_clean": float((clean == given).mean()),
            "balanced_chance_purity": float((p_bal ** 2).sum()), "balanced_given_is_clean": clean_bal}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="faithful")
    ap.add_argument("--noise", default="symmetric", help="symmetric | asymmetric | annotator")
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--root", default=None, help="dataset folder (default the preset's)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        import torch

        from lanet.bench import Bench, get_preset, grid
        from lanet.data.loaders import load_faceset
        from lanet.data.noise import apply_noise

        torch.set_num_threads(1)
        bench = Bench(get_preset(args.preset), Path("runs") / "unused", root=args.root)
        cfg = bench.config(grid("table1", [0], ["baseline"], [0.3])[0])
        fs = load_faceset(cfg.data)
        train = fs.indices("train")
        rows = []
        for seed in args.seeds:
            noisy, _ = apply_noise(fs, args.noise, args.rate, seed)
            row = {"seed": seed, **chance_purity(fs.labels[train], noisy[train], fs.num_classes)}
            rows.append(row)
            print(f"seed {seed}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in row.items() if k != "seed"))
    except (LanetError, OSError) as exc:
        print(f"chance_purity: {exc}", file=sys.stderr)
        return 1
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"preset": args.preset, "noise": args.noise, "rate": args.rate,
                                        "num_train": int(len(train)), "seeds": rows}, indent=1) + "\n")
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
