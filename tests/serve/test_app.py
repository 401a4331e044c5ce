"""The HTTP service: answers, shapes, batching, and every hostile upload the issue lists."""

import base64
import datetime
import io
import json
import threading
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import encode, png_bomb_header, raw_request

from ldmdetect.detector import Detector
from ldmdetect.io.images import DECODE_FORMATS, load_image
from ldmdetect.serve import create_app, serve_in_thread
from ldmdetect.serve.app import evidence_to_data_url

TRACE_MARKERS = ("Traceback", 'File "', "site-packages", "ldmdetect/")


def assert_clean_error(response: httpx.Response, status: int, reason: str | None = None) -> str:
    """A 4xx/5xx JSON body {"error": reason} that shows nothing of the server's internals."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    for marker in TRACE_MARKERS:
        assert marker not in response.text, response.text
    if reason is not None:
        assert reason in body["error"], body
    return body["error"]


def one(data: bytes, name: str = "image.png", content_type: str = "image/png") -> dict:
    return {"file": (name, data, content_type)}


@pytest.fixture(scope="module")
def client(detector):
    app = create_app(detector, fpr=0.01, max_body_bytes=512 * 1024, max_pixels=4_000_000)
    with TestClient(app) as client:
        yield client


# --- happy path -------------------------------------------------------------------------------


def test_detect_scores_like_the_detector_in_the_hugging_face_shape(client, detector, photo_jpeg):
    response = client.post("/v1/detect", files=one(photo_jpeg, "photo.jpg", "image/jpeg"))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = float(
        detector.decision_function([Image.open(io.BytesIO(photo_jpeg)).convert("RGB")])[0]
    )
    assert body["score"] == pytest.approx(expected, abs=1e-5)
    name, threshold = detector.config.threshold(0.01)
    assert (body["threshold_name"], body["threshold"], body["fpr"]) == (name, threshold, 0.01)
    assert body["label"] == ("generated" if body["score"] > threshold else "real")
    rule = detector.config.decision_rule(0.01)
    assert body["verdict"] == rule.verdict(body["score"])
    assert (body["real_threshold_name"], body["real_threshold"]) == (
        "fpr_0.05",
        detector.config.thresholds["fpr_0.05"],
    )
    assert body["method"] == detector.config.method
    assert body["predictions"] == [
        {"label": "generated", "score": body["score"]},
        {"label": "real", "score": pytest.approx(1 - body["score"])},
    ]
    assert body["c2pa"] is None
    width, height = Image.open(io.BytesIO(photo_jpeg)).size
    assert body["image"] == {"format": "JPEG", "width": width, "height": height}
    assert body["timing"]["total_ms"] > 0 and body["timing"]["batch_size"] >= 1
    assert "evidence_map" not in body
    assert not [key for key in body if key.startswith("p_")]  # two classes: no p_<class>


@pytest.mark.parametrize(
    ("fmt", "name", "content_type", "missing"),
    [
        ("HEIF", "phone.heic", "image/heic", "pillow-heif is not installed"),
        ("AVIF", "browser.avif", "image/avif", "this Pillow was built without libavif"),
    ],
)
def test_heic_and_avif_uploads_are_scored_as_scan_scores_them(
    client, detector, photo_jpeg, fmt, name, content_type, missing
):
    if fmt not in DECODE_FORMATS:
        pytest.skip(f"no {fmt} decoder: {missing}")
    photo, buffer = load_image(photo_jpeg), io.BytesIO()
    if fmt == "HEIF":
        import pillow_heif  # Pillow reads HEIC through it but cannot write it

        pillow_heif.from_pillow(photo).save(buffer, quality=90)
    else:
        photo.save(buffer, "AVIF", quality=90)
    data = buffer.getvalue()
    response = client.post("/v1/detect", files=one(data, name, content_type))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["score"] == pytest.approx(
        float(detector.decision_function([load_image(data)])[0]), abs=1e-5
    )
    assert body["image"] == {"format": fmt, "width": photo.width, "height": photo.height}
    assert fmt in client.get("/v1/detector").json()["formats"]


def test_batch_scores_each_part_in_one_device_batch(detector, photo_jpeg):
    calls = []

    class Recording(Detector):
        def decision_function(self, images, **kwargs):
            calls.append(len(images))
            return super().decision_function(images, **kwargs)

    recording = Recording(detector.config, detector.model, device="cpu")
    other = encode(Image.new("RGB", (80, 70), (40, 90, 200)))
    with TestClient(create_app(recording, batch_wait_ms=200)) as client:
        response = client.post(
            "/v1/detect/batch",
            files=[
                ("files", ("a.jpg", photo_jpeg, "image/jpeg")),
                ("files", ("b.png", other, "image/png")),
                ("files", ("c.png", b"GIF89a-not-really", "image/png")),
                ("files", ("d.jpg", photo_jpeg, "image/jpeg")),
            ],
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == 4
    rows = body["results"]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert [r["filename"] for r in rows] == ["a.jpg", "b.png", "c.png", "d.jpg"]
    assert [r["status"] for r in rows] == [200, 200, 422, 200]  # the bad part is an error row
    assert "error" in rows[2] and "score" not in rows[2]
    assert rows[0]["score"] == pytest.approx(rows[3]["score"], abs=1e-6)
    assert calls == [3]  # three good images, one forward pass
    assert all(r["timing"]["batch_size"] == 3 for r in rows if r["status"] == 200)


def test_requests_that_arrive_together_share_a_device_batch(detector, photo_jpeg):
    calls = []

    class Recording(Detector):
        def decision_function(self, images, **kwargs):
            calls.append(len(images))
            return super().decision_function(images, **kwargs)

    recording = Recording(detector.config, detector.model, device="cpu")
    app = create_app(recording, batch_wait_ms=400)
    with serve_in_thread(app) as url:
        results = []

        def post():
            with httpx.Client(base_url=url, timeout=30) as http:
                results.append(http.post("/v1/detect", files=one(photo_jpeg, "p.jpg")))

        threads = [threading.Thread(target=post) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [r.status_code for r in results] == [200] * 4
    assert sum(calls) == 4 and max(calls) > 1, calls
    assert max(r.json()["timing"]["batch_size"] for r in results) == max(calls)


def test_a_three_class_method_replies_with_one_p_class_key_per_class(
    three_class_detector_dir, photo_jpeg
):
    detector = Detector.from_pretrained(three_class_detector_dir, device="cpu")
    keys = [f"p_{c}" for c in detector.method.classes]
    with TestClient(create_app(detector, fpr=None)) as client:
        body = client.post("/v1/detect", files=one(photo_jpeg, "photo.jpg", "image/jpeg")).json()
        batch = client.post(
            "/v1/detect/batch", files=[("files", ("a.jpg", photo_jpeg, "image/jpeg"))]
        ).json()
    expected = detector.predict_proba([load_image(photo_jpeg)])[0]
    assert [key for key in body if key.startswith("p_")] == keys
    assert [body[key] for key in keys] == pytest.approx(expected.tolist(), rel=1e-5)
    assert body["score"] == pytest.approx(1 - body["p_real"], rel=1e-9)
    assert [batch["results"][0][key] for key in keys] == pytest.approx(expected.tolist(), rel=1e-5)


def test_a_family_head_replies_with_the_family_of_a_generated_image(
    family_detector_dir, two_family_aligned_dir
):
    from ldmdetect.engine.reconstruct import read_aligned_dataset

    detector = Detector.from_pretrained(family_detector_dir, device="cpu")
    pairs = read_aligned_dataset(two_family_aligned_dir)[:2]
    files = [p.real for p in pairs] + [f for p in pairs for _, f in p.reconstructions]
    # A threshold between the scores, so that some files are judged real and some generated.
    scores = np.sort(detector.decision_function(files))
    middle = len(scores) // 2
    between = float(scores[middle - 1] + scores[middle]) / 2
    detector.config = replace(
        detector.config, thresholds=detector.config.thresholds | {"fpr_0.5": between}
    )
    expected = detector.attribute(files, fpr=0.5)
    assert {a.family is None for a in expected} == {True, False}  # both kinds of answer
    with TestClient(create_app(detector, fpr=0.5)) as client:
        bodies = [
            client.post("/v1/detect", files=one(path.read_bytes(), path.name)).json()
            for path in files
        ]
        batch = client.post(
            "/v1/detect/batch",
            files=[("files", (p.name, p.read_bytes(), "image/png")) for p in files],
        ).json()["results"]
        info = client.get("/v1/detector").json()
    assert info["config"]["families"] == ["sd-4ch", "flux-16ch"]
    for body, from_batch, want in zip(bodies, batch, expected, strict=True):
        assert body["family"] == from_batch["family"] == want.family
        assert [k for k in body if k.startswith("p_")] == ["p_real", "p_sd-4ch", "p_flux-16ch"]
        labels = [p["label"] for p in body["predictions"]]
        assert labels[:2] == ["generated", "real"] and set(labels[2:]) == {"sd-4ch", "flux-16ch"}
        family_scores = [p["score"] for p in body["predictions"][2:]]
        assert family_scores == sorted(family_scores, reverse=True)
        assert family_scores[0] == max(body["p_sd-4ch"], body["p_flux-16ch"])
        if want.family is None:
            assert body["label"] == "real" and body["family_score"] is None
        else:
            assert body["label"] == "generated"
            assert body["family_score"] == pytest.approx(want.family_score, rel=1e-5)


def test_a_novel_image_is_unknown_in_the_reply_even_when_judged_real(
    family_detector_dir, two_family_aligned_dir
):
    from ldmdetect.engine.reconstruct import read_aligned_dataset

    detector = Detector.from_pretrained(family_detector_dir, device="cpu")
    files = [p.real for p in read_aligned_dataset(two_family_aligned_dir)[:4]]
    everything_real = detector.config.thresholds | {"fpr_0.5": 2.0}
    detector.config = replace(detector.config, thresholds=everything_real)
    # A novelty threshold between the files' distances: some are novel, some not.
    distances = np.sort(
        detector.novelty.distances(detector.embeddings(detector._prepared(files, None)))
    )
    threshold = float(distances[1] + distances[2]) / 2
    detector.novelty = replace(detector.novelty, threshold=threshold)
    expected = [a.family for a in detector.attribute(files, fpr=0.5)]
    assert sorted(expected, key=str) == [None, None, "unknown", "unknown"]
    with TestClient(create_app(detector, fpr=0.5)) as client:
        bodies = [
            client.post("/v1/detect", files=one(path.read_bytes(), path.name)).json()
            for path in files
        ]
    assert [b["label"] for b in bodies] == ["real"] * 4  # the verdict stays
    assert [b["family"] for b in bodies] == expected


def test_a_two_class_reply_has_no_family(client, photo_jpeg):
    body = client.post("/v1/detect", files=one(photo_jpeg, "photo.jpg", "image/jpeg")).json()
    assert "family" not in body and "family_score" not in body


def test_detector_info_health_and_openapi(client, detector):
    info = client.get("/v1/detector").json()
    assert info["thresholds"] == detector.config.thresholds
    assert info["fpr"] == 0.01 and 0.01 in info["calibrated_fprs"]
    assert info["method"] == detector.config.method
    assert info["config"]["backbone"] == detector.config.backbone
    assert "training" not in info["config"]
    assert info["evidence_map"] is True  # ae's map over its classifier
    assert info["limits"]["max_body_bytes"] == 512 * 1024
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/detect", "/v1/detect/batch", "/v1/detector", "/healthz"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/detect"]["post"]["requestBody"]["content"]


def test_page_is_served_with_no_external_asset(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    assert 'type="file"' in html and 'id="verdict"' in html
    for external in ("http://", "https://", "//cdn"):
        assert external not in html
    assert "{{" not in html and ", ".join(DECODE_FORMATS) in html  # what the service accepts


def test_requested_fpr_uses_its_calibrated_threshold(client, detector, photo_jpeg):
    other = next(k for k in detector.config.thresholds if k.startswith("fpr_") and k != "fpr_0.01")
    fpr = float(other[len("fpr_") :])
    body = client.post(f"/v1/detect?fpr={fpr}", files=one(photo_jpeg)).json()
    assert body["threshold"] == detector.config.thresholds[other] and body["fpr"] == fpr
    error = assert_clean_error(
        client.post("/v1/detect?fpr=0.1234", files=one(photo_jpeg)), 422, "no threshold"
    )
    assert "0.1234" in error


def test_fpr_without_a_calibrated_threshold_refuses_to_start(detector):
    with pytest.raises(ValueError, match="no threshold calibrated"):
        create_app(detector, fpr=0.2)


def test_unresolved_threshold_is_refused_at_start_and_per_request(client, detector, photo_jpeg):
    # 120 calibration reals cannot resolve 0.1%: never offered, never applied.
    with pytest.raises(ValueError, match="needs at least 999"):
        create_app(detector, fpr=0.001)
    error = assert_clean_error(
        client.post("/v1/detect?fpr=0.001", files=one(photo_jpeg)), 422, "unresolved"
    )
    assert "999" in error
    info = client.get("/v1/detector").json()
    assert 0.001 not in info["calibrated_fprs"]
    assert info["calibration"]["thresholds"]["fpr_0.001"]["resolved"] is False


# --- evidence maps and content credentials ----------------------------------------------------


class EvidenceDetector(Detector):
    """A detector whose method has an evidence map: a left-to-right ramp."""

    explains = True

    def evidence_map(self, image):
        return np.tile(np.linspace(0.0, 1.0, image.width), (image.height, 1))


class PlainDetector(Detector):
    """A detector whose method has nothing to show beside the score."""

    explains = False


def test_evidence_map_is_returned_only_when_asked_and_available(detector, detector_dir):
    image = encode(Image.new("RGB", (90, 60), (120, 130, 140)))
    with_map = EvidenceDetector.from_pretrained(detector_dir, device="cpu")
    with TestClient(create_app(with_map)) as client:
        assert client.get("/v1/detector").json()["evidence_map"] is True
        body = client.post("/v1/detect?evidence=1", files=one(image)).json()
        assert "evidence_map" not in client.post("/v1/detect", files=one(image)).json()
    prefix = "data:image/png;base64,"
    assert body["evidence_map"].startswith(prefix)
    decoded = Image.open(io.BytesIO(base64.b64decode(body["evidence_map"][len(prefix) :])))
    assert decoded.size == (90, 60) and decoded.mode == "L"
    row = np.asarray(decoded)[0]
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row.astype(int)) >= 0).all()
    without = PlainDetector.from_pretrained(detector_dir, device="cpu")
    with TestClient(create_app(without)) as client:  # no map: the key is absent
        assert client.get("/v1/detector").json()["evidence_map"] is False
        assert "evidence_map" not in client.post("/v1/detect?evidence=1", files=one(image)).json()


def test_the_trained_ae_detectors_own_map_covers_the_upload(client):
    """The tiny ae detector's map (``methods/ae/evidence.py``) through the service."""
    image = encode(Image.new("RGB", (90, 60), (120, 130, 140)))
    body = client.post("/v1/detect?evidence=1", files=one(image)).json()
    prefix = "data:image/png;base64,"
    decoded = Image.open(io.BytesIO(base64.b64decode(body["evidence_map"][len(prefix) :])))
    assert decoded.size == (90, 60) and decoded.mode == "L"


