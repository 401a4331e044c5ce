"""Training: ``ldmdetect train`` (a detector from data) and ``ldmdetect calibrate`` (its
thresholds re-derived from your own real images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ldmdetect.cli.common import (
    ConfigDefaults,
    command,
    echo_not_images,
    feature_settings,
    finish,
    num_workers,
)
from ldmdetect.cli.options import (
    BatchSize,
    CalibrationReals,
    Captioner,
    Device,
    FeatureOptions,
    GeneratorPipeline,
    PipelineOverride,
    PromptTemplate,
    Revision,
    Workers,
)

commands = typer.Typer()

#: Views per image the thresholds are set at (calibrate, ensemble).
CalibrationTries = Annotated[
    int | None, typer.Option(help="Views per image (default: the detector's own).")
]


#: ``train``'s options that are :class:`TrainConfig` settings.
TRAIN_SETTINGS = ConfigDefaults(
    "ldmdetect.engine.train:TrainConfig",
    "method",
    "backbone",
    "pretrained",
    "input_size",
    "epochs",
    "batch_size",
    "lr",
    "val_fraction",
    "seed",
    "device",
    "channels_last",
    "ema_decay",
    augment=("augment", lambda augment: augment.to_spec()),
)


@command(commands, TRAIN_SETTINGS)
def train(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option(help="Detector directory to write.")],
    data: Annotated[
        list[Path] | None, typer.Option(help="Aligned dataset directory (repeatable).")
    ] = None,
    generated: Annotated[
        list[str] | None,
        typer.Option(
            help="FAMILY=DIR: a generator's own images as extra training data of that family "
            "for a family head (repeatable; FAMILY as tagged in the --data sets)."
        ),
    ] = None,
    outlier_data: Annotated[
        list[Path] | None,
        typer.Option(
            help="Aligned dataset reconstructed through autoencoders of none of the head's "
            "families (repeatable): its reconstructions train an extra 'other' class, so "
            "images of autoencoders the head does not know are called 'unknown'."
        ),
    ] = None,
    real: Annotated[
        list[Path] | None, typer.Option(help="Real images: folder or CSV manifest (repeatable).")
    ] = None,
    fake: Annotated[
        list[Path] | None,
        typer.Option(help="Generated images: folder or CSV manifest (repeatable)."),
    ] = None,
    genimage: Annotated[
        list[Path] | None,
        typer.Option(help="GenImage-layout root: <generator>/train/{nature,ai} (repeatable)."),
    ] = None,
    method: Annotated[str | None, typer.Option(help="ae, lare2, ... (see README).")] = None,
    pipeline: GeneratorPipeline = None,
    revision: Revision = None,
    features: Annotated[
        Path | None,
        typer.Option(help="Feature cache from `ldmdetect extract` (default: computed on the fly)."),
    ] = None,
    feature: FeatureOptions = None,
    prompt_template: PromptTemplate = None,
    captioner: Captioner = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="Default: the method's. ae: any timm name (convnext_large, "
            "eva02_large_patch14_224, tf_efficientnetv2_b0, resnet50, ...); lare2: "
            "openclip:RN50 or timm:<name>."
        ),
    ] = None,
    pretrained: Annotated[bool | None, typer.Option(help="Start from pretrained weights.")] = None,
    pretrained_file: Annotated[
        Path | None, typer.Option(help="Local timm checkpoint to start from (offline).")
    ] = None,
    input_size: Annotated[
        int | None, typer.Option(help="Default: the method's (ae: the dataset's crop).")
    ] = None,
    epochs: int | None = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples (or pairs) per batch.")] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="Default: the method's; else 1e-4 with --pretrained, 1e-3 from scratch."),
    ] = None,
    augment: Annotated[
        str | None,
        typer.Option(
            help="Training augmentation: KEY=VALUE,... over flip, jpeg_prob, jpeg_grid_shift, "
            "resize_prob, blur_prob (probabilities) and jpeg_quality, resize_scale, blur_sigma "
            "(LOW-HIGH ranges); keys left out keep their defaults; 'none' turns it off."
        ),
    ] = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    device: Device = None,
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last",
            help="Train in channels-last memory format (default: on a GPU only; on a CPU it "
            "speeds up EfficientNets and slows ConvNeXt).",
        ),
    ] = None,
    ema_decay: Annotated[
        float | None,
        typer.Option(
            help="Save an exponential moving average of the weights with this decay (e.g. "
            "0.995) instead of the last step's; default: the last step's."
        ),
    ] = None,
    calibration_real: CalibrationReals = None,
    workers: Workers = None,
) -> None:
    """Train a detector (or calibrate a training-free one); saves config.json + weights.

    The thresholds are set on --calibration-real, else on the held-out validation reals.
    """
    from ldmdetect.engine.train import is_main_process, train_detector
    from ldmdetect.io.augment import AugmentConfig
    from ldmdetect.io.labeled import read_genimage, read_labeled

    examples = read_labeled(real or [], fake or [])
    for root in genimage or []:
        examples += read_genimage(root, "train")
    cfg = TRAIN_SETTINGS.build(
        ctx.params,
        pretrained=str(pretrained_file) if pretrained_file else pretrained,
        num_workers=num_workers(workers),
        augment=AugmentConfig.from_spec(augment),
        feature=feature_settings(feature, prompt_template, captioner),
        calibration_reals=tuple(str(p) for p in calibration_real or ()),
    )
    detector = train_detector(
        data or [],
        output,
        cfg,
        examples=examples,
        pipeline=pipeline,
        revision=revision,
        feature_cache=features,
        progress=True,
        generated=[_family_folder(spec) for spec in generated or ()],
        outliers=outlier_data or (),
    )
    if not is_main_process():
        return  # under a distributed launch every rank returns the same detector; one reports
    history = detector.config.training["history"]
    if history:
        typer.echo(json.dumps(history[-1]))
    source = detector.config.weights_source
    if source == "random":
        typer.secho(
            f"note: {detector.config.backbone} started from random weights (no --pretrained)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    else:
        typer.echo(f"backbone weights: {source}")
    skipped = detector.config.training.get("skipped_files", {})
    for path, reason in skipped.items():
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    from ldmdetect.engine.calibrate import describe

    typer.echo(f"saved detector to {output}")
    typer.echo(describe(detector.config.calibration))


def _family_folder(spec: str) -> tuple[str, Path]:
    """``FAMILY=DIR`` -> (family, folder), with an error that names the value otherwise."""
    family, sep, folder = spec.partition("=")
    if not sep or not family.strip() or not folder.strip():
        raise typer.BadParameter(f"{spec!r}: expected FAMILY=DIR", param_hint="--generated")
    return family.strip(), Path(folder.strip())


@command(
    commands,
    ConfigDefaults("ldmdetect.engine.calibrate:calibrate_detector", "batch_size", "device"),
)
def calibrate(
    detector: Annotated[str, typer.Option(help="Detector directory to calibrate.")],
    real: CalibrationReals,
    output: Annotated[
        Path, typer.Option(help="Where the recalibrated detector goes (may be --detector).")
    ],
    tries: CalibrationTries = None,
    batch_size: BatchSize = None,
    device: Device = None,
    workers: Workers = None,
    pipeline: PipelineOverride = None,
) -> None:
    """Re-derive every threshold from your own real images, without retraining.

    Each threshold records how many reals and sources set it and a 95% upper bound on its
    false-positive rate; one the reals cannot resolve (a 0.1% threshold needs 999) is recorded
    as unresolved and refused by scan and serve. Unreadable files are named and skipped.
    An aligned dataset (`ldmdetect reconstruct`'s output) gives its real crops; for a family
    head its reconstructions also re-derive the family threshold, else training's stays.
    """
    from ldmdetect.engine.calibrate import calibrate_detector, describe

    result = calibrate_detector(
        detector,
        real,
        output,
        tries=tries,
        batch_size=batch_size,
        num_workers=num_workers(workers),
        device=device,
        pipeline=pipeline,
        progress=True,
    )
    echo_not_images(result.skipped)
    finish(
        result.errors,
        f"{describe(result.config.calibration)}\nsaved calibrated detector to {result.output}",
    )


@command(
    commands, ConfigDefaults("ldmdetect.engine.ensemble:ensemble_detectors", "batch_size", "device")
)
def ensemble(
    detectors: Annotated[
        list[str],
        typer.Argument(help="Two or more detector directories of one method and classes."),
    ],
    output: Annotated[Path, typer.Option(help="Where the combined detector goes.")],
    real: CalibrationReals = None,
    tries: CalibrationTries = None,
    batch_size: BatchSize = None,
    device: Device = None,
) -> None:
    """Combine detectors trained with different seeds into one whose score is their mean
    probability (a deep ensemble): the low-FPR threshold and the family answers move less from
    one training run to the next. Its thresholds are its own: pass --real, or run
    `ldmdetect calibrate` on it afterwards.
    """
    from ldmdetect.engine.calibrate import describe
    from ldmdetect.engine.ensemble import ensemble_detectors

    result = ensemble_detectors(
        detectors, output, reals=real or (), tries=tries, batch_size=batch_size, device=device
    )
    echo_not_images(result.skipped)
    config = result.detector.config
    summary = f"saved an ensemble of {config.members} networks to {result.output}"
    if real:
        summary = f"{describe(config.calibration)}\n{summary}"
    else:
        summary += "\nuncalibrated: run `ldmdetect calibrate` on it with real images"
    finish(result.errors, summary)
