"""Attribution report helpers on hand-made labels, and AEROBLADE's nearest autoencoder on a
tiny AEROBLADE detector with two tiny autoencoders."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldmdetect.engine.attribution_report import (
    REAL,
    UNKNOWN,
    accuracy_interval,
    agreement,
    confusion_matrix,
    markdown_section,
    nearest_autoencoders,
    plot_confusion_matrix,
)
from ldmdetect.methods.aeroblade.method import AerobladeExplanation

FAMILIES = ("sd", "flux")
# 4 sd images: 2 right, 1 called flux, 1 missed (judged real); 3 flux: 1 right, 2 unknown;
# 2 of a family the detector never saw ("pixart"): 1 unknown (right), 1 called sd;
# 2 reals: 1 judged real (right), 1 called flux.
TRUE = ["sd", "sd", "sd", "sd", "flux", "flux", "flux", "pixart", "pixart", "real", "real"]
PREDICTED = ["sd", "sd", "flux", None, "flux", UNKNOWN, UNKNOWN, UNKNOWN, "sd", None, "flux"]


@pytest.fixture
def cm():
    return confusion_matrix(TRUE, PREDICTED, FAMILIES)


def test_counts_rows_and_columns(cm):
    assert cm.rows == ("sd", "flux", "pixart", REAL)
    assert cm.columns == ("sd", "flux", UNKNOWN, REAL)
    assert cm.counts == (
        (2, 1, 0, 1),
        (0, 1, 2, 0),
        (1, 0, 1, 0),
        (0, 1, 0, 1),
    )
    assert cm.n == len(TRUE) and cm.array.sum() == len(TRUE)


def test_accuracies_and_unknown_share(cm):
    assert cm.accuracy_per_family() == {
        "sd": 2 / 4,
        "flux": 1 / 3,
        "pixart": 1 / 2,  # an unseen family is right when called unknown
        REAL: 1 / 2,
    }
    assert cm.accuracy == pytest.approx(5 / 11)
    assert cm.unknown_share() == {"sd": 0.0, "flux": 2 / 3, "pixart": 1 / 2, REAL: 0.0}


def test_markdown_and_dict(cm):
    table = cm.to_markdown()
    lines = table.strip().splitlines()
    assert lines[0] == "| true \\ predicted | sd | flux | unknown | real | n | accuracy |"
    assert lines[2] == "| sd | 2 | 1 | 0 | 1 | 4 | 0.5000 |"
    assert lines[4] == "| pixart | 1 | 0 | 1 | 0 | 2 | 0.5000 |"
    as_json = json.loads(json.dumps(cm.to_dict()))
    assert as_json["counts"][1] == [0, 1, 2, 0]
    assert as_json["accuracy"] == pytest.approx(5 / 11) and as_json["n"] == 11
    assert as_json["unknown_share"]["flux"] == pytest.approx(2 / 3)


def test_accuracy_intervals_are_exact_clopper_pearson(cm):
    # Known values: 28/32 -> [0.7101, 0.9649]; 0/32 -> [0, 0.1089]; n/n -> [.., 1].
    low, high = accuracy_interval(28, 32)
    assert (low, high) == (pytest.approx(0.7101, abs=1e-4), pytest.approx(0.9649, abs=1e-4))
    assert accuracy_interval(0, 32) == [0.0, pytest.approx(0.1089, abs=1e-4)]
    assert accuracy_interval(32, 32)[1] == 1.0 and accuracy_interval(32, 32)[0] < 1.0
    with pytest.raises(ValueError, match="0 <= correct <= n"):
        accuracy_interval(3, 2)
    intervals = cm.to_dict()["accuracy_ci95"]
    assert intervals["sd"] == accuracy_interval(2, 4) and set(intervals) == set(cm.rows)


def test_rows_only_for_labels_present_and_reals_optional():
    cm = confusion_matrix(["flux", "flux"], ["flux", None], FAMILIES)
    assert cm.rows == ("flux",) and cm.counts == ((0, 1, 0, 1),)
    assert cm.accuracy == 0.5


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        confusion_matrix(["sd", "sd"], ["sd"], FAMILIES)
    with pytest.raises(ValueError, match=r"predictions \['sdxl'\] are none of the families"):
        confusion_matrix(["sd"], ["sdxl"], FAMILIES)
    with pytest.raises(ValueError, match="reserved"):
        confusion_matrix(["sd"], ["sd"], ("sd", "unknown"))
    with pytest.raises(ValueError, match="is a prediction, not a true label"):
        confusion_matrix([UNKNOWN], ["sd"], FAMILIES)


def test_plot_is_a_png(cm, tmp_path):
    path = plot_confusion_matrix(cm, tmp_path / "confusion.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
        assert image.text["Title"] == "Attribution confusion matrix"
    with pytest.raises(ValueError, match="empty"):
        plot_confusion_matrix(confusion_matrix([], [], FAMILIES), tmp_path / "empty.png")


def _explained(**distances):
    return AerobladeExplanation(
        evidence=None,
        box=None,
        score=-min(distances.values()),
        distances=distances,
        autoencoder=min(distances, key=distances.get),
        distance_map=np.zeros((1, 1)),
    )


def test_nearest_autoencoders_by_family_and_agreement():
    explanations = [
        _explained(**{"sd-vae": 0.1, "flux-vae": 0.3}),
        _explained(**{"sd-vae": 0.4, "flux-vae": 0.2}),
        None,  # an image AEROBLADE could not explain
        _explained(**{"sd-vae": 0.2, "flux-vae": 0.2}),  # a tie: the first autoencoder
    ]
    names = {"sd-vae": "sd", "flux-vae": "flux"}
    assert nearest_autoencoders(explanations) == ["sd-vae", "flux-vae", None, "sd-vae"]
    nearest = nearest_autoencoders(explanations, names)
    assert nearest == ["sd", "flux", None, "sd"]
    head = ["sd", "sd", "flux", UNKNOWN]
    # both name a family on images 0 and 1 only; they agree on image 0
    assert agreement(nearest, head) == {"rate": 0.5, "agree": 1, "n": 2, "total": 4}
    assert agreement([None, REAL], [UNKNOWN, "sd"]) == {
        "rate": None,
        "agree": 0,
        "n": 0,
        "total": 2,
    }
    with pytest.raises(ValueError, match="2 attributions against 1"):
        agreement(["sd", "sd"], ["sd"])
    with pytest.raises(ValueError, match="no distances to autoencoders"):
        nearest_autoencoders([_explained(a=0.1), object()])


def test_markdown_section(cm):
    section = markdown_section(cm, agreement(["sd", "flux"], ["sd", "sd"]), "cm.png", "`aeroblade`")
    assert section.startswith("## Attribution")
    assert "accuracy 45.5% over 11 images" in section
    assert cm.to_markdown() in section and "![attribution confusion matrix](cm.png)" in section
    assert (
        "`aeroblade`'s nearest autoencoder agrees with the family head on 50.0% of 2 images"
        in section
    )
    bare = markdown_section(cm, png_name=None)
    assert "![" not in bare and "nearest autoencoder" not in bare
    none = markdown_section(cm, agreement([UNKNOWN], [UNKNOWN]))
    assert "never both name a family" in none


def test_nearest_autoencoder_on_a_tiny_aeroblade_detector(
    aligned_dir: Path, tiny_pipeline_dir: Path, tmp_path_factory
):
    """Two tiny autoencoders: the reconstructions through the first are nearest to it."""
    from ldmdetect.detector import Detector
    from ldmdetect.engine.train import TrainConfig, train_detector
    from ldmdetect.generative.tiny import write_tiny_pipeline
    from ldmdetect.io.labeled import read_labeled

    second = write_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd-seed1"), seed=1)
    out = tmp_path_factory.mktemp("aeroblade-two")
    cfg = TrainConfig(
        method="aeroblade",
        input_size=32,
        device="cpu",
        feature={"aeroblade": {"autoencoders": [str(tiny_pipeline_dir), str(second)]}},
    )
    train_detector([], out, cfg, examples=read_labeled([aligned_dir / "real"], []))
    detector = Detector.from_pretrained(out, device="cpu")
    fakes = sorted((aligned_dir / "reconstructed").glob("*.png"))[:4]
    # AEROBLADE names an autoencoder by its folder and subfolder
    names = {f"{tiny_pipeline_dir.name}/vae": "first", f"{second.name}/vae": "second"}
    nearest = nearest_autoencoders(detector.explain(fakes), names)
    assert nearest == ["first"] * 4
