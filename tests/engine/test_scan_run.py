"""``run_scan``: the whole of one scan as the command line runs it, from inputs to rows."""

import csv
import inspect
import io
import json

import pytest

from ldmdetect.cli.common import default_of
from ldmdetect.detector import Detector
from ldmdetect.engine.scan import calibration_warnings, scan, scan_summary
from ldmdetect.engine.scan_run import ScanOptions, run_scan

CPU_TWO_TRIES = ScanOptions(device="cpu", tries=2)


@pytest.fixture()
def uploads(tmp_path, aligned_dir):
    """A folder of 2 real photos, 2 reconstructions, an undecodable .jpg and a text file."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    real = sorted((aligned_dir / "real").glob("*.png"))[:2]
    fake = sorted((aligned_dir / "reconstructed").glob("*.png"))[:2]
    for i, path in enumerate([*real, *fake]):
        (folder / f"{i}.png").write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_text("not an image")
    (folder / "notes.txt").write_text("not an image either")
    return folder


def test_rows_go_to_the_stream_with_the_missing_and_skipped_accounted_for(
    detector_dir, uploads, tmp_path
):
    missing = tmp_path / "gone.png"
    stream = io.StringIO()
    run = run_scan(
        detector_dir, [uploads, missing], ScanOptions(device="cpu", fpr=0.05), stream=stream
    )
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    images = sorted([*uploads.glob("*.png"), uploads / "broken.jpg"])
    expected = scan(detector, images, fpr=0.05)

    printed = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [r["path"] for r in printed] == [*map(str, images), str(missing)]
    assert [r.path for r in run.rows] == [r["path"] for r in printed]
    for row, want in zip(run.rows[:-1], expected, strict=True):
        assert (row.label, row.verdict, row.error) == (want.label, want.verdict, want.error)
        assert (row.score is None) == (want.score is None)
        assert row.score is None or row.score == pytest.approx(want.score, abs=1e-6)
    assert printed[-1]["error"] == "no such file or directory" and printed[-1]["score"] == ""
    assert run.failed == [
        (str(uploads / "broken.jpg"), expected[-1].error),
        (str(missing), "no such file or directory"),
    ]
    assert "not a recognised image" in run.failed[0][1]
    assert run.skipped == [uploads / "notes.txt"]
    assert run.output is None and run.engine == "local"
    assert run.summary == scan_summary(run.rows, 0.05) and "-> " not in run.summary
    assert run.summary.startswith("6 files, ") and run.summary.endswith("2 failed")
    assert run.warnings == calibration_warnings(run.rows, detector.config, 0.05)


def test_rows_to_a_file_resume_an_interrupted_scans_journal(detector_dir, uploads, tmp_path):
    output = tmp_path / "out" / "scores.json"
    first = run_scan(detector_dir, [uploads], CPU_TWO_TRIES, output=output)
    assert not output.with_name("scores.json.partial").exists()
    written = json.loads(output.read_text())
    assert [r["path"] for r in written] == [r.path for r in first.rows]
    assert first.summary.endswith(f"-> {output}")

    # An interrupted run left the first file's row; the rerun says so first and takes it.
    journal = output.with_name("scores.json.partial")
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    scan(detector, [first.rows[0].path], tries=2, journal=journal)
    journaled = json.loads(journal.read_text().splitlines()[1])
    told = []
    again = run_scan(detector_dir, [uploads], CPU_TWO_TRIES, output=output, on_resume=told.append)
    assert told == [journal] and not journal.exists()
    # Taken from the journal as it was (scored alone there, so not bit-equal to a batch's).
    assert json.loads(output.read_text())[0]["score"] == journaled["score"] == again.rows[0].score
    assert [(r.path, r.label, r.error) for r in again.rows] == [
        (r.path, r.label, r.error) for r in first.rows
    ]
    # Without a journal there is nothing to resume, and nothing is said.
    run_scan(detector_dir, [uploads], CPU_TWO_TRIES, output=output, on_resume=told.append)
    assert told == [journal]


def test_a_folder_of_generated_images_is_warned_about(detector_dir, aligned_dir):
    fakes = aligned_dir / "reconstructed"
    run = run_scan(detector_dir, [fakes], ScanOptions(device="cpu", fpr=0.05), stream=io.StringIO())
    flagged = sum(r.label == "generated" for r in run.rows)
    assert len(run.rows) >= 10 and flagged > 0.5 * len(run.rows), run.summary
    assert len(run.warnings) == 1
    assert run.warnings[0].startswith(f"{fakes}: {flagged} of {len(run.rows)} files")
    assert "ldmdetect calibrate" in run.warnings[0]


def test_the_ray_engine_needs_an_output_directory_and_engines_are_named(detector_dir, uploads):
    with pytest.raises(ValueError, match="give --output DIRECTORY"):
        run_scan(detector_dir, [uploads], ScanOptions(engine="ray"))
    with pytest.raises(ValueError, match="'spark': expected one of local, ray"):
        ScanOptions(engine="spark")


def test_its_defaults_are_the_scans_and_the_detectors():
    """The command line reads its defaults from ``ScanOptions``; they must not drift from
    ``scan``'s, which the Python API scans with, and ``Detector.from_pretrained``'s."""
    for name in ("tries", "fpr", "uncertain_fpr", "batch_size", "num_workers"):
        assert default_of(ScanOptions, name) == default_of(scan, name), name
    assert default_of(ScanOptions, "device") == default_of(Detector.from_pretrained, "device")
    assert set(ScanOptions().scoring()) | {"num_workers"} <= set(inspect.signature(scan).parameters)
