"""The ASGI app: routes, error answers, security headers, the page and the API reference.

Every answer to a bad request is JSON ``{"error": MESSAGE, "status": CODE}`` with the library's
own message: 400 bad input (a bad image, an unknown method, layer or class, a target the model
cannot give), 404 an unknown model or sample, 413 a body over the upload limit, 422 a model that
cannot run on the input, 503 a full queue, 504 a request over its time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from camlens.serve.batching import Busy, MicroBatcher, TimedOut, WorkPool
from camlens.serve.catalog import ModelCatalog, ServedModel, UnknownModel
from camlens.serve.cores import MARGIN, PROBE_EVERY, Cores
from camlens.serve.images import (
    ImageJob,
    explain_payloads,
    image_records,
    maps_archive,
    overlay_png,
)
from camlens.serve.limits import Limits
from camlens.serve.samples import SampleShelf
from camlens.serve.timing import ServerTiming, current_phases, phase
from camlens.serve.uploads import BadRequest, Form, TooLarge, read_form, read_picture

__all__ = ["MAX_PROMPTS", "PictureOf", "TargetParser", "TargetPreparer", "create_app"]

T = TypeVar("T")
#: ``camlens explain --target`` read for a model's class names (the command line's parser).
TargetParser = Callable[[str, Sequence[str] | None], Any]
#: A model's input tensor ``(1, C, H, W)`` as the picture its maps lie over.
PictureOf = Callable[[Any, Any], Any]
#: ``camlens explain``'s per-image target preparation: (loaded model, parsed target, input
#: tensor, device) -> an object with ``target``, ``inputs``, ``options``, ``names`` and ``boxes``
#: (a ``detections`` target runs the detector to find its boxes).
TargetPreparer = Callable[[Any, Any, Any, Any], Any]
#: The target forms the page and the API take.
TARGET_FORMS = ("top1, topK, a class index or name, classes separated by commas, "
                "box:x0,y0,x1,y1[:CLASS] and detections[:SCORE] (detectors), class:CLASS "
                "(segmentation), text:PROMPT|PROMPT (CLIP-style models with a tokenizer)")

#: Text prompts one request may ask for (each is a map, a row of the answer and a PNG).
MAX_PROMPTS = 16

STATIC = Path(str(resources.files("camlens.serve") / "static"))
#: The page loads nothing from elsewhere; pictures and sounds come as data: and blob: URLs.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
     b"style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; "
     b"base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
AUTOMATIC = ("", "auto", "automatic", "none")


def _form_schema(fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """The OpenAPI request body of a multipart endpoint (read by hand, see uploads.py)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": fields, "required": required}}}}}


FILE = {"type": "string", "format": "binary"}
TEXT = {"type": "string"}
EXPLAIN_FORM = _form_schema({
    "model": {**TEXT, "description": "a served model (GET /api/models)"},
    "image": {"type": "array", "items": FILE, "description": "one or more pictures"},
    "method": {**TEXT, "description": "gradcam (default); repeat or separate with commas"},
    "layer": {**TEXT, "description": "a layer name, 'auto' for the automatic choice; repeat or "
                                     "separate with commas to compare layers; default: the "
                                     "model's own layer"},
    "target": {**TEXT, "description": "top1 (default), topK, a class index or name, several "
                                      "classes separated by commas, box:x0,y0,x1,y1[:CLASS] or "
                                      "detections[:SCORE] (a detector: one map per detection), "
                                      "class:CLASS"},
    "format": {**TEXT, "enum": ["json", "npy", "npz", "png"],
               "description": "json (default), png (the overlay alone: one image, method, "
                              "layer and target), or npy / npz (the raw maps)"},
    "alpha": {"type": "number", "description": "overlay opacity, 0 to 1 (default 0.5)"},
    "colormap": {**TEXT, "description": "a matplotlib colormap (default jet)"},
    "heatmap": {"type": "boolean", "description": "also send the coloured maps alone"},
    "overlay": {"type": "boolean", "description": "send each map over its input as a PNG "
                                                  "(default true; false saves drawing and "
                                                  "encoding one per map, e.g. with heatmap)"},
    "input": {"type": "boolean", "description": "send each input picture as the model saw it "
                                                "(default true; false saves a PNG per picture)"},
}, ["model", "image"])
CAPTION_FORM = _form_schema({
    "model": {**TEXT, "description": "a captioning model (default digits-captioner)"},
    "image": FILE, "method": {**TEXT, "description": "default layercam"},
    "layer": {**TEXT, "description": "default: the model's word layer"},
    "beam": {"type": "integer", "description": "beam width (default 1: greedy)"},
}, ["image"])
AUDIO_FORM = _form_schema({
    "model": {**TEXT, "description": "accent-attention (default) or accent-cnn"},
    "audio": {**FILE, "description": "a recording: WAV, FLAC, OGG..."},
    "method": {**TEXT, "description": "attention, attention-gradient, gradcam (default: all)"},
    "words": {**TEXT, "description": 'JSON word stamps [{"word", "start_s", "end_s"}, ...]'},
}, ["audio"])


