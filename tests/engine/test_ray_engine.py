"""The Ray Data engine agrees with the local engine, row for row, on a 2-CPU local Ray."""

import json
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

from ldmdetect.cli import app  # noqa: E402
from ldmdetect.detector import Detector  # noqa: E402
from ldmdetect.engine.extract import extract_features  # noqa: E402
from ldmdetect.engine.ray_engine import ray_extract, ray_scan, scores_by_path  # noqa: E402
from ldmdetect.engine.scan import scan  # noqa: E402
from ldmdetect.features.cache import FeatureCache  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One Ray session for the module (starting Ray takes seconds), always a new local one."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture()
def inputs(aligned_dir: Path, tmp_path: Path) -> list[Path]:
    real = sorted((aligned_dir / "real").glob("*.png"))[:4]
    fake = sorted((aligned_dir / "reconstructed").glob("*.png"))[:4]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    return [*real, bad, *fake, tmp_path / "gone.png"]


def _parquet_rows(output: Path) -> dict[str, dict]:
    import pyarrow.dataset as pds

    table = pds.dataset(str(output), format="parquet").to_table()
    assert table.column_names == ["path", "score", "label", "threshold", "error", "verdict"]
    return {row["path"]: row for row in table.to_pylist()}


def test_ray_scan_rows_equal_the_local_engines(detector_dir, inputs, tmp_path):
    output = tmp_path / "scan"
    # 3 crops per image and 6 crops per device batch: 2 images per Ray batch, 5 batches.
    options = ["--tries", "3", "--batch-size", "6", "--fpr", "0.05", "--device", "cpu"]
    ray_options = ["--engine", "ray", "--ray-actors", "1", "--output", str(output)]
    notes = tmp_path / "notes"  # a folder whose one file is no image: named and counted
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    paths = [*map(str, inputs), str(notes)]
    result = CliRunner().invoke(
        app, ["scan", *paths, "--detector", str(detector_dir), *options, *ray_options]
    )
    local = scan(Detector.from_pretrained(detector_dir, device="cpu"), inputs, tries=3, fpr=0.05)
    flagged = sum(r.label == "generated" for r in local)
    assert result.exit_code == 1, result.output  # failed files are rows, and the status says so
    assert f"10 files, {flagged} flagged as generated, 2 failed" in result.output
    assert "readme.txt" in result.output and "1 non-image file(s) skipped" in result.output
    rows = _parquet_rows(output)
    assert sorted(rows) == sorted(str(p) for p in inputs)
    for expected in local:
        row = rows[expected.path]
        assert (row["label"], row["threshold"], row["error"]) == (
            expected.label,
            expected.threshold,
            expected.error,
        )
        if expected.error:
            assert row["score"] is None
        else:
            np.testing.assert_allclose(row["score"], expected.score, rtol=1e-5, atol=1e-6)
    bad, gone = str(inputs[4]), str(inputs[-1])
    assert "not a recognised image" in rows[bad]["error"] and "not found" in rows[gone]["error"]
    scores = scores_by_path(output)
    assert np.isnan(scores[bad]) and 0 <= scores[str(inputs[0])] <= 1


