"""Assignment: nearest real per fake, each real at most once unless reuse is allowed."""

import numpy as np
import pytest
from PIL import Image

from ldmdetect.engine.synris import PoolIndex, SynRISConfig, greedy_assignment, run_synris
from ldmdetect.engine.synris.assign import match_to_pool
from ldmdetect.io.images import load_image, save_png


def test_each_real_used_once_unless_reuse_is_allowed(synris_known, embedder, tmp_path):
    # Two fakes of one source (the second mirrored): both are closest to the same copy.
    fakes = tmp_path / "fakes"
    astronaut = load_image(synris_known / "fake" / "astronaut.png")
    save_png(astronaut, fakes / "astronaut.png")
    save_png(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT), fakes / "astronaut_mirror.png")
    save_png(load_image(synris_known / "fake" / "coffee.png"), fakes / "coffee.png")
    pool = [synris_known / "pool"]

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
    small_pool = [
        synris_known / "pool" / "copy_coffee.jpg",
        synris_known / "pool" / "copy_flower.jpg",
    ]
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


def test_fakes_whose_candidates_are_taken_get_a_longer_list():
    faiss = pytest.importorskip("faiss")
    reals = np.eye(3, dtype=np.float32)
    index = faiss.IndexFlatIP(3)
    index.add(reals)
    pool = PoolIndex(index, ["a", "b", "c"], {}, {}, reused=False)
    # Both fakes are nearest to real 0; with one candidate each the less similar fake has
    # none left, and the search is repeated with more until it gets real 2, its next best.
    fakes = np.array([[1.0, 0.0, 0.0], [0.8, 0.0, 0.6]], dtype=np.float32)
    real_of, sim_of = match_to_pool(pool, fakes, allow_reuse=False, candidates=1)
    assert real_of.tolist() == [0, 2]
    assert sim_of == pytest.approx([1.0, 0.6])
    real_of, _ = match_to_pool(pool, fakes, allow_reuse=True, candidates=1)
    assert real_of.tolist() == [0, 0]