@dataclass
class Server:
    """What the routes share: the models, the limits, the pool, the batcher and the helpers."""

    catalog: ModelCatalog
    limits: Limits
    parse_target: TargetParser
    picture_of: PictureOf
    prepare_target: TargetPreparer | None = None
    samples: SampleShelf = field(default_factory=SampleShelf)

    def __post_init__(self) -> None:
        import torch

        share = self._threads_each()
        whole = torch.get_num_threads()
        #: Where workers run on a share of the threads: a request that finds the server idle
        #: may run its model call on all of them (measured per kind of work).
        self.cores = Cores(share, whole) if share is not None and share < whole else None
        self.pool = WorkPool(self.limits, share, self.cores)
        self.batcher = MicroBatcher(self.pool, explain_payloads, self.limits.batch_window_s,
                                    self.limits.max_batch)

    def _threads_each(self) -> int | None:
        """torch threads per worker: the process's shared out among the workers when
        ``limits.split_threads`` and every model runs on the CPU where that works, else None
        (each worker uses all of them)."""
        from camlens.scale.lanes import lane_threads, lanes_refused, lanes_unavailable

        models = self.catalog.models.values()
        if not self.limits.split_threads or self.limits.workers < 2 or any(
                served.device.type != "cpu" for served in models):
            return None
        threads = lane_threads(self.limits.workers)
        if lanes_unavailable("cpu") is not None or lanes_refused(threads) is not None:
            return None
        return threads

    async def limited(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()`` admitted to the queue and answered within the time limit."""
        ticket = self.pool.admit()
        task = asyncio.ensure_future(work())
        (result,) = await self.pool.answer(ticket, [task])
        return result

    def model_call(self, job: ImageJob, tensors: list[Any]) -> AbstractContextManager[Any]:
        """Where the model call of a request that found the server idle runs: on all the
        cores when that is measured faster for its kind of work (:mod:`camlens.serve.cores`),
        else on the worker's share."""
        if self.cores is None:
            return contextlib.nullcontext()
        shapes = tuple(tuple(tensor.shape) for tensor in tensors)
        label = {"model": job.served.name, "columns": [list(column) for column in job.columns],
                 "target": job.target_text, "shapes": [list(shape) for shape in shapes]}
        kind = (job.served.name, tuple(job.columns), job.target_text, shapes)
        return self.cores.idle_call(kind, label)

    def target(self, text: str, served: ServedModel) -> Any:
        """``--target`` text as the command line reads it; ``3,7`` (classes) asks for each."""
        text = text.strip() or "top1"
        if text.lower().startswith("text:") and text.count("|") >= MAX_PROMPTS:
            raise BadRequest(f"target: {text.count('|') + 1} text prompts; the explorer "
                             f"explains at most {MAX_PROMPTS} per request (one map each)")
        if text.lower().startswith(("box:", "detections", "text:")) or "," not in text:
            return self.parse_target(text, served.class_names)
        chosen = [self.parse_target(part.strip(), served.class_names)
                  for part in text.split(",") if part.strip()]
        if not all(isinstance(item, int) for item in chosen):
            raise ValueError(f"target {text!r}: a list separated by commas takes classes only "
                             "(indices or names), e.g. 3,7")
        return chosen


def _number(form: Form, name: str, default: float, low: float, high: float) -> float:
    text = form.one(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}, got {text!r}"
                         ) from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low:g} to {high:g}, got {text!r}")
    return value


