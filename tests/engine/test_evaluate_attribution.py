"""Attribution in ``evaluate``: the family head's confusion matrix per true family, and
AEROBLADE's nearest autoencoder beside it."""

import json
import shutil

import pytest

from ldmdetect.config import DetectorConfig
from ldmdetect.detector import Detector
from ldmdetect.engine.evaluate import evaluate
from ldmdetect.engine.evaluate_attribution import (
    attribution_section,
    family_autoencoders,
    true_families,
)

FAMILIES = ("sd-4ch", "flux-16ch")


def test_a_set_takes_its_family_from_its_name_or_the_mapping():
    truth, left_out = true_families(
        ["sd-4ch", "flux gens", "other", "sdxl gens"],
        FAMILIES,
        {"flux gens": "flux-16ch", "sdxl gens": "sdxl-4ch"},
    )
    assert truth == {"sd-4ch": "sd-4ch", "flux gens": "flux-16ch", "sdxl gens": "sdxl-4ch"}
    assert left_out == ["other"]


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"nope": "sd-4ch"}, "names generator set\\(s\\) \\['nope'\\]"),
        ({"a": "unknown"}, "'unknown' is a column"),
        ({"a": "real"}, "'real' is a column"),
    ],
)
def test_a_bad_mapping_is_an_error_naming_it(mapping, message):
    with pytest.raises(ValueError, match=message):
        true_families(["a"], FAMILIES, mapping)


def test_the_section_counts_reals_and_sets_and_leaves_failed_files_out():
    section = attribution_section(
        FAMILIES,
        {
            "real": [None, None, "sd-4ch"],
            "a": ["sd-4ch", "flux-16ch", None, "sd-4ch"],
            "b": ["unknown", "sd-4ch"],
        },
        {"real": [False] * 3, "a": [False, False, False, True], "b": [False, False]},
        {"a": "sd-4ch", "b": "sdxl-4ch"},
        ["c"],
        family_threshold=0.6,
        decision="0.5",
    )
    assert section["rows"] == ["sd-4ch", "sdxl-4ch", "real"]
    assert section["columns"] == [*FAMILIES, "unknown", "real"]
    assert section["counts"] == [[1, 1, 0, 1], [1, 0, 1, 0], [1, 0, 0, 2]]
    assert section["failed"] == 1 and section["left_out"] == ["c"]
    assert section["accuracy_per_family"] == {"sd-4ch": 1 / 3, "sdxl-4ch": 0.5, "real": 2 / 3}
    assert section["unknown_share"]["sdxl-4ch"] == 0.5
    assert section["accuracy_generated"] == 2 / 5 and section["n_generated"] == 5
    assert section["sets"]["b"] == {"family": "sdxl-4ch", "n": 2, "accuracy": 0.5}


def test_a_section_without_named_sets_says_how_to_name_them():
    section = attribution_section(
        FAMILIES,
        {"real": [None], "x": ["sd-4ch"]},
        {},
        {},
        ["x"],
        family_threshold=None,
        decision="0.5",
    )
    assert "counts" not in section and "--family SET=FAMILY" in section["note"]


def test_training_records_each_familys_autoencoder(family_detector_dir, tiny_family_dir):
    config = DetectorConfig.load(family_detector_dir)
    assert list(config.family_sources) == list(FAMILIES)
    assert config.family_sources["sd-4ch"]["id"] == str(tiny_family_dir("sd"))
    assert config.family_sources["flux-16ch"]["id"] == str(tiny_family_dir("flux"))
    # A detector saved before family_sources falls back on its datasets' dataset.json.
    old = DetectorConfig.from_dict(config.to_dict() | {"family_sources": {}})
    assert family_autoencoders(old) == (config.family_sources, [])


@pytest.fixture(scope="module")
def family_evaluation(family_detector_dir, two_family_aligned_dir, tmp_path_factory):
    """The tiny family head evaluated with AEROBLADE's cross-check: the sd reconstructions as
    a set named by their family, the flux ones named through the mapping, and the flux ones
    again under a name no family or mapping gives (left out)."""
    recon = two_family_aligned_dir / "reconstructed"
    out = tmp_path_factory.mktemp("family-report")
    detector = Detector.from_pretrained(family_detector_dir, device="cpu")
    evaluation = evaluate(
        detector,
        [two_family_aligned_dir / "real"],
        {
            "sd-4ch": [recon / "sd-4ch"],
            "flux gens": [recon / "flux-16ch"],
            "stray": [recon / "flux-16ch"],
        },
        families={"flux gens": "flux-16ch"},
        cross_check=True,
        n_boot=0,
        output=out,
    )
    return evaluation, out


