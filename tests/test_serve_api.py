"""The HTTP API of `maskformer serve` against a live uvicorn server and a tiny checkpoint: the
JSON equals what `maskformer predict` writes, concurrency, batching, limits and bad uploads."""

from __future__ import annotations

import base64
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests._serve_support import COCO, PHOTO, load, running_server, save_tiny_checkpoint
from tests.conftest import SHARED_DATA, requires_shared_data

pytestmark = requires_shared_data
httpx = pytest.importorskip("httpx")

# Thresholds low enough that the random tiny model keeps several segments.
LOW = {"threshold": 0.2, "mask_threshold": 0.0, "overlap_mask_area_threshold": 0.0}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serve_model"))


@pytest.fixture(scope="module")
def model_and_processor(checkpoint):
    return load(checkpoint)


@pytest.fixture(scope="module")
def server(model_and_processor):
    from maskformer.serve.app import create_app

    app = create_app(*model_and_processor, "tiny-coco")
    with running_server(app) as url:
        yield url, app


def _post(url, photo=PHOTO, data=None, content=None, name=None, timeout=120):
    payload = photo.read_bytes() if content is None else content
    files = {"image": (name or photo.name, payload, "application/octet-stream")}
    return httpx.post(f"{url}/v1/segment", files=files, data=data or {}, timeout=timeout)