def _flag(form: Form, name: str, default: bool = False) -> bool:
    text = (form.one(name) or "").lower()
    if text not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise BadRequest(f"{name} must be true or false, got {text!r}")
    return default if text == "" else text in ("1", "true", "yes", "on")


def _layers(form: Form, served: ServedModel) -> list[str | None]:
    """The layers asked for (repeated or separated by commas; default: the model's own): None
    for the automatic choice, else resolved names."""
    from camlens.capture import named_module

    texts = [part.strip() for value in form.fields.get("layer", [])
             for part in value.split(",")] or [served.default_layer or "auto"]
    layers = [None if text.lower() in AUTOMATIC else named_module(served.loaded.model, text)[0]
              for text in texts]
    if len(set(layers)) != len(layers):
        raise BadRequest(f"a layer is asked for twice in {', '.join(texts)}")
    return layers


def _methods(form: Form, default: str) -> list[str]:
    from camlens.methods import get_method

    names = form.many("method") or [default]
    methods = [get_method(name).name for name in names]
    if len(set(methods)) != len(methods):
        raise BadRequest(f"a method is asked for twice in {', '.join(names)}")
    return methods


def _uploads(form: Form, field_name: str, limit: int | None = None):
    files = form.files.get(field_name, [])
    if not files:
        raise BadRequest(f"no file in field {field_name!r}; send the file as multipart "
                         f"form-data under {field_name!r}")
    if limit is not None and len(files) > limit:
        raise BadRequest(f"{len(files)} files in {field_name!r}; this endpoint takes {limit}")
    return files


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status,
                        headers=headers)


