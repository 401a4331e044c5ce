"""The pool index: embedded once, saved, and read back only while pool and embedder match."""

import numpy as np
import pytest
import torch

from ldmdetect.engine.synris import build_pool_index, embed_files, run_synris


def test_index_is_reused_while_the_pool_is_unchanged(synris_known, embedder, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    for path in sorted((synris_known / "pool").glob("*.jpg"))[:8]:
        (pool / path.name).write_bytes(path.read_bytes())
    fakes = [synris_known / "fake" / "coffee.png", synris_known / "fake" / "flower.png"]
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


def test_embed_files_gives_unit_rows_and_names_unreadable_files(synris_known, embedder):
    paths = [synris_known / "fake" / "coffee.png", synris_known / "fake" / "truncated.png"]
    kept, vectors, errors = embed_files(embedder, paths, batch_size=1)
    assert kept == [str(paths[0])]
    assert list(errors) == [str(paths[1])]
    assert vectors.dtype == np.float32 and vectors.shape[0] == 1
    assert torch.allclose(torch.from_numpy(vectors).norm(dim=1), torch.ones(1), atol=1e-5)


def test_pool_without_a_readable_image_is_an_error(synris_known, embedder, tmp_path):
    with pytest.raises(ValueError, match="no readable real images"):
        build_pool_index(embedder, [synris_known / "pool" / "broken.jpg"], tmp_path)
