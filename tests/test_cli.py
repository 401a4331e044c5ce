"""The command-line contract: verbs, outputs, exit statuses and error messages."""

import csv
import functools
import importlib
import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from ldmdetect.cli import ConfigDefaults, app, default_of
from ldmdetect.engine.train import TrainConfig
from ldmdetect.io.augment import AugmentConfig

runner = CliRunner()


def test_zoo_tiny_writes_a_pipeline(tmp_path):
    result = runner.invoke(app, ["zoo", "tiny", "--output", str(tmp_path / "sd")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sd" / "model_index.json").is_file()
    assert (tmp_path / "sd" / "vae" / "config.json").is_file()


def test_zoo_tiny_writes_each_family_and_generate_runs_it(tmp_path):
    result = runner.invoke(
        app, ["zoo", "tiny", "--family", "flux", "--output", str(tmp_path / "f")]
    )
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "f" / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    args = ["generate", "--pipeline", str(tmp_path / "f"), "--output", str(tmp_path / "out")]
    args += ["--prompt", "a cat", "--count", "1", "--size", "64", "--steps", "2"]
    args += ["--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    result = runner.invoke(app, ["zoo", "tiny", "--family", "dalle", "--output", str(tmp_path)])
    assert result.exit_code != 0 and "unknown tiny family 'dalle'" in result.output


def test_reconstruct_train_evaluate_scan(tmp_path, tiny_pipeline_dir, photo_dir, calibration_dir):
    data = tmp_path / "data"
    result = runner.invoke(
        app,
        [
            "reconstruct",
            str(photo_dir),
            "--output",
            str(data),
            "--autoencoder",
            str(tiny_pipeline_dir),
            "--crop-size",
            "32",
            "--crops-per-image",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "12 pairs" in result.output

    det = tmp_path / "det"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--output",
            str(det),
            "--backbone",
            "mobilenetv3_small_050",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--val-fraction",
            "0.34",
            "--device",
            "cpu",
            "--augment",
            "flip=0,jpeg_quality=70-90",
            "--ema-decay",
            "0.9",
            "--calibration-real",
            str(calibration_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "fpr_0.001: unresolved (needs at least 999 reals, has 120)" in result.output
    assert (det / "model.safetensors").is_file()
    trained = json.loads((det / "config.json").read_text())["training"]["config"]
    assert trained["ema_decay"] == 0.9
    saved = trained["augment"]
    augment = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    assert AugmentConfig(**augment) == AugmentConfig(flip=0.0, jpeg_quality=(70, 90))

    report = tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--detector",
            str(det),
            "--real",
            str(data / "real"),
            "--fake",
            str(data / "reconstructed"),
            "--perturb",
            "jpeg:75",
            "--format-control",
            "90",
            "--tries",
            "1",
            "--tries",
            "10",
            "--output",
            str(report),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| mean" in result.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert "jpeg:75" in metrics["robustness"] and set(metrics["tries"]) == {"1", "10"}

    bad = data / "real" / "zz-broken.png"
    bad.write_bytes(b"")
    out = tmp_path / "scan.csv"
    result = runner.invoke(
        app,
        [
            "scan",
            str(data / "real"),
            "--detector",
            str(det),
            "--output",
            str(out),
            "--fpr",
            "0.05",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 1  # one file failed
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 13
    assert rows[-1]["path"].endswith("zz-broken.png") and "empty" in rows[-1]["error"]
    assert all(r["label"] in {"real", "generated"} for r in rows[:-1])
    assert all(r["verdict"] in {"real", "uncertain", "generated"} for r in rows[:-1])
    bad.unlink()
    result = runner.invoke(
        app,
        ["scan", str(data / "real"), "--detector", str(det), "--tries", "10", "--device", "cpu"],
    )
    assert result.exit_code == 0
    # Rows on stdout, the summary on stderr (so a pipe gets CSV only).
    assert result.stdout.splitlines()[0] == "path,score,label,threshold,error,verdict"
    assert "12 files," in result.stderr and "flagged as generated" in result.stderr


def test_train_reports_on_the_main_process_only(tmp_path, aligned_dir, monkeypatch):
    # Under a distributed launch every rank runs the command; rank 0 alone writes and prints.
    args = ["train", "--data", str(aligned_dir), "--backbone", "mobilenetv3_small_050",
            "--epochs", "1", "--batch-size", "8", "--device", "cpu"]  # fmt: skip
    monkeypatch.setenv("RANK", "1")
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "rank1")])
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and not (tmp_path / "rank1").exists()
    monkeypatch.setenv("RANK", "0")
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "rank0")])
    assert result.exit_code == 0, result.output
    assert "saved detector to" in result.stdout
    assert (tmp_path / "rank0" / "model.safetensors").is_file()


def test_user_errors_are_one_line_and_exit_2(tmp_path, aligned_dir):
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(aligned_dir),
            "--output",
            str(tmp_path / "d"),
            "--backbone",
            "convnxt_large",
        ],
    )
    assert result.exit_code == 2
    assert "Did you mean" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["scan", str(aligned_dir), "--detector", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such directory" in result.output
    result = runner.invoke(
        app,
        [
            "reconstruct",
            str(aligned_dir),
            "--output",
            str(tmp_path / "r"),
            "--autoencoder",
            "stabilityai/stable-diffusion-2-1",
            "--subfolder",
            "vae",
        ],
    )
    assert result.exit_code == 2 and "stable-diffusion-2-1" in result.output
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(aligned_dir),
            "--output",
            str(tmp_path / "d"),
            "--backbone",
            "resnet18",
            "--pretrained",
        ],
    )
    assert result.exit_code == 2 and "--pretrained-file" in result.output


