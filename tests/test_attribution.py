import math

import numpy as np
import pytest

from ldmdetect.attribution import (
    OTHER,
    UNKNOWN,
    Attribution,
    EmbeddingTap,
    Novelty,
    attribute,
    calibrate_family_threshold,
    combine_novelty,
    family_scores,
    fit_novelty,
    has_other,
    known_families,
    share_quantiles,
)

CLASSES = ("real", "sd-4ch", "flux-16ch")


def test_real_gets_no_family_weak_evidence_unknown_strong_evidence_its_family():
    probabilities = np.array(
        [
            [0.90, 0.05, 0.05],  # judged real: no family whatever the rest says
            [0.10, 0.46, 0.44],  # generated, split between families: share 0.51
            [0.10, 0.05, 0.85],  # generated, clearly flux: share 0.944
            [0.40, 0.57, 0.03],  # generated (score 0.6), clearly sd: share 0.95
        ]
    )
    generated = np.array([False, True, True, True])
    got = attribute(probabilities, CLASSES, generated, threshold=0.8)
    assert got[0].family is None and math.isnan(got[0].family_score)
    assert got[1] == Attribution(UNKNOWN, pytest.approx(0.46 / 0.9))
    assert got[2] == Attribution("flux-16ch", pytest.approx(0.85 / 0.9))
    assert got[3] == Attribution("sd-4ch", pytest.approx(0.95))
    # No open-set rule: the best family always answers.
    assert [a.family for a in attribute(probabilities, CLASSES, generated, None)] == [
        None,
        "sd-4ch",
        "flux-16ch",
        "sd-4ch",
    ]


def test_the_decision_not_the_probabilities_says_who_is_generated():
    probabilities = np.array([[0.9, 0.08, 0.02]])
    (got,) = attribute(probabilities, CLASSES, np.array([True]), threshold=0.5)
    assert got == Attribution("sd-4ch", pytest.approx(0.8))  # a strict threshold flagged it


def test_a_row_without_generated_mass_has_share_zero():
    _, share = family_scores(np.array([[1.0, 0.0, 0.0]]))
    assert share.tolist() == [0.0]
    (got,) = attribute(np.array([[1.0, 0.0, 0.0]]), CLASSES, np.array([True]), 0.5)
    assert got.family == UNKNOWN


def test_threshold_is_the_held_out_reconstructions_first_percentile():
    rng = np.random.default_rng(0)
    families = rng.dirichlet([1.0, 1.0], size=500) * 0.9
    probabilities = np.column_stack([np.full(500, 0.1), families])
    threshold = calibrate_family_threshold(probabilities)
    _, share = family_scores(probabilities)
    assert threshold in share  # a share that occurs, not an interpolation
    kept = np.mean(share >= threshold)
    assert 0.99 <= kept <= 0.995  # 99% of the known-family reconstructions keep their family
    assert calibrate_family_threshold(np.zeros((0, 3))) is None
    # The trade-off record: the thresholds other operating points would set, rising with them.
    points = share_quantiles(probabilities)
    assert points["0.01"] == threshold
    assert list(points.values()) == sorted(points.values())
    assert share_quantiles(np.zeros((0, 3))) == {}


OTHER_CLASSES = (*CLASSES, OTHER)


def test_the_outlier_class_is_generated_mass_but_never_a_family():
    probabilities = np.array(
        [
            [0.05, 0.80, 0.05, 0.10],  # sd, share 0.80 / 0.95
            [0.05, 0.30, 0.05, 0.60],  # mostly another autoencoder: unknown
            [0.05, 0.45, 0.05, 0.45],  # a tie with the outlier class: unknown
            [0.10, 0.50, 0.00, 0.40],  # sd outweighs it, but its share 0.56 is weak
            [0.90, 0.02, 0.01, 0.07],  # judged real: no family
        ]
    )
    generated = np.array([True, True, True, True, False])
    got = attribute(probabilities, OTHER_CLASSES, generated, threshold=0.7)
    assert [a.family for a in got] == ["sd-4ch", UNKNOWN, UNKNOWN, UNKNOWN, None]
    assert got[0].family_score == pytest.approx(0.80 / 0.95)  # the outlier mass counts
    # Without a family threshold the outlier class still says unknown.
    assert [a.family for a in attribute(probabilities, OTHER_CLASSES, generated, None)] == [
        "sd-4ch",
        UNKNOWN,
        UNKNOWN,
        "sd-4ch",
        None,
    ]
    best, share = family_scores(probabilities, other=True)
    assert best.tolist() == [0, 0, 0, 0, 0]  # never the outlier column
    assert share[1] == pytest.approx(0.30 / 0.95)
    # Calibrated on known-family reconstructions, the outlier column read as mass only.
    assert calibrate_family_threshold(probabilities[:1], 0.01, other=True) == pytest.approx(
        0.80 / 0.95
    )
    assert known_families(OTHER_CLASSES[1:]) == CLASSES[1:]
    assert has_other(OTHER_CLASSES) and not has_other(CLASSES)
    with pytest.raises(ValueError, match="classes must be"):
        attribute(probabilities, ("real", "sd-4ch", OTHER, "flux-16ch"), generated, None)
    with pytest.raises(ValueError, match="classes must be"):
        attribute(probabilities[:, :3], ("real", "sd-4ch", OTHER), generated, None)


def test_bad_shapes_and_classes_are_refused():
    with pytest.raises(ValueError, match="real"):
        attribute(np.zeros((1, 3)), ("sd", "real", "flux"), np.array([True]), None)
    with pytest.raises(ValueError, match="do not match"):
        attribute(np.zeros((2, 3)), CLASSES, np.array([True]), None)
    with pytest.raises(ValueError, match="at least two families"):
        family_scores(np.zeros((1, 2)))


