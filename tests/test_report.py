"""lanet report: the page on tiny runs (every image exists, skipped figures say why), Grad-CAM on a hand case,
the browser check (skipped where Chromium is absent) and one-line errors."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from analysis_runs import copy_run, tiny_runs

pytest.importorskip("matplotlib", reason="lanet report needs the report extra (matplotlib)")
pytest.importorskip("sklearn", reason="lanet report needs the report extra (scikit-learn)")

from lanet.cli import main  # noqa: E402
from lanet.gradcam import choose_layer, grad_cam  # noqa: E402
from lanet.htmlcheck import check_page, find_browser  # noqa: E402
from lanet.report import curve_numbers, loss_terms, make_report, peak  # noqa: E402


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.scripts = 0
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"] or "")
        elif tag == "script":
            self.scripts += 1
        elif tag == "link" and a.get("href"):
            self.links.append(a["href"] or "")


def _parse(index: Path) -> tuple[_Page, str]:
    text = index.read_text()
    page = _Page()
    page.feed(text)
    return page, text


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    res = make_report([runs["lanet"], runs["baseline"], runs["clean"]], out, tsne_points=100, samples=4,
                      progress=False)
    return res


# ---------------------------------------------------------------------------------------------- the page
def test_page_references_only_existing_images(report):
    page, _ = _parse(report.index)
    out = report.index.parent
    assert page.images, "no figure on the page"
    assert sorted(page.images) == sorted(str(p.relative_to(out)) for p in report.figures)
    for src in page.images:
        assert not src.startswith(("/", "http:", "https:", "file:")), src  # relative: the folder can move
        assert (out / src).is_file() and (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
    assert page.scripts == 0 and not page.links  # self-contained: nothing else is loaded
    for run in ("lanet", "baseline", "clean"):
        for name in ("curves", "confusion", "tsne", "gradcam"):
            assert f"{run}/{name}.png" in page.images
    assert "lanet/distributions.png" in page.images and "lanet/loss_hist.png" in page.images
    assert "compare/curves.png" in page.images and "compare/gradcam.png" in page.images


def test_skipped_figures_say_why(report):
    _, text = _parse(report.index)
    skipped = {(run, what): why for run, what, why in report.skipped}
    assert "learns no label distributions" in skipped[("baseline", "Learned label distributions vs human votes")]
    assert "noise none" in skipped[("clean", "Per-sample training loss, clean vs flipped labels")]
    for why in skipped.values():
        assert why in text.replace("&#x27;", "'")
    assert text.count('class="skipped"') == len(report.skipped) == 3


def test_comparison_table_and_baseline_peak(report, runs):
    _, text = _parse(report.index)
    assert "<h2>Comparison</h2>" in text
    for name in ("lanet", "baseline", "clean"):
        assert f"<td>{name}</td>" in text
    assert "audit AUROC" in text and "(learned distributions)" in text and "(model predictions (in-sample))" in text
    assert "the dashed line is the peak of the baseline (CE) run baseline" in text  # LA-Net's curves


def test_unfinished_and_modelless_runs(runs, tmp_path):
    partial = copy_run(runs["baseline"], tmp_path / "partial", drop=("model_final.pt", "summary.json"))
    bare = copy_run(runs["baseline"], tmp_path / "bare", drop=("model_*.pt", "summary.json", "metrics.jsonl"))
    res = make_report([partial, bare], tmp_path / "rep", tsne_points=50, samples=2, progress=False)
    _, text = _parse(res.index)
    assert "model_val_selected.pt) (the run has not finished: no model_final.pt yet)" in text
    why = {(r, w): y for r, w, y in res.skipped}
    assert why[("bare", "Training curves")] == "metrics.jsonl holds no finished epoch yet"
    assert "holds no exported classifier" in why[("bare", "Confusion matrix and per-class accuracy")]
    assert ("comparison", "Grad-CAM side by side") in why
    page, _ = _parse(res.index)
    assert all((res.index.parent / src).is_file() for src in page.images)


def test_report_cli(runs, tmp_path, capsys):
    assert main(["report", str(runs["clean"]), "--out", str(tmp_path / "r"), "--quiet", "--tsne-points", "40"]) == 0
    out = capsys.readouterr().out
    assert "not shown (the run was trained on the dataset's own labels" in out
    assert f"written {tmp_path / 'r' / 'index.html'}" in out


# ---------------------------------------------------------------------------------------------- pieces
def test_peak_and_loss_terms():
    h = [{"test_accuracy": 0.5}, {"test_accuracy": 0.7}, {"test_accuracy": 0.7}, {}]
    assert peak(h) == (0.7, 2)  # the earliest epoch among equal peaks
    assert peak([{}]) is None
    line = {"epoch": 0, "lr": 1.0, "train_loss": 1.0, "train_ce": 1.0, "train_images_per_second": 5.0,
            "train_seconds": 1.0, "train_label_is_clean": 0.7}
    assert loss_terms(line) == ["train_loss", "train_ce"]  # diagnostics after the throughput are not losses


class _OneStage(nn.Module):
    """layer4: a 1x1 convolution with weight 1 (A = x); logits = fc(mean over pixels of A), fc = [[1], [-1]]."""

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(1, 1, 1, bias=False)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.layer4.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer4(x).mean((2, 3)))


def test_grad_cam_auto_layer_is_the_deepest_map_of_at_least_3x3():
    from lanet.models.dlib_resnet import DlibResNet
    from lanet.models.resnet import create_model

    dlib_small = DlibResNet(num_classes=7, in_chans=1, pad_strided=True)
    # at 64 px dlib's small ResNet ends in a 1 x 1 map (the whole face one colour); layer3 is 4 x 4
    assert choose_layer(dlib_small, 1, 64) == ("layer3", (4, 4))
    r18 = create_model("resnet18", num_classes=7, in_chans=1, width=8)
    assert choose_layer(r18, 1, 48) == ("layer3", (3, 3))  # layer4 is 2 x 2
    assert choose_layer(r18, 1, 32) == ("layer2", (4, 4))
    assert choose_layer(r18, 1, 224) == ("layer4", (7, 7))
    assert choose_layer(_OneStage(), 1, 2) == ("layer4", (2, 2))  # nothing reaches 3 x 3: the largest map


def test_report_names_the_grad_cam_layer(report):
    _, text = _parse(report.index)
    assert ("on layer2, whose map is 4 x 4 at the 32 px input, the deepest stage whose map is at least 3 x 3 "
            "there (--cam-layer auto)") in text


def test_grad_cam_hand_case():
    # d y_0 / d A = 1/(hw) everywhere, so alpha = 1/(hw) and L_0 = ReLU(A / hw): the input itself, scaled to [0, 1]
    x = torch.zeros(1, 1, 4, 5)
    x[0, 0, 1, 2], x[0, 0, 3, 4] = 2.0, 1.0
    cam, logits = grad_cam(_OneStage(), x, "layer4", target=torch.tensor([0]))
    np.testing.assert_allclose(cam[0].numpy(), (x[0, 0] / 2.0).numpy(), atol=1e-6)
    assert logits.shape == (1, 2)
    # class 1 has only negative evidence: the ReLU leaves nothing
    cam1, _ = grad_cam(_OneStage(), x, "layer4", target=torch.tensor([1]))
    assert float(cam1.abs().max()) == 0.0
    with pytest.raises(Exception, match="no layer 'layer9'"):
        grad_cam(_OneStage(), x, "layer9")


# ---------------------------------------------------------------------------------------------- browser
def test_page_renders_in_headless_chromium(report, tmp_path):
    if find_browser() is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set LANET_CHROMIUM): the page is not rendered")
    check = check_page(report.index)
    assert check.ok, check.text()
    assert check.images == len(report.figures)
    # the check itself catches a broken image and a script error
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><img src="missing.png"><script>notDefined();</script>')
    check = check_page(bad)
    assert check.broken_images == ["missing.png"]
    assert any("notDefined" in e for e in check.errors)


# ---------------------------------------------------------------------------------------------- errors
def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lanet: error: ") and match in err, err


def test_report_errors_are_one_line(runs, tmp_path, capsys):
    out = str(tmp_path / "r")
    _one_line_error(capsys, ["report", str(tmp_path / "missing"), "--out", out], "run directory not found")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["report", str(runs["lanet"]), str(tmp_path / "empty"), "--out", out],
                    "not a run directory (config.yaml missing)")
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, ["report", str(tmp_path / "file"), "--out", out], "is not a directory")
    bad = copy_run(runs["clean"], tmp_path / "badcfg")
    (bad / "config.yaml").write_text("train: [unclosed\n")
    _one_line_error(capsys, ["report", str(bad), "--out", out], "config.yaml")
    _one_line_error(capsys, ["report", str(runs["clean"]), "--out", str(tmp_path / "file")], "is a file")
    _one_line_error(capsys, ["report", str(runs["clean"]), "--out", out, "--tsne-points", "3"], "--tsne-points")
    assert not (tmp_path / "r").exists()  # nothing written before every check passed


def test_curve_numbers_give_the_four_rules():
    """The compare figure's legend: final, val-selected (earliest best validation epoch), peak, last-5 mean."""
    test = [0.50, 0.60, 0.58, 0.55, 0.54, 0.53, 0.52]
    val = [0.40, 0.70, 0.70, 0.65, 0.60, 0.60, 0.60]
    hist = [{"test_accuracy": t, "val_accuracy": v} for t, v in zip(test, val)]
    assert curve_numbers(hist) == ("final 52.00%, val-selected 60.00% @2, peak 60.00% @2, last 5 54.40%")
    hist[2]["val_accuracy"] = 0.71  # a later, better validation epoch is the one kept
    assert "val-selected 58.00% @3" in curve_numbers(hist)
    assert curve_numbers(hist[:3]) == "final 58.00%, val-selected 58.00% @3, peak 60.00% @2"  # no last 5 yet
    assert curve_numbers([]) == "" and curve_numbers([{"val_accuracy": 0.5}]) == ""
