"""The page of `maskformer serve` in a real browser: headless Debian Chromium driven by Playwright.

Upload a real photo, wait for the overlay, check the legend against the API's answer, hover a
segment, download the label PNG and the JSON, drop a second picture, show an error. A screenshot
is written to the test's folder, and to docs/serve_screenshot.png with MASKFORMER_SCREENSHOT=1.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion

from tests._serve_support import PHOTO, load, running_server, save_tiny_checkpoint
from tests.conftest import REPO_ROOT, SHARED_DATA, requires_shared_data

pytestmark = requires_shared_data
httpx = pytest.importorskip("httpx")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) missing")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium's own connections are refused on a closed
# network and the page load stalls.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Thresholds low enough that the random tiny model keeps several segments.
THRESHOLDS = {"threshold": "0.2", "mask_threshold": "0", "overlap_mask_area_threshold": "0"}
FIELDS = {"task": "panoptic", "legend": "false", **THRESHOLDS}
ADE_PHOTO = SHARED_DATA / "ade20k_sample" / "images" / "ADE_val_00000002.jpg"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from maskformer.serve.app import create_app

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium as root)")
    model, processor = load(save_tiny_checkpoint(tmp_path_factory.mktemp("serve_browser")))
    with running_server(create_app(model, processor, "tiny-coco (random weights)")) as url:
        yield url


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                accept_downloads=True, viewport={"width": 1360, "height": 560}
            )
            page = context.new_page()
            page.set_default_timeout(60_000)
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(server)
            yield page
            outside = [u for u in requested if not u.startswith((server, "blob:", "data:"))]
            assert not outside, f"the page fetched from elsewhere: {outside}"
        finally:
            browser.close()


def _set_field(page, selector: str, value: str) -> None:
    page.eval_on_selector(
        selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", value
    )


def _answer(server: str, photo: Path) -> dict:
    files = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}
    data = {**FIELDS, "overlay": "false", "segment_map": "true"}
    response = httpx.post(f"{server}/v1/segment", files=files, data=data, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_upload_overlay_legend_hover_downloads(server, page, tmp_path):
    page.wait_for_function("!document.getElementById('model-line').textContent.includes('loading')")
    assert "tiny-coco" in page.inner_text("#model-line")
    for name, value in THRESHOLDS.items():
        _set_field(page, f"#{name}", value)
    page.set_input_files("#file", str(PHOTO))
    page.wait_for_selector("#results[data-ready='panoptic']")

    width, height = Image.open(PHOTO).size
    assert page.eval_on_selector("#overlay", "img => [img.naturalWidth, img.naturalHeight]") == [
        width,
        height,
    ]
    expected = _answer(server, PHOTO)
    assert expected["segments_info"], "the tiny model should keep some segments"
    classes = sorted({s["category_id"]: s["label"] for s in expected["segments_info"]}.items())
    assert page.locator("#legend li .name").all_inner_texts() == [name for _, name in classes]

    # Hover inside the largest segment: the tooltip names its class and score. The overlay is
    # shown at about 0.6x, so a pointer position maps to the image within ~2 px: aim at a pixel
    # whose 9 x 9 neighbourhood belongs to the segment.
    ids = np.asarray(Image.open(io.BytesIO(base64.b64decode(expected["segment_map_png"]))))
    ids = ids.astype(np.int64) @ np.array([1, 256, 65536])
    largest = max(expected["segments_info"], key=lambda s: s["area"])
    inside = binary_erosion(ids == largest["id"], np.ones((9, 9), dtype=bool))
    rows, columns = np.nonzero(inside)
    assert len(rows), "the largest segment should have an interior"
    pick = len(rows) // 2
    box = page.locator("#overlay").bounding_box()
    page.mouse.move(
        box["x"] + (columns[pick] + 0.5) * box["width"] / width,
        box["y"] + (rows[pick] + 0.5) * box["height"] / height,
    )
    page.wait_for_selector("#tooltip:not([hidden])")
    tooltip = page.inner_text("#tooltip")
    assert tooltip.startswith(largest["label"]) and f"score {largest['score']:.2f}" in tooltip
    assert page.inner_text("#legend li.active .name") == largest["label"]

    screenshot = page.screenshot(full_page=True)
    (tmp_path / "serve_screenshot.png").write_bytes(screenshot)
    if os.environ.get("MASKFORMER_SCREENSHOT") == "1":
        from maskformer.utils.atomic import atomic_write_bytes

        atomic_write_bytes(REPO_ROOT / "docs" / "serve_screenshot.png", screenshot)

    with page.expect_download() as download:
        page.click("#download-label")
    label = Image.open(download.value.path())
    assert label.size == (width, height) and label.mode == "RGB"
    assert np.array_equal(np.asarray(label).astype(np.int64) @ np.array([1, 256, 65536]), ids)
    with page.expect_download() as download:
        page.click("#download-json")
    saved = json.loads(Path(download.value.path()).read_text())
    assert saved["segments_info"] == expected["segments_info"]
    assert download.value.suggested_filename == f"{PHOTO.stem}_panoptic.json"


def test_drop_a_picture_switch_task_and_see_errors(server, page):
    page.select_option("#task", "semantic")
    assert page.is_disabled("#threshold")  # semantic segmentation has no thresholds
    drop = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "ade.jpg", { type: "image/jpeg" }));
            return transfer;
        }""",
        base64.b64encode(ADE_PHOTO.read_bytes()).decode(),
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": drop})
    page.wait_for_selector("#results[data-ready='semantic']")
    with page.expect_download() as download:
        page.click("#download-label")
    label = Image.open(download.value.path())
    assert label.size == Image.open(ADE_PHOTO).size and label.mode == "L"
    names = page.locator("#legend li .name").all_inner_texts()
    assert names and len(names) == len(set(names))

    page.set_input_files(
        "#file", files=[{"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"nope"}]
    )
    page.wait_for_selector("#status.error")
    assert "400" in page.inner_text("#status") and "broken.jpg" in page.inner_text("#status")