def _install_error_answers(app: FastAPI) -> None:
    statuses: list[tuple[type[Exception], int]] = [
        (BadRequest, 400), (TooLarge, 413), (UnknownModel, 404), (LookupError, 404),
        (Busy, 503), (TimedOut, 504), (ValueError, 400), (IndexError, 400), (TypeError, 400),
        (RuntimeError, 422)]
    for kind, status in statuses:
        def answer(request: Request, error: Exception, status: int = status) -> JSONResponse:
            message = str(error) or type(error).__name__
            if status == 422:
                message = f"the model could not run on this input: {message}"
            return _error(status, message, {"retry-after": "1"} if status == 503 else None)

        app.add_exception_handler(kind, answer)

    def invalid(request: Request, error: Exception) -> JSONResponse:
        return _error(422, f"invalid request: {error}")

    def unexpected(request: Request, error: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(error).__name__}): {error}")

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP answer."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(catalog: ModelCatalog, limits: Limits | None = None, *,
               parse_target: TargetParser, picture_of: PictureOf,
               prepare_target: TargetPreparer | None = None) -> FastAPI:
    """The explorer's app for ``catalog``. ``parse_target`` reads target text as
    ``camlens explain --target`` does, ``picture_of`` turns a model input into its picture and
    ``prepare_target`` prepares a target per image (boxes of ``detections``); the command line
    passes its own, :func:`camlens.cli.serve.build_app`. Without ``prepare_target`` the targets
    that need one are refused."""
    from camlens import __version__

    server = Server(catalog, limits or Limits(), parse_target, picture_of, prepare_target)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        server.pool.close()

    app = FastAPI(title="camlens explorer", version=__version__, docs_url=None, redoc_url=None,
                  lifespan=lifespan,
                  description="Class activation maps for the models this server holds. Every "
                              "error is JSON {error, status}.")
    app.state.server = server
    app.add_middleware(SecurityHeaders)
    app.add_middleware(ServerTiming)  # outermost: its total counts the other middleware
    _install_error_answers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    @app.get("/api/models", summary="The served models")
    def models() -> dict[str, Any]:
        return {"models": catalog.describe()}

    @app.get("/api/methods", summary="The explanation methods")
    def methods() -> dict[str, Any]:
        from camlens.methods import METHODS

        rows = []
        for name, method in METHODS.items():
            summary = (method.__doc__ or "").strip().splitlines()[0]
            rows.append({"name": name, "summary": summary,
                         "uses_gradients": bool(getattr(method, "uses_gradients", False)),
                         "kinds": ["audio"] if name.startswith("attention") else [
                             "image", "caption"] + (["audio"] if name == "gradcam" else [])})
        return {"methods": rows, "default": "gradcam"}

    @app.get("/api/models/{name}/layers", summary="The layers of a model (camlens layers)")
    async def layers(name: str) -> dict[str, Any]:
        served = catalog.get(name)

        async def work() -> list[dict[str, Any]]:
            return await server.pool.run(served.layers)

        rows = await server.limited(work)
        automatic = next((row["name"] for row in rows if row["automatic"]), None)
        return {"model": name, "model_layer": served.default_layer,
                "automatic": automatic, "layers": rows}

    @app.get("/api/samples", summary="Sample pictures and recordings")
    async def samples(kind: str = "image") -> dict[str, Any]:
        if kind not in ("image", "audio"):
            raise BadRequest(f"kind must be image or audio, got {kind!r}")
        shelf = server.samples.recordings if kind == "audio" else server.samples.pictures

        async def work():
            return await server.pool.run(shelf)

        return {"samples": [sample.describe() for sample in await server.limited(work)]}

    @app.get("/api/samples/{sample_id}", summary="One sample's bytes (PNG or WAV)")
    async def sample(sample_id: str) -> Response:
        async def work():
            return await server.pool.run(lambda: server.samples.find(sample_id))

        found = await server.limited(work)
        return Response(found.data, media_type=found.media_type,
                        headers={"cache-control": "max-age=3600"})

    @app.get("/api/status", summary="Queue and batching figures")
    def status() -> dict[str, Any]:
        stats = server.batcher.stats
        cores = server.cores
        return {"queue": server.pool.admitted, "queue_size": server.limits.queue_size,
                "workers": server.limits.workers,
                "batches": {"calls": stats.calls, "requests": stats.requests,
                            "waiting": server.batcher.waiting,
                            "largest": stats.largest,
                            "sizes": {str(k): v for k, v in sorted(stats.sizes.items())}},
                "idle_threads": None if cores is None else {
                    "share": cores.trials.share, "whole": cores.trials.whole,
                    "trials": cores.trials.trials, "probe_every": PROBE_EVERY,
                    "margin": MARGIN, "kinds": cores.trials.choices()},
                "limits": {"max_upload_bytes": server.limits.max_upload_bytes,
                           "max_files": server.limits.max_files,
                           "max_pixels": server.limits.max_pixels,
                           "max_audio_s": server.limits.max_audio_s,
                           "timeout_s": server.limits.timeout_s}}

    @app.get("/api/audit", summary="A bias audit on the built-in biased digits")
    async def audit(model: str, size: int = 100, seed: int = 0, method: str = "gradcam",
                    worst: int = 8, counterfactual: bool = True) -> dict[str, Any]:
        """Where a served digit classifier's maps put their mass (the digit, the border mark)
        on ``size`` biased digits, with the accuracy when the mark moves (``counterfactual``):
        the summary, every record (sort them by region share) and the ``worst`` cases per
        region with their pictures, as ``camlens audit`` computes them."""
        from camlens.methods import get_method
        from camlens.serve.audits import MAX_AUDIT_SIZE, MAX_WORST, audit_record

        served = catalog.get(model)
        if not 1 <= size <= MAX_AUDIT_SIZE:
            raise BadRequest(f"size must be from 1 to {MAX_AUDIT_SIZE}, got {size}")
        if not 0 <= worst <= MAX_WORST:
            raise BadRequest(f"worst must be from 0 to {MAX_WORST}, got {worst}")
        name = get_method(method).name

        async def work() -> dict[str, Any]:
            return await server.pool.run(
                lambda: audit_record(served, size, seed, name, worst, counterfactual))

        return await server.limited(work)

    @app.post("/api/explain", summary="Explain pictures", openapi_extra=EXPLAIN_FORM)
    async def explain_pictures(request: Request) -> Response:
        return await server.limited(lambda: _explain_pictures(server, request))

    @app.post("/api/caption", summary="Caption a picture, a map per word",
              openapi_extra=CAPTION_FORM)
    async def caption(request: Request) -> dict[str, Any]:
        return await server.limited(lambda: _caption(server, request))

    @app.post("/api/explain-audio", summary="Relevance over time of a recording",
              openapi_extra=AUDIO_FORM)
    async def explain_audio(request: Request) -> dict[str, Any]:
        return await server.limited(lambda: _explain_audio(server, request))

    return app