def test_closed_set_accuracy_is_the_best_known_family_whatever_the_verdict(
    family_evaluation,
):
    evaluation, _ = family_evaluation
    closed = evaluation.result["attribution"]["closed_set"]
    inputs = evaluation.family_inputs
    detector_classes = ("real", *FAMILIES)
    # Per set: the argmax over the known families of the stored probabilities.
    for name, family in (("sd-4ch", "sd-4ch"), ("flux gens", "flux-16ch")):
        columns = inputs[name].probabilities[:, 1:3]
        best = [FAMILIES[i] for i in columns.argmax(axis=1)]
        assert closed["sets"][name]["correct"] == best.count(family)
        assert closed["sets"][name]["n"] == len(best)
    assert set(closed["sets"]) == {"sd-4ch", "flux gens"}  # no reals, no left-out set
    assert closed["n"] == sum(e["n"] for e in closed["sets"].values())
    # Re-read at the head's own threshold, the inputs give the answers evaluate gave; at a
    # threshold of 1 every judged-generated image with any split is "unknown".
    threshold = evaluation.result["attribution"]["family_threshold"]
    for name in ("real", "sd-4ch", "flux gens"):
        assert inputs[name].attribute(detector_classes, threshold) == evaluation.families[name]
    strict = inputs["sd-4ch"].attribute(detector_classes, 1.0 + 1e-9)
    assert all(a in (None, "unknown") for a in strict)


def test_the_report_has_the_confusion_matrix_of_the_family_head(family_evaluation):
    evaluation, out = family_evaluation
    section = json.loads((out / "metrics.json").read_text())["attribution"]
    assert section == json.loads(json.dumps(evaluation.result["attribution"]))
    found = evaluation.families
    truth = {"real": "real", "sd-4ch": "sd-4ch", "flux gens": "flux-16ch"}
    assert section["rows"] == ["sd-4ch", "flux-16ch", "real"]
    assert section["left_out"] == ["stray"]
    # The counts are the head's answers per file, as Evaluation.families lists them.
    columns = section["columns"]
    for name, family in truth.items():
        row = section["counts"][section["rows"].index(family)]
        expected = [sum((a or "real") == c for a in found[name]) for c in columns]
        assert row == expected, (name, row, expected)
        assert section["accuracy_per_family"][family] == row[columns.index(family)] / len(
            found[name]
        )
    assert section["n"] == sum(len(found[n]) for n in truth)
    assert (out / "attribution_confusion.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "## Attribution (generator family)" in report
    assert "(attribution_confusion.png)" in report and "`stray`" in report


def test_the_cross_check_compares_aeroblade_with_the_head_on_every_attributed_image(
    family_evaluation,
):
    evaluation, out = family_evaluation
    cross = evaluation.result["attribution"]["cross_check"]
    assert "error" not in cross, cross
    n = len(evaluation.families["sd-4ch"]) + len(evaluation.families["flux gens"])
    assert cross["n"] == cross["agreement"]["total"] == n
    named = sum(
        a not in (None, "unknown") for s in ("sd-4ch", "flux gens") for a in evaluation.families[s]
    )
    assert cross["agreement"]["n"] == named  # AEROBLADE always names a family
    assert 0 <= cross["agreement"]["agree"] <= named
    counts = cross["nearest_counts"]
    assert {f: sum(r.values()) for f, r in counts.items()} == {
        "sd-4ch": len(evaluation.families["sd-4ch"]),
        "flux-16ch": len(evaluation.families["flux gens"]),
    }
    right = counts["sd-4ch"]["sd-4ch"] + counts["flux-16ch"]["flux-16ch"]
    assert cross["judge"] == "aeroblade" and cross["judge_accuracy"] == right / n
    grid = cross["feature"]["aeroblade"]["grid"]
    assert grid >= 8 and cross["input_size"] % grid == 0
    assert "`aeroblade` alone" in (out / "report.md").read_text()


def test_a_detector_without_recorded_sources_reports_why_there_is_no_cross_check(
    family_detector_dir, two_family_aligned_dir, tmp_path
):
    old = tmp_path / "old"
    shutil.copytree(family_detector_dir, old)
    config = json.loads((old / "config.json").read_text())
    config.pop("family_sources")
    for info in config["training"]["datasets"]:
        info.pop("families")
    (old / "config.json").write_text(json.dumps(config))
    detector = Detector.from_pretrained(old, device="cpu")
    recon = two_family_aligned_dir / "reconstructed"
    evaluation = evaluate(
        detector,
        [two_family_aligned_dir / "real"],
        [recon / "sd-4ch"],
        cross_check=True,
        n_boot=0,
    )
    cross = evaluation.result["attribution"]["cross_check"]
    assert cross.keys() == {"error"}
    assert "no autoencoder source recorded for families sd-4ch, flux-16ch" in cross["error"]
    # An autoencoder that cannot be loaded any more: the same, with the loader's reason.
    config["family_sources"] = {
        f: {"id": str(tmp_path / "gone"), "subfolder": "vae"} for f in FAMILIES
    }
    (old / "config.json").write_text(json.dumps(config))
    detector = Detector.from_pretrained(old, device="cpu")
    evaluation = evaluate(
        detector, [two_family_aligned_dir / "real"], [recon / "sd-4ch"], cross_check=True, n_boot=0
    )
    error = evaluation.result["attribution"]["cross_check"]["error"]
    assert "could not be built" in error and str(tmp_path / "gone") in error
