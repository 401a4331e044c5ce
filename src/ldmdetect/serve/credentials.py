"""C2PA content credentials, read from an upload's bytes and reported beside the pixel score.

A manifest says what a signer *claims* about an image (camera capture, "trainedAlgorithmicMedia",
edits); the detector says what the pixels look like. They answer different questions, so they
are never combined. Reading is offline: remote manifests and OCSP are never fetched, so a
request can never make the server reach a URL of the client's choosing.
"""

from __future__ import annotations

import io
import logging
from typing import Any

logger = logging.getLogger(__name__)

_MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "GIF": "image/gif",
}
_OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
_MAX_TEXT = 200
_MAX_ACTIONS = 20


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # softwareAgent may be {"name": ..., "version": ...}
        value = " ".join(str(v) for k, v in value.items() if k in ("name", "version"))
    text = "".join(ch for ch in str(value) if ch.isprintable())
    return text[:_MAX_TEXT]


def _actions(manifest: dict) -> list[dict[str, str | None]]:
    found = []
    for assertion in manifest.get("assertions") or []:
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions") or []:
            found.append(
                {
                    "action": _text(action.get("action")),
                    "digital_source_type": _text(action.get("digitalSourceType")),
                    "software_agent": _text(action.get("softwareAgent")),
                }
            )
    return found[:_MAX_ACTIONS]


def summarize_manifest_store(store: dict) -> dict[str, Any] | None:
    """The parts of a manifest store a person needs: who signed, what it claims, is it valid."""
    label = store.get("active_manifest")
    manifest = (store.get("manifests") or {}).get(label) if label else None
    if not isinstance(manifest, dict):
        return None
    signature = manifest.get("signature_info") or {}
    generator = manifest.get("claim_generator")
    if generator is None and manifest.get("claim_generator_info"):
        generator = manifest["claim_generator_info"][0]
    return {
        "validation_state": _text(store.get("validation_state")),
        "active_manifest": _text(label),
        "title": _text(manifest.get("title")),
        "claim_generator": _text(generator),
        "signature_issuer": _text(signature.get("issuer")),
        "signature_time": _text(signature.get("time")),
        "actions": _actions(manifest),
        "manifest_count": len(store.get("manifests") or {}),
    }


def read_content_credentials(data: bytes, image_format: str | None) -> dict[str, Any] | None:
    """Summary of the embedded C2PA manifest, or None when absent, unsupported or unreadable.

    Never raises: a broken or hostile manifest must not turn a scoreable image into an error.
    """
    mime = _MIME.get(image_format or "")
    if mime is None:
        return None
    try:
        import json

        import c2pa
    except ImportError:
        return None
    try:
        context = c2pa.Context.from_dict(_OFFLINE)
        try:
            reader = c2pa.Reader.try_create(mime, io.BytesIO(data), context=context)
            if reader is None:
                return None
            with reader:
                return summarize_manifest_store(json.loads(reader.json()))
        finally:
            context.close()
    except Exception as err:  # the SDK raises many types; all mean "no usable credentials"
        logger.debug("content credentials unreadable: %s: %s", type(err).__name__, err)
        return None