async def _explain_pictures(server: Server, request: Request) -> Response:
    from camlens.viz import get_colormap

    limits = server.limits
    form = await read_form(request, limits)
    served = server.catalog.get(form.one("model"))
    if served.kind == "audio":
        raise BadRequest(f"{served.name} is an audio model: POST /api/explain-audio")
    output = (form.one("format") or "json").lower()
    if output not in ("json", "npy", "npz", "png"):
        raise BadRequest(f"format must be json, npy, npz or png, got {output!r}")
    uploads = _uploads(form, "image")
    target_text = form.one("target") or "top1"
    colormap = form.one("colormap") or "jet"
    get_colormap(colormap)
    job = ImageJob(served, _methods(form, "gradcam"), _layers(form, served), target_text,
                   server.target(target_text, served), _number(form, "alpha", 0.5, 0.0, 1.0),
                   colormap, _flag(form, "heatmap"), _flag(form, "input", default=True),
                   _flag(form, "overlay", default=True))
    names = [upload.filename for upload in uploads]
    if output == "png" and (len(uploads) != 1 or len(job.columns) != 1):
        raise BadRequest(f"format=png is one overlay: one image, one method and one layer (got "
                         f"{len(uploads)} images and {len(job.columns)} maps each); use "
                         "format=json")

    def prepare():
        pictures, tensors, sizes = [], [], []
        for upload in uploads:
            picture = read_picture(upload, limits)
            tensor = served.loaded.preprocess(picture)
            sizes.append(picture.size)
            tensors.append(tensor)
            pictures.append(server.picture_of(served.loaded, tensor))
        return pictures, tensors, sizes

    if server.batcher.idle and output in ("json", "png") and not job.needs_preparing:
        phases = current_phases()

        def whole() -> Response:
            with phase("prepare", into=phases):
                pictures, tensors, sizes = prepare()
            with phase("explain", into=phases), server.model_call(job, tensors):
                explanations = _explain_together(job, tensors)
            with phase("encode", into=phases):
                if output == "png":
                    return _overlay_answer(job, pictures[0], explanations[0][0])
                return _answer(job, image_records(job, names, sizes, pictures, explanations,
                                                  limits.value_grid))

        return await server.batcher.whole(whole)

    with phase("prepare"):
        pictures, tensors, sizes = await server.pool.aside(prepare)
        per_image = [None] * len(tensors)
        if job.needs_preparing:
            per_image = await server.pool.run(lambda: [
                _prepared(server, served, job.target, tensor) for tensor in tensors])
    futures = []
    for tensor, prepared in zip(tensors, per_image, strict=True):
        for method, layer in job.columns:
            key = job.batch_key(method, layer, tensor)
            payload = job.payload(method, layer, tensor, prepared)
            futures.append(server.batcher.submit(key, payload) if key is not None else
                           server.pool.run(functools.partial(_alone, payload)))
    with phase("explain"):
        answers = await asyncio.gather(*futures)
    count = len(job.columns)
    explanations = [list(answers[i * count:(i + 1) * count]) for i in range(len(tensors))]
    if output == "png":
        with phase("encode"):
            return await server.pool.aside(lambda: _overlay_answer(
                job, pictures[0], explanations[0][0], per_image[0]))
    if output != "json":
        with phase("encode"):
            data, filename = await server.pool.aside(lambda: maps_archive(job, explanations))
        if output == "npy" and filename.endswith(".npz"):
            raise BadRequest(f"format=npy holds one array: one image, one method and one layer "
                             f"(got {len(uploads)} images and {count} maps each); use "
                             "format=npz")
        return Response(data, media_type="application/octet-stream",
                        headers={"content-disposition": f'attachment; filename="{filename}"'})
    with phase("encode"):
        return await server.pool.aside(lambda: _answer(job, image_records(
            job, names, sizes, pictures, explanations, limits.value_grid, per_image)))


