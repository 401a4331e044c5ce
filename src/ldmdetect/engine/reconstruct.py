"""Aligned datasets: real crops and their LDM-autoencoder reconstructions, pair by pair.

Both members of a pair are written as lossless PNG with matching names, so that nothing but
the autoencoder's trace (no file format, no content, no size) can separate the two classes.

A dataset may reconstruct every crop through several autoencoders, one per generator family
(``--autoencoder NAME=SRC`` repeated): each reconstruction is tagged with its family in the
manifest's ``family`` column, which a family head (``train --method ae``) learns to tell apart.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ldmdetect.engine.loader import load_each
from ldmdetect.features.reconstruction import reconstruct
from ldmdetect.generative.autoencoder import (
    autoencoder_scale_factor,
    load_autoencoder,
    resolve_autoencoder_source,
)
from ldmdetect.generative.loading import ComponentSource
from ldmdetect.io.crops import Box, crop_boxes, ensure_min_size
from ldmdetect.io.datasets import find_images, read_manifest
from ldmdetect.io.files import atomic_write_text
from ldmdetect.io.hub import SourceUnavailable
from ldmdetect.io.images import DEFAULT_MAX_PIXELS, load_image, pil_to_uint8, save_png, uint8_to_pil
from ldmdetect.io.jpeg import JpegSettings, read_jpeg_settings, reencode_like

MANIFEST_NAME = "manifest.csv"
DATASET_INFO_NAME = "dataset.json"
MANIFEST_FIELDS = (
    "path",
    "label",
    "pair_id",
    "source",
    "left",
    "top",
    "right",
    "bottom",
    "scale",
    "jpeg_quality",
    "family",  # the reconstruction's autoencoder family tag; empty for reals
)
#: A family tag: also a folder name under ``reconstructed/`` when there are several.
_FAMILY_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
AutoencoderSource = str | os.PathLike | ComponentSource | torch.nn.Module


@dataclass
class ReconstructConfig:
    """How crops are taken and reconstructed. ``crop_size=0`` reconstructs whole images."""

    crop_size: int = 256
    crops_per_image: int = 1
    crop_policy: str = "random"
    sample: bool = True  # sample the AE posterior, as generation does; False = its mean
    seed: int = 0
    batch_size: int = 8
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    # Crops are cut from the image at each of these scales (1 = native resolution; 0.5 =
    # downscaled to half first, with antialiasing), ``crops_per_image`` at each scale the
    # image is still large enough for. Users scan 2-50 Mpx photos at native resolution as
    # well as resized copies; a detector that saw only one kind flags the other.
    scales: tuple[float, ...] = (1.0,)
    # Frequency alignment (DDA): a JPEG real's reconstruction is JPEG-encoded with the real's
    # own quantisation tables and subsampling, and native-resolution crops are cut on the
    # 16-pixel grid, so the pair differs by the autoencoder only, not by the high
    # frequencies JPEG removed from the real (see ldmdetect.io.jpeg).
    align_jpeg: bool = False

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        if not self.scales or not all(0.0 < s <= 1.0 for s in self.scales):
            raise ValueError(f"scales must lie in (0, 1], got {self.scales}")


@dataclass
class ReconstructSummary:
    output: Path
    pairs: int = 0
    written: int = 0
    resumed: int = 0
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AlignedPair:
    """A real crop and its reconstructions: (family tag, path) per autoencoder it went
    through ("" for a dataset written before family tags)."""

    pair_id: str
    source: str
    real: Path
    reconstructions: tuple[tuple[str, Path], ...]

    @property
    def reconstructed(self) -> Path:
        """The first reconstruction (the only one in a single-autoencoder dataset)."""
        return self.reconstructions[0][1]

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(family for family, _ in self.reconstructions)


@dataclass(frozen=True)
class _Crop:
    pair_id: str
    source: str
    box: Box  # in the (possibly downscaled) image the crop was cut from
    pixels: torch.Tensor  # uint8 (3, H, W)
    done: bool = False  # every PNG of the pair already on disk (a resumed run)
    scale: float = 1.0
    jpeg: JpegSettings | None = None  # the real's settings, when its partner is aligned


def pair_seed(seed: int, pair_id: str) -> int:
    """The 64-bit seed of one pair's posterior noise: a stable hash of (run seed, pair id).

    The pair id names the source image and the crop index, so the noise of a pair depends on
    nothing else (not the batch it lands in, nor which pairs a resumed run still has to do).
    SeedSequence mixes the two numbers, so nearby run seeds do not reuse each other's noise.
    """
    words = [int(seed) & 0xFFFFFFFF, int(seed) >> 32, zlib.crc32(pair_id.encode("utf-8"))]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])


def _pair_generators(seed: int, crops: Sequence[_Crop]) -> list[torch.Generator]:
    # CPU generators: the same noise on any device (diffusers moves it to the VAE's device).
    return [torch.Generator().manual_seed(pair_seed(seed, c.pair_id)) for c in crops]


def _source_list(sources: Sequence[str | os.PathLike]) -> list[tuple[Path, str]]:
    """(file, name unique within the dataset) for folders (recursive) and CSV manifests."""
    items: list[tuple[Path, str]] = []
    for source in sources:
        source = Path(source)
        if source.suffix.lower() == ".csv":
            rows = read_manifest(source)
            items += [
                (Path(r["path"]), _relative_name(Path(r["path"]), source.parent)) for r in rows
            ]
        elif source.is_dir():
            items += [(p, _relative_name(p, source)) for p in find_images([source])]
        else:
            items += [(p, p.name) for p in find_images([source])]
    # Drop the extension from names ("cat.jpg" -> "cat") unless that makes two names collide.
    stems = Counter(name.rsplit(".", 1)[0] for _, name in items)
    return [(p, n.rsplit(".", 1)[0] if stems[n.rsplit(".", 1)[0]] == 1 else n) for p, n in items]


def _relative_name(path: Path, root: Path) -> str:
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path(path.name)
    return "__".join(rel.parts)


@dataclass(frozen=True)
class _CropSource:
    """Picklable loader work: decode one source image and cut its crops."""

    config: ReconstructConfig
    scale_factor: int
    names: dict[str, str]

    def __call__(self, path: str) -> list[_Crop]:
        cfg = self.config
        original = load_image(path, max_pixels=cfg.max_pixels)
        name = self.names[path]
        jpeg = read_jpeg_settings(path) if cfg.align_jpeg else None
        crops: list[_Crop] = []
        for scale in cfg.scales:
            image = original if scale == 1.0 else _downscaled(original, scale)
            if scale != 1.0 and min(image.size) < max(cfg.crop_size, 1):
                continue  # too small at this scale; native crops still cover the image
            if cfg.crop_size > 0:
                image = ensure_min_size(image, cfg.crop_size)
            # "name_c000" at native resolution (as before scales existed), "name_x0.5_c000".
            prefix = name if scale == 1.0 else f"{name}_x{scale:g}"
            for k, box in enumerate(self._boxes(image, prefix, aligned=jpeg and scale == 1.0)):
                crops.append(
                    _Crop(
                        f"{prefix}_c{k:03d}",
                        path,
                        box,
                        pil_to_uint8(image.crop(box)),
                        scale=scale,
                        jpeg=jpeg,
                    )
                )
        return crops

    def _boxes(self, image, name: str, *, aligned: bool) -> list[Box]:
        cfg = self.config
        if cfg.crop_size <= 0:
            f = self.scale_factor
            return [(0, 0, image.width - image.width % f, image.height - image.height % f)]
        # Seeded by the image's name, so a rerun (resume) cuts exactly the same crops.
        rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
        boxes = crop_boxes(
            image.width,
            image.height,
            cfg.crop_size,
            policy=cfg.crop_policy,
            n=cfg.crops_per_image,
            rng=rng,
        )
        if aligned:  # on the real's 16-pixel grid (JPEG's 4:2:0 macroblocks)
            boxes = [(x - x % 16, y - y % 16, r - x % 16, b - y % 16) for x, y, r, b in boxes]
        return boxes


def _downscaled(image, scale: float):
    """``image`` resized by ``scale`` (< 1) with Pillow's antialiasing filter."""
    from PIL import Image

    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class _Autoencoder:
    family: str
    vae: torch.nn.Module
    component: ComponentSource | None


