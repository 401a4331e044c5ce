"""The report writes every promised file, readable, and the numbers in it are the metrics'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldmdetect.engine import report as R
from ldmdetect.engine.evaluate_results import Evaluation
from ldmdetect.engine.metrics import (
    compute_metrics,
    generator_intervals,
    mean_metrics,
    tpr_at_fpr,
)


def _condition(real: np.ndarray, gens: dict[str, np.ndarray], intervals: bool = False) -> dict:
    per_gen = {
        name: compute_metrics(np.r_[np.zeros(real.size), np.ones(f.size)], np.r_[real, f])
        for name, f in gens.items()
    }
    condition = {"generators": per_gen, "mean": mean_metrics(per_gen)}
    if intervals:
        condition["intervals"] = generator_intervals(real, gens, n_boot=200)
    return condition


@pytest.fixture
def evaluation() -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    real = rng.beta(2, 5, 300)
    gens = {
        "sd-1.4": rng.beta(5, 2, 120),
        "sdxl": rng.beta(3, 3, 80),
        "kandinsky|2": rng.random(50),
    }
    clean = _condition(real, gens)
    result = {
        "settings": {"detector": Path("runs/det"), "tries": np.int64(10), "perturbations": ["a"]},
        **clean,
        "robustness": {
            "jpeg:75": _condition(np.clip(real + 0.1, 0, 1), gens),
            "blur:2": _condition(real, {k: v * 0.7 for k, v in gens.items()}),
        },
        "format_control": _condition(real, {k: v * 0.9 for k, v in gens.items()}),
    }
    return result, {"real": real, "generators": gens}


def test_render_markdown_has_every_section(evaluation: tuple[dict, dict]) -> None:
    result, _ = evaluation
    md = R.render_markdown(result)
    for heading in ("# ldmdetect evaluation report", "## Settings", "## Clean", "## Robustness"):
        assert heading in md
    assert "## Format control" in md
    assert "- detector: `runs/det`" in md and "- tries: `10`" in md
    for name in ("sd-1.4", "sdxl", "kandinsky\\|2"):
        assert f"| {name} |" in md
    mean = result["mean"]
    mean_row = f"| mean | {mean['n_real']} | {mean['n_fake']} | {mean['acc']:.4f} |"
    assert mean_row in md
    robust = md.split("## Robustness")[1].split("##")[0]
    rows = [line.split(" | ")[0] for line in robust.splitlines() if line.startswith("| ")]
    assert rows == ["| perturbation", "| clean", "| jpeg:75", "| blur:2"]
    blur_auc = result["robustness"]["blur:2"]["mean"]["auc"]
    assert f"{blur_auc:.4f}" in robust
    assert "score > t" in md and "floor(x * n_real)" in md


def test_render_markdown_without_optional_parts(evaluation: tuple[dict, dict]) -> None:
    result, _ = evaluation
    result = {**result, "robustness": {}, "format_control": None, "settings": {}}
    md = R.render_markdown(result)
    assert "No perturbations were evaluated." in md
    assert "## Format control" not in md
    assert "| mean |" in md
    assert "## Per-class probabilities" not in md


def test_render_markdown_shows_per_class_means_after_the_clean_table(
    evaluation: tuple[dict, dict],
) -> None:
    result, _ = evaluation
    means = {"p_real": 0.7, "p_fam_a": 0.2, "p_fam_b": 0.1}
    result = {
        **result,
        "class_probabilities": {
            "real": means,
            "generators": {name: dict(means, p_real=0.25) for name in result["generators"]},
        },
    }
    md = R.render_markdown(result)
    section = md.split("## Per-class probabilities (mean over each set's images)\n")[1]
    lines = section.split("## ")[0].strip().splitlines()
    assert lines[0] == "| images | p_real | p_fam_a | p_fam_b |"
    assert lines[2] == "| real | 0.7000 | 0.2000 | 0.1000 |"
    assert lines[3] == "| sd-1.4 | 0.2500 | 0.2000 | 0.1000 |"
    assert md.index("## Clean images") < md.index("## Per-class") < md.index("## Robustness")


def test_render_markdown_takes_an_evaluation_as_its_result(evaluation: tuple[dict, dict]) -> None:
    result, scores = evaluation
    md = R.render_markdown(Evaluation(result, scores))
    assert md == R.render_markdown(result)
    robust = md.split("## Robustness")[1].split("##")[0]
    assert f"| jpeg:75 | {result['robustness']['jpeg:75']['mean']['n_real']} |" in robust


def test_render_markdown_rejects_generator_named_mean(evaluation: tuple[dict, dict]) -> None:
    result, _ = evaluation
    result = {**result, "generators": {"mean": result["generators"]["sdxl"]}}
    with pytest.raises(ValueError, match="mean"):
        R.render_markdown(result)


def _assert_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()  # decodes every pixel: a truncated file fails here
        size = im.size
        extrema = im.convert("L").getextrema()
    assert extrema[0] < extrema[1], "plot is a blank image"
    return size


def test_write_report(tmp_path: Path, evaluation: tuple[dict, dict]) -> None:
    result, scores = evaluation
    out = tmp_path / "nested" / "run"
    paths = R.write_report(result, scores, out)
    assert set(paths) == {"metrics", "report", "roc", "roc_logfpr", "histograms"}
    assert paths["metrics"] == out / "metrics.json" and paths["report"] == out / "report.md"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", "report.md", "roc.png", "roc_logfpr.png", "histograms.png"]
    )  # no temp files left behind
    loaded = json.loads(paths["metrics"].read_text())
    assert list(loaded) == list(result)  # insertion order kept, not sorted
    assert loaded["generators"] == result["generators"]
    assert loaded["mean"] == result["mean"]
    assert loaded["robustness"] == result["robustness"]
    assert loaded["settings"] == {"detector": "runs/det", "tries": 10, "perturbations": ["a"]}
    assert list(loaded["generators"]["sdxl"]) == list(result["generators"]["sdxl"])
    assert paths["report"].read_text() == R.render_markdown(result)
    _assert_png(paths["roc"])
    _assert_png(paths["histograms"])
    # 300 reals cannot resolve 0.1% FPR: the log axis starts at 1/300.
    assert _png_text(paths["roc_logfpr"])["Description"].startswith(
        f"ROC, FPR axis log scale from {1 / 300:.6g} to 1; guides at FPR 0.01, 0.05"
    )
    plots = paths["report"].read_text().split("## Plots")[1].split("##")[0]
    assert "`roc_logfpr.png`" in plots
    assert "from 0.00333 (1/n_real, 300 reals) to 1 and guides at 1%, 5% FPR" in plots
    big = {**result, "mean": {**result["mean"], "n_real": 1000}}
    plots = R.render_markdown(big).split("## Plots")[1].split("##")[0]
    assert "from 0.001 to 1 and guides at 0.1%, 1%, 5% FPR" in plots


def test_write_report_overwrites(tmp_path: Path, evaluation: tuple[dict, dict]) -> None:
    result, scores = evaluation
    R.write_report(result, scores, tmp_path)
    result = {**result, "settings": {"run": 2}}
    R.write_report(result, scores, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["settings"] == {"run": 2}


def test_write_report_rejects_nan_before_writing(tmp_path: Path, evaluation) -> None:
    result, scores = evaluation
    result = {**result, "settings": {"bad": float("nan")}}
    with pytest.raises(ValueError):
        R.write_report(result, scores, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_plots_accept_logits_and_single_generator(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    scores = {"real": rng.normal(-2, 1, 40), "generators": {"dit": rng.normal(3, 2, 30)}}
    assert R.plot_roc(scores, tmp_path / "roc.png") == tmp_path / "roc.png"
    assert R.plot_histograms(scores, tmp_path / "h.png") == tmp_path / "h.png"
    _assert_png(tmp_path / "roc.png")
    _assert_png(tmp_path / "h.png")


def _png_text(path: Path) -> dict[str, str]:
    _assert_png(path)
    with Image.open(path) as im:
        return dict(im.text)


def test_roc_logfpr_axis_starts_at_the_smaller_resolvable_fpr(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    fakes = {"sd": rng.normal(2, 1, 500)}
    many = {"real": rng.normal(0, 1, 5000), "generators": fakes}
    few = {"real": rng.normal(0, 1, 40), "generators": fakes}

    fig, floor = R._roc_logfpr_figure(many)
    (ax,) = fig.axes
    assert floor == 1e-3 and ax.get_xscale() == "log"
    assert ax.get_xlim() == pytest.approx((1e-3, 1.0))
    guides = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":")
    assert guides == pytest.approx([0.001, 0.01, 0.05])
    # The curve is the ROC: at each guide it shows the TPR of the best threshold within it.
    y = np.r_[np.zeros(5000), np.ones(500)]
    s = np.r_[many["real"], fakes["sd"]]
    step = ax.lines[0]
    xs, ys = step.get_xdata(), step.get_ydata()
    for fpr in (0.01, 0.05):
        shown = ys[np.searchsorted(xs, fpr, side="right") - 1]
        assert shown == pytest.approx(tpr_at_fpr(y, s, fpr), abs=1 / 500)

    fig, floor = R._roc_logfpr_figure(few)  # 40 reals: one false positive is already 2.5%
    (ax,) = fig.axes
    assert floor == pytest.approx(1 / 40)
    assert ax.get_xlim() == pytest.approx((1 / 40, 1.0))
    guides = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"]
    assert guides == pytest.approx([0.05])  # 0.1% and 1% are below what 40 reals resolve

    path = R.plot_roc_logfpr(few, tmp_path / "roc_logfpr.png")
    text = _png_text(path)
    assert text["Description"] == "ROC, FPR axis log scale from 0.025 to 1; guides at FPR 0.05"
    assert R.log_fpr_floor(1) == 1.0 and R.log_fpr_floor(10**6) == 1e-3
    with pytest.raises(ValueError, match="n_real=0"):
        R.log_fpr_floor(0)


def test_shared_bins() -> None:
    probs = R._shared_bins([np.array([0.2, 0.4]), np.array([0.9])])
    assert probs[0] == 0.0 and probs[-1] == 1.0
    logits = R._shared_bins([np.array([-3.0, 1.0]), np.array([5.0])])
    assert logits[0] == -3.0 and logits[-1] == 5.0
    const = R._shared_bins([np.array([7.0]), np.array([7.0])])
    assert const[0] < 7.0 < const[-1]


def test_plots_reject_bad_scores(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no generator"):
        R.plot_roc({"real": [0.1], "generators": {}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN"):
        R.plot_histograms({"real": [0.1, np.nan], "generators": {"a": [0.5]}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no scores"):
        R.plot_histograms({"real": [0.1], "generators": {"a": []}}, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_small_real_set_is_flagged(evaluation: tuple[dict, dict]) -> None:
    result, _ = evaluation  # 300 reals: 0.1% FPR allows k = 0, 1% allows k = 3
    notes = R.render_markdown(result).split("## Notes")[1]
    assert "tpr@fpr=0.001: with 300 reals no false positive is allowed" in notes
    assert "at least 1000 reals" in notes
    assert "tpr@fpr=0.01:" not in notes
    big = {**result, "mean": {**result["mean"], "n_real": 1000}}
    assert "no false positive is allowed" not in R.render_markdown(big)


def test_intervals_show_next_to_their_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    real = rng.beta(2, 5, 200)
    gens = {"sd": rng.beta(5, 2, 100), "dit": rng.beta(3, 3, 100)}
    clean = _condition(real, gens, intervals=True)
    result = {
        "settings": {"bootstrap": {"n_boot": 200, "confidence": 0.95}},
        **clean,
        "robustness": {"jpeg:75": _condition(real, {k: v * 0.8 for k, v in gens.items()}, True)},
        "format_control": None,
    }
    md = R.render_markdown(result)
    clean_table = md.split("## Clean images")[1].split("##")[0]
    for name in ("sd", "dit", "mean"):
        row = next(line for line in clean_table.splitlines() if line.startswith(f"| {name} |"))
        metrics = result["generators"].get(name, result["mean"])
        lo, hi = result["intervals"]["generators"].get(name, result["intervals"]["mean"])["auc"]
        assert f"{metrics['auc']:.4f} [{lo:.4f}, {hi:.4f}]" in row
        assert f"| {metrics['acc']:.4f} |" in row  # no interval for plain accuracy
    robust = md.split("## Robustness")[1].split("##")[0]
    lo, hi = result["robustness"]["jpeg:75"]["intervals"]["mean"]["tpr@fpr=0.05"]
    assert f"[{lo:.4f}, {hi:.4f}]" in robust
    assert "95% percentile bootstrap interval from 200 resamples" in md
    loaded = json.loads(
        R.write_report(result, {"real": real, "generators": gens}, tmp_path)["metrics"].read_text()
    )
    assert loaded["intervals"] == result["intervals"]
    assert loaded["robustness"]["jpeg:75"]["intervals"]["generators"]["sd"]["auc"] == list(
        result["robustness"]["jpeg:75"]["intervals"]["generators"]["sd"]["auc"]
    )