def test_evidence_to_data_url_refuses_bad_maps():
    with pytest.raises(ValueError, match="HxW"):
        evidence_to_data_url(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="finite"):
        evidence_to_data_url(np.array([[np.nan]]))


def _signed_jpeg(pixels: bytes) -> bytes:
    """A JPEG carrying a C2PA manifest that declares it AI-generated, signed by a test CA."""
    c2pa = pytest.importorskip("c2pa")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ldmdetect tests"),
            ]
        )

    def usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
        flags = dict.fromkeys(
            (
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
            ),
            False,
        )
        return x509.KeyUsage(digital_signature=sign, key_cert_sign=ca, crl_sign=ca, **flags)

    def cert(subject, issuer, key, issuer_key, *, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage(sign=not ca, ca=ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        if not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = cert(name("Test Root"), name("Test Root"), ca_key, ca_key, ca=True)
    leaf = cert(name("Test Signer"), name("Test Root"), key, ca_key, ca=False)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root))
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = c2pa.Signer.from_info(
        c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, private, None)
    )
    manifest = {
        "claim_generator_info": [{"name": "ldmdetect-tests", "version": "1"}],
        "title": "made.jpg",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": "http://cv.iptc.org/newscodes/"
                            "digitalsourcetype/trainedAlgorithmicMedia",
                        }
                    ]
                },
            }
        ],
    }
    out = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, "image/jpeg", io.BytesIO(pixels), out)
    return out.getvalue()


