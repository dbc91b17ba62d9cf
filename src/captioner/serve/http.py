"""HTTP API: captioner serve [--host H] [--port N]

    POST /caption          multipart field "image"            -> {"caption", "alt_text", "kind", "text", "long_description", ..., "seconds"}
                           query: beam_size, n_best, read_text (auto|always|never), gender_neutral, max_chars
    POST /caption/batch    multipart fields "images" (1..32)  -> {"results": [{"filename", "caption" | "error"}]}
    GET  /health           -> {"status": "ok", "captioner": package version, "model", "version": weights digest, ...,
                               "model_card": "/model-card"}
    GET  /model-card       -> the model card (Markdown): what the model learnt from, what it is for, how well it does
    GET  /docs, /openapi.json

The model is loaded once at start-up.  Requests are captioned side by side by worker processes,
one per core this server may use, each with the model loaded once and one thread (--processes;
this process then loads none), or one at a time by the model in this process (--processes 1, or
on a GPU).  The model settings are caption's (--model, --device, --backend, --precision, ...).
Uploads over --max-upload-mb are refused with 413 before they are read in full; a non-image or
corrupt upload gets a 4xx JSON error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from captioner import __version__
from captioner.api import Captioner
from captioner.images import ImageError
from captioner.info import model_card
from captioner import parallel, runtime, wording

MAX_BATCH = 32


class _TooLarge(Exception):
    pass


class LimitUploadSize:
    """ASGI middleware: 413 for bodies over ``max_bytes``, by Content-Length up front or by
    counting a streamed body, so an oversized upload is never buffered whole."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            # read (and drop) the body before answering, up to a cap: a client still sending when
            # the connection closes would see a reset instead of the 413
            drained = 0
            while drained <= 8 * self.max_bytes:
                msg = await receive()
                if msg["type"] != "http.request":
                    break
                drained += len(msg.get("body", b""))
                if not msg.get("more_body"):
                    break
            return await self._reject(send)
        received, started = 0, False

        async def counting_receive():
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return msg

        async def tracking_send(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send):
        body = json.dumps({"detail": f"upload too large (limit {self.max_bytes} bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def create_app(captioner: Captioner | None = None, model_path: str | None = None,
               max_upload_bytes: int = 10 * 2**20, device: str = "cpu", options: dict | None = None,
               processes: int | None = 1):
    """``options``: the Captioner's other settings (backend, precision, and the defaults for text and
    wording: read_text, gender_neutral, max_chars).  ``processes``: worker processes captioning side by
    side (None: one per core; 1: this process)."""
    model = {"path": model_path, "device": device, **(options or {})}
    plan = parallel.plan_for(model, processes) if captioner is None else parallel.plan(1)
    state = {"captioner": captioner, "pool": None}
    lock, restarting = threading.Lock(), threading.Lock()

    def get() -> Captioner:
        if state["captioner"] is None:  # loaded once, at start-up
            state["captioner"] = Captioner(**model, threads=plan.threads)
        return state["captioner"]

    @asynccontextmanager
    async def lifespan(_app):
        # the model is loaded before the first request, once: by each worker where there is a pool
        # (this process then holds none: it only hands uploads out), else here
        if plan.pooled:
            state["pool"] = parallel.CaptionPool(model, plan)
        else:
            get()
        try:
            yield
        finally:
            if state["pool"] is not None:
                state["pool"].close()

    app = FastAPI(title="captioner", version=__version__, lifespan=lifespan,
                  description="Describe photos in English sentences. Upload an image, get a caption.")

    def _caption(data: bytes, name: str, beam_size: int, n_best: int, opts: dict):
        with lock:
            t0 = time.perf_counter()
            cap = get().caption_bytes(name, data, beam_size=beam_size, n_best=n_best, **opts)
        return {**cap.to_dict(), "seconds": round(time.perf_counter() - t0, 3)}

    async def caption_one(data: bytes, name: str, beam_size: int, n_best: int, opts: dict) -> dict:
        """One upload, on a free worker process where there is a pool, else here under the lock."""
        if state["pool"] is None:
            return await run_in_threadpool(_caption, data, name, beam_size, n_best, opts)
        t0, pool = time.perf_counter(), state["pool"]
        try:
            cap = await asyncio.wrap_future(pool.submit_bytes(data, name, beam_size=beam_size, n_best=n_best, **opts))
        except parallel.WorkerError:
            if pool.failed is None:   # a batch failed, the workers are well
                raise
            await run_in_threadpool(restart, pool)
            raise HTTPException(status_code=503, detail=f"{pool.failed}; the server started its captioning "
                                                        "processes again: send the request again") from None
        return {**cap.to_dict(), "seconds": round(time.perf_counter() - t0, 3)}

    def restart(pool) -> None:
        """A worker died (killed, out of memory): the old pool is closed and a new one started, once,
        however many requests saw it fail; the server keeps serving."""
        with restarting:
            if state["pool"] is pool:
                pool.close()
                state["pool"] = parallel.CaptionPool(model, plan)

    def _wording(read_text, gender_neutral, max_chars) -> dict:
        return {"read_text": read_text, "gender_neutral": gender_neutral, "max_chars": max_chars}

    @app.get("/health")
    def health():
        loaded = state["pool"].loaded if state["pool"] is not None else get().describe()
        return {"status": "ok", "captioner": __version__, **loaded, "processes": plan.processes,
                "threads": plan.threads, "model_card": "/model-card"}   # the card itself is long: a link

    @app.get("/model-card", response_class=PlainTextResponse)
    def card():
        return PlainTextResponse(model_card(), media_type="text/markdown; charset=utf-8")

    read_q = Query(None, pattern="^(auto|always|never)$",
                   description="read the text in the image: auto (not for photos), always, never; default: the server's")
    neutral_q = Query(None, description="gender-neutral wording; default: the server's")
    chars_q = Query(None, ge=20, le=2000, description="longest alt text in characters; default: the server's (125)")

    @app.post("/caption")
    async def caption(image: UploadFile = File(..., description="the photo (JPEG, PNG, WebP, GIF, BMP, TIFF)"),
                      beam_size: int = Query(3, ge=1, le=10), n_best: int = Query(1, ge=1, le=10),
                      read_text: str | None = read_q, gender_neutral: bool | None = neutral_q,
                      max_chars: int | None = chars_q):
        data = await image.read()
        try:
            return await caption_one(data, image.filename or "image", beam_size, n_best,
                                     _wording(read_text, gender_neutral, max_chars))
        except ImageError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None

    @app.post("/caption/batch")
    async def caption_batch(images: list[UploadFile] = File(..., description=f"1 to {MAX_BATCH} photos"),
                            beam_size: int = Query(3, ge=1, le=10), n_best: int = Query(1, ge=1, le=10),
                            read_text: str | None = read_q, gender_neutral: bool | None = neutral_q,
                            max_chars: int | None = chars_q):
        if len(images) > MAX_BATCH:
            raise HTTPException(status_code=413, detail=f"at most {MAX_BATCH} images per batch")
        async def one(up):   # the uploads of a batch go to the workers side by side, answered in order
            name = up.filename or "image"
            try:
                return {"filename": name, **await caption_one(await up.read(), name, beam_size, n_best,
                                                              _wording(read_text, gender_neutral, max_chars))}
            except ImageError as e:
                return {"filename": name, "error": str(e)}

        return {"results": list(await asyncio.gather(*(one(up) for up in images)))}

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # never a bare 500 page
        return JSONResponse(status_code=500, content={"detail": f"internal error: {type(exc).__name__}"})

    return LimitUploadSize(app, max_upload_bytes), app


def _megabytes(text: str) -> float:
    try:
        mb = float(text)
    except ValueError:
        mb = float("nan")
    if not mb > 0 or mb == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a size in MB, more than 0")
    return mb


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--port", type=runtime.whole_type(0, 65535), default=8000, help="port to listen on")
    ap.add_argument("--model", default=None, help="checkpoint (.safetensors); default: the shipped model")
    ap.add_argument("--max-upload-mb", type=_megabytes, default=10.0, help="largest accepted request body, in MB")
    runtime.add_arguments(ap)
    ap.add_argument("--processes", type=runtime.whole_type(0), default=None,
                    help="worker processes captioning requests side by side, each with the model loaded once "
                         "(default: one per core this server may use, no more than its free memory holds at about 1 GB "
                         "each, 1.5 GB with --backend torch; 1: requests one at a time in this process)")
    wording.add_arguments(ap, per_request=True)


def main(args) -> int:
    import uvicorn

    from captioner import modelfile

    # a wrong --model stops here, in one line (the CLI's), not in a traceback from the server's start-up
    modelfile.read(args.model)
    options = {"backend": args.backend, "precision": args.precision, "no_repeat_ngram": args.no_repeat_ngram,
               "guidance": not args.no_guidance, "read_text": args.read_text, "gender_neutral": args.gender_neutral,
               "max_chars": args.max_chars}
    asgi, _ = create_app(model_path=args.model, max_upload_bytes=int(args.max_upload_mb * 2**20), device=args.device,
                         options=options, processes=args.processes)
    uvicorn.run(asgi, host=args.host, port=args.port, log_level="info")
    return 0
