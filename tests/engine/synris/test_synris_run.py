"""A SynRIS run end to end: known-answer search, outputs, the evaluate section and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ldmdetect.cli import app
from ldmdetect.detector import Detector
from ldmdetect.engine.evaluate import evaluate
from ldmdetect.engine.metrics import roc_auc
from ldmdetect.engine.scan import score_files
from ldmdetect.engine.synris import read_pairs_csv, run_synris
from ldmdetect.features.embeddings import OFFLINE_EMBEDDER


def _copy_of(fake_path: str) -> str:
    return f"copy_{Path(fake_path).stem}.jpg"


def test_known_answer_retrieves_the_perturbed_copies(
    synris_known, synris_sources, embedder, tmp_path
):
    result = run_synris(
        tmp_path, fake=[synris_known / "fake"], real_pool=[synris_known / "pool"], embedder=embedder
    )
    assert len(result.pairs) == len(synris_sources)
    for pair in result.pairs:
        assert pair.real.endswith(_copy_of(pair.fake)), pair
    # Bad files in either set are named and skipped, not fatal.
    assert set(result.errors) == {
        str(synris_known / "pool" / "broken.jpg"),
        str(synris_known / "fake" / "truncated.png"),
    }
    summary = json.loads((tmp_path / "synris.json").read_text())
    assert summary["embedder"]["name"] == OFFLINE_EMBEDDER
    assert "offline package" in summary["embedder"]["weights_source"]
    assert summary["n_pool"] == 12 and summary["max_uses_of_one_real"] == 1
    assert summary["non_image_files"] == [str(synris_known / "fake" / "notes.txt")]
    # pairs.csv round-trips; similarities are cosines, the copies' well above chance.
    read = read_pairs_csv(tmp_path / "pairs.csv")
    assert [(p.fake, p.real) for p in read] == [(p.fake, p.real) for p in result.pairs]
    assert all(0.6 < p.similarity <= 1.0 + 1e-6 for p in read)
    with Image.open(tmp_path / "contact_sheet.png") as sheet:
        assert sheet.width == 2 * 160 + 18 and sheet.height > 6 * 160
    assert (tmp_path / "index.faiss").is_file()
    pool = json.loads((tmp_path / "pool.json").read_text())
    assert len(pool["files"]) == 12 and list(pool["errors"]) == [
        str(synris_known / "pool" / "broken.jpg")
    ]


def test_evaluate_pairs_reports_matched_next_to_unmatched(
    synris_known, embedder, detector_dir, photo_dir, tmp_path
):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    run_synris(
        tmp_path / "syn",
        fake=[synris_known / "fake"],
        real_pool=[synris_known / "pool"],
        embedder=embedder,
    )
    pairs = tmp_path / "syn" / "pairs.csv"
    evaluation = evaluate(
        detector, [photo_dir], {}, pairs=pairs, output=tmp_path / "report", n_boot=200
    )
    section = evaluation.result["synris"]
    assert section["n_pairs"] == 6 and section["n_matched_reals"] == 6
    assert set(evaluation.result["generators"]) == {"synris fakes"}
    # The numbers are the detector's own: recompute both AUCs from scores.
    read = read_pairs_csv(pairs)
    fake_scores, _ = score_files(detector, [p.fake for p in read])
    matched_scores, _ = score_files(detector, [p.real for p in read])
    real_scores, _ = score_files(detector, sorted(photo_dir.glob("*.png")))
    for name, reals in (("matched", matched_scores), ("unmatched", real_scores)):
        y = np.r_[np.zeros(reals.size), np.ones(fake_scores.size)]
        expected = roc_auc(y, np.r_[reals, fake_scores])
        assert section[name]["auc"] == pytest.approx(expected)
        lo, hi = section["intervals"][name]["auc"]
        assert lo <= section[name]["auc"] <= hi
    assert section["auc_gap"] == pytest.approx(
        section["unmatched"]["auc"] - section["matched"]["auc"]
    )
    expected_win = np.mean(fake_scores > matched_scores) + 0.5 * np.mean(
        fake_scores == matched_scores
    )
    assert section["pair_win_rate"] == pytest.approx(expected_win)
    assert section["embedder"]["name"] == OFFLINE_EMBEDDER
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["synris"]["matched"]["auc"] == pytest.approx(section["matched"]["auc"])
    report = (tmp_path / "report" / "report.md").read_text()
    assert (
        "## SynRIS" in report and "SynRIS-matched reals" in report and "unmatched reals" in report
    )


def test_cli_synris_then_evaluate_pairs(synris_known, detector_dir, photo_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "syn"
    result = runner.invoke(
        app,
        [
            "synris",
            "--fake",
            str(synris_known / "fake"),
            "--real-pool",
            str(synris_known / "pool"),
            "--output",
            str(out),
            "--embedder",
            OFFLINE_EMBEDDER,
            "--workers",
            "0",
        ],
    )
    # Written in full; exit status 1 because two files could not be read, each named.
    assert result.exit_code == 1, result.output
    assert "6 pairs" in result.output and "broken.jpg" in result.output
    assert (out / "pairs.csv").is_file() and (out / "contact_sheet.png").is_file()
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--detector",
            str(detector_dir),
            "--real",
            str(photo_dir),
            "--pairs",
            str(out / "pairs.csv"),
            "--output",
            str(tmp_path / "report"),
            "--device",
            "cpu",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "SynRIS: AUC" in result.output
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["synris"]["n_pairs"] == 6