def test_content_credentials_are_reported_beside_the_score(client, photo_jpeg):
    signed = _signed_jpeg(photo_jpeg)
    plain = client.post("/v1/detect", files=one(photo_jpeg, "a.jpg", "image/jpeg")).json()
    body = client.post("/v1/detect", files=one(signed, "a.jpg", "image/jpeg")).json()
    assert plain["c2pa"] is None
    credentials = body["c2pa"]
    assert credentials["title"] == "made.jpg"
    assert credentials["claim_generator"].startswith("ldmdetect-tests")
    assert credentials["signature_issuer"] == "ldmdetect tests"
    assert credentials["validation_state"] in {"Valid", "Trusted", "Invalid"}
    assert credentials["actions"][0]["action"] == "c2pa.created"
    assert credentials["actions"][0]["digital_source_type"].endswith("trainedAlgorithmicMedia")
    # The manifest is reported, never mixed in: same pixels, same score.
    assert body["score"] == pytest.approx(plain["score"], abs=1e-6)


def test_a_broken_manifest_is_null_not_an_error(client, photo_jpeg):
    signed = bytearray(_signed_jpeg(photo_jpeg))
    start = signed.find(b"jumb")
    assert start > 0
    signed[start + 40 : start + 400] = bytes(360)  # corrupt the manifest store, keep the JPEG
    response = client.post("/v1/detect", files=one(bytes(signed), "a.jpg", "image/jpeg"))
    assert response.status_code == 200, response.text
    assert response.json()["c2pa"] is None or "validation_state" in response.json()["c2pa"]


