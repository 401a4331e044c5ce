import csv
import io
import json
import math

import numpy as np
import pytest

from ldmdetect.detector import Detector
from ldmdetect.engine.scan import scan, score_files, score_files_by_class, write_csv, write_rows


def _inputs(tmp_path, aligned_dir):
    real = sorted((aligned_dir / "real").glob("*.png"))[:3]
    fake = sorted((aligned_dir / "reconstructed").glob("*.png"))[:3]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    return [*real, bad, *fake]


def test_one_bad_file_does_not_stop_the_scan(detector_dir, aligned_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    paths = _inputs(tmp_path, aligned_dir)
    rows = scan(detector, paths, fpr=0.05)
    assert [r.path for r in rows] == [str(p) for p in paths]
    bad = rows[3]
    assert bad.score is None and bad.label == "" and "not a recognised image" in bad.error
    good = [r for r in rows if not r.error]
    assert len(good) == 6 and all(0.0 <= r.score <= 1.0 for r in good)
    assert all(r.threshold == "fpr_0.05" for r in rows)
    threshold = detector.config.thresholds["fpr_0.05"]
    assert all(r.label == ("generated" if r.score > threshold else "real") for r in good)
    assert min(r.score for r in good[3:]) > max(r.score for r in good[:3])


def test_scores_match_predict_and_batching_does_not_matter(detector_dir, aligned_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    paths = _inputs(tmp_path, aligned_dir)
    scores, errors = score_files(detector, paths, tries=10, batch_size=20)
    assert math.isnan(scores[3]) and list(errors) == [str(paths[3])]
    good = [p for i, p in enumerate(paths) if i != 3]
    expected = detector.decision_function(good, tries=10)
    np.testing.assert_allclose(np.delete(scores, 3), expected, rtol=1e-5, atol=1e-6)
    small, _ = score_files(detector, paths, tries=10, batch_size=1, num_workers=2)
    np.testing.assert_allclose(small, scores, rtol=1e-5, atol=1e-6)


def test_rows_written_as_csv_or_json(detector_dir, aligned_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    rows = scan(detector, _inputs(tmp_path, aligned_dir))
    as_csv = list(csv.DictReader(write_rows(rows, tmp_path / "out.csv").open()))
    as_json = json.loads(write_rows(rows, tmp_path / "out.json").read_text())
    assert len(as_csv) == len(as_json) == 7
    assert set(as_csv[0]) == {"path", "score", "label", "verdict", "threshold", "error"}
    assert as_json[3]["score"] is None and as_json[3]["error"] and not as_json[3]["verdict"]
    rule = detector.config.decision_rule(0.01)
    for row in as_json[:3] + as_json[4:]:
        assert row["verdict"] == rule.verdict(row["score"])
        assert row["label"] == rule.label(row["score"])


def test_a_three_class_methods_rows_carry_one_p_class_column_per_class(
    three_class_detector_dir, aligned_dir, tmp_path
):
    detector = Detector.from_pretrained(three_class_detector_dir, device="cpu")
    classes = list(detector.method.classes)
    columns = ["path", "score", "label", "threshold", "error", "verdict"]
    columns += [f"p_{c}" for c in classes]
    paths = _inputs(tmp_path, aligned_dir)
    good = [p for i, p in enumerate(paths) if i != 3]
    expected = detector.predict_proba(good, tries=2)
    rows = scan(detector, paths, tries=2, fpr=None)

    as_json = json.loads(write_rows(rows, tmp_path / "out.json").read_text())
    assert [list(r) for r in as_json] == [columns] * 7
    assert all(as_json[3][f"p_{c}"] is None for c in classes)  # the failed file
    got = np.array([[r[f"p_{c}"] for c in classes] for r in as_json[:3] + as_json[4:]])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose([r.score for r in rows if not r.error], 1 - got[:, 0])

    saved = write_rows(rows, tmp_path / "out.csv").read_text()
    as_csv = list(csv.reader(io.StringIO(saved)))
    assert as_csv[0] == columns and as_csv[4][-3:] == ["", "", ""]
    stream = io.StringIO()
    write_csv(rows, stream)  # what the command line prints without --output
    assert stream.getvalue().splitlines() == saved.splitlines()

    scores, probabilities, errors = score_files_by_class(detector, paths, tries=2)
    np.testing.assert_allclose(np.delete(scores, 3), 1 - got[:, 0], rtol=1e-12)
    assert list(errors) == [str(paths[3])] and np.isnan(probabilities[3]).all()
    np.testing.assert_allclose(np.delete(probabilities, 3, axis=0), expected, rtol=1e-5)


def test_two_class_rows_printed_as_csv_keep_their_columns(detector_dir, aligned_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    rows = scan(detector, _inputs(tmp_path, aligned_dir)[:4])
    stream = io.StringIO()
    write_csv(rows, stream)
    assert stream.getvalue().splitlines()[0] == "path,score,label,threshold,error,verdict"
    saved = write_rows(rows, tmp_path / "out.csv").read_text()
    assert stream.getvalue().splitlines() == saved.splitlines()


class _Crash(Exception):
    pass


class _StopAfter:
    """Wraps ``Detector.score_prepared``: counts the images scored, and raises as a crash
    would once ``calls`` batches are done."""

    def __init__(self, detector: Detector, calls: int | None = None) -> None:
        self.score = type(detector).score_prepared.__get__(detector)
        self.calls, self.images = calls, 0

    def __call__(self, prepared, batch_size=64):
        if self.calls is not None and self.calls == 0:
            raise _Crash
        if self.calls is not None:
            self.calls -= 1
        self.images += len(prepared)
        return self.score(prepared, batch_size)


def test_an_interrupted_scan_resumes_from_its_journal(detector_dir, aligned_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    paths = _inputs(tmp_path, aligned_dir)
    expected = scan(detector, paths, fpr=0.05)
    journal = tmp_path / "out.csv.partial"
    detector.score_prepared = _StopAfter(detector, calls=2)
    with pytest.raises(_Crash):
        scan(detector, paths, fpr=0.05, batch_size=2, journal=journal)
    # Two batches of two images, and the bad file met on the way, are on disk.
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 + 5 and json.loads(lines[0])["scan"]["threshold"] == "fpr_0.05"
    detector.score_prepared = counter = _StopAfter(detector)
    resumed = scan(detector, paths, fpr=0.05, batch_size=2, journal=journal)
    assert counter.images == 2  # only the files the first run did not reach
    assert [r.path for r in resumed] == [str(p) for p in paths]
    assert [(r.label, r.error) for r in resumed] == [(r.label, r.error) for r in expected]
    np.testing.assert_allclose(
        [r.score or -1 for r in resumed], [r.score or -1 for r in expected], rtol=1e-5, atol=1e-6
    )


def test_a_journal_row_cut_short_is_scored_again(detector_dir, aligned_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    paths = _inputs(tmp_path, aligned_dir)
    journal = tmp_path / "out.json.partial"
    done = scan(detector, paths[:2], journal=journal)
    with journal.open("a") as out:
        out.write('{"path": "' + str(paths[2]))  # the process died mid-line
    detector.score_prepared = counter = _StopAfter(detector)
    rows = scan(detector, paths, journal=journal)
    assert counter.images == 4 and rows[:2] == done  # paths[2] and the three after the bad one
    assert all(line.endswith("}") for line in journal.read_text().splitlines())


def test_a_journal_of_other_settings_is_refused_by_name(detector_dir, aligned_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    paths = _inputs(tmp_path, aligned_dir)[:2]
    journal = tmp_path / "out.csv.partial"
    scan(detector, paths, fpr=0.05, journal=journal)
    with pytest.raises(ValueError, match=r"out\.csv\.partial: .*other settings"):
        scan(detector, paths, fpr=0.01, journal=journal)
    with pytest.raises(ValueError, match="other settings"):
        scan(detector, paths, fpr=0.05, tries=2, journal=journal)


def test_folders_flagged_far_above_the_calibrated_fpr_are_warned_about():
    from ldmdetect.config import DetectorConfig
    from ldmdetect.engine.scan import ScanRow, calibration_warnings, folder_shares

    def rows(folder: str, n: int, flagged: int) -> list[ScanRow]:
        return [
            ScanRow(
                f"{folder}/{i}.jpg", 0.9, "generated" if i < flagged else "real", "fpr_0.01", ""
            )
            for i in range(n)
        ]

    config = DetectorConfig(
        thresholds={"fpr_0.01": 0.5},
        calibration={"n_real": 500, "thresholds": {"fpr_0.01": {"fpr_upper_95": 0.02}}},
    )
    scanned = rows("phones", 40, 12) + rows("camera", 40, 1) + rows("few", 4, 4)
    scanned.append(ScanRow("phones/broken.jpg", None, "", "fpr_0.01", "truncated"))
    shares = {s.folder: s for s in folder_shares(scanned)}
    assert (shares["phones"].scored, shares["phones"].flagged) == (40, 12)
    assert 0.15 < shares["phones"].share_low_95 < 0.3
    warnings = calibration_warnings(scanned, config, 0.01)
    # 30% of 40 is far above 1%; 1 of 40 is chance; 4 files are too few to say.
    assert len(warnings) == 1 and warnings[0].startswith("phones: 12 of 40 files (30%)")
    assert "ldmdetect calibrate" in warnings[0]
    assert calibration_warnings(scanned, config, None) == []


def test_scan_output_helpers_journal_missing_rows_csv_and_summary(tmp_path):
    from io import StringIO

    from ldmdetect.engine.scan import (
        ScanRow,
        journal_path,
        missing_rows,
        scan_summary,
        write_csv,
    )

    assert journal_path(None) is None
    assert journal_path(tmp_path / "out.csv") == tmp_path / "out.csv.partial"
    gone = missing_rows([tmp_path / "gone.png"])
    assert gone == [ScanRow(str(tmp_path / "gone.png"), None, "", "", "no such file or directory")]
    rows = [
        ScanRow("a/1.png", 0.9, "generated", "fpr_0.01", "", "generated"),
        ScanRow("a/2.png", 0.4, "real", "fpr_0.01", "", "uncertain"),
        ScanRow("a/3.png", 0.1, "real", "fpr_0.01", "", "real"),
        *gone,
    ]
    text = StringIO()
    write_csv(rows, text)
    table = list(csv.DictReader(StringIO(text.getvalue())))
    assert [r["path"] for r in table] == [r.path for r in rows]
    assert table[-1]["error"] == "no such file or directory" and table[-1]["score"] == ""
    empty = StringIO()
    write_csv([], empty)
    assert empty.getvalue().strip() == "path"
    assert scan_summary(rows, 0.01) == (
        "4 files, 1 flagged as generated (33.3%) at FPR 0.01, 1 uncertain, 1 failed"
    )
    assert scan_summary(rows[:1], None, tmp_path / "o.csv") == (
        f"1 files, 1 flagged as generated (100.0%) at the raw 0.5 rule, 0 uncertain, 0 failed "
        f"-> {tmp_path / 'o.csv'}"
    )


def test_a_family_heads_rows_name_the_family_of_each_generated_file(
    family_detector_dir, two_family_aligned_dir, tmp_path
):
    from ldmdetect.engine.reconstruct import read_aligned_dataset

    detector = Detector.from_pretrained(family_detector_dir, device="cpu")
    pairs = read_aligned_dataset(two_family_aligned_dir)[:2]
    paths = [str(p.real) for p in pairs] + [str(f) for p in pairs for _, f in p.reconstructions]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    paths.append(str(bad))
    rows = scan(detector, paths, fpr=None, journal=tmp_path / "scan.partial")
    expected = detector.attribute(paths[:-1], fpr=None)
    assert any(a.family is not None for a in expected)  # some files are judged generated
    columns = ["path", "score", "label", "threshold", "error", "verdict", "family"]
    columns += ["family_score", "p_real", "p_sd-4ch", "p_flux-16ch"]
    as_json = json.loads(write_rows(rows, tmp_path / "out.json").read_text())
    assert list(as_json[0]) == columns
    for row, want in zip(as_json, expected, strict=False):
        assert row["family"] == (want.family or "")
        if want.family is None:
            assert row["label"] == "real" and row["family_score"] is None
        else:
            assert row["label"] == "generated"
            assert row["family_score"] == pytest.approx(want.family_score, rel=1e-6)
    assert as_json[-1]["family"] is None and as_json[-1]["error"]  # the failed file
    as_csv = list(csv.DictReader(write_rows(rows, tmp_path / "out.csv").open()))
    assert list(as_csv[0]) == columns
    assert [r["family"] for r in as_csv[:-1]] == [a.family or "" for a in expected]
    # A rerun takes the journal's rows, families included.
    again = scan(detector, paths, fpr=None, journal=tmp_path / "scan.partial")
    assert [(r.path, getattr(r, "family", None)) for r in again] == [
        (r.path, getattr(r, "family", None)) for r in rows
    ]


def test_a_novel_file_is_unknown_in_its_row_whatever_its_label(
    family_detector_dir, two_family_aligned_dir
):
    from dataclasses import replace

    from ldmdetect.engine.reconstruct import read_aligned_dataset

    detector = Detector.from_pretrained(family_detector_dir, device="cpu")
    pairs = read_aligned_dataset(two_family_aligned_dir)[:2]
    paths = [str(p.real) for p in pairs] + [str(f) for p in pairs for _, f in p.reconstructions]
    everything_real = detector.config.thresholds | {"fpr_0.5": 2.0}
    detector.config = replace(detector.config, thresholds=everything_real)
    novelty = detector.novelty
    detector.novelty = replace(novelty, threshold=1e12)  # nothing is novel: no family
    before = scan(detector, paths, fpr=0.5)
    assert [(row.label, row.family) for row in before] == [("real", "")] * len(paths)
    detector.novelty = replace(novelty, threshold=-1.0)  # everything is novel: unknown
    rows = scan(detector, paths, fpr=0.5)
    assert [(row.label, row.family) for row in rows] == [("real", "unknown")] * len(paths)


def test_two_class_rows_have_no_family_columns(detector_dir, aligned_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    rows = scan(detector, _inputs(tmp_path, aligned_dir))
    first = json.loads(write_rows(rows, tmp_path / "o.json").read_text())[0]
    assert not {"family", "family_score"} & set(first)