def _png(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


@pytest.mark.parametrize("task", ["semantic", "panoptic", "instance"])
def test_answer_equals_what_predict_writes(server, model_and_processor, tmp_path, task):
    from maskformer.engine.predict import PredictOptions, predict_images

    url, _ = server
    response = _post(url, data={"task": task, **LOW})
    assert response.status_code == 200, response.text
    answer = response.json()
    model, processor = model_and_processor
    options = PredictOptions(task=task, output_dir=tmp_path, batch_size=1, progress=False, **LOW)
    predict_images(model, processor, [PHOTO], options)

    stem = PHOTO.stem
    assert (answer["width"], answer["height"]) == Image.open(PHOTO).size
    assert answer["file_name"] == f"{stem}.png" and answer["image_id"] == int(stem)
    label = _png(answer["label_png"])
    overlay = np.asarray(_png(answer["overlay_png"]))
    assert np.array_equal(overlay, np.asarray(Image.open(tmp_path / "overlays" / f"{stem}.png")))
    assert answer["segments_info"], "the tiny model should keep some segments"
    names = dict(enumerate(model.config.id2label.values()))
    for entry in answer["segments_info"]:
        assert entry["label"] == names[entry["category_id"]]
    if task == "semantic":
        written = Image.open(tmp_path / "semantic" / f"{stem}.png")
        assert label.mode == written.mode
        classes = np.asarray(written)
        assert np.array_equal(np.asarray(label), classes)
        assert [(s["category_id"], s["area"]) for s in answer["segments_info"]] == [
            (int(c), int((classes == c).sum())) for c in np.unique(classes)
        ]
    elif task == "panoptic":
        assert np.array_equal(
            np.asarray(label), np.asarray(Image.open(tmp_path / "panoptic" / f"{stem}.png"))
        )
        (annotation,) = json.loads((tmp_path / "panoptic.json").read_text())["annotations"]
        assert annotation == {
            "image_id": answer["image_id"],
            "file_name": answer["file_name"],
            "segments_info": [
                {k: s[k] for k in ("id", "category_id", "score")} for s in answer["segments_info"]
            ],
        }
        ids = np.asarray(label).astype(np.int64) @ np.array([1, 256, 65536])
        assert [s["area"] for s in answer["segments_info"]] == [
            int((ids == s["id"]).sum()) for s in answer["segments_info"]
        ]
    else:
        records = json.loads((tmp_path / "instances.json").read_text())
        assert records == [
            {
                "image_id": answer["image_id"],
                "category_id": s["category_id"],
                "segmentation": s["segmentation"],
                "score": s["score"],
            }
            for s in answer["segments_info"]
        ]
        from maskformer.utils.coco import decode_rle

        masks = np.stack([decode_rle(s["segmentation"]) for s in answer["segments_info"]])
        assert [s["area"] for s in answer["segments_info"]] == masks.sum(axis=(1, 2)).tolist()
        # label PNG: where masks overlap, the higher score wins (as in the overlay)
        ids = np.asarray(label).astype(np.int64)
        scores = np.array([s["score"] for s in answer["segments_info"]])
        covered = masks.any(axis=0)
        best = np.argmax(np.where(masks, scores[:, None, None], -1.0), axis=0) + 1
        assert np.array_equal(ids, np.where(covered, best, 0))


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_nothing_found_is_an_empty_answer(server, task):
    url, _ = server
    response = _post(url, data={"task": task, "threshold": "1.0", "segment_map": "true"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["segments_info"] == []
    for key in ("label_png", "segment_map_png"):
        assert not np.asarray(_png(answer[key])).any()
    assert _png(answer["overlay_png"]).height == answer["height"]


def test_segment_map_and_overlay_options(server):
    url, _ = server
    answer = _post(url, data={"task": "semantic", "segment_map": "true", "overlay": "false"})
    answer = answer.json()
    assert "overlay_png" not in answer
    ids = np.asarray(_png(answer["segment_map_png"])).astype(np.int64) @ np.array([1, 256, 65536])
    classes = np.asarray(_png(answer["label_png"])).astype(np.int64)
    assert np.array_equal(ids, classes + 1)  # semantic segment id = class id + 1
    plain = _post(url, data={"task": "panoptic", "legend": "false"}).json()
    assert _png(plain["overlay_png"]).size == (plain["width"], plain["height"])  # no legend panel


def test_twenty_concurrent_requests_are_all_answered_correctly(server):
    url, app = server
    photos = [PHOTO, COCO / "images" / "000000142238.jpg"]
    tasks = ["panoptic", "semantic"]
    fields = {**LOW, "overlay": "false"}  # the model is what is shared, not the drawing
    expected = {
        (p.name, t): _post(url, p, {"task": t, **fields}).json() for p in photos for t in tasks
    }
    model = app.state.inference.model
    active, most, lock = [0], [0], threading.Lock()
    original = model.forward

    def counting_forward(*args, **kwargs):  # how many forward passes run at once
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    jobs = [(photos[i % 2], tasks[i // 2 % 2]) for i in range(20)]
    model.forward = counting_forward
    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(
                pool.map(lambda job: _post(url, job[0], {"task": job[1], **fields}), jobs)
            )
    finally:
        del model.forward
    assert [a.status_code for a in answers] == [200] * 20
    for (photo, task), answer in zip(jobs, answers):
        # max_batch = 1: each forward is the one a lone request gets, so answers are identical
        assert answer.json() == expected[(photo.name, task)]
    assert most[0] == 1


def test_waiting_requests_share_a_forward_pass(model_and_processor):
    from maskformer.serve.app import ServeLimits, create_app

    app = create_app(*model_and_processor, "tiny", ServeLimits(max_batch=4))
    fields = {"task": "semantic", "overlay": "false"}
    with running_server(app) as url:
        alone = _post(url, data=fields).json()
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: _post(url, data=fields), range(12)))
        sizes = app.state.inference.batch_sizes
    assert [a.status_code for a in answers] == [200] * 12
    assert max(sizes) > 1 and sum(k * v for k, v in sizes.items()) == 13
    reference = np.asarray(_png(alone["label_png"]))
    for answer in answers:
        classes = np.asarray(_png(answer.json()["label_png"]))
        # A batched forward may sum in another order (float32, relative error ~1e-6), which can
        # only flip pixels whose two best class scores are that close: a tiny share of them.
        assert classes.shape == reference.shape
        assert (classes != reference).mean() < 0.01


def test_model_and_health(server):
    url, _ = server
    info = httpx.get(f"{url}/v1/model").json()
    assert info["model"] == "tiny-coco" and info["num_labels"] == 133 == len(info["labels"])
    assert info["labels"][0] == {"id": 0, "name": "person", "color": [128, 128, 128]}
    assert info["tasks"] == ["semantic", "instance", "panoptic"]
    assert info["default_task"] == "panoptic" and info["device"] == "cpu"
    assert info["dtype"] == "float32" and info["image_size"]["shortest_edge"] == 96
    health = httpx.get(f"{url}/healthz").json()
    assert health["status"] == "ok" and health["pending"] == 0
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("app.js", "style.css"):
        assert httpx.get(f"{url}/static/{asset}").status_code == 200
    assert "/v1/segment" in httpx.get(f"{url}/openapi.json").json()["paths"]
    assert httpx.get(f"{url}/docs").status_code == 404  # Swagger UI would need a CDN


@pytest.fixture(scope="module")
def strict_server(model_and_processor):
    from maskformer.serve.app import ServeLimits, create_app

    limits = ServeLimits(max_upload_bytes=60_000, max_pixels=200 * 200)
    with running_server(create_app(*model_and_processor, "tiny", limits)) as url:
        yield url


def _png_bytes(size) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_oversized_upload_is_413(strict_server):
    big = PHOTO.read_bytes()
    assert len(big) > 60_000
    response = _post(strict_server, content=big)
    assert response.status_code == 413
    assert "at most 60000 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        body = (
            b"--b\r\nContent-Disposition: form-data; name=image; filename=x.jpg\r\n\r\n"
            + big
            + b"\r\n--b--\r\n"
        )
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    streamed = httpx.post(
        f"{strict_server}/v1/segment",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
        timeout=60,
    )
    assert streamed.status_code == 413, streamed.text
    assert "at most 60000 bytes" in streamed.json()["detail"]


def test_too_many_pixels_is_422(strict_server):
    response = _post(strict_server, content=_png_bytes((300, 200)), name="wide.png")
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "image 'wide.png' is 300x200 = 60000 pixels; this server accepts at most 40000 pixels"
    )
    assert _post(strict_server, content=_png_bytes((200, 200)), name="ok.png").status_code == 200


BAD_FILES = {
    "empty": (lambda: b"", "is empty"),
    "text": (lambda: b"not an image at all", "not an image in a format"),
    "truncated-jpeg": (lambda: PHOTO.read_bytes()[:3000], "cannot decode image"),
    "truncated-png": (lambda: _png_bytes((20, 20))[:-40], "cannot decode image"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_files_are_400_with_the_reason(strict_server, kind):
    make, reason = BAD_FILES[kind]
    content = make()
    response = _post(strict_server, content=content, name="bad.jpg")
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"] and "Traceback" not in response.text


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"task": "depth"}, "task"),
        ({"threshold": "1.5"}, "threshold"),
        ({"mask_threshold": "abc"}, "mask_threshold"),
        ({"label_ids_to_fuse": "1,x"}, "label_ids_to_fuse"),
        ({"label_ids_to_fuse": "999"}, "label_ids_to_fuse"),
    ],
)
def test_bad_fields_are_422_naming_the_field(strict_server, data, field):
    response = _post(strict_server, content=_png_bytes((20, 20)), data=data)
    assert response.status_code == 422
    assert field in response.text