def test_ray_scan_refuses_to_mix_with_an_earlier_output(detector_dir, inputs, tmp_path):
    output = tmp_path / "scan"
    output.mkdir()
    (output / "old.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="not an empty directory"):
        ray_scan(detector_dir, inputs, output, device="cpu")


def test_ray_rows_of_a_three_class_method_carry_one_p_class_column_per_class(
    three_class_detector_dir, inputs
):
    """The actor's Parquet table in this process: the throwaway method is registered here
    only, so Ray's worker processes would not find it."""
    from ldmdetect.engine.ray_engine import ScoreBatch

    actor = ScoreBatch(
        str(three_class_detector_dir),
        tries=2,
        fpr=None,
        batch_size=8,
        device="cpu",
        pipeline=None,
        max_pixels=None,
    )
    table = actor({"path": np.array([str(p) for p in inputs])})
    classes = actor.detector.method.classes
    columns = ["path", "score", "label", "threshold", "error", "verdict"]
    assert table.column_names == columns + [f"p_{c}" for c in classes]
    local = scan(actor.detector, inputs, tries=2, fpr=None)
    for row, expected in zip(table.to_pylist(), local, strict=True):
        got = [row[f"p_{c}"] for c in classes]
        if expected.error:
            assert got == [None] * len(classes) and row["score"] is None
        else:
            want = [expected.probabilities[c] for c in classes]
            np.testing.assert_allclose(got, want, rtol=1e-5)
            np.testing.assert_allclose(row["score"], expected.score, rtol=1e-5)
    # a batch with nothing scored still has every column, so the blocks share one schema
    failed = actor({"path": np.array([str(inputs[4])])})
    assert failed.column_names == table.column_names and failed.schema == table.schema


def test_ray_rows_of_a_family_head_carry_family_columns(
    family_detector_dir, two_family_aligned_dir, tmp_path
):
    from ldmdetect.engine.ray_engine import ScoreBatch
    from ldmdetect.engine.reconstruct import read_aligned_dataset

    pairs = read_aligned_dataset(two_family_aligned_dir)[:2]
    paths = [str(p.real) for p in pairs] + [str(f) for p in pairs for _, f in p.reconstructions]
    paths.append(str(tmp_path / "gone.png"))
    actor = ScoreBatch(
        str(family_detector_dir),
        tries=1,
        fpr=None,
        batch_size=8,
        device="cpu",
        pipeline=None,
        max_pixels=None,
    )
    table = actor({"path": np.array(paths)})
    columns = ["path", "score", "label", "threshold", "error", "verdict", "family"]
    assert table.column_names == [*columns, "family_score", "p_real", "p_sd-4ch", "p_flux-16ch"]
    local = scan(actor.detector, paths, fpr=None)
    for row, expected in zip(table.to_pylist(), local, strict=True):
        if expected.error:
            assert row["family"] is None and row["family_score"] is None
        else:
            assert row["family"] == expected.family
            assert (row["family_score"] is None) == (expected.family_score is None)
    assert {r["family"] for r in table.to_pylist()} - {None, ""}  # some file has a family
    failed = actor({"path": np.array(paths[-1:])})
    assert failed.schema == table.schema


LARE = {"lare": {"image_size": 64, "ensemble": 2}}


def _shard_ids(cache_dir: Path) -> list[list[str]]:
    from safetensors import safe_open

    ids = []
    for shard in sorted(cache_dir.glob("shard-*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            ids.append(json.loads(handle.metadata()["ids"]))
    return ids


def test_ray_extract_resumes_the_same_cache_from_several_actors(
    aligned_dir, tiny_pipeline_dir, tmp_path
):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, files in ((first, slice(0, 4)), (second, slice(4, 8))):
        folder.mkdir()
        for f in sorted((aligned_dir / "real").glob("*.png"))[files]:
            (folder / f.name).write_bytes(f.read_bytes())
    (second / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    local_dir, ray_dir = tmp_path / "local", tmp_path / "ray"
    options = {"pipeline": tiny_pipeline_dir, "feature": LARE}
    local = extract_features("lare2", [first, second], local_dir, **options)
    # A stopped run left the first folder's maps; the Ray run adds the rest.
    extract_features("lare2", [first], ray_dir, **options)
    summary = ray_extract(
        "lare2",
        [first, second],
        ray_dir,
        batch_size=2,
        shard_size=3,  # 9 paths in batches of 3: several shards, written by 2 actors
        device="cpu",
        actors=2,
        **options,
    )
    assert (summary.images, summary.computed, summary.already_cached) == (9, 4, 4)
    assert summary.errors == local.errors and "truncated" in next(iter(summary.errors.values()))
    shards = _shard_ids(ray_dir)
    assert len(shards) >= 3 and all(shards)  # the first run's + at least 2 new, none empty
    assert sorted(i for ids in shards for i in ids) == sorted(FeatureCache(local_dir).keys())
    expected, got = FeatureCache(local_dir), FeatureCache(ray_dir)
    assert (got.root / "cache.json").read_text() == (expected.root / "cache.json").read_text()
    for key in list(expected.keys()):
        np.testing.assert_allclose(got[key]["lare"], expected[key]["lare"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="other settings"):
        ray_extract(
            "lare2",
            [first],
            ray_dir,
            pipeline=tiny_pipeline_dir,
            feature={"lare": {"image_size": 64, "ensemble": 3}},
        )


class _Cluster:
    """What ``ray.cluster_resources()`` says of a cluster with 2 GPUs and 8 CPUs."""

    @staticmethod
    def cluster_resources() -> dict[str, float]:
        return {"CPU": 8.0, "GPU": 2.0}


@pytest.mark.parametrize(
    ("device", "actors", "size", "resources", "actor_device"),
    [
        ("auto", None, 2, {"num_gpus": 1}, "cuda"),
        ("cuda", 1, 1, {"num_gpus": 1}, "cuda"),
        ("cpu", None, 7, {"num_cpus": 1}, "cpu"),
        ("cpu", 3, 3, {"num_cpus": 1}, "cpu"),
    ],
)
def test_one_gpu_per_actor_where_the_cluster_has_gpus(
    device, actors, size, resources, actor_device
):
    from ldmdetect.engine.ray_engine import _pool

    compute, per_actor, on = _pool(_Cluster, actors, device)
    assert (compute.min_size, compute.max_size) == (size, size)
    assert (per_actor, on) == (resources, actor_device)
