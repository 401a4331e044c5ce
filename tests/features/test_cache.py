import pytest
import torch

from ldmdetect.features.cache import FeatureCache


def _entry(i: int) -> dict[str, torch.Tensor]:
    return {"lare": torch.full((4, 8, 8), float(i)), "label": torch.tensor([i % 2])}


def test_entries_round_trip_through_shards(tmp_path):
    with FeatureCache(tmp_path, settings={"t": 200}, shard_size=3) as cache:
        for i in range(7):
            cache[f"img{i}.png"] = _entry(i)
        assert "img6.png" in cache and len(cache) == 7
        torch.testing.assert_close(cache["img6.png"]["lare"], _entry(6)["lare"])  # pending
    assert len(list(tmp_path.glob("shard-*.safetensors"))) == 3
    reopened = FeatureCache(tmp_path, settings={"t": 200})
    assert sorted(reopened.keys()) == [f"img{i}.png" for i in range(7)]
    for i in (0, 4, 6):
        got = reopened[f"img{i}.png"]
        torch.testing.assert_close(got["lare"], _entry(i)["lare"])
        assert got["label"].item() == i % 2


def test_an_interrupted_run_keeps_written_shards_and_resumes(tmp_path):
    cache = FeatureCache(tmp_path, shard_size=2)
    for i in range(5):
        cache[str(i)] = _entry(i)
    # no flush: the process "dies" with entry 4 still buffered
    resumed = FeatureCache(tmp_path, shard_size=2)
    assert sorted(resumed.keys()) == ["0", "1", "2", "3"]
    todo = [str(i) for i in range(5) if str(i) not in resumed]
    assert todo == ["4"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_other_settings_refuse_the_cache(tmp_path):
    FeatureCache(tmp_path, settings={"timestep": 200, "prompt": "a photo"})
    with pytest.raises(ValueError, match="other settings"):
        FeatureCache(tmp_path, settings={"timestep": 400, "prompt": "a photo"})


def test_bad_entries_are_refused(tmp_path):
    cache = FeatureCache(tmp_path)
    cache["a"] = _entry(1)
    with pytest.raises(KeyError, match="already cached"):
        cache["a"] = _entry(2)
    with pytest.raises(ValueError):
        cache["b"] = {}
    with pytest.raises(KeyError):
        cache["missing"]


def test_reopening_without_settings_reads_with_the_stored_ones(tmp_path):
    with FeatureCache(tmp_path, settings={"t": 200}) as cache:
        cache["a"] = {"x": torch.ones(2)}
    reader = FeatureCache(tmp_path)
    assert reader.settings == {"t": 200} and reader["a"]["x"].tolist() == [1.0, 1.0]
