"""The HTTP service: ``create_app(detector)`` returns a FastAPI app that scores uploads.

The model is loaded once, by the caller. Every request passes the limits in
`ldmdetect.serve.limits` before any route code runs; images are decoded by
`ldmdetect.io.images.load_image` (pixel count checked from the header first) and scored through
one `MicroBatcher`, so requests that arrive together share a device batch.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
import weakref
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ldmdetect._version import __version__
from ldmdetect.attribution import attribute
from ldmdetect.config import DecisionRule
from ldmdetect.io.images import DECODE_FORMATS, ImageDecodeError, load_image, sniff_format
from ldmdetect.serve.batcher import MicroBatcher
from ldmdetect.serve.credentials import read_content_credentials
from ldmdetect.serve.limits import (
    AdmissionMiddleware,
    BodyLimitMiddleware,
    BodyTooLarge,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024
# 25 MP covers 24 MP camera photos; one decoded image then holds at most 75 MB of RGB, and at
# most `max_batch` images are decoded at once, which bounds the server's image memory.
DEFAULT_MAX_PIXELS = 25_000_000
# What `ldmdetect.io.images` decodes, so the service refuses nothing `ldmdetect scan` scores:
# AVIF and HEIC/HEIF join JPEG, PNG, WebP, GIF, BMP and TIFF where their decoders are installed.
SUPPORTED_FORMATS = ", ".join(DECODE_FORMATS)
DETECT_PATHS = ("/v1/detect", "/v1/detect/batch")
# Text fields are ignored; a few are allowed so that clients adding e.g. a "note" still work.
MAX_FORM_FIELDS = 16


def _multipart_body(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI request body of a detect route: one required multipart field (the routes
    read the raw form, so FastAPI cannot describe it by itself)."""
    form = {"type": "object", "properties": {field: schema}, "required": [field]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}}


_BINARY = {"type": "string", "format": "binary"}
_MULTIPART_BODY = _multipart_body("file", _BINARY)
_MULTIPART_BATCH_BODY = _multipart_body("files", {"type": "array", "items": _BINARY})


