"""SynRIS: reverse image search over a real pool, given pairs, and the evaluate section.

The known-answer case runs the real pretrained offline embedder (ImageNet EfficientNet-Lite0):
a pool holding JPEG-85, 95%-crop copies of the fakes' sources among distractor photos must
give every fake exactly its own copy.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ldmdetect.cli import app
from ldmdetect.detector import Detector
from ldmdetect.engine.evaluate import evaluate
from ldmdetect.engine.metrics import roc_auc
from ldmdetect.engine.scan import score_files
from ldmdetect.engine.synris import (
    SynRISConfig,
    greedy_assignment,
    read_pairs_csv,
    read_pairs_jsonl,
    run_synris,
    synris_row,
)
from ldmdetect.features.embeddings import OFFLINE_EMBEDDER, load_embedder
from ldmdetect.io.images import load_image, save_png
from ldmdetect.io.samples import sample_photos

# Fakes' sources; the other bundled photos are distractors. The motorcycle stereo pair (two
# views of one scene) stays on the distractor side: as a source its twin would be a true
# near-duplicate, not a distractor.
SOURCES = ("astronaut", "chelsea", "coffee", "flower", "retina", "rocket")


def _small(path, size=128):
    image = load_image(path)
    image.thumbnail((size, size))
    return image


def _perturbed_copy(image: Image.Image) -> Image.Image:
    """A 95% crop, a little off-centre: what a re-upload of the picture looks like."""
    w, h = image.size
    cw, ch = round(0.95 * w), round(0.95 * h)
    return image.crop((w - cw - 1, 1, w - 1, ch + 1))


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(OFFLINE_EMBEDDER)


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """fake/<source>.png, pool/copy_<source>.jpg (JPEG 85 of a 95% crop) + distractors."""
    root = tmp_path_factory.mktemp("synris")
    photos = dict(sample_photos())
    assert set(SOURCES) <= set(photos), "bundled photos missing"
    (root / "fake").mkdir()
    (root / "pool").mkdir()
    for name, path in photos.items():
        image = _small(path)
        if name in SOURCES:
            save_png(image, root / "fake" / f"{name}.png")
            _perturbed_copy(image).save(root / "pool" / f"copy_{name}.jpg", quality=85)
        else:
            image.save(root / "pool" / f"other_{name}.jpg", quality=85)
    (root / "pool" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / "fake" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "fake" / "notes.txt").write_text("not an image")
    return root


def _copy_of(fake_path: str) -> str:
    from pathlib import Path

    return f"copy_{Path(fake_path).stem}.jpg"


def test_known_answer_retrieves_the_perturbed_copies(known, embedder, tmp_path):
    result = run_synris(
        tmp_path, fake=[known / "fake"], real_pool=[known / "pool"], embedder=embedder
    )
    assert len(result.pairs) == len(SOURCES)
    for pair in result.pairs:
        assert pair.real.endswith(_copy_of(pair.fake)), pair
    # Bad files in either set are named and skipped, not fatal.
    assert set(result.errors) == {
        str(known / "pool" / "broken.jpg"),
        str(known / "fake" / "truncated.png"),
    }
    summary = json.loads((tmp_path / "synris.json").read_text())
    assert summary["embedder"]["name"] == OFFLINE_EMBEDDER
    assert "offline package" in summary["embedder"]["weights_source"]
    assert summary["n_pool"] == 12 and summary["max_uses_of_one_real"] == 1
    assert summary["non_image_files"] == [str(known / "fake" / "notes.txt")]
    # pairs.csv round-trips; similarities are cosines, the copies' well above chance.
    read = read_pairs_csv(tmp_path / "pairs.csv")
    assert [(p.fake, p.real) for p in read] == [(p.fake, p.real) for p in result.pairs]
    assert all(0.6 < p.similarity <= 1.0 + 1e-6 for p in read)
    with Image.open(tmp_path / "contact_sheet.png") as sheet:
        assert sheet.width == 2 * 160 + 18 and sheet.height > 6 * 160
    assert (tmp_path / "index.faiss").is_file()
    pool = json.loads((tmp_path / "pool.json").read_text())
    assert len(pool["files"]) == 12 and list(pool["errors"]) == [str(known / "pool" / "broken.jpg")]


def test_each_real_used_once_unless_reuse_is_allowed(known, embedder, tmp_path):
    # Two fakes of one source (the second mirrored): both are closest to the same copy.
    fakes = tmp_path / "fakes"
    astronaut = load_image(known / "fake" / "astronaut.png")
    save_png(astronaut, fakes / "astronaut.png")
    save_png(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT), fakes / "astronaut_mirror.png")
    save_png(load_image(known / "fake" / "coffee.png"), fakes / "coffee.png")
    pool = [known / "pool"]

    once = run_synris(tmp_path / "once", fake=[fakes], real_pool=pool, embedder=embedder)
    reals = [p.real for p in once.pairs]
    assert len(set(reals)) == 3
    by_fake = {p.fake.rsplit("/", 1)[-1]: p for p in once.pairs}
    assert by_fake["coffee.png"].real.endswith("copy_coffee.jpg")
    # The closer of the two astronauts keeps the copy; the other gets the next free real.
    astro = [by_fake["astronaut.png"], by_fake["astronaut_mirror.png"]]
    winner, loser = sorted(astro, key=lambda p: -p.similarity)
    assert winner.real.endswith("copy_astronaut.jpg")
    assert not loser.real.endswith("copy_astronaut.jpg")
    assert once.summary["max_uses_of_one_real"] == 1

    config = SynRISConfig(allow_reuse=True)
    reuse = run_synris(
        tmp_path / "reuse", fake=[fakes], real_pool=pool, config=config, embedder=embedder
    )
    reused = {p.fake.rsplit("/", 1)[-1]: p.real for p in reuse.pairs}
    assert reused["astronaut.png"].endswith("copy_astronaut.jpg")
    assert reused["astronaut_mirror.png"].endswith("copy_astronaut.jpg")
    assert reuse.summary["max_uses_of_one_real"] == 2

    # A pool smaller than the fakes cannot pair each fake with its own real.
    small_pool = [known / "pool" / "copy_coffee.jpg", known / "pool" / "copy_flower.jpg"]
    with pytest.raises(ValueError, match="allow reuse"):
        run_synris(tmp_path / "small", fake=[fakes], real_pool=small_pool, embedder=embedder)


def test_greedy_assignment_takes_pairs_by_descending_similarity():
    # Fake 1 is closer to real 0 than fake 0 is, so real 0 goes to fake 1 and fake 0 falls
    # back to its second candidate; fake 2's only candidate is taken (-1: fetch more).
    sims = np.array([[0.9, 0.4], [0.95, 0.5], [0.8, -1.0]], dtype=np.float32)
    ids = np.array([[0, 2], [0, 1], [0, -1]])
    real_of, sim_of = greedy_assignment(sims, ids, n_real=3)
    assert real_of.tolist() == [2, 0, -1]
    assert sim_of[:2] == pytest.approx([0.4, 0.95])
    assert np.isnan(sim_of[2])


def test_index_is_reused_while_the_pool_is_unchanged(known, embedder, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    for path in sorted((known / "pool").glob("*.jpg"))[:8]:
        (pool / path.name).write_bytes(path.read_bytes())
    fakes = [known / "fake" / "coffee.png", known / "fake" / "flower.png"]
    first = run_synris(tmp_path / "out", fake=fakes, real_pool=[pool], embedder=embedder)
    assert first.summary["index_reused"] is False
    again = run_synris(tmp_path / "out", fake=fakes, real_pool=[pool], embedder=embedder)
    assert again.summary["index_reused"] is True
    assert [p.real for p in again.pairs] == [p.real for p in first.pairs]
    assert [p.similarity for p in again.pairs] == pytest.approx([p.similarity for p in first.pairs])
    assert first.pairs[0].real.endswith("copy_coffee.jpg")
    # A pool file now holding another picture: the index is rebuilt, not trusted.
    (pool / "copy_coffee.jpg").write_bytes((pool / "other_china.jpg").read_bytes())
    changed = run_synris(tmp_path / "out", fake=fakes, real_pool=[pool], embedder=embedder)
    assert changed.summary["index_reused"] is False
    assert not changed.pairs[0].real.endswith("copy_coffee.jpg")


def test_pairs_jsonl_skips_and_counts_unusable_entries(known, embedder, tmp_path):
    fake, real = known / "fake", known / "pool"
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "rel.png").write_bytes((fake / "flower.png").read_bytes())
    lines = [
        {"fake": str(fake / "coffee.png"), "real": str(real / "copy_coffee.jpg")},
        {"fake": "rel.png", "real": f"file://{real / 'copy_flower.jpg'}"},  # relative, file URL
        {"fake": None, "real": str(real / "copy_rocket.jpg")},
        {"fake": str(fake / "rocket.png")},  # no real
        {"fake": str(fake / "retina.png"), "real": str(real / "gone.jpg")},
        {"fake": str(fake / "astronaut.png"), "real": "https://example.com/astronaut.jpg"},
        {"fake": str(tmp_path / "text.png"), "real": str(real / "copy_chelsea.jpg")},
        ["not", "an", "object"],
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n\n"
    (tmp_path / "given.jsonl").write_text(text)

    given = read_pairs_jsonl(tmp_path / "given.jsonl")
    assert len(given.pairs) == 3  # text.png is a file; it fails only when decoded
    assert given.counts == {
        "fake is null": 1,
        "real is null": 1,
        "real file missing": 1,
        "real is a URL": 1,
        "not a JSON object": 1,
        "not JSON": 1,
    }
    result = run_synris(tmp_path / "out", pairs_jsonl=tmp_path / "given.jsonl", embedder=embedder)
    assert [(p.fake.rsplit("/", 1)[-1], p.real.rsplit("/", 1)[-1]) for p in result.pairs] == [
        ("coffee.png", "copy_coffee.jpg"),
        ("rel.png", "copy_flower.jpg"),
    ]
    assert result.skipped["unreadable or not an image"] == 1
    assert result.skipped["real is a URL"] == 1
    assert list(result.errors) == [str(tmp_path / "text.png")]
    assert all(p.similarity > 0.6 for p in result.pairs)  # both are true copies
    summary = json.loads((tmp_path / "out" / "synris.json").read_text())
    assert summary["mode"] == "given pairs" and len(summary["skipped_lines"]) == 6


def test_evaluate_pairs_reports_matched_next_to_unmatched(
    known, embedder, detector_dir, photo_dir, tmp_path
):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    run_synris(
        tmp_path / "syn", fake=[known / "fake"], real_pool=[known / "pool"], embedder=embedder
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


def test_synris_row_for_the_demo(known, embedder, detector_dir, photo_dir, tmp_path):
    detector = Detector.from_pretrained(detector_dir, device="cpu")
    fakes = sorted((known / "fake").glob("*.png"))[:4]
    row = synris_row(
        detector, fakes, [known / "pool"], [photo_dir], tmp_path, embedder=embedder, n_boot=100
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


def test_auto_embedder_falls_back_offline_and_says_so():
    # Tests run with the hub set offline and no CLIP weights cached.
    embedder = load_embedder("auto")
    assert embedder.name == OFFLINE_EMBEDDER
    assert "unavailable" in embedder.note and OFFLINE_EMBEDDER in embedder.note
    with pytest.raises(ValueError, match="unknown kind"):
        load_embedder("clip:ViT-B-32")


def test_openclip_embedder_from_a_local_checkpoint(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": 16,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "tiny-clip-synris.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tiny-clip-synris.json")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-synris")
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    embedder = load_embedder(f"openclip:tiny-clip-synris/{tmp_path / 'tiny.pt'}")
    assert embedder.weights_source == f"file {tmp_path / 'tiny.pt'}"
    photos = [_small(path, 64) for _, path in sample_photos()[:3]]
    vectors = embedder.embed_images(photos)
    assert vectors.shape == (3, 16)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    # The tower is the checkpoint's: its image encoder gives the same directions.
    expected = model.eval().encode_image(torch.stack([embedder.preprocess(p) for p in photos]))
    assert torch.allclose(vectors, torch.nn.functional.normalize(expected, dim=1), atol=1e-5)


def test_cli_synris_then_evaluate_pairs(known, detector_dir, photo_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "syn"
    result = runner.invoke(
        app,
        [
            "synris",
            "--fake",
            str(known / "fake"),
            "--real-pool",
            str(known / "pool"),
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
