"""Text prompts for generator-conditioned features (LaRE's UNet pass, DDIM inversion).

Policy, in order: a sidecar caption (``photo.txt`` beside ``photo.png``), else the template
filled with the image's class name when one is known (``"a photo of a {class}"``), else ``""``
(the unconditional prompt). GenImage names its files by ImageNet class, so its class names are
recovered from the file name.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

_SYNSET = re.compile(r"^(n\d{8})_")
_INDEX = re.compile(r"^(\d{1,3})_")


def sidecar_caption(path: str | os.PathLike) -> str | None:
    """The text of ``<stem>.txt`` next to the image, stripped, or None when absent or empty."""
    caption = Path(path).with_suffix(".txt")
    if not caption.is_file():
        return None
    text = caption.read_text(encoding="utf-8", errors="replace").strip()
    return text or None


@cache
def _imagenet():
    from timm.data import ImageNetInfo

    return ImageNetInfo()


def genimage_class(path: str | os.PathLike) -> str | None:
    """ImageNet class name from a GenImage file name, or None when the name carries none.

    Real images keep ImageNet's names (``n01440764_10026.JPEG`` -> synset); most generated
    ones start with the class index (``000_sdv5_00001.png`` -> class 0). The first synonym of
    the class description is used ("tench, Tinca tinca" -> "tench").
    """
    name = Path(path).name
    info = _imagenet()
    if match := _SYNSET.match(name):
        try:
            description = info.label_name_to_description(match.group(1))
        except (KeyError, ValueError):
            return None
    elif match := _INDEX.match(name):
        index = int(match.group(1))
        if index >= info.num_classes():
            return None
        description = info.index_to_description(index)
    else:
        return None
    return description.split(",")[0].strip()


def resolve_prompt(
    path: str | os.PathLike | None, template: str | None, class_name: str | None = None
) -> str:
    """The prompt for one image under the policy above."""
    if path is not None and (caption := sidecar_caption(path)) is not None:
        return caption
    if template and class_name:
        return template.replace("{class}", class_name)
    return ""
