"""The report's figures: one function per figure, each returning the :class:`Figure` it wrote (a PNG under the
report folder) or a :class:`Skipped` saying why it could not be made for the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..audit import auroc
from ..classes import CLASSES, SHORT
from ..errors import LanetError
from ..fileutil import atomic_open
from ..rundata import TrainingLabels, cross_entropy
from .analysis import Analysis, Figure, Skipped, curve_numbers, loss_terms, peak

DPI = 80
_DIAGNOSTICS = {  # LA-Net's per-epoch label-correction diagnostics (lanet.methods.lanet) -> legend text
    "target_corrects_flipped": "flipped label: target argmax = clean label",
    "target_moves_clean": "clean label: target argmax moved away",
    "pseudo_corrects_flipped": "flipped label: pseudo-label = clean label",
    "pseudo_moves_clean": "clean label: pseudo-label moved away",
    "positive_pair_precision": "EL positive pairs sharing the clean label",
}
_DIAGNOSTICS_FILE = {  # the same, for runs trained on a label file: the reference is the dataset's label
    "target_corrects_flipped": "changed label: target argmax = dataset's label",
    "target_moves_clean": "label as the dataset's: target argmax moved away",
    "pseudo_corrects_flipped": "changed label: pseudo-label = dataset's label",
    "pseudo_moves_clean": "label as the dataset's: pseudo-label moved away",
    "positive_pair_precision": "EL positive pairs sharing the dataset's label",
}


def _label_words(lab: TrainingLabels | None) -> tuple[str, str]:
    """(the labels that equal the reference, those that differ) in the report's words: the injected-noise words
    clean / flipped, or, for a run trained on a label file, the dataset's labels as the reference (a label
    file's labels are never called clean)."""
    if lab is not None and lab.from_label_file:
        return "labels as the dataset's", "labels that differ from the dataset's"
    return "clean labels", "flipped labels"


def _plt() -> Any:
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise LanetError("lanet report needs matplotlib and scikit-learn: pip install 'lanet[report]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path, rel: str) -> Path:
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI, bbox_inches="tight", pil_kwargs={"optimize": True})
    _plt().close(fig)
    return path


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _short(names: tuple[str, ...] | list[str]) -> list[str]:
    return [SHORT[CLASSES.index(n)] if n in CLASSES else n[:2] for n in names]


def fig_curves(a: Analysis, baseline: Analysis | None, out: Path) -> Figure | Skipped:
    title = "Training curves"
    h = a.run.history
    if not h:
        return Skipped(title, "metrics.jsonl holds no finished epoch yet")
    plt = _plt()
    epochs = np.arange(1, len(h) + 1)
    diag = [k for k in _DIAGNOSTICS if any(k in line for line in h)]
    legend = _DIAGNOSTICS_FILE if a.labels is not None and a.labels.from_label_file else _DIAGNOSTICS
    n = 3 if diag else 2
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.4))
    loss_keys = loss_terms(h[0])
    ax = axes[0]
    for k in loss_keys:
        ax.plot(epochs, [line.get(k, np.nan) for line in h], marker="o", ms=3, label=k[len("train_"):])
    vals = np.array([line.get(k, np.nan) for line in h for k in loss_keys], dtype=float)
    vals = vals[np.isfinite(vals)]
    if len(vals) and vals.min() > 0 and vals.max() / vals.min() > 20:
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="loss terms")
    ax.legend(fontsize=7)
    ax = axes[1]
    precise = any("test_accuracy_running_bn" in line for line in h)
    for key, label in (("val_accuracy", "validation"), ("test_accuracy", "test"),
                       ("test_accuracy_running_bn", "test, running BN statistics")):
        if any(key in line for line in h):
            style = {"ls": "--", "alpha": 0.7} if key == "test_accuracy_running_bn" else {}
            if precise and key == "test_accuracy":
                label = "test, precise BN"
            ax.plot(epochs, [100 * line.get(key, np.nan) for line in h], marker="o", ms=3, label=label, **style)
    notes = []
    pk = peak(h)
    if pk:
        ax.plot(pk[1], 100 * pk[0], marker="*", ms=12, color="crimson", ls="none",
                label=f"peak {100 * pk[0]:.1f}% @ {pk[1]}" + (" (CE)" if a.run.method == "baseline" else ""))
        notes.append(f"peak test accuracy {100 * pk[0]:.2f}% at epoch {pk[1]}")
    vpk = peak(h, "val_accuracy")
    if vpk:
        ax.axvline(vpk[1], color="grey", ls=":", lw=1, label=f"val-selected epoch {vpk[1]}")
    if baseline is not None and baseline is not a:
        bpk = peak(baseline.run.history)
        if bpk:
            ax.axhline(100 * bpk[0], color="black", ls="--", lw=1,
                       label=f"baseline (CE) peak {100 * bpk[0]:.1f}% @ {bpk[1]}")
            notes.append(f"the dashed line is the peak of the baseline (CE) run {baseline.run.name} trained on the "
                         f"same labels ({100 * bpk[0]:.2f}% at epoch {bpk[1]})")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="validation and test accuracy")
    ax.legend(fontsize=7)
    if diag:
        ax = axes[2]
        for k in diag:
            ax.plot(epochs, [100 * line.get(k, np.nan) for line in h], marker="o", ms=3, label=legend[k])
        ax.set(xlabel="epoch", ylabel="%", title="LA-Net label correction", ylim=(-2, 102))
        ax.legend(fontsize=6)
    for ax in axes:
        ax.grid(alpha=0.3)
        _integer_epochs(ax)
    fig.tight_layout()
    rel = f"{a.slug}/curves.png"
    _save(fig, out, rel)
    cap = (f"Epoch means of every loss term (metrics.jsonl); validation and test accuracy per epoch: "
           f"{'; '.join(notes)}. The peak is chosen on test, so it is a memorisation diagnostic (a final far "
           "below it means the labels were memorised), never a result.")
    if precise:
        cap += (f" The run re-estimated its BatchNorm statistics on {a.run.cfg.train.precise_bn} training images "
                "before each evaluation (train.precise_bn); the dashed curve is the same weights evaluated with "
                "the running averages instead.")
    if diag:
        ref = "the dataset's own labels" if legend is _DIAGNOSTICS_FILE else "the clean labels"
        cap += (f" Right: LA-Net's label-correction diagnostics over the images seen each epoch (they use {ref}, "
                "which training never does).")
    return Figure(rel, title, cap)