# --- hostile input ----------------------------------------------------------------------------


def test_wrong_magic_bytes_are_refused_whatever_the_name_says(client):
    pdf = b"%PDF-1.4\n" + b"0" * 200
    error = assert_clean_error(client.post("/v1/detect", files=one(pdf, "x.png", "image/png")), 415)
    assert all(name in error for name in DECODE_FORMATS), error
    html = b"<html><script>alert(1)</script></html>"
    assert_clean_error(client.post("/v1/detect", files=one(html, "x.jpg", "image/jpeg")), 415)


def test_truncated_and_empty_images_are_422(client, photo_jpeg):
    assert_clean_error(
        client.post("/v1/detect", files=one(photo_jpeg[: len(photo_jpeg) // 2], "t.jpg")),
        422,
        "truncated",
    )
    assert_clean_error(client.post("/v1/detect", files=one(b"", "e.png")), 422, "empty")
    assert_clean_error(client.post("/v1/detect", files=one(b"\x89PNG\r\n\x1a\n", "h.png")), 422)


def test_decompression_bomb_header_is_refused_before_decoding(client):
    bomb = png_bomb_header(100_000, 100_000)
    assert len(bomb) < 200
    started = time.perf_counter()
    error = assert_clean_error(client.post("/v1/detect", files=one(bomb)), 413, "pixels")
    assert "100000x100000" in error
    assert time.perf_counter() - started < 5  # decoding 10 G pixels would take far longer


def test_missing_parts_too_many_parts_and_non_multipart(client, photo_jpeg):
    assert_clean_error(client.post("/v1/detect", data={"note": "no file"}), 415)
    assert_clean_error(
        client.post("/v1/detect", data={"note": "x"}, files={"other": ("", b"", "text/plain")}),
        422,
    )
    two = [("files", ("a.jpg", photo_jpeg, "image/jpeg"))] * 2
    assert_clean_error(client.post("/v1/detect", files=two), 413, "too many parts")
    many = [("files", ("a.png", b"x", "image/png"))] * 17  # max_batch is 16
    assert_clean_error(client.post("/v1/detect/batch", files=many), 413, "too many parts")
    assert_clean_error(
        client.post("/v1/detect", content=b"raw", headers={"content-type": "image/png"}), 415
    )
    garbled = client.post(
        "/v1/detect", content=b"--x\r\nno", headers={"content-type": "multipart/form-data"}
    )
    assert garbled.status_code == 400 and "error" in garbled.json()


def test_unknown_routes_methods_and_parameters_get_json_errors(client):
    assert_clean_error(client.get("/etc/passwd"), 404)
    assert_clean_error(client.get("/v1/detect"), 405)
    assert_clean_error(client.post("/v1/detect?fpr=abc", files=one(b"x")), 422, "fpr")
    assert_clean_error(client.post("/v1/detect?url=http://example.com/a.png"), 415)


def test_oversized_body_with_content_length_is_refused_unread(client):
    big = b"\xff\xd8\xff" + bytes(600 * 1024)
    assert_clean_error(client.post("/v1/detect", files=one(big, "big.jpg")), 413, "limit")


@pytest.fixture(scope="module")
def live(detector):
    app = create_app(detector, max_body_bytes=256 * 1024)
    with serve_in_thread(app) as url:
        yield url


def _status_and_body(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_declared_oversized_body_is_refused_before_it_is_sent(live):
    head = (
        b"POST /v1/detect HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000000\r\n\r\n"
    )
    status, body = _status_and_body(raw_request(live, head))
    assert status == 413 and json.loads(body)["error"].startswith("request body is over")


def test_chunked_oversized_body_is_cut_off_while_it_arrives(live):
    # No Content-Length: only counting the bytes as they arrive can stop this upload.
    head = (
        b"POST /v1/detect HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    first = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n\xff\xd8\xff'
    )
    piece = bytes(32 * 1024)

    def chunks():
        yield b"%x\r\n%s\r\n" % (len(first), first)
        for _ in range(2000):  # 64 MB if nobody stops it; the limit is 256 KB
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
            time.sleep(0.001)

    status, body = _status_and_body(raw_request(live, head, chunks()))
    assert status == 413, body
    assert json.loads(body) == {"error": "request body is over the limit of 262144 bytes"}
    with httpx.Client(base_url=live) as http:  # and the server is fine afterwards
        assert http.get("/healthz").status_code == 200


def test_a_small_chunked_upload_is_accepted(live, photo_jpeg):
    with httpx.Client(base_url=live, timeout=30) as http:
        request = http.build_request("POST", "/v1/detect", files=one(photo_jpeg, "p.jpg"))
        body = request.read()
        content_type = request.headers["content-type"]

        def stream():
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        response = http.post("/v1/detect", content=stream(), headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert 0.0 <= response.json()["score"] <= 1.0


def test_concurrency_cap_answers_503_with_retry_after(detector, photo_jpeg):
    entered, release = threading.Event(), threading.Event()

    class Slow(Detector):
        def decision_function(self, images, **kwargs):
            entered.set()
            release.wait(20)
            return super().decision_function(images, **kwargs)

    slow = Slow(detector.config, detector.model, device="cpu")
    app = create_app(slow, max_concurrency=1)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        first = []
        worker = threading.Thread(
            target=lambda: first.append(http.post("/v1/detect", files=one(photo_jpeg)))
        )
        worker.start()
        assert entered.wait(20)
        busy = http.post("/v1/detect", files=one(photo_jpeg))
        assert_clean_error(busy, 503, "busy")
        assert busy.headers["retry-after"] == "1"
        assert http.get("/healthz").status_code == 200  # only scoring routes are capped
        release.set()
        worker.join(20)
        assert first[0].status_code == 200
        assert http.post("/v1/detect", files=one(photo_jpeg)).status_code == 200


def test_bearer_token_is_required_and_accepted(detector, photo_jpeg):
    with TestClient(create_app(detector, token="s3cret-token")) as client:
        assert_clean_error(client.post("/v1/detect", files=one(photo_jpeg)), 401, "token")
        denied = client.get("/v1/detector", headers={"Authorization": "Bearer wrong"})
        assert_clean_error(denied, 401)
        assert denied.headers["www-authenticate"] == "Bearer"
        assert_clean_error(
            client.get("/v1/detector", headers={"Authorization": "Basic s3cret-token"}), 401
        )
        good = {"Authorization": "Bearer s3cret-token"}
        assert client.post("/v1/detect", files=one(photo_jpeg), headers=good).status_code == 200
        assert client.get("/v1/detector", headers=good).status_code == 200
        assert client.get("/healthz").status_code == 200  # liveness and the page stay open
        assert client.get("/").status_code == 200


def test_internal_errors_never_reach_the_client(detector, photo_jpeg, caplog):
    class Broken(Detector):
        def decision_function(self, images, **kwargs):
            raise RuntimeError("secret internal detail at /srv/models/x")

    broken = Broken(detector.config, detector.model, device="cpu")
    with TestClient(create_app(broken), raise_server_exceptions=False) as client:
        response = client.post("/v1/detect", files=one(photo_jpeg))
        assert_clean_error(response, 500)
        assert response.json() == {"error": "internal server error"}
        assert "secret" not in response.text
        assert client.get("/healthz").status_code == 200  # the batcher survived
    assert any("secret internal detail" in str(r.exc_info) for r in caplog.records if r.exc_info)
