"""The demo's row: the same fakes scored against matched and unmatched reals."""

from ldmdetect.detector import Detector
from ldmdetect.engine.synris import synris_row


def test_synris_row_for_the_demo(synris_known, embedder, detector_dir, photo_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    fakes = sorted((synris_known / "fake").glob("*.png"))[:4]
    row = synris_row(
        detector,
        fakes,
        [synris_known / "pool"],
        [photo_dir],
        tmp_path,
        embedder=embedder,
        n_boot=100,
    )
    assert row.synris.summary["allow_reuse"] is True
    rows = row.table_rows("ae / generated / 1-try")
    assert list(rows) == [
        "ae / generated / 1-try / SynRIS-matched reals",
        "ae / generated / 1-try / unmatched reals",
    ]
    assert rows["ae / generated / 1-try / unmatched reals"]["auc"] == row.unmatched["auc"]
    assert row.matched["n_fake"] == 4 and row.seconds["total"] > 0
    assert (tmp_path / "report" / "report.md").is_file()