def _answer(job: ImageJob, records: list[dict[str, Any]]) -> JSONResponse:
    """The JSON answer of an explain request (rendered where it is built: a worker thread)."""
    return JSONResponse({"model": job.served.name, "methods": job.methods, "layers": job.layers,
                         "target": job.target_text, "images": records})


def _overlay_answer(job: ImageJob, picture, explanation, prepared=None) -> Response:
    """``format=png``: the one overlay as a PNG, its class, score and layer in headers."""
    data, headers = overlay_png(job, picture, explanation, prepared)
    return Response(data, media_type="image/png", headers=headers)


def _explain_together(job: ImageJob, tensors: list[Any]) -> list[list[Any]]:
    """``explanations[picture][column]`` of one request on the calling thread: per column one
    library call for all its pictures when they batch (as the micro-batcher would join them),
    else one call each; an error of any is raised."""
    columns = []
    for method, layer in job.columns:
        payloads = [job.payload(method, layer, tensor) for tensor in tensors]
        keys = {job.batch_key(method, layer, tensor) for tensor in tensors}
        if None in keys or len(keys) > 1:
            answers = [_alone(payload) for payload in payloads]
        else:
            answers = explain_payloads(keys.pop(), payloads)
            for answer in answers:
                if isinstance(answer, Exception):
                    raise answer
        columns.append(answers)
    return [list(row) for row in zip(*columns, strict=True)]


def _prepared(server: Server, served: ServedModel, target: Any, tensor: Any) -> Any:
    """The per-image target of ``target`` (a detector's boxes for ``detections``, tokenized
    prompts for ``text:``), as ``camlens explain`` prepares it."""
    if server.prepare_target is None:
        raise BadRequest(f"this server cannot prepare the target {target!r}; targets here: "
                         f"{TARGET_FORMS}")
    return server.prepare_target(served.loaded, target, tensor, served.device)


def _alone(payload):
    (answer,) = explain_payloads(None, [payload])
    if isinstance(answer, Exception):
        raise answer
    return answer


async def _caption(server: Server, request: Request) -> dict[str, Any]:
    from camlens.serve.captions import caption_record

    limits = server.limits
    form = await read_form(request, limits)
    served = server.catalog.get(form.one("model") or "digits-captioner", kind="caption")
    (upload,) = _uploads(form, "image", limit=1)
    methods = _methods(form, "layercam")
    if len(methods) > 1:
        raise BadRequest(f"a caption is explained with one method; got {', '.join(methods)}")
    method = methods[0]
    layers = _layers(form, served)
    if len(layers) > 1:
        raise BadRequest("a caption is explained at one layer; got "
                         f"{', '.join(str(layer) for layer in layers)}")
    layer = layers[0]
    beam = int(_number(form, "beam", 1, 1, 8))

    def work():
        picture = read_picture(upload, limits)
        tensor = served.loaded.preprocess(picture)
        shown = server.picture_of(served.loaded, tensor)
        return {"model": served.name, "name": upload.filename,
                **caption_record(served, shown, tensor, method, layer, beam, limits.value_grid)}

    return await server.pool.run(work)


async def _explain_audio(server: Server, request: Request) -> dict[str, Any]:
    from camlens.serve.recordings import audio_record
    from camlens.serve.uploads import read_recording

    limits = server.limits
    form = await read_form(request, limits)
    served = server.catalog.get(form.one("model") or "accent-attention", kind="audio")
    (upload,) = _uploads(form, "audio", limit=1)
    words = None
    if form.one("words"):
        try:
            words = json.loads(form.one("words") or "")
        except json.JSONDecodeError as error:
            raise BadRequest(f"words is not JSON ({error}); expected "
                             '[{"word": ..., "start_s": ..., "end_s": ...}, ...]') from None
        if not isinstance(words, list) or not all(isinstance(w, dict) for w in words):
            raise BadRequest('words must be a JSON list of {"word", "start_s", "end_s"} objects')
    methods = form.many("method")

    def work():
        waveform = read_recording(upload, limits)
        return {"name": upload.filename,
                **audio_record(server.catalog, served, waveform, methods, words)}

    return await server.pool.run(work)
