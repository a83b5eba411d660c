"""The FastAPI application of ``maskformer serve``: the page, the JSON API and its limits.

Routes: ``GET /`` (the page), ``GET /static/...`` (its script and style), ``POST /v1/segment``,
``GET /v1/model``, ``GET /healthz`` and ``GET /openapi.json`` (no ``/docs``: FastAPI's Swagger
page loads its script from a CDN, and this server must work offline). The model runs on
one worker thread behind :class:`~maskformer.serve.worker.InferenceQueue`; request handlers only
decode uploads and build answers. Errors are JSON ``{"detail": ...}`` with a 4xx status that
says what was wrong (413 upload too large, 422 too many pixels, a shape the processor refuses or
a bad field, 400 unreadable image, 503 queue full); an unexpected failure is a 500 with one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from maskformer.engine.predict import TASKS
from maskformer.serve.results import UploadError, build_payload, decode_upload
from maskformer.serve.worker import (
    InferenceQueue,
    QueueFullError,
    SegmentSettings,
    WorkerStoppedError,
)
from maskformer.visualize import class_color

STATIC_DIR = Path(__file__).resolve().parent / "static"
logger = logging.getLogger("maskformer.serve")


@dataclass
class ServeLimits:
    """The server's limits and defaults (the ``maskformer serve`` flags)."""

    default_task: str = "panoptic"
    max_batch: int = 1
    max_pending: int = 32
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.default_task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.default_task!r}")
        for name in ("max_batch", "max_pending", "max_upload_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


# ---------------------------------------------------------------------------- OpenAPI models
class Task(str, Enum):
    semantic = "semantic"
    instance = "instance"
    panoptic = "panoptic"


class RLE(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="compressed COCO RLE, as pycocotools writes it")


class SegmentInfo(BaseModel):
    id: int = Field(
        description="the segment's value in segment_map_png (and label_png, except "
        "semantic, whose label_png holds category_id = id - 1)"
    )
    category_id: int = Field(description="class id (a key of the model's labels)")
    label: str = Field(description="class name")
    area: int = Field(description="pixels of the segment")
    score: float | None = Field(None, description="confidence (instance, panoptic)")
    segmentation: RLE | None = Field(None, description="instance: the mask as COCO RLE")


class SegmentResponse(BaseModel):
    task: Task
    image_id: int | str = Field(description="the upload's file stem; an int when all digits")
    file_name: str = Field(description="name of the label PNG, as `maskformer predict` names it")
    width: int
    height: int
    segments_info: list[SegmentInfo]
    label_png: str = Field(description="base64 PNG: the file `maskformer predict` writes")
    overlay_png: str | None = Field(None, description="base64 PNG: the overlay picture")
    segment_map_png: str | None = Field(
        None, description="base64 PNG: segment ids as COCO panoptic RGB (id = R + 256 G + 256² B)"
    )


class Label(BaseModel):
    id: int
    name: str
    color: list[int] = Field(description="RGB of the class in the overlays")


class ModelInfo(BaseModel):
    model: str
    labels: list[Label]
    num_labels: int
    num_queries: int
    tasks: list[Task]
    default_task: Task
    backbone: str
    parameters: int
    device: str
    dtype: str
    image_size: dict[str, int] = Field(description="the processor's resize target")
    max_upload_bytes: int
    max_pixels: int
    max_batch: int


class Health(BaseModel):
    status: str
    pending: int
    forward_passes: int


class ErrorBody(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the upload is not a readable image"},
    413: {"model": ErrorBody, "description": "the upload exceeds the size limit"},
    422: {"description": "too many pixels, or a field out of range"},
    503: {"model": ErrorBody, "description": "too many requests waiting, or shutting down"},
}


# ----------------------------------------------------------------------------------- the app
def create_app(
    model: torch.nn.Module,
    processor: Any,
    model_name: str = "model",
    limits: ServeLimits | None = None,
) -> FastAPI:
    """The application serving ``model`` (on its device, in eval mode) with ``processor``.

    The inference queue starts with the app's lifespan and is closed with it.
    """
    limits = limits or ServeLimits()
    inference = InferenceQueue(model, processor, limits.max_batch, limits.max_pending)
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        inference.start()
        try:
            yield
        finally:
            await run_in_threadpool(inference.close)

    app = FastAPI(
        title="maskformer serve",
        version="1",
        summary=f"MaskFormer segmentation with {model_name}",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN
        redoc_url=None,
    )
    app.state.inference = inference
    app.state.limits = limits
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        logger.exception("request failed")  # the traceback goes to the server's log only
        return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/healthz", response_model=Health, summary="liveness and queue length")
    async def healthz() -> dict[str, Any]:
        alive = inference.running
        return {
            "status": "ok" if alive else "stopped",
            "pending": inference.pending,
            "forward_passes": sum(inference.batch_sizes.values()),
        }

    info = _model_info(model, processor, model_name, limits, id2label)

    @app.get("/v1/model", response_model=ModelInfo, summary="labels, tasks and limits")
    async def model_info() -> dict[str, Any]:
        return info

    @app.post(
        "/v1/segment",
        response_model=SegmentResponse,
        response_model_exclude_none=True,
        responses=ERRORS,
        summary="segment one image",
    )
    async def segment(
        image: Annotated[UploadFile, File(description="the picture (PNG, JPEG, WebP, ...)")],
        task: Annotated[Task | None, Form(description="default: the server's --task")] = None,
        threshold: Annotated[float, Form(ge=0.0, le=1.0, description="min. segment score")] = 0.5,
        mask_threshold: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5,
        overlap_mask_area_threshold: Annotated[float, Form(ge=0.0, le=1.0)] = 0.8,
        label_ids_to_fuse: Annotated[
            str, Form(max_length=10_000, description="panoptic: comma-separated class ids")
        ] = "",
        overlay: Annotated[bool, Form(description="include overlay_png")] = True,
        legend: Annotated[bool, Form(description="draw the legend on the overlay")] = True,
        segment_map: Annotated[bool, Form(description="include segment_map_png")] = False,
    ) -> dict[str, Any]:
        settings = SegmentSettings(
            task=(task.value if task is not None else limits.default_task),
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
            label_ids_to_fuse=_parse_ids(label_ids_to_fuse, id2label),
        )
        try:
            inference.ensure_room()  # refuse before decoding, to spare the memory
        except QueueFullError as error:
            raise _busy(error) from None
        data = await image.read()  # the body size is bounded by BodySizeLimit
        name = image.filename or "image"
        picture = await run_in_threadpool(decode_upload, data, limits.max_pixels, name)
        try:
            future = inference.submit(picture, settings)
        except (QueueFullError, WorkerStoppedError) as error:
            raise _busy(error) from None
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(503, "timed out waiting for the model") from None
        except WorkerStoppedError as error:
            raise HTTPException(503, str(error)) from None
        except ValueError as error:  # the processor refuses this image (e.g. 1 x 5000 px)
            raise UploadError(
                422, f"cannot segment image {name!r} ({picture.width}x{picture.height}): {error}"
            ) from None
        return await run_in_threadpool(
            build_payload,
            picture,
            result,
            settings.task,
            id2label,
            name,
            overlay,
            legend,
            segment_map,
        )

    return app


def _parse_ids(text: str, id2label: dict[int, str]) -> frozenset[int]:
    """Comma- or space-separated class ids; 422 naming the field for anything else."""
    ids = set()
    for token in text.replace(",", " ").split():
        if not token.lstrip("-").isdigit() or int(token) not in id2label:
            raise HTTPException(
                422,
                f"label_ids_to_fuse: {token[:20]!r} is not a class id of this model "
                f"(0..{max(id2label, default=0)})",
            )
        ids.add(int(token))
    return frozenset(ids)


def _model_info(
    model: torch.nn.Module,
    processor: Any,
    model_name: str,
    limits: ServeLimits,
    id2label: dict[int, str],
) -> dict[str, Any]:
    parameter = next(model.parameters())
    config = model.config
    size = getattr(processor, "size", None) or {}
    return {
        "model": model_name,
        "labels": [
            {"id": k, "name": v, "color": list(class_color(k))} for k, v in sorted(id2label.items())
        ],
        "num_labels": len(id2label),
        "num_queries": int(getattr(config, "num_queries", 0) or 0),
        "tasks": list(TASKS),
        "default_task": limits.default_task,
        "backbone": str(getattr(config.backbone_config, "model_type", "unknown")),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(parameter.device),
        "dtype": str(parameter.dtype).removeprefix("torch."),
        "image_size": {str(k): int(v) for k, v in dict(size).items() if v is not None},
        "max_upload_bytes": limits.max_upload_bytes,
        "max_pixels": limits.max_pixels,
        "max_batch": limits.max_batch,
    }


def _busy(error: Exception) -> HTTPException:
    return HTTPException(503, f"server busy: {error}", {"Retry-After": "1"})


def _too_large_message(size: int | None, limit: int) -> str:
    got = f"{size} bytes" if size is not None else "more"
    return f"upload too large: {got}; this server accepts at most {limit} bytes per request"


class BodySizeLimit:
    """ASGI middleware: answer 413 when a request body is, or turns out to be, over
    ``max_bytes`` (by its Content-Length, or by counting while it streams in)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(
                {"detail": _too_large_message(int(declared), self.max_bytes)}, status_code=413
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI re-raises HTTPException from parsing
                    raise HTTPException(413, _too_large_message(None, self.max_bytes))
            return message

        await self.app(scope, counted, send)