def _paths(output: Path, pair_id: str, families: Sequence[str]) -> tuple[Path, list[Path]]:
    """The real crop's PNG and one reconstruction PNG per family: ``reconstructed/<pair>.png``
    for a single autoencoder (the layout of datasets before families), else
    ``reconstructed/<family>/<pair>.png``; every one named like the real."""
    name = f"{pair_id}.png"
    if len(families) == 1:
        return output / "real" / name, [output / "reconstructed" / name]
    return output / "real" / name, [output / "reconstructed" / f / name for f in families]


def parse_autoencoder(text: str) -> tuple[str | None, str]:
    """``--autoencoder NAME=SRC`` -> (NAME, SRC); a plain ``SRC`` -> (None, SRC), its family
    tag then derived from the autoencoder (:func:`derived_family`)."""
    name, sep, source = text.partition("=")
    if sep and _FAMILY_TAG.fullmatch(name) and source and not Path(text).exists():
        return name, source
    return None, text


def derived_family(vae: torch.nn.Module, component: ComponentSource | None) -> str:
    """The family tag of an autoencoder given without a name: its pipeline's family (``sd``,
    ``sdxl``, ``sd3``, ``flux``, from a local pipeline's ``model_index.json``; ``vae`` where
    there is none to read) and its latent channels, e.g. ``sd-4ch``."""
    from ldmdetect.generative.families import pipeline_family

    family = "vae"
    if component is not None and component.subfolder and component.is_local:
        # Not a pipeline this package knows: the autoencoder alone names it.
        with contextlib.suppress(ValueError, OSError, SourceUnavailable):
            family = pipeline_family(component.id, revision=component.revision).name
    return f"{family}-{int(vae.config.latent_channels)}ch"


