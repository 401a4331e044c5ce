"""benchmarks/cross_family.py: the paired AUC difference and the score rows behave as stated,
the options reach the budget, and the protocol runs end to end (both directions, same- and
cross-family rows, the training-free references, the comparison) on a tiny SD pipeline (A)
and a tiny SD3 one (B), at ``--quick``'s settings shrunk further (the tiny models need no
more)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
GENERATED = 6  # images per family


@pytest.fixture(scope="module")
def bench(import_script) -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # it reads mini_ldm_detection.py beside it
        yield import_script(BENCHMARKS / "cross_family.py", "cross_family_benchmark")


def test_paired_difference_is_zero_for_one_score_and_signed_for_two(bench) -> None:
    rng = np.random.default_rng(0)
    noise = {"real": rng.normal(size=30), "B": rng.normal(size=20)}
    perfect = {"real": np.zeros(30), "B": np.ones(20)}
    same = bench.paired_auc_difference(noise, noise, "B", n_boot=50)
    assert same == {"auc_difference": 0.0, "ci95": [0.0, 0.0]}
    better = bench.paired_auc_difference(perfect, noise, "B", n_boot=200)
    assert better["auc_difference"] > 0.2
    low, high = better["ci95"]
    assert 0 < low <= better["auc_difference"] <= high <= 1
    with pytest.raises(ValueError, match="different images"):
        bench.paired_auc_difference(perfect, {"real": np.zeros(3), "B": np.ones(20)}, "B", n_boot=5)


def test_score_rows_have_metrics_counts_and_intervals_per_test_set(bench) -> None:
    real = np.linspace(0, 1, 40)
    rows = bench.score_rows(real, {"A": real + 2, "B": real}, n_boot=100, seconds_per_image=0.5)
    assert rows["A"]["auc"] == 1.0 and rows["A"]["ci95"]["auc"] == [1.0, 1.0]
    assert rows["B"]["auc"] == pytest.approx(0.5, abs=0.01)
    assert rows["B"]["n_real"] == rows["B"]["n_fake"] == 40
    assert rows["B"]["ci95"]["auc"][0] < 0.5 < rows["B"]["ci95"]["auc"][1]


def test_options_pick_the_budget_and_the_json_is_written(
    bench, monkeypatch, tmp_path: Path
) -> None:
    seen = {}

    def fake_run(work, budget, generator_a, generator_b, on_seed=None):
        seen.update(budget=budget, generators=(generator_a, generator_b))
        on_seed({"cross_family": {"partial": True}})  # written at once where --output says
        seen["after_seed"] = json.loads(output.read_text()) if output.is_file() else None
        return {"cross_family": {}}

    monkeypatch.setattr(bench, "run", fake_run)
    output = tmp_path / "results" / "cross.json"
    args = ["--quick", "--methods", "ae", "dire", "--device", "cuda", "--output", str(output)]
    assert bench.main(args) == json.loads(output.read_text()) == {"cross_family": {}}
    assert seen["after_seed"] == {"cross_family": {"partial": True}}
    quick = bench.BUDGETS["quick"]
    assert seen["budget"] == replace(
        quick, methods=("ae", "dire"), demo=replace(quick.demo, device="cuda")
    )
    assert seen["generators"] == ("mini", "mini-flow")
    bench.main(["--seeds", "4", "5", "--generator-b", "other"])
    assert seen["budget"].seeds == (4, 5) and seen["budget"].methods == bench.METHODS
    assert seen["generators"] == ("mini", "other")
    bench.main(["--budget", "cpu", "--threads", "1", "--output", str(output)])
    cpu = bench.BUDGETS["cpu"]
    assert seen["budget"] == replace(cpu, demo=replace(cpu.demo, threads=1))
    assert not cpu.demo.photo_crops and cpu.seeds == (0, 1, 2)
    with pytest.raises(ValueError, match="aeroblad"):  # before any training
        bench.main(["--methods", "aeroblad"])


def test_a_generator_that_cannot_load_fails_before_any_training(
    bench, tiny_pipeline_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-pipeline"
    with pytest.raises(ValueError, match=r"generator B .*no-such-pipeline.* cannot be loaded"):
        bench.run(tmp_path / "work", bench.BUDGETS["quick"], str(tiny_pipeline_dir), str(missing))
    assert not (tmp_path / "work" / "seed-0").exists()


@pytest.fixture(scope="module")
def result(bench, tiny_pipeline_dir: Path, tiny_family_dir, tmp_path_factory) -> dict:
    quick = bench.BUDGETS["quick"]
    budget = replace(
        quick,
        methods=("ae", "aeroblade"),
        n_boot=50,
        demo=replace(
            quick.demo,
            eval_size=64,
            train_crops_per_image=4,
            eval_crops_per_image=4,
            generated_images=GENERATED,
            generation_steps=2,
            method_settings=bench._fewer_epochs("ae", 1),
        ),
    )
    work = tmp_path_factory.mktemp("cross-family")
    a, b = tiny_pipeline_dir, tiny_family_dir("sd3")
    return bench.run(work, budget, str(a), str(b), log=lambda _: None) | {
        "labels": (a.name, b.name),
        "budget_used": budget,
    }


def _in_range(row: dict) -> None:
    for metric in ("auc", "ap", "tpr@fpr=0.01"):
        assert 0.0 <= row[metric] <= 1.0, row
    for low, high in row["ci95"].values():
        assert 0.0 <= low <= high <= 1.0, row


def _key(row: dict, name: str = "method") -> tuple[str, str, str]:
    return row[name], row["train_family"], row["test_family"]


def test_every_method_direction_and_test_family_has_a_row(result) -> None:
    cross = result["cross_family"]
    label_a, label_b = result["labels"]
    assert {k: v["family"] for k, v in cross["families"].items()} == {label_a: "sd", label_b: "sd3"}
    runs = {k: v["runs"]["0"] for k, v in cross["families"].items()}
    rows = {_key(r): r for r in cross["rows"]}
    expected = {(m, t, u) for m in ("ae", "aeroblade") for t in runs for u in runs}
    assert set(rows) == expected and len(cross["rows"]) == len(expected)
    for (_, train, test), row in rows.items():
        _in_range(row)
        assert row["relation"] == ("same family" if train == test else "cross family")
        assert row["n_real"] == len(list(Path(runs[train]["reals"]).glob("*.png"))) > 0
        assert row["n_fake"] == GENERATED
    for row in cross["aggregated"]:
        assert row["auc"]["per_seed"] == [rows[_key(row)]["auc"]]
        assert row["auc"]["std"] is None  # one seed
        assert row["ci95_per_seed"] == [rows[_key(row)]["ci95"]]
    assert {_key(r) for r in cross["aggregated"]} == expected


def test_cross_rows_scored_the_other_generators_images(result) -> None:
    """Same prompts and seeds for both families, other pixels: B's own images, not A's."""
    runs = {k: v["runs"]["0"] for k, v in result["cross_family"]["families"].items()}
    label_a, label_b = result["labels"]
    files_a, files_b = (
        sorted(Path(runs[k]["generated"]).glob("*.png")) for k in (label_a, label_b)
    )
    assert [p.name for p in files_a] == [p.name for p in files_b] and len(files_b) == GENERATED
    for path_a, path_b in zip(files_a, files_b, strict=True):
        with Image.open(path_a) as image_a, Image.open(path_b) as image_b:
            assert not np.array_equal(np.asarray(image_a), np.asarray(image_b))


def test_training_free_references_score_the_same_images(result) -> None:
    cross = result["cross_family"]
    rows = {_key(r): r for r in cross["rows"]}
    free = cross["training_free"]
    refs = {_key(r, "reference"): r for r in free["rows"]}
    assert (
        {k[0] for k in refs}
        == set(free["scores"])
        == {
            "inversion_error",
            "lare_mean",
            "aeroblade_distance",
        }
    )
    assert len(refs) == len(free["rows"]) == 3 * 2 * 2
    for (ref, train, test), row in refs.items():
        _in_range(row)
        assert (row["n_real"], row["n_fake"]) == (
            rows["ae", train, test]["n_real"],
            rows["ae", train, test]["n_fake"],
        )
        if ref == "aeroblade_distance":
            assert row["auc"] == rows["aeroblade", train, test]["auc"]
    assert {_key(r, "reference") for r in free["aggregated"]} == set(refs)


def test_comparison_is_the_learned_auc_minus_its_reference(result) -> None:
    cross = result["cross_family"]
    rows = {_key(r): r for r in cross["rows"]}
    refs = {_key(r, "reference"): r for r in cross["training_free"]["rows"]}
    comparison = cross["comparison"]
    assert comparison["built_on"] == {"ae": "aeroblade_distance"}
    assert len(comparison["rows"]) == 2 * 2
    for row in comparison["rows"]:
        _, train, test = _key(row)
        learned = rows["ae", train, test]["auc"]
        reference = refs["aeroblade_distance", train, test]["auc"]
        assert row["auc_difference"] == pytest.approx(learned - reference, abs=2e-4)
        low, high = row["ci95"]
        assert -1.0 <= low <= high <= 1.0
    assert len(comparison["aggregated"]) == 4


def _as_seed(content: dict, seed: int) -> dict:
    """``content`` (one seed-0 run) as if run with ``seed``."""
    content = json.loads(json.dumps(content))
    part = content["cross_family"]
    part["seeds"] = [seed]
    for rows in (part["rows"], part["training_free"]["rows"], part["comparison"]["rows"]):
        for row in rows:
            row["seed"] = seed
    for family in part["families"].values():
        family["runs"] = {str(seed): family["runs"]["0"]}
    content["budgets"] = {str(seed): content["budgets"]["0"]}
    return content


def test_merge_aggregates_the_seeds_of_several_runs(bench, result) -> None:
    one = {k: v for k, v in result.items() if k not in ("labels", "budget_used")}
    merged = bench.merge([one, _as_seed(one, 1)])
    cross = merged["cross_family"]
    assert cross["seeds"] == [0, 1] and cross["complete"]
    assert len(cross["rows"]) == 2 * len(one["cross_family"]["rows"])
    single = {_key(r): r for r in one["cross_family"]["rows"]}
    for row in cross["aggregated"]:
        auc = single[_key(row)]["auc"]
        assert row["auc"]["per_seed"] == [auc, auc] and row["auc"]["std"] == 0.0
    for family in cross["families"].values():
        assert set(family["runs"]) == {"0", "1"}
    assert len(cross["comparison"]["aggregated"]) == len(
        one["cross_family"]["comparison"]["aggregated"]
    )
    with pytest.raises(ValueError, match="more than one run"):
        bench.merge([one, one])
    other = _as_seed(one, 2) | {"n_boot": 7}
    with pytest.raises(ValueError, match="n_boot"):
        bench.merge([one, other])
    other = _as_seed(one, 2)
    other["config"]["train_crops_per_image"] += 1  # trained otherwise: no merge
    with pytest.raises(ValueError, match="config"):
        bench.merge([one, other])


def test_markdown_has_a_row_per_method_and_family_and_each_comparison(bench, result) -> None:
    one = {k: v for k, v in result.items() if k not in ("labels", "budget_used")}
    text = bench.markdown(bench.merge([one, _as_seed(one, 1)]))
    label_a, label_b = result["labels"]
    for method in ("ae", "aeroblade", "inversion_error", "lare_mean"):
        for family in (label_a, label_b):
            assert f"| {method} | {family} |" in text
    auc = next(r for r in one["cross_family"]["rows"] if r["method"] == "ae")["auc"]
    assert f"{auc:.3f} ± 0.000" in text  # two identical seeds: no spread
    assert text.count("| ae | aeroblade_distance |") == 4  # 2 training x 2 test families


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds_per_image"} for row in rows]


def test_the_clean_budget_trains_and_scores_as_its_full_one(
    bench, result, tiny_pipeline_dir: Path, tiny_family_dir, tmp_path: Path
) -> None:
    """``result``'s run again with the demo's own evaluation off: the same rows (the same
    detectors, reals and test images), without the demo's evaluation and second generation."""
    budget = result["budget_used"]
    clean = replace(budget, name="quick-clean", demo=replace(budget.demo, evaluate=False))
    a, b = tiny_pipeline_dir, tiny_family_dir("sd3")
    fast = bench.run(tmp_path / "clean", clean, str(a), str(b), log=lambda _: None)
    full, part = result["cross_family"], fast["cross_family"]
    assert part["rows"] and _without_timing(part["rows"]) == _without_timing(full["rows"])
    for table in ("training_free", "comparison"):
        assert _without_timing(part[table]["rows"]) == _without_timing(full[table]["rows"])
    for label, family in part["families"].items():
        run, before = family["runs"]["0"], full["families"][label]["runs"]["0"]
        assert not any(s.startswith("evaluate_") or s == "generate_unseen" for s in run["seconds"])
        assert "evaluate_ae" in before["seconds"] and "generate_unseen" in before["seconds"]
        for key in ("reals", "generated"):
            old, new = sorted(Path(before[key]).glob("*.png")), sorted(Path(run[key]).glob("*.png"))
            assert [p.name for p in old] == [p.name for p in new] and new
            for path_old, path_new in zip(old, new, strict=True):
                assert np.array_equal(_pixels(path_old), _pixels(path_new))
    assert fast["budgets"] == {"0": "quick-clean"} and fast["config"]["evaluate"] is False
    merged = bench.merge(
        [{k: v for k, v in result.items() if k not in ("labels", "budget_used")}, _as_seed(fast, 1)]
    )
    assert merged["budgets"] == {"0": "quick", "1": "quick-clean"}
    assert "evaluate" not in merged["config"]  # the seeds differ in it; what they train agrees


def test_the_cpu_budgets_train_as_the_published_seeds_did(bench) -> None:
    """Both CPU budgets' training settings are the ones the committed table's JSON records,
    whatever DemoConfig's and the recipes' defaults become."""
    published = json.loads((BENCHMARKS / "results" / "cross_family-cpu.json").read_text())
    recorded = bench.training_settings(published["config"])
    for name in ("cpu", "cpu-clean"):
        demo = replace(bench.BUDGETS[name].demo, threads=published["config"]["threads"])
        settings = bench.training_settings(bench.demo_settings(demo, bench.METHODS))
        assert bench._canonical(settings) == bench._canonical(recorded), name
    assert not bench.BUDGETS["cpu-clean"].demo.evaluate and bench.BUDGETS["cpu"].demo.evaluate
    assert set(bench.budget_names(published).values()) <= {"cpu", "cpu-clean"}
    # A JSON recorded before budgets were named: the budget its settings match.
    unnamed = {k: v for k, v in published.items() if k not in ("budget", "budgets")}
    assert set(bench.budget_names(unnamed).values()) == {"cpu"}
    unnamed["config"] = unnamed["config"] | {"eval_size": 96}
    assert set(bench.budget_names(unnamed).values()) == {"unrecorded"}