def _confusion(a: Analysis) -> np.ndarray:
    from ..train.metrics import confusion_matrix

    fs = a.run.faceset
    return confusion_matrix(fs.labels[a.test_idx], a.test_logits.argmax(1), fs.num_classes)


def fig_confusion(a: Analysis, out: Path) -> Figure | Skipped:
    title = "Confusion matrix and per-class accuracy"
    if not a.has_model:
        return Skipped(title, a.model_note)
    plt = _plt()
    fs = a.run.faceset
    cm = _confusion(a)
    names = list(fs.class_names)
    support = cm.sum(1)
    rate = cm / np.maximum(support[:, None], 1)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.15, 1]})
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    c = len(names)
    for i in range(c):
        for j in range(c):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rate[i, j] > 0.55 else "black")
    ax.set_xticks(range(c), _short(names))
    ax.set_yticks(range(c), names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="test confusion (colour: row share, text: count)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    acc = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    bx.barh(range(c), 100 * np.nan_to_num(acc), color="tab:blue")
    for i in range(c):
        bx.text(1, i, f"{'–' if np.isnan(acc[i]) else f'{100 * acc[i]:.1f}%'}  (n={support[i]})", va="center",
                fontsize=7, color="black")
    bx.set_yticks(range(c), names, fontsize=8)
    bx.invert_yaxis()
    total = float(np.trace(cm) / max(cm.sum(), 1))
    present = acc[~np.isnan(acc)]
    bx.set(xlim=(0, 100), xlabel="accuracy (%)",
           title=f"per class: overall {100 * total:.1f}%, mean class {100 * float(present.mean()):.1f}%")
    bx.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    rel = f"{a.slug}/confusion.png"
    _save(fig, out, rel)
    return Figure(rel, title, f"{len(a.test_idx)} test images, {a.model_note}. Rows are the dataset's labels.")


def fig_tsne(a: Analysis, out: Path, points: int, seed: int) -> Figure | Skipped:
    title = "t-SNE of the test features"
    if not a.has_model:
        return Skipped(title, a.model_note)
    n = len(a.test_idx)
    if n < 20:
        return Skipped(title, f"only {n} test images (t-SNE needs at least 20)")
    from sklearn.manifold import TSNE

    plt = _plt()
    fs = a.run.faceset
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(points, n), replace=False))
    feats = a.test_features[pick].astype(np.float64)
    perplexity = float(min(30.0, max(5.0, (len(pick) - 1) / 3.0)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
               random_state=seed).fit_transform(feats)
    true = fs.labels[a.test_idx][pick]
    wrong = a.test_logits[pick].argmax(1) != true
    fig, ax = plt.subplots(figsize=(6.2, 5))
    cmap = plt.get_cmap("tab10")
    for k, name in enumerate(fs.class_names):
        m = true == k
        if m.any():
            ax.scatter(emb[m, 0], emb[m, 1], s=6, color=cmap(k), label=f"{name} ({int(m.sum())})", alpha=0.75,
                       linewidths=0)
    ax.scatter(emb[wrong, 0], emb[wrong, 1], s=14, facecolors="none", edgecolors="black", linewidths=0.4,
               label=f"misclassified ({int(wrong.sum())})")
    ax.set(xticks=[], yticks=[], title=f"t-SNE of {len(pick)} test features (perplexity {perplexity:.0f})")
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    rel = f"{a.slug}/tsne.png"
    _save(fig, out, rel)
    sub = f"a seeded random {len(pick)} of the {n}" if len(pick) < n else f"all {n}"
    return Figure(rel, title, f"The features entering the classifier's last layer for {sub} test images "
                  f"(seed {seed}), embedded with t-SNE (PCA initialisation), coloured by the dataset's label; black "
                  "rings mark misclassified images. Clean, well-separated clusters mean the features did not absorb "
                  "the noisy labels (LA-Net Fig. 3).")


def fig_loss_hist(a: Analysis, out: Path) -> Figure | Skipped:
    title = "Per-sample training loss, clean vs flipped labels"
    if a.data_error:
        return Skipped(title, a.data_error)
    if a.labels is None:
        return Skipped(title, a.labels_error)
    if a.labels.from_label_file:
        title = "Per-sample training loss, labels as the dataset's vs changed"
    if not a.labels.has_noise:
        kind = a.run.cfg.noise.type
        if a.labels.from_label_file:
            why = (f"no training label of {a.labels.label_file} differs from the dataset's labels"
                   + ("" if kind == "none" else f", and the {kind} noise changed none"))
        elif kind == "none":
            why = "the run was trained on the dataset's own labels (noise none): there are no flipped labels to compare"
        else:
            why = f"the {kind} noise record changed no training label"
        return Skipped(title, why)
    if not a.has_model:
        return Skipped(title, a.model_note)
    plt = _plt()
    lab = a.labels
    same, differ = _label_words(lab)
    ce = cross_entropy(a.train_logits, lab.given)
    lo, hi = float(ce.min()), float(np.quantile(ce, 0.995))
    bins = np.linspace(lo, max(hi, lo + 1e-3), 41)
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    for mask, label, color in ((~lab.flipped, same, "tab:green"), (lab.flipped, differ, "tab:red")):
        ax.hist(np.clip(ce[mask], lo, bins[-1]), bins=bins, density=True, alpha=0.55, color=color,
                label=f"{label} (n={int(mask.sum())}, median {np.median(ce[mask]):.2f})")
    loss_auroc = auroc(ce, lab.flipped)
    ax.set(xlabel="cross-entropy against the given label", ylabel="density",
           title=f"{a.run.noise_text}: loss separates {differ} with AUROC "
                 f"{'n/a' if loss_auroc is None else f'{loss_auroc:.3f}'}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    rel = f"{a.slug}/loss_hist.png"
    _save(fig, out, rel)
    if lab.from_label_file:
        who = f"the label file {lab.label_file}" + ("" if lab.noise_type == "label_file" else " and the injected noise")
        what = (f"differ: the {int(lab.flipped.sum())} training labels {who} changed from the dataset's own labels "
                "(noise_changes.csv; the dataset's labels are the reference)")
    else:
        what = (f"flipped: the {int(lab.flipped.sum())} labels the noise record (noise_changes.csv) says were "
                "changed")
    cap = (f"Cross-entropy of {a.model_note} on each of the {len(ce)} training images (no augmentation) against the "
           f"label it was trained with; {what}. A model that memorised the noise gives those labels small "
           "losses too (LA-Net Fig. 4); values above the 99.5th percentile are drawn in the last bin.")
    if a.audit_auroc is not None:
        cap += f" lanet audit's score ({a.audit_source}) finds them with AUROC {a.audit_auroc:.3f}."
    return Figure(rel, title, cap)


def _show(ax: Any, img: np.ndarray) -> None:
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])