def _load_autoencoders(
    autoencoder: AutoencoderSource | Sequence[tuple[str | None, AutoencoderSource]],
    family: str | None,
    subfolder: str | None,
    device: str | torch.device | None,
) -> list[_Autoencoder]:
    """Each autoencoder loaded with its family tag; a tag two of them share is an error."""
    if isinstance(autoencoder, list | tuple) and not isinstance(autoencoder, ComponentSource):
        given = list(autoencoder)
        if not given:
            raise ValueError("no autoencoder given")
        if family is not None:
            raise ValueError("name the families inside the list of autoencoders, not with family=")
    else:
        given = [(family, autoencoder)]
    loaded: list[_Autoencoder] = []
    named: dict[str, bool] = {}  # tag -> whether it was given (not derived)
    for name, source in given:
        if isinstance(source, torch.nn.Module):
            vae, component = source, None
        else:
            component = resolve_autoencoder_source(source, subfolder=subfolder)
            vae = load_autoencoder(component, device=device)
        tag = name if name is not None else derived_family(vae, component)
        if not _FAMILY_TAG.fullmatch(tag):
            raise ValueError(
                f"family tag {tag!r}: use letters, digits and . _ + - (it names a folder)"
            )
        if tag in named:
            what = component.id if component is not None else "an autoencoder module"
            raise ValueError(
                f"two autoencoders have the family tag {tag!r} (the second: {what}); "
                + (
                    "give each a name of its own"
                    if name is not None and named[tag]
                    else "name them with --autoencoder NAME=SRC"
                )
            )
        named[tag] = name is not None
        loaded.append(_Autoencoder(tag, vae, component))
    return loaded


def build_aligned_dataset(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    autoencoder: AutoencoderSource | Sequence[tuple[str | None, AutoencoderSource]],
    subfolder: str | None = None,
    family: str | None = None,
    config: ReconstructConfig | None = None,
    device: str | torch.device | None = "auto",
    num_workers: int = 0,
    progress: bool = False,
) -> ReconstructSummary:
    """Write ``real/``, ``reconstructed/``, ``manifest.csv`` and ``dataset.json`` to ``output``.

    ``autoencoder`` is one source (hub id, directory, ComponentSource or a loaded module),
    tagged ``family`` or with :func:`derived_family`'s tag; or a list of (family or None,
    source), every real crop then reconstructed through each (same pair id, same box), one
    PNG per family under ``reconstructed/<family>/``.

    Resumable: pairs whose PNGs all exist are kept, and a resumed run writes the same bytes
    an uninterrupted one would: each pair's posterior noise comes from its own seed
    (``pair_seed``), and batches are formed as in a fresh run (pairs already done still take
    their place in a batch that has work left), so every reconstruction goes through the very
    same computation. Files that fail to decode are reported in the summary's ``errors`` and
    skipped; the rest of the run completes.
    """
    config = config or ReconstructConfig()
    output = Path(output)
    autoencoders = _load_autoencoders(autoencoder, family, subfolder, device)
    families = [a.family for a in autoencoders]
    factor = max(autoencoder_scale_factor(a.vae) for a in autoencoders)
    for a in autoencoders:
        if config.crop_size % autoencoder_scale_factor(a.vae):
            raise ValueError(
                f"crop size {config.crop_size} is not a multiple of the autoencoder's "
                f"downsampling factor {autoencoder_scale_factor(a.vae)} (family {a.family})"
            )
    items = _source_list(sources)
    names = {str(path): name for path, name in items}
    summary = ReconstructSummary(output)
    rows: list[dict] = []
    pending: dict[tuple[int, int], list[_Crop]] = {}

    def flush(key: tuple[int, int]) -> None:
        crops = pending.pop(key, [])
        summary.resumed += sum(c.done for c in crops)
        if all(c.done for c in crops):
            return
        batch = torch.stack([c.pixels for c in crops]).float() / 255.0
        per_family = []
        for a in autoencoders:
            # One generator per pair (a list: diffusers draws each row's noise from its own),
            # the same seeds through every autoencoder.
            generators = _pair_generators(config.seed, crops)
            recon = reconstruct(a.vae, batch, sample=config.sample, generator=generators)
            per_family.append((recon * 255.0).round().clamp(0, 255).to(torch.uint8))
        for i, crop in enumerate(crops):
            if crop.done:
                continue
            real_path, fake_paths = _paths(output, crop.pair_id, families)
            save_png(uint8_to_pil(crop.pixels), real_path)
            for recon_u8, fake_path in zip(per_family, fake_paths, strict=True):
                fake_image = uint8_to_pil(recon_u8[i])
                if crop.jpeg is not None:
                    fake_image = reencode_like(fake_image, crop.jpeg)
                save_png(fake_image, fake_path)  # the last one written marks the pair done
            summary.written += 1

    results = load_each(
        [str(p) for p, _ in items], _CropSource(config, factor, names), num_workers=num_workers
    )
    for result in tqdm(
        results, total=len(items), desc="reconstruct", disable=not progress, unit="img"
    ):
        if result.error is not None:
            summary.errors[result.path] = result.error
            continue
        for crop in result.value:
            rows += _manifest_rows(output, crop, families)
            summary.pairs += 1
            real_path, fake_paths = _paths(output, crop.pair_id, families)
            if real_path.is_file() and all(p.is_file() for p in fake_paths):
                crop = replace(crop, done=True)
            key = tuple(crop.pixels.shape[1:])
            pending.setdefault(key, []).append(crop)
            if len(pending[key]) >= config.batch_size:
                flush(key)
    for key in list(pending):
        flush(key)

    _write_manifest(output / MANIFEST_NAME, rows)
    components = {a.family: a.component.to_dict() if a.component else None for a in autoencoders}
    info = {
        # The first autoencoder's source, as datasets before families recorded their only one.
        "autoencoder": components[families[0]],
        "families": components,
        "reconstruct": asdict(config),
        "pairs": summary.pairs,
        "sources": len(items) - len(summary.errors),
        "errors": summary.errors,
    }
    atomic_write_text(output / DATASET_INFO_NAME, json.dumps(info, indent=2) + "\n")
    return summary


