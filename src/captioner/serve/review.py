"""The review server of a library run: captioner review RESULTS [--reviewer NAME]

    captioner caption photos/ --output captions.jsonl      # the machine drafts
    captioner review captions.jsonl --reviewer ana          # a person approves: http://127.0.0.1:8765/
    captioner review captions.jsonl --host 0.0.0.0 --token "$(openssl rand -hex 16)"   # beyond this machine

A proposals file of captioner fill --output is a results file too: each image comes with the places
documents show it (document, location, link, figure caption, nearby text, the rule that decided its alt text).

The page (review_page/) shows the doubtful photos first, with filters, text search and progress,
and takes accept / edit / decorative / skip from buttons or the keyboard.  Every decision is one
transaction in the SQLite database beside the results (library/decisions.py), durable before the
page hears "saved"; the results file is only read, and indexed again (incrementally) while a run
still appends to it.

What it will and will not serve:
  * only the page's three files, the JSON API below and the photos listed in the results file: a photo
    is asked for by its exact path as the results file writes it and looked up there, so "..",
    absolute paths, encoded slashes or a symlink beside the photos name nothing listed and get 404;
  * never a file's bytes: a photo is decoded and sent as a JPEG preview re-encoded from its pixels, so
    even a listed path later swapped for a link to a text file yields a 4xx, not the file;
  * on loopback (the default) only requests whose Host is this machine (a web page elsewhere cannot reach
    it through DNS rebinding); beyond loopback --token is required and checked on every request
    ("Authorization: Bearer", or the cookie the page's first /?token= visit sets);
  * a decision only as a JSON POST from the page's own origin, so another site cannot forge one.

API: GET /api/summary, GET /api/photos?offset&limit&kind&status&q, GET /api/photo?image=,
POST /api/decisions {"image", "action", "text"}, GET /api/history?image=.
"""
from __future__ import annotations

import argparse
import getpass
import hmac
import io
import ipaddress
import sys
import threading
import time
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from captioner import runtime
from captioner.library.decisions import ACTIONS, STATUSES, ReviewStore
from captioner.library.report import LOW_CONFIDENCE, flags

PAGE_FILES = {"/": ("review.html", "text/html; charset=utf-8"),
              "/review.js": ("review.js", "text/javascript; charset=utf-8"),
              "/review.css": ("review.css", "text/css; charset=utf-8"),
              "/status.css": ("status.css", "text/css; charset=utf-8")}