def test_generate_writes_a_fake_set(tmp_path, tiny_pipeline_dir):
    out = tmp_path / "fakes"
    result = runner.invoke(
        app,
        [
            "generate",
            "--pipeline",
            str(tiny_pipeline_dir),
            "--output",
            str(out),
            "--prompt",
            "a photo of a dog",
            "--prompt",
            "a photo of a bird",
            "--count",
            "3",
            "--steps",
            "2",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == [
        "00000_seed0.png",
        "00001_seed1.png",
        "00002_seed2.png",
    ]
    assert "a photo of a bird" in (out / "prompts.csv").read_text()


def test_zoo_mini_copies_the_shipped_pipeline(tmp_path):
    result = runner.invoke(app, ["zoo", "mini", "--output", str(tmp_path / "mini")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mini" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "mini" / "README.md").is_file()


def test_zoo_mini_flow_copies_the_shipped_sd3_pipeline(tmp_path):
    result = runner.invoke(app, ["zoo", "mini-flow", "--output", str(tmp_path / "flow")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "flow" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    index = json.loads((tmp_path / "flow" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert (tmp_path / "flow" / "README.md").is_file()


def test_scan_names_skipped_files_and_reports_missing_paths(tmp_path, detector_dir, aligned_dir):
    folder = tmp_path / "uploads"
    folder.mkdir()
    photo = sorted((aligned_dir / "real").glob("*.png"))[0]
    (folder / "a.png").write_bytes(photo.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    missing = tmp_path / "gone.jpg"
    result = runner.invoke(
        app,
        [
            "scan",
            str(folder),
            str(missing),
            "--detector",
            str(detector_dir),
            "--device",
            "cpu",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 1  # the missing path is a failed row, the scan went on
    lines = result.output.splitlines()
    scored = [line.split(",") for line in lines if line.startswith(str(folder / "a.png"))]
    assert len(scored) == 1 and float(scored[0][1]) >= 0 and scored[0][2] in {"real", "generated"}
    assert any(str(missing) in line and "no such file" in line for line in lines)
    assert "notes.txt" in result.output and "1 non-image file(s) skipped" in result.output


def test_scan_to_a_file_leaves_no_journal_and_resumes_one(tmp_path, detector_dir, aligned_dir):
    photos = sorted((aligned_dir / "real").glob("*.png"))[:3]
    output = tmp_path / "scores.csv"
    command = ["scan", *map(str, photos), "--detector", str(detector_dir), "--output"]
    command += [str(output), "--device", "cpu", "--workers", "0"]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "scores.csv.partial").exists()
    first = list(csv.DictReader(output.open()))
    # An interrupted run's journal holding the first row: the rerun takes it and ends alike.
    journal = tmp_path / "scores.csv.partial"
    from ldmdetect.detector import Detector
    from ldmdetect.engine.scan import scan

    scan(Detector.from_pretrained(detector_dir, device="cpu"), photos[:1], journal=journal)
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    assert f"resuming the interrupted scan recorded in {journal}" in result.output
    again = list(csv.DictReader(output.open()))
    assert not journal.exists()
    assert [(r["path"], r["label"]) for r in again] == [(r["path"], r["label"]) for r in first]
    # Row 1 was scored alone, not in a batch of 3: equal up to float summation order.
    for a, b in zip(again, first, strict=True):
        assert abs(float(a["score"]) - float(b["score"])) < 1e-6


def test_family_tags_from_reconstruct_through_train_to_scan(
    tmp_path, tiny_family_dir, photo_dir, calibration_dir
):
    data = tmp_path / "data"
    sd, flux = tiny_family_dir("sd"), tiny_family_dir("flux")
    result = runner.invoke(
        app,
        [
            *("reconstruct", str(photo_dir), "--output", str(data)),
            *("--autoencoder", f"sd15={sd}", "--autoencoder", f"flux1={flux}"),
            *("--crop-size", "32", "--crops-per-image", "2", "--device", "cpu"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((data / "manifest.csv").open()))
    assert sorted({r["family"] for r in rows}) == ["", "flux1", "sd15"]
    det = tmp_path / "det"
    result = runner.invoke(
        app,
        [
            *("train", "--data", str(data), "--output", str(det), "--backbone", "resnet10t"),
            *("--epochs", "2", "--batch-size", "4", "--val-fraction", "0.34", "--device", "cpu"),
            *("--calibration-real", str(calibration_dir)),
            # each family's own images as extra data (here its reconstructions stand in)
            *("--generated", f"sd15={data / 'reconstructed' / 'sd15'}"),
            *("--generated", f"flux1={data / 'reconstructed' / 'flux1'}"),
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((det / "config.json").read_text())
    assert config["families"] == ["sd15", "flux1"]
    generated = config["training"]["generated"]
    assert generated["train"]["flux1"] + generated["val"]["flux1"] == 12
    assert generated["folders"]["sd15"] == str(data / "reconstructed" / "sd15")
    out = tmp_path / "scan.csv"
    fakes = [str(data / "reconstructed" / family) for family in ("sd15", "flux1")]
    result = runner.invoke(
        app,
        ["scan", *fakes, "--detector", str(det), "--output", str(out), "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    scanned = list(csv.DictReader(out.open()))
    assert list(scanned[0])[6:] == ["family", "family_score", "p_real", "p_sd15", "p_flux1"]
    for row in scanned:
        if row["label"] == "real":  # no family, or "unknown" where novel to every class
            assert row["family"] in ("", "unknown")
        else:
            assert row["family"] in ("sd15", "flux1", "unknown")
    # The head learned the two autoencoders apart (on crops it mostly trained on).
    for family in ("sd15", "flux1"):
        own = [
            r["family"]
            for r in scanned
            if r["path"].startswith(str(data / "reconstructed" / family))
        ]
        assert len(own) == 12 and own.count(family) > len(own) / 2, own


def test_outlier_data_from_reconstruct_through_train_to_scan(
    tmp_path, two_family_aligned_dir, photo_dir, calibration_dir
):
    """``train --outlier-data``: reconstructions through an autoencoder of no known family
    teach the head an ``other`` class; scanned, that autoencoder's images are "unknown" and
    the known families keep their names (on crops it mostly trained on)."""
    from ldmdetect.generative.tiny import build_tiny_autoencoder

    build_tiny_autoencoder(seed=5).save_pretrained(tmp_path / "aux-vae")
    outliers = tmp_path / "outliers"
    result = runner.invoke(
        app,
        [
            *("reconstruct", str(photo_dir), "--output", str(outliers)),
            *("--autoencoder", f"aux={tmp_path / 'aux-vae'}"),
            *("--crop-size", "32", "--crops-per-image", "2", "--device", "cpu"),
        ],
    )
    assert result.exit_code == 0, result.output
    det = tmp_path / "det"
    result = runner.invoke(
        app,
        [
            *("train", "--data", str(two_family_aligned_dir), "--output", str(det)),
            *("--outlier-data", str(outliers), "--backbone", "resnet10t", "--epochs", "3"),
            *("--batch-size", "4", "--val-fraction", "0.34", "--device", "cpu"),
            *("--calibration-real", str(calibration_dir)),
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((det / "config.json").read_text())
    assert config["families"] == ["sd-4ch", "flux-16ch", "other"]
    assert config["training"]["outliers"] == [str(outliers)]
    out = tmp_path / "scan.csv"
    recon = two_family_aligned_dir / "reconstructed"
    sets = {"aux": outliers / "reconstructed", "sd-4ch": recon / "sd-4ch"}
    result = runner.invoke(
        app,
        [
            *("scan", *map(str, sets.values()), "--detector", str(det)),
            *("--output", str(out), "--device", "cpu"),
        ],
    )
    assert result.exit_code == 0, result.output
    scanned = list(csv.DictReader(out.open()))
    assert "p_other" in scanned[0] and {r["family"] for r in scanned} <= {
        "",
        "sd-4ch",
        "flux-16ch",
        "unknown",
    }
    for name, folder in sets.items():
        found = [r["family"] for r in scanned if r["path"].startswith(str(folder))]
        expected = "unknown" if name == "aux" else name
        assert len(found) == 12 and found.count(expected) > len(found) / 2, (name, found)


def test_train_refuses_a_generated_folder_without_family(tmp_path, two_family_aligned_dir):
    args = ["train", "--data", str(two_family_aligned_dir), "--output", str(tmp_path / "d")]
    result = runner.invoke(app, [*args, "--generated", "gens"])
    assert result.exit_code == 2 and "expected FAMILY=DIR" in result.output


def test_evaluate_reports_attribution_for_a_family_head(
    tmp_path, family_detector_dir, two_family_aligned_dir
):
    recon = two_family_aligned_dir / "reconstructed"
    args = ["evaluate", "--detector", str(family_detector_dir), "--device", "cpu"]
    args += ["--real", str(two_family_aligned_dir / "real"), "--output", str(tmp_path / "r")]
    args += ["--fake", str(recon / "sd-4ch"), "--fake", str(recon / "flux-16ch")]
    result = runner.invoke(app, [*args, "--family", "flux-16ch=sdxl-4ch"])
    assert result.exit_code == 0, result.output
    section = json.loads((tmp_path / "r" / "metrics.json").read_text())["attribution"]
    # sd-4ch by its name; flux-16ch's folder mapped to a family the head does not know.
    assert section["rows"] == ["sd-4ch", "sdxl-4ch", "real"]
    assert section["sets"]["flux-16ch"]["family"] == "sdxl-4ch"
    line = next(x for x in result.output.splitlines() if x.startswith("attribution accuracy"))
    assert f"{section['accuracy']:.1%} over {section['n']} images" in line
    assert f"sdxl-4ch {section['accuracy_per_family']['sdxl-4ch']:.1%}" in line
    assert (tmp_path / "r" / "attribution_confusion.png").is_file()
    result = runner.invoke(app, [*args, "--family", "nope"])
    assert result.exit_code == 2 and "expected SET=FAMILY" in result.output
    result = runner.invoke(app, [*args, "--family", "elsewhere=sd-4ch"])
    assert result.exit_code != 0 and "['elsewhere']" in result.output


# Commands whose options have a counterpart in a config dataclass or an API function: the CLI
# default must be that counterpart's (one default per setting).
OWNERS = {
    "generate": ["generative.sampling:generate_images", "generative.sampling:load_pipeline"],
    "reconstruct": [
        "engine.reconstruct:ReconstructConfig",
        "engine.reconstruct:build_aligned_dataset",
    ],
    "train": ["engine.train:TrainConfig"],
    "extract": ["engine.extract:extract_features"],
    "evaluate": ["engine.evaluate:evaluate", "detector:Detector.from_pretrained"],
    "scan": ["engine.scan_run:ScanOptions"],
    "demo": ["engine.demo:DemoConfig"],
    "serve": [
        "serve.app:create_app",
        "serve.server:run_server",
        "detector:Detector.from_pretrained",
    ],
    "synris": ["engine.synris:SynRISConfig"],
}
RENAMED = {("generate", "guidance"): "guidance_scale"}
SPELLED = {
    ("train", "augment"): AugmentConfig.to_spec,
    ("demo", "methods"): ",".join,
    ("reconstruct", "scales"): lambda scales: ",".join(f"{s:g}" for s in scales),
}
# Stated in the CLI on purpose (the check that they agree still applies).
STATED = {
    ("serve", "fpr"),  # reading the service's defaults needs the serve extra,
    ("serve", "host"),  # and without it `serve` must still print how to install it
    ("serve", "port"),
}
DIFFERENT = {
    ("train", "feature"),  # KEY=VALUE strings, merged into TrainConfig.feature's dict
}


def _owner(path: str):
    module, _, attribute = path.partition(":")
    module = module if module.startswith("ldmdetect.") else f"ldmdetect.{module}"
    return functools.reduce(getattr, attribute.split("."), importlib.import_module(module))


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_cli_defaults_are_the_configs_defaults(name):
    if name == "serve":
        pytest.importorskip("fastapi")
    command = typer.main.get_command(app).commands[name]
    ctx = command.make_context(name, [], resilient_parsing=True)
    owners = [_owner(path) for path in OWNERS[name]]
    checked = []
    for param in command.params:
        if (name, param.name) in DIFFERENT or param.param_type_name != "option":
            continue
        setting = RENAMED.get((name, param.name), param.name)
        for owner in owners:
            try:
                expected = default_of(owner, setting)
            except KeyError:
                continue
            if (name, param.name) in SPELLED:
                expected = SPELLED[name, param.name](expected)
            actual = param.get_default(ctx)
            if isinstance(expected, tuple):
                expected, actual = list(expected), list(actual)
            assert actual == expected, f"{name} --{param.name}: {actual!r} != {expected!r}"
            if (name, param.name) not in STATED:
                # Not stated in the CLI: read from the owner, so changing it changes the CLI.
                assert param.default is None, f"{name} --{param.name} repeats its default"
            checked.append(param.name)
            break
    assert checked, f"{name}: no option has a counterpart; update OWNERS"


def test_default_of_reads_fields_factories_and_keywords():
    assert default_of(TrainConfig, "epochs") == TrainConfig().epochs
    assert default_of(TrainConfig, "augment") == AugmentConfig()
    assert default_of(_owner("engine.scan:scan"), "fpr") == 0.01
    with pytest.raises(KeyError, match="no default for 'nope'"):
        default_of(TrainConfig, "nope")


def test_config_defaults_build_the_owner_from_a_commands_values():
    settings = ConfigDefaults(
        "ldmdetect.engine.train:TrainConfig", "epochs", "seed", augment=("augment", str)
    )
    params = {"epochs": 3, "seed": 7, "augment": "none", "output": "runs/x"}
    cfg = settings.build(params, seed=11, num_workers=2)
    # Named options are taken, given values win, a converted one is left to the caller.
    assert (cfg.epochs, cfg.seed, cfg.num_workers) == (3, 11, 2)
    assert cfg.augment == TrainConfig().augment


def test_top_level_help_imports_no_engine_module():
    code = (
        "import sys; from typer.testing import CliRunner; from ldmdetect.cli import app; "
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
        "print(sorted(m for m in sys.modules if m.startswith(('torch', 'ldmdetect.engine'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _command_paths(group, prefix=()):
    """Every command of the CLI as its argument path, subcommand groups included."""
    for name, command in group.commands.items():
        if getattr(command, "commands", None):  # a group (typer may not use click's classes)
            yield from _command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_every_commands_help_renders():
    """Option help is rendered as rich markup: a bracketed word like ``[/TAG]`` is a closing
    tag and crashed ``--help``; every command's help must print."""
    import typer.main

    group = typer.main.get_command(app)
    paths = list(_command_paths(group))
    assert ("synris",) in paths and ("zoo", "mini-flow") in paths
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output, result.exception)