def fig_distributions(a: Analysis, out: Path, samples: int, seed: int) -> Figure | Skipped:
    title = "Learned label distributions vs human votes"
    if a.data_error:
        return Skipped(title, a.data_error)
    if a.distributions is None:
        return Skipped(title, a.distributions_note)
    fs = a.run.faceset
    if fs.votes is None:
        return Skipped(title, f"dataset {fs.name} has no annotator votes to compare with")
    plt = _plt()
    lab = a.labels
    votes = fs.votes[lab.index]
    has = votes.sum(1) > 0
    rng = np.random.default_rng(seed)
    flipped = np.flatnonzero(lab.flipped & has)
    others = np.flatnonzero(~lab.flipped & has)
    k_flip = min(len(flipped), samples // 2)
    picks = np.concatenate([rng.choice(flipped, k_flip, replace=False) if k_flip else np.zeros(0, int),
                            rng.choice(others, min(len(others), samples - k_flip), replace=False)]).astype(int)
    if not len(picks):
        return Skipped(title, "no training image has votes")
    human = votes[picks] / votes[picks].sum(1, keepdims=True)
    names = list(fs.class_names)
    c = len(names)
    fig, axes = plt.subplots(len(picks), 2, figsize=(7.2, 1.35 * len(picks)),
                             gridspec_kw={"width_ratios": [1, 4.5]}, squeeze=False)
    x = np.arange(c)
    for r, i in enumerate(picks):
        _show(axes[r, 0], fs.images[lab.index[i]])
        ax = axes[r, 1]
        ax.bar(x - 0.2, human[r], 0.4, color="tab:grey", label="human votes")
        ax.bar(x + 0.2, a.distributions[i], 0.4, color="tab:blue", label="learned")
        ax.set_ylim(0, 1)
        ax.set_xticks(x, _short(names) if r < len(picks) - 1 else names, fontsize=7)
        ax.tick_params(axis="y", labelsize=6)
        g = lab.given[i]
        ax.get_xticklabels()[g].set_color("red")
        text = f"given {names[g]}"
        if lab.flipped[i]:
            text += (f" (dataset: {names[lab.clean[i]]})" if lab.from_label_file
                     else f" (noise: was {names[lab.clean[i]]})")
        ax.set_title(text, fontsize=8, loc="left")
        if r == 0:
            ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    rel = f"{a.slug}/distributions.png"
    _save(fig, out, rel)
    changed = "differs from the dataset's" if lab.from_label_file else "the noise flipped"
    return Figure(rel, title, f"{len(picks)} training images (seed {seed}: {k_flip} whose label {changed}, "
                  "the rest at random): the share of annotators who chose each class (grey) and the label "
                  "distribution LA-Net learned for the image (blue, label_distributions.npz); the given label is red "
                  "on the axis (LA-Net Fig. 5).")


def _cam_samples(fs: Any, test_idx: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """One seeded random test image per class present (up to ``samples``), in class order."""
    rng = np.random.default_rng(seed)
    labels = fs.labels[test_idx]
    picks = [int(rng.choice(test_idx[labels == k])) for k in range(fs.num_classes) if (labels == k).any()]
    return np.array(picks[:samples], dtype=np.int64)


def _cams(a: Analysis, idx: np.ndarray, layer: str, device: Any) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from ..gradcam import grad_cam
    from ..rundata import eval_transform

    x, _ = eval_transform(a.run).eval(torch.from_numpy(a.run.faceset.images[idx]))
    cams, logits = grad_cam(a.net, x.to(device), layer)
    return cams.cpu().numpy(), logits.argmax(1).cpu().numpy()


def cam_layer_for(a: Analysis, layer: str, device: Any) -> tuple[str, tuple[int, int], bool]:
    """(layer name, its map size at the run's input size, whether it was chosen automatically) for Grad-CAM on
    ``a``'s classifier: ``layer`` itself, or for ``auto`` the deepest stage whose map is at least 3 x 3
    (:func:`lanet.gradcam.choose_layer`)."""
    from ..gradcam import choose_layer, map_size

    channels, size = a.run.faceset.channels, a.run.cfg.data.image_size
    if layer == "auto":
        name, hw = choose_layer(a.net, channels, size, device)
        return name, hw, True
    return layer, map_size(a.net, layer, channels, size, device), False


def fig_gradcam(group: list[Analysis], out: Path, rel: str, samples: int, seed: int, layer: str,
                device: Any) -> Figure | Skipped:
    title = "Grad-CAM of sample test images" if len(group) == 1 else "Grad-CAM side by side"
    missing = [a for a in group if not a.has_model]
    if missing:
        return Skipped(title, f"{missing[0].run.name}: {missing[0].model_note}")
    plt = _plt()
    fs = group[0].run.faceset
    idx = _cam_samples(fs, group[0].test_idx, samples, seed)
    layers = [cam_layer_for(a, layer, device) for a in group]
    maps = [_cams(a, idx, name, device) for a, (name, _, _) in zip(group, layers)]
    rows, cols = 1 + len(group), len(idx)
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.4 * rows), squeeze=False)
    names = fs.class_names
    for j, i in enumerate(idx):
        img = fs.images[i]
        h, w = img.shape[:2]
        _show(axes[0, j], img)
        axes[0, j].set_title(f"true {names[fs.labels[i]]}", fontsize=7)
        for r, (cams, pred) in enumerate(maps, 1):
            ax = axes[r, j]
            _show(ax, img)
            ax.imshow(cams[j], cmap="jet", alpha=0.45, vmin=0, vmax=1, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            ok = pred[j] == fs.labels[i]
            ax.set_title(f"pred {names[pred[j]]}", fontsize=7, color="black" if ok else "red")
            if j == 0:
                ax.set_ylabel(group[r - 1].run.name if len(group) > 1 else "Grad-CAM", fontsize=6)
    fig.tight_layout()
    _save(fig, out, rel)
    size = group[0].run.cfg.data.image_size

    def where(name: str, hw: tuple[int, int], auto: bool) -> str:
        why = (", the deepest stage whose map is at least 3 x 3 there (--cam-layer auto)" if auto
               else " (--cam-layer)")
        return f"{name}, whose map is {hw[0]} x {hw[1]} at the {size} px input{why}"

    if len({(n, hw) for n, hw, _ in layers}) == 1:
        on = f"on {where(*layers[0])}"
        per_row = ""
    else:
        on = "on the layer named per row"
        per_row = " Layers: " + "; ".join(f"{a.run.name}: {where(*lay)}" for a, lay in zip(group, layers)) + "."
    who = "" if len(group) == 1 else " Rows: " + "; ".join(f"{a.run.name} ({a.model_note.split(' (')[0]})"
                                                            for a in group) + "."
    return Figure(rel, title, f"Grad-CAM (Selvaraju et al. 2017) of the predicted class {on} (upsampled for "
                  f"display), for one seeded random test image per class (seed {seed}); a red title marks a wrong "
                  f"prediction (LA-Net Fig. 6).{per_row}{who}")


def fig_compare_curves(group: list[Analysis], out: Path) -> Figure | Skipped:
    title = "Accuracy per epoch, all runs"
    runs = [a for a in group if a.run.history]
    if not runs:
        return Skipped(title, "no run has finished an epoch yet")
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    cmap = plt.get_cmap("tab10")
    for k, a in enumerate(runs):
        h = a.run.history
        e = np.arange(1, len(h) + 1)
        col = cmap(k % 10)
        numbers = curve_numbers(h)
        for ax, key, scale in ((axes[0], "test_accuracy", 100), (axes[1], "val_accuracy", 100),
                               (axes[2], "train_ce", 1)):
            if any(key in line for line in h):
                label = f"{a.run.name}\n{numbers}" if ax is axes[0] and numbers else a.run.name
                ax.plot(e, [scale * line.get(key, np.nan) for line in h], marker="o", ms=3, color=col,
                        label=label)
        pk = peak(h)
        if pk:
            axes[0].plot(pk[1], 100 * pk[0], marker="*", ms=11, color=col, ls="none")
    axes[0].set(xlabel="epoch", ylabel="%", title="test accuracy (star: peak)")
    axes[1].set(xlabel="epoch", ylabel="%", title="validation accuracy")
    axes[2].set(xlabel="epoch", ylabel="loss", title="training cross-entropy on the given labels")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        _integer_epochs(ax)
    fig.tight_layout()
    rel = "compare/curves.png"
    _save(fig, out, rel)
    return Figure(rel, title, "Every run's test and validation accuracy and training cross-entropy per epoch, "
                  "overlaid; stars mark each run's peak test accuracy (a memorisation diagnostic). The test-accuracy "
                  "legend gives each run's final, validation-selected, peak and last-5-epoch mean accuracy.")


