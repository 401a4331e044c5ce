"""The web page in a real headless browser: choose a photo, read the verdict off the page."""

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ldmdetect.detector import Detector
from ldmdetect.serve import create_app, serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
)


class EvidenceDetector(Detector):
    """Scores like the trained detector; its evidence map is a left-to-right ramp."""

    explains = True

    def evidence_map(self, image):
        return np.tile(np.linspace(0.0, 1.0, image.width), (image.height, 1))


def test_upload_a_photo_and_read_the_verdict(detector_dir, photo_jpeg, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    detector = EvidenceDetector.from_pretrained(detector_dir, device="cpu")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_jpeg)
    expected = float(detector.decision_function([photo])[0])
    name, threshold = detector.config.threshold(0.01)

    with (
        serve_in_thread(create_app(detector, fpr=0.01, detector_id="tiny-test")) as url,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url + "/")
            sync_api.expect(page.locator("#fpr option")).not_to_have_count(0)
            page.set_input_files("#file", str(photo))
            verdict = page.locator("#verdict")
            sync_api.expect(verdict).to_have_attribute("data-label", re.compile("generated|real"))
            label = verdict.get_attribute("data-label")
            score_text = page.locator("#score").inner_text()
            threshold_text = page.locator("#threshold").inner_text()
            detector_text = page.locator("#detector").inner_text()
            c2pa_text = page.locator("#c2pa").inner_text()
            preview_width = page.locator("#preview").evaluate("img => img.naturalWidth")
            sync_api.expect(page.locator("#overlay")).to_be_visible()
            overlay_alpha = page.locator("#overlay").evaluate(
                """c => { const d = c.getContext("2d").getImageData(0, 0, c.width, 1).data;
                         return [d[3], d[d.length - 1]]; }"""
            )
            screenshot = page.screenshot(full_page=True)
        finally:
            browser.close()

    assert label == ("generated" if expected > threshold else "real")
    assert verdict_text_matches(label, score_text, expected)
    assert threshold_text.startswith(f"{threshold:.4f}") and name in threshold_text
    assert detector_text == "tiny-test"
    assert "None found" in c2pa_text
    assert preview_width > 0  # the uploaded image is shown
    assert overlay_alpha[0] == 0 and overlay_alpha[1] > 150  # the ramp, drawn as red alpha
    assert errors == []
    (tmp_path / "page.png").write_bytes(screenshot)  # for a human look (pytest --basetemp)


def verdict_text_matches(label: str, score_text: str, expected: float) -> bool:
    shown = float(score_text.rstrip(" %")) / 100
    return label in {"generated", "real"} and abs(shown - expected) <= 0.0006


def test_the_family_shows_under_the_verdict(family_detector_dir, two_family_aligned_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    from ldmdetect.engine.reconstruct import read_aligned_dataset

    detector = Detector.from_pretrained(family_detector_dir, device="cpu")
    pair = read_aligned_dataset(two_family_aligned_dir)[0]
    files = [pair.real] + [f for _, f in pair.reconstructions]
    scores = np.sort(detector.decision_function(files))
    # Between the lowest score and the next: at least one file judged real, the rest not.
    between = float(scores[0] + scores[1]) / 2
    detector.config = replace(
        detector.config, thresholds=detector.config.thresholds | {"fpr_0.5": between}
    )
    expected = detector.attribute(files, fpr=0.5)
    shown = []
    with (
        serve_in_thread(create_app(detector, fpr=0.5, detector_id="families")) as url,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(url + "/")
            sync_api.expect(page.locator("#fpr option")).not_to_have_count(0)
            for path in files:
                page.locator("#verdict").evaluate("v => { v.dataset.label = ''; }")
                page.set_input_files("#file", str(path))
                sync_api.expect(page.locator("#verdict")).to_have_attribute(
                    "data-label", re.compile("generated|real|uncertain")
                )
                family = page.locator("#family")
                name = page.locator("#family-name").inner_text()
                shown.append(name if family.is_visible() else None)
        finally:
            browser.close()
    assert shown == [a.family for a in expected]
    assert None in shown and set(shown) - {None}