PREVIEW = 1024          # longest side of a preview, px: enough to judge a caption, small enough to be quick
COOKIE = "captioner_review_token"
REINDEX_SECONDS = 2.0   # how often the results file is looked at for records a running job appended
HEADERS = {             # the page loads nothing from anywhere else and cannot be framed
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """'127.0.0.1:8765' / '[::1]:8765' / 'localhost' -> the host part."""
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Decision(BaseModel):
    image: str
    action: str
    text: str | None = None


def _item(entry: dict) -> dict:
    """A record as the page shows it: only the fields it needs, with the flags worked out here."""
    r = entry["record"]
    read = r.get("text") if isinstance(r.get("text"), dict) else {}
    return {"image": r["image"], "name": Path(r["image"]).name, "error": r.get("error"),
            "alt_text": r.get("alt_text"), "caption": r.get("caption"), "kind": r.get("kind"),
            "chart_type": r.get("chart_type"), "text": (read or {}).get("text") or "",
            "long_description": r.get("long_description") or "",
            "tags": [f'{t["name"]} {t["prob"]:.2f}' for t in (r.get("tags") or [])[:5]],
            "confidence": r.get("confidence"), "in_domain": r.get("in_domain"),
            "flags": [f for f in flags(r) if not f.startswith("metadata")], "decision": entry["decision"],
            **({"references": [_reference(x) for x in r["references"][:MAX_REFERENCES]],
                "reference_count": len(r["references"])} if isinstance(r.get("references"), list) else {})}


MAX_REFERENCES = 20     # a logo on 10,000 pages: the page lists the first ones and says how many there are


def _reference(x: dict) -> dict:
    """One place a document shows the image (a proposals record of ``captioner fill``), as the page shows it."""
    from captioner.documents import location_text
    from captioner.documents.refs import ImageRef

    c = x.get("context") or {}
    where = location_text(ImageRef(x.get("document", ""), x.get("location") or {}, "", None, ""))
    return {"document": x.get("document"), "where": where, "alt": x.get("alt"), "status": x.get("status"),
            "proposed": x.get("proposed"), "rule": x.get("rule"), "why": x.get("why"),
            "page_title": c.get("page_title"), "link": c.get("link_href"), "caption": c.get("figure_caption"),
            "nearby": (c.get("nearby_text") or "")[:300]}


def _document_image(rec: dict) -> bytes:
    """A proposals record's image that is not a plain file: read again from its document (documents/)."""
    from captioner.documents import image_for_review
    from captioner.documents.paths import ImageUnavailable
    from captioner.images import ImageError

    try:
        return image_for_review(rec)
    except ImageUnavailable as e:
        raise ImageError(f"{rec.get('image')}: {e}") from None


def create_review_app(results, reviewer: str, token: str | None = None, loopback_only: bool = True) -> FastAPI:
    """The review app for ``results``.  ``loopback_only``: accept only requests addressed to this
    machine by name or loopback address (set when the server listens on loopback)."""
    results = Path(results)
    if not results.exists():
        raise ValueError(f"{results}: no such results file")
    with ReviewStore(results) as store:     # index now, so a bad results file fails before serving
        store.index()
    local = threading.local()                # one SQLite connection per worker thread
    last_index = [time.monotonic()]
    index_lock = threading.Lock()

    def db() -> ReviewStore:
        if getattr(local, "store", None) is None:
            local.store = ReviewStore(results)
        return local.store

    def fresh() -> ReviewStore:
        """The store, with what a running job appended since the last look (at most every few seconds)."""
        s = db()
        if time.monotonic() - last_index[0] > REINDEX_SECONDS and index_lock.acquire(blocking=False):
            try:
                s.index()
                last_index[0] = time.monotonic()
            finally:
                index_lock.release()
        return s

    app = FastAPI(title="captioner review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if loopback_only and not is_loopback(_host_name(request.headers.get("host", ""))):
            return JSONResponse({"detail": "this server answers only requests addressed to this machine"}, 403,
                                headers=HEADERS)
        if token is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() \
                or request.cookies.get(COOKIE, "")
            query = request.query_params.get("token")
            if request.url.path == "/" and query is not None and hmac.compare_digest(query.encode(), token.encode()):
                # the link printed at start-up: keep the token in a cookie and drop it from the address bar
                resp = RedirectResponse("/", 303, headers=HEADERS)
                resp.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return resp
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "a review token is required: open the link the server printed"}, 401,
                                    headers={**HEADERS, "WWW-Authenticate": "Bearer"})
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
                return JSONResponse({"detail": "a decision must come from the review page itself"}, 403,
                                    headers=HEADERS)
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return JSONResponse({"detail": "send the decision as application/json"}, 415, headers=HEADERS)
        response = await call_next(request)
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    page_dir = resources.files("captioner.serve") / "review_page"

    def page_file(path: str):
        name, media = PAGE_FILES[path]
        return lambda: Response((page_dir / name).read_bytes(), media_type=media)

    for path in PAGE_FILES:
        app.get(path, include_in_schema=False)(page_file(path))

    @app.get("/api/summary")
    def summary():
        s = fresh()
        return {"results": results.name, "reviewer": reviewer, **s.counts(), "kinds": s.kinds(),
                "statuses": list(STATUSES), "low_confidence": LOW_CONFIDENCE}

    def _filters(status, kind):
        if status and status not in STATUSES:
            raise HTTPException(422, f"status {status!r}: one of {', '.join(STATUSES)}")
        return status or None, kind or None

    @app.get("/api/photos")
    def photos(offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500), kind: str | None = None,
               status: str | None = None, q: str | None = Query(None, max_length=500)):
        status, kind = _filters(status, kind)
        s = fresh()
        return {"total": s.count(kind, status, q), "offset": offset,
                "items": [_item(e) for e in s.page(offset, limit, kind, status, q)], **s.counts()}

    @app.get("/api/photo")
    def photo(image: str = Query(..., max_length=4096)):
        from captioner.images import ImageError, open_image

        rec = db().record(image)
        if rec is None:
            raise HTTPException(404, "not a photo of this results file")
        try:
            if isinstance(rec.get("references"), list) and not Path(image).is_file() or Path(image).suffix.lower() \
                    in (".svg", ".svgz"):
                img = open_image(io.BytesIO(_document_image(rec)), name=image)   # inside a document, or an SVG
            else:
                img = open_image(image, at_least=PREVIEW)   # a large JPEG decodes at about the scale shown
        except ImageError as e:
            raise HTTPException(404 if "no such file" in str(e) else 415, f"cannot show this photo: {e}") from None
        img.thumbnail((PREVIEW, PREVIEW))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.post("/api/decisions")
    def decide(d: Decision):
        s = db()
        if d.action not in ACTIONS:
            raise HTTPException(422, f"action {d.action!r}: one of {', '.join(ACTIONS)}")
        try:
            did = s.decide(d.image, d.action, d.text, reviewer)   # committed (fsync'd) before we answer
        except ValueError as e:
            raise HTTPException(404 if "not a photo" in str(e) else 422, str(e)) from None
        return {"id": did, "decision": s.final(d.image), **s.counts()}

    @app.get("/api/history")
    def history(image: str = Query(..., max_length=4096)):
        s = db()
        if not s.listed(image):
            raise HTTPException(404, "not a photo of this results file")
        return {"image": image, "decisions": s.history(image)}

    return app


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("results", help="a results file of a library run (.jsonl or .parquet); run the server from "
                                    "the folder the run was started in, as its photo paths are relative to it")
    ap.add_argument("--reviewer", default=None, help="the name each decision is signed with (default: your user name)")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: this machine only; any other needs --token)")
    ap.add_argument("--port", type=runtime.whole_type(0, 65535), default=8765, help="port to listen on")
    ap.add_argument("--token", default=None,
                    help="a secret every request must carry (required with a --host other than loopback)")


def main(args) -> int:
    import uvicorn

    loopback = is_loopback(args.host)
    if not loopback and not args.token:
        raise ValueError(f"--host {args.host}: beyond this machine the page needs --token SECRET "
                         "(for instance --token \"$(openssl rand -hex 16)\")")
    reviewer = (args.reviewer or getpass.getuser() or "").strip()
    # the first start indexes the whole results file (about 40 s per million photos here); later ones
    # read only what a run appended since
    print(f"captioner review: indexing {args.results} ...", file=sys.stderr, flush=True)
    app = create_review_app(args.results, reviewer, args.token, loopback_only=loopback)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    link = f"http://{shown}:{args.port}/" + (f"?token={args.token}" if args.token else "")
    print(f"captioner review: {args.results} as {reviewer}: open {link}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
