"""Aligned datasets: real crops and their LDM-autoencoder reconstructions, pair by pair.

Both members of a pair are written as lossless PNG with matching names, so that nothing but
the autoencoder's trace (no file format, no content, no size) can separate the two classes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zlib
from collections import Counter
from collections.abc import Sequence
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
)


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
    pair_id: str
    source: str
    real: Path
    reconstructed: Path


@dataclass(frozen=True)
class _Crop:
    pair_id: str
    source: str
    box: Box  # in the (possibly downscaled) image the crop was cut from
    pixels: torch.Tensor  # uint8 (3, H, W)
    done: bool = False  # both PNGs already on disk (a resumed run)
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


def _pair_paths(output: Path, pair_id: str) -> tuple[Path, Path]:
    return output / "real" / f"{pair_id}.png", output / "reconstructed" / f"{pair_id}.png"


def build_aligned_dataset(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    autoencoder: str | os.PathLike | ComponentSource | torch.nn.Module,
    subfolder: str | None = None,
    config: ReconstructConfig | None = None,
    device: str | torch.device | None = "auto",
    num_workers: int = 0,
    progress: bool = False,
) -> ReconstructSummary:
    """Write ``real/``, ``reconstructed/``, ``manifest.csv`` and ``dataset.json`` to ``output``.

    Resumable: pairs whose two PNGs exist are kept, and a resumed run writes the same bytes
    an uninterrupted one would: each pair's posterior noise comes from its own seed
    (``pair_seed``), and batches are formed as in a fresh run (pairs already done still take
    their place in a batch that has work left), so every reconstruction goes through the very
    same computation. Files that fail to decode are reported in the summary's ``errors`` and
    skipped; the rest of the run completes.
    """
    config = config or ReconstructConfig()
    output = Path(output)
    if isinstance(autoencoder, torch.nn.Module):
        vae, component = autoencoder, None
    else:
        component = resolve_autoencoder_source(autoencoder, subfolder=subfolder)
        vae = load_autoencoder(component, device=device)
    factor = autoencoder_scale_factor(vae)
    if config.crop_size % factor:
        raise ValueError(
            f"crop size {config.crop_size} is not a multiple of the autoencoder's "
            f"downsampling factor {factor}"
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
        # One generator per pair (a list: diffusers draws each row's noise from its own).
        generators = _pair_generators(config.seed, crops)
        recon = reconstruct(vae, batch, sample=config.sample, generator=generators)
        recon_u8 = (recon * 255.0).round().clamp(0, 255).to(torch.uint8)
        for crop, fake in zip(crops, recon_u8, strict=True):
            if crop.done:
                continue
            real_path, fake_path = _pair_paths(output, crop.pair_id)
            save_png(uint8_to_pil(crop.pixels), real_path)
            fake_image = uint8_to_pil(fake)
            if crop.jpeg is not None:
                fake_image = reencode_like(fake_image, crop.jpeg)
            save_png(fake_image, fake_path)  # written last: marks the pair done
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
            rows += _manifest_rows(output, crop)
            summary.pairs += 1
            real_path, fake_path = _pair_paths(output, crop.pair_id)
            if real_path.is_file() and fake_path.is_file():
                crop = replace(crop, done=True)
            key = tuple(crop.pixels.shape[1:])
            pending.setdefault(key, []).append(crop)
            if len(pending[key]) >= config.batch_size:
                flush(key)
    for key in list(pending):
        flush(key)

    _write_manifest(output / MANIFEST_NAME, rows)
    info = {
        "autoencoder": component.to_dict() if component else None,
        "reconstruct": asdict(config),
        "pairs": summary.pairs,
        "sources": len(items) - len(summary.errors),
        "errors": summary.errors,
    }
    atomic_write_text(output / DATASET_INFO_NAME, json.dumps(info, indent=2) + "\n")
    return summary


def _manifest_rows(output: Path, crop: _Crop) -> list[dict]:
    left, top, right, bottom = crop.box
    rows = []
    for label, path in zip(
        ("real", "reconstructed"), _pair_paths(output, crop.pair_id), strict=True
    ):
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
            }
        )
    return rows


def _write_manifest(path: Path, rows: list[dict]) -> None:
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=MANIFEST_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, table.getvalue())


def read_aligned_dataset(directory: str | os.PathLike) -> list[AlignedPair]:
    """The pairs of a dataset written by ``build_aligned_dataset``."""
    directory = Path(directory)
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{manifest}: no manifest; build the dataset with `ldmdetect reconstruct` first"
        )
    pairs: dict[str, dict[str, Path]] = {}
    sources: dict[str, str] = {}
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle):
            pairs.setdefault(row["pair_id"], {})[row["label"]] = directory / row["path"]
            sources[row["pair_id"]] = row["source"]
    result = []
    for pair_id, members in pairs.items():
        if set(members) != {"real", "reconstructed"}:
            raise ValueError(f"{manifest}: pair {pair_id!r} lacks a member")
        result.append(
            AlignedPair(pair_id, sources[pair_id], members["real"], members["reconstructed"])
        )
    return result
