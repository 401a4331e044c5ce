"""Given pairs (JSONL): usable entries kept, the rest skipped and counted by reason."""

import json

from ldmdetect.engine.synris import read_pairs_jsonl, run_synris


def test_pairs_jsonl_skips_and_counts_unusable_entries(synris_known, embedder, tmp_path):
    fake, real = synris_known / "fake", synris_known / "pool"
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