def test_an_image_the_processor_refuses_is_422(strict_server):
    # 1 x 5000 px: resized to the processor's longest edge (160 px) its width would be 0 px
    response = _post(strict_server, content=_png_bytes((1, 5000)), name="sliver.png")
    assert response.status_code == 422
    assert response.json()["detail"].startswith("cannot segment image 'sliver.png' (1x5000): ")


def test_missing_image_is_422(strict_server):
    response = httpx.post(f"{strict_server}/v1/segment", data={"task": "semantic"})
    assert response.status_code == 422 and "image" in response.text


def test_uploads_are_turned_upright_by_their_exif_orientation():
    from maskformer.serve.results import decode_upload

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(buffer, format="JPEG", exif=exif)
    upright = decode_upload(buffer.getvalue(), max_pixels=10_000)
    assert upright.size == (20, 40) and upright.mode == "RGB"


def test_fused_labels_and_ade_photo(server):
    url, _ = server
    ade = SHARED_DATA / "ade20k_sample" / "images" / "ADE_val_00000001.jpg"
    answer = _post(url, ade, {"task": "panoptic", "label_ids_to_fuse": "131", **LOW}).json()
    walls = [s for s in answer["segments_info"] if s["category_id"] == 131]
    assert len(walls) <= 1  # a fused class is one segment
    assert answer["image_id"] == "ADE_val_00000001"


def test_full_queue_is_503_and_a_failing_model_a_one_line_500(model_and_processor):
    from maskformer.serve.app import ServeLimits, create_app

    app = create_app(*model_and_processor, "tiny", ServeLimits(max_pending=1))
    inference = app.state.inference
    gate, entered = threading.Event(), threading.Event()
    real = inference._segment

    def held(*args):
        entered.set()
        assert gate.wait(30)
        return real(*args)

    small = {"content": _png_bytes((32, 24)), "name": "small.png"}
    with running_server(app) as url, ThreadPoolExecutor(1) as pool:
        inference._segment = held
        first = pool.submit(_post, url, data={"task": "semantic"}, **small)
        assert entered.wait(30)
        busy = _post(url, data={"task": "semantic"}, **small)
        gate.set()
        assert first.result().status_code == 200
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["detail"] == "server busy: 1 requests are waiting (the limit is 1)"

        def broken(*args):
            raise RuntimeError("CUDA out of memory (pretend)\n  at some/secret/path.py")

        inference._segment = broken
        failed = _post(url, data={"task": "semantic"}, **small)
        assert failed.status_code == 500
        assert failed.json() == {"detail": "internal error: RuntimeError"}
        inference._segment = real
        assert _post(url, data={"task": "semantic"}, **small).status_code == 200