class RequestError(Exception):
    """Bad input: answered with ``status`` and ``{"error": reason}``."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _client_text(value: str | None, limit: int = 200) -> str | None:
    """A client-supplied string made safe to echo: printable characters only, bounded."""
    if value is None:
        return None
    return "".join(ch for ch in value if ch.isprintable())[:limit]


def _is_pixel_limit(err: ImageDecodeError) -> bool:
    return "over the limit" in err.reason or "pixel limit" in err.reason


def evidence_to_data_url(evidence: np.ndarray) -> str:
    """HxW evidence in [0, 1] -> a grayscale PNG data URL (white = most evidence)."""
    array = np.asarray(evidence, dtype=np.float64)
    if array.ndim != 2 or not np.isfinite(array).all():
        raise ValueError(f"evidence map must be a finite HxW array, got shape {array.shape}")
    pixels = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class _Scorer:
    """Per-app state: the detector, its batcher, the decode slots and the chosen threshold."""

    def __init__(
        self,
        detector: Any,
        *,
        fpr: float,
        max_pixels: int,
        max_batch: int,
        batch_wait_ms: float,
    ) -> None:
        self.detector = detector
        self.fpr = fpr
        # Refuses an FPR the calibration did not resolve, so the server never starts on it.
        self.rule = detector.config.decision_rule(fpr)
        self.threshold_name, self.threshold = self.rule.threshold_name, self.rule.threshold
        self.max_pixels = max_pixels
        self.max_batch = max_batch
        # Methods of more than two classes also give each class's probability.
        self.classes = detector.classes if len(detector.classes) > 2 else None
        # A family head also says which family made a generated image.
        self.families = tuple(getattr(detector, "families", ()))
        self.batcher = MicroBatcher(
            self._score_with_classes if self.classes else detector.decision_function,
            max_batch=max_batch,
            max_wait_ms=batch_wait_ms,
        )
        # The method's explain hook: whether ?evidence=1 can add a map.
        self.has_evidence = bool(detector.explains)
        self.probabilistic = detector.method.probabilistic
        self._slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _score_with_classes(self, images: list) -> tuple:
        """(scores, per-class probabilities, novel flags or None) of a batch of decoded
        images."""
        prepare = self.detector.preparer()
        return self.detector.score_probabilities_novel([prepare(image) for image in images])

    def slots(self) -> asyncio.Semaphore:
        # At most `max_batch` decoded images are alive at once (memory bound); one semaphore per
        # event loop, because asyncio primitives belong to the loop that first waits on them.
        loop = asyncio.get_running_loop()
        if loop not in self._slots:
            self._slots[loop] = asyncio.Semaphore(self.max_batch)
        return self._slots[loop]

    def rule_for(self, fpr: float | None) -> DecisionRule:
        """The decision rule at a request's ``?fpr=`` (the server's by default); an FPR the
        detector has no resolved threshold for fails the request with the reason."""
        if fpr is None or fpr == self.fpr:
            return self.rule
        try:
            return self.detector.config.decision_rule(fpr)
        except ValueError as err:
            raise RequestError(422, str(err)) from None

    def _decode(self, data: bytes, image_format: str) -> tuple[Image.Image, dict | None, float]:
        start = time.perf_counter()
        try:
            image = load_image(data, max_pixels=self.max_pixels, name="upload")
        except ImageDecodeError as err:
            raise RequestError(413 if _is_pixel_limit(err) else 422, err.reason) from None
        credentials = read_content_credentials(data, image_format)
        return image, credentials, (time.perf_counter() - start) * 1000.0

    def _evidence(self, image: Image.Image) -> str | None:
        evidence = self.detector.evidence_map(image)
        if evidence is None:
            return None
        try:
            return evidence_to_data_url(evidence)
        except ValueError as err:
            logger.warning("evidence map omitted: %s", err)
            return None

    async def score(
        self, data: bytes, *, fpr: float | None, evidence: bool, filename: str | None = None
    ) -> dict[str, Any]:
        start = time.perf_counter()
        if not data:
            raise RequestError(422, "empty file")
        image_format = sniff_format(data[:16])
        if image_format is None:
            raise RequestError(
                415, f"not a supported image: the content is none of {SUPPORTED_FORMATS}"
            )
        rule = self.rule_for(fpr)
        async with self.slots():
            image, credentials, decode_ms = await asyncio.to_thread(
                self._decode, data, image_format
            )
            result = await self.batcher.submit(image)
            evidence_url = None
            if evidence and self.has_evidence:
                evidence_url = await asyncio.get_running_loop().run_in_executor(
                    self.batcher._executor, self._evidence, image
                )
            width, height = image.size
            del image
        score = result.score
        body: dict[str, Any] = {
            "score": score,
            "label": rule.label(score),
            # generated / uncertain / real: the band between the two calibrated thresholds
            # is where a score says too little to announce either.
            "verdict": rule.verdict(score),
            "threshold": rule.threshold,
            "threshold_name": rule.threshold_name,
            "real_threshold": rule.real_threshold,
            "real_threshold_name": rule.real_threshold_name,
            "fpr": rule.fpr,
            "method": self.detector.config.method,
            "detector": None,  # filled by the route
            # Hugging Face's image-classification shape; "real" = 1 - score only where the
            # score is a probability (not for aeroblade's distances).
            "predictions": [{"label": "generated", "score": score}]
            + ([{"label": "real", "score": 1.0 - score}] if self.probabilistic else []),
            "c2pa": credentials,
            "image": {"format": image_format, "width": width, "height": height},
            "timing": {
                "decode_ms": round(decode_ms, 3),
                "queued_ms": round(result.queued_ms, 3),
                "score_ms": round(result.score_ms, 3),
                "total_ms": round((time.perf_counter() - start) * 1000.0, 3),
                "batch_size": result.batch_size,
            },
        }
        if result.probabilities is not None and self.classes:
            # one p_<class> key per class, named as scan's columns
            per_class = dict(zip(self.classes, result.probabilities, strict=True))
            body.update({f"p_{c}": p for c, p in per_class.items()})
            # Each class beyond real and generated (a family, a generator) joins the Hugging
            # Face list too, most likely first, after the generated/real pair clients read.
            others = {c: p for c, p in per_class.items() if c not in ("real", "generated")}
            body["predictions"] += [
                {"label": c, "score": p}
                for c, p in sorted(others.items(), key=lambda item: -item[1])
            ]
            if self.families:
                # family: None where judged real, "unknown" where the evidence is weak
                (found,) = attribute(
                    np.asarray([result.probabilities]),
                    self.classes,
                    np.asarray([body["label"] == "generated"]),
                    self.detector.config.family_threshold,
                    None if result.novel is None else np.asarray([result.novel]),
                )
                body["family"] = found.family
                body["family_score"] = None if found.family is None else found.family_score
        if filename is not None:
            body["filename"] = _client_text(filename)
        if evidence and self.has_evidence:
            body["evidence_map"] = evidence_url
        return body


def _page() -> str:
    html = resources.files("ldmdetect.serve").joinpath("static/index.html").read_text("utf-8")
    return html.replace("{{formats}}", SUPPORTED_FORMATS)


def create_app(
    detector: Any,
    *,
    fpr: float = 0.01,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_batch: int = 16,
    max_concurrency: int = 8,
    token: str | None = None,
    detector_id: str | None = None,
    batch_wait_ms: float = 5.0,
) -> FastAPI:
    """A FastAPI app serving ``detector`` (a loaded `ldmdetect.detector.Detector`).

    ``fpr`` picks the calibrated threshold used for labels (the detector must have one at that
    FPR; requests may ask for another calibrated one with ``?fpr=``). ``max_batch`` bounds both
    the parts of a batch request and the images scored in one device batch; ``max_concurrency``
    bounds detect requests in progress (more get 503). With ``token``, every ``/v1/`` route needs
    ``Authorization: Bearer <token>``.
    """
    scorer = _Scorer(
        detector, fpr=fpr, max_pixels=max_pixels, max_batch=max_batch, batch_wait_ms=batch_wait_ms
    )
    name = detector_id or detector.config.method
    page = _page()
    limits = {
        "max_body_bytes": max_body_bytes,
        "max_pixels": max_pixels,
        "max_batch": max_batch,
        "max_concurrency": max_concurrency,
    }

    app = FastAPI(
        title="ldmdetect",
        version=__version__,
        summary="Probability that an image was generated by a latent diffusion model.",
    )
    app.state.scorer = scorer

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        return _error(err.status, err.reason)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, err: BodyTooLarge) -> JSONResponse:
        return _error(413, str(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in err.errors()
        )
        return _error(422, f"invalid request ({problems})")

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception) -> JSONResponse:
        # Logged here with its traceback; the client learns nothing about the internals.
        logger.error("unhandled error on %s", request.url.path, exc_info=err)
        return _error(500, "internal server error")

    async def _file_parts(request: Request, limit: int) -> list[UploadFile]:
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise RequestError(415, "send the image as multipart/form-data")
        try:
            form = await request.form(max_files=limit, max_fields=MAX_FORM_FIELDS)
        except StarletteHTTPException as err:
            if "too many" in str(err.detail).lower():
                raise RequestError(413, f"too many parts: at most {limit} per request") from None
            raise RequestError(400, f"malformed multipart body ({err.detail})") from None
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise RequestError(422, "no image part: send the image as a file part")
        return files

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(
            page,
            headers={
                "content-security-policy": (
                    "default-src 'none'; img-src 'self' data: blob:; style-src 'unsafe-inline'; "
                    "script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; "
                    "form-action 'none'; frame-ancestors 'none'"
                ),
                "x-content-type-options": "nosniff",
                "referrer-policy": "no-referrer",
            },
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the model is loaded and the batcher answers."""
        return {"status": "ok", "batches_run": scorer.batcher.batches_run}

    @app.get("/v1/detector")
    async def detector_info() -> dict[str, Any]:
        """What is being served: method, backbone, preprocessing, thresholds and limits."""
        config = detector.config.to_dict()
        config.pop("training", None)  # may name the server's training paths
        # Only thresholds the calibration resolved are offered; the record says the rest.
        calibrated = sorted(float(k[len("fpr_") :]) for k in detector.config.resolved_fprs())
        return {
            "detector": name,
            "method": detector.config.method,
            "fpr": scorer.fpr,
            "threshold": scorer.threshold,
            "threshold_name": scorer.threshold_name,
            "thresholds": dict(detector.config.thresholds),
            "calibrated_fprs": calibrated,
            "calibration": detector.config.calibration,
            "evidence_map": scorer.has_evidence,
            "formats": list(DECODE_FORMATS),
            "limits": limits,
            "config": config,
        }

    @app.post("/v1/detect", openapi_extra=_MULTIPART_BODY)
    async def detect(
        request: Request, fpr: float | None = None, evidence: bool = False
    ) -> dict[str, Any]:
        """Score one image (multipart, one file part): P(generated), verdict, C2PA summary."""
        files = await _file_parts(request, 1)
        data = await files[0].read()
        body = await scorer.score(data, fpr=fpr, evidence=evidence)
        body["detector"] = name
        return body

    @app.post("/v1/detect/batch", openapi_extra=_MULTIPART_BATCH_BODY)
    async def detect_batch(
        request: Request, fpr: float | None = None, evidence: bool = False
    ) -> dict[str, Any]:
        """Score up to ``max_batch`` images; a bad image is an error row, not a failed request."""
        start = time.perf_counter()
        scorer.rule_for(fpr)  # an uncalibrated FPR fails the request, not each row
        files = await _file_parts(request, max_batch)

        async def one(index: int, upload: UploadFile) -> dict[str, Any]:
            data = await upload.read()
            try:
                row = await scorer.score(data, fpr=fpr, evidence=evidence, filename=upload.filename)
            except RequestError as err:
                return {
                    "index": index,
                    "filename": _client_text(upload.filename),
                    "status": err.status,
                    "error": err.reason,
                }
            row["detector"] = name
            return {"index": index, "status": 200, **row}

        results = await asyncio.gather(*(one(i, f) for i, f in enumerate(files)))
        return {
            "count": len(results),
            "results": list(results),
            "timing": {"total_ms": round((time.perf_counter() - start) * 1000.0, 3)},
        }

    # Added last = outermost: the token and the concurrency cap are checked before the body
    # limit starts reading anything.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(
        AdmissionMiddleware,
        token=token,
        protected_prefix="/v1/",
        limited_paths=DETECT_PATHS,
        max_concurrency=max_concurrency,
    )
    return app