def _three_clusters(rng: np.random.Generator, n: int = 200, dim: int = 8):
    """Embeddings of three classes around distinct means, labels 0..2."""
    means = np.array([[0.0] * dim, [4.0] + [0.0] * (dim - 1), [0.0, 4.0] + [0.0] * (dim - 2)])
    labels = np.repeat(np.arange(3), n)
    return means[labels] + rng.normal(size=(3 * n, dim)), labels, means


def test_an_embedding_far_from_every_class_is_novel_one_near_a_class_is_not(tmp_path):
    rng = np.random.default_rng(0)
    embeddings, labels, means = _three_clusters(rng)
    novelty = fit_novelty(embeddings, labels, CLASSES)
    np.testing.assert_allclose(novelty.means, means, atol=0.25)
    assert not novelty.novel(embeddings[:3]).any()  # uncalibrated: nothing is novel
    reals = means[0] + rng.normal(size=(300, 8))
    novelty = novelty.calibrated(reals, fpr=0.01)
    assert novelty.record["novel_reals"] <= 3  # at most 1% of the reals it was set on
    near = means[2] + rng.normal(size=(50, 8))  # a known family, unseen samples
    far = np.full((5, 8), 12.0)  # nowhere near any class
    assert novelty.novel(near).mean() <= 0.06
    assert novelty.novel(far).all()
    # Between two classes' means is still near both: not novel.
    assert not novelty.novel(((means[1] + means[2]) / 2)[None]).any()
    # Saved with the detector and read back alike; no file: no rule.
    novelty.save(tmp_path)
    loaded = Novelty.load(tmp_path)
    assert loaded.classes == CLASSES and loaded.threshold == pytest.approx(novelty.threshold)
    np.testing.assert_array_equal(loaded.novel(far), novelty.novel(far))
    assert Novelty.load(tmp_path / "elsewhere") is None
    with pytest.raises(ValueError, match="no training embeddings of class"):
        fit_novelty(embeddings[labels < 2], labels[labels < 2], CLASSES)
    with pytest.raises(ValueError, match="dimension 8"):
        novelty.distances(np.zeros((1, 5)))


def test_an_ensembles_novelty_sums_its_members_squared_distances_and_saves_as_blocks(tmp_path):
    from scipy.linalg import block_diag

    rng = np.random.default_rng(1)
    embeddings, labels, _ = _three_clusters(rng)
    first = fit_novelty(embeddings, labels, CLASSES)
    second = fit_novelty(embeddings[:, ::-1] * 2 + 1, labels, CLASSES)  # another member's view
    combined = combine_novelty([first, second])
    assert [len(b) for b in combined.blocks] == [8, 8] and combined.threshold is None
    side_by_side = np.concatenate([embeddings, embeddings[:, ::-1] * 2 + 1], axis=1)[:40]
    # The blocks are one block-diagonal precision: the same distances as the dense matrix.
    dense = Novelty(CLASSES, combined.means, block_diag(*combined.blocks))
    np.testing.assert_allclose(combined.distances(side_by_side), dense.distances(side_by_side))
    # Per class, squared distances add: the nearest class is the one nearest on both.
    far = side_by_side + 30.0
    assert (combined.distances(far) > np.maximum(first.distances(far[:, :8]), 1.0)).all()
    calibrated = combined.calibrated(side_by_side, fpr=0.05)
    calibrated.save(tmp_path)
    loaded = Novelty.load(tmp_path)
    assert len(loaded.blocks) == 2
    np.testing.assert_allclose(loaded.distances(far), calibrated.distances(far), rtol=1e-5)
    assert loaded.threshold == pytest.approx(calibrated.threshold)
    # An ensemble of an ensemble and one more network: three blocks, in member order.
    assert [len(b) for b in combine_novelty([combined, first]).blocks] == [8, 8, 8]
    with pytest.raises(ValueError, match="different classes"):
        combine_novelty([first, fit_novelty(embeddings, labels, ("real", "a", "b"))])


def test_an_ensembles_embedding_is_its_members_side_by_side():
    import timm
    import torch

    from ldmdetect.models.ensemble import Ensemble

    torch.manual_seed(0)
    nets = [timm.create_model("resnet10t", num_classes=3).eval() for _ in range(2)]
    views = torch.randn(4, 3, 32, 32)  # two images, two views each, an image's views in a row
    alone = []
    with torch.no_grad():
        for net in nets:
            with EmbeddingTap(net) as tap:
                net(views)
            alone.append(tap.per_image(2))
        ensemble = Ensemble(nets, num_classes=3)
        with EmbeddingTap(ensemble) as tap:
            ensemble(views)
    together = tap.per_image(2)
    width = alone[0].shape[1]
    assert together.shape == (2, 2 * width)
    np.testing.assert_allclose(together[:, :width], alone[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(together[:, width:], alone[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(alone[0], alone[1])  # two networks, two different embeddings


def test_a_novel_image_is_unknown_whatever_its_verdict():
    probabilities = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.9, 0.05]])
    generated = np.array([False, True, True])
    got = attribute(probabilities, CLASSES, generated, 0.6, np.array([True, True, False]))
    assert [a.family for a in got] == [UNKNOWN, UNKNOWN, "sd-4ch"]
    # Without novelty flags a judged-real image keeps no family.
    assert attribute(probabilities, CLASSES, generated, 0.6)[0].family is None
    with pytest.raises(ValueError, match="novel flags"):
        attribute(probabilities, CLASSES, generated, 0.6, np.array([True]))