def _manifest_rows(output: Path, crop: _Crop, families: Sequence[str]) -> list[dict]:
    left, top, right, bottom = crop.box
    real_path, fake_paths = _paths(output, crop.pair_id, families)
    rows = []
    members = [("real", "", real_path)]
    members += [("reconstructed", f, p) for f, p in zip(families, fake_paths, strict=True)]
    for label, family, path in members:
        rows.append(
            {
                "path": path.relative_to(output).as_posix(),
                "label": label,
                "pair_id": crop.pair_id,
                "source": crop.source,
                "left": left,
                "top": top,
                "right": right,
                "bottom": bottom,
                "scale": f"{crop.scale:g}",
                "jpeg_quality": crop.jpeg.quality if crop.jpeg is not None else "",
                "family": family,
            }
        )
    return rows


def _write_manifest(path: Path, rows: list[dict]) -> None:
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=MANIFEST_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, table.getvalue())


def dataset_family(directory: str | os.PathLike) -> str:
    """The family tag of a single-autoencoder dataset's reconstructions, from its
    ``dataset.json`` (its only ``families`` key); "" for datasets written before tags."""
    path = Path(directory) / DATASET_INFO_NAME
    try:
        info = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    families = info.get("families") if isinstance(info, dict) else None
    return next(iter(families)) if isinstance(families, Mapping) and len(families) == 1 else ""


def read_aligned_dataset(directory: str | os.PathLike) -> list[AlignedPair]:
    """The pairs of a dataset written by ``build_aligned_dataset``, each real crop with its
    reconstructions tagged by family (the manifest's ``family`` column; a manifest without
    one: :func:`dataset_family`)."""
    directory = Path(directory)
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{manifest}: no manifest; build the dataset with `ldmdetect reconstruct` first"
        )
    reals: dict[str, Path] = {}
    fakes: dict[str, list[tuple[str, Path]]] = {}
    sources: dict[str, str] = {}
    default_family: str | None = None
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            pair_id = row["pair_id"]
            sources[pair_id] = row["source"]
            fakes.setdefault(pair_id, [])
            if row["label"] == "real":
                reals[pair_id] = directory / row["path"]
                continue
            family = row.get("family")
            if family is None:  # a manifest written before family tags
                if default_family is None:
                    default_family = dataset_family(directory)
                family = default_family
            fakes[pair_id].append((family, directory / row["path"]))
    result = []
    for pair_id, reconstructions in fakes.items():
        if pair_id not in reals or not reconstructions:
            raise ValueError(f"{manifest}: pair {pair_id!r} lacks a member")
        result.append(
            AlignedPair(pair_id, sources[pair_id], reals[pair_id], tuple(reconstructions))
        )
    return result
