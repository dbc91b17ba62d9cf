"""An HTML page for a person to review a library run (``captioner caption ... --html report.html``):
every photo as a thumbnail with its alt text, caption, kind, text read, confidence and flags, the doubtful ones
first - failures, then photos unlike the training set, then by rising confidence - so a reviewer
reads the risky ones while attention is fresh.

Where a person has reviewed the run (``captioner review``), each card also shows the decision - accepted,
edited (with the person's text), or decorative - with the reviewer's name, and the summary counts them;
the decisions are read from the database beside the results file (``library/decisions.py``).

Thumbnails (256 px JPEG) go into ``NAME_thumbs/`` beside the page, named by a hash of the photo's
path and reused on the next run; the page links each thumbnail to its photo.  Everything shown is
escaped.  ``python -m captioner.library.report results.jsonl report.html`` rebuilds a page from a results file.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from captioner.parallel import cores

THUMB = 256
LOW_CONFIDENCE = 0.5   # below this a caption is flagged for review (the confidence is calibrated)


def doubt(rec: dict) -> tuple:
    """Sort key: failures, then out-of-domain, then by confidence (unknown last), then path."""
    if "error" in rec:
        return (0, 0.0, rec["image"])
    conf = rec.get("confidence")
    return (1 if rec.get("in_domain") is False else 2, 2.0 if conf is None else conf, rec["image"])


def flags(rec: dict) -> list[str]:
    out = []
    if "error" in rec:
        out.append("error")
    if rec.get("in_domain") is False:
        out.append("out of domain")
    if rec.get("confidence") is not None and rec["confidence"] < LOW_CONFIDENCE:
        out.append("low confidence")
    if rec.get("guided"):
        out.append(f"guided: {rec['guided']}")
    status = (rec.get("metadata") or {}).get("status")
    if status:
        out.append(f"metadata {status}")
    return out


STATUS_WORDS = {"accept": "accepted", "edit": "edited", "decorative": "decorative"}


def status(rec: dict, decision: dict | None = None) -> str:
    """failed, pending, accepted, edited or decorative: the word a card shows (in its own colour,
    ``serve/review_page/status.css``, shared with the review page)."""
    if "error" in rec:
        return "failed"
    return STATUS_WORDS.get((decision or {}).get("action"), "pending")


def _status_css() -> str:
    from importlib import resources

    return (resources.files("captioner.serve") / "review_page" / "status.css").read_text(encoding="utf-8")


def _thumbnail(photo: str, folder: Path) -> str | None:
    """-> the thumbnail's file name in ``folder`` (made if missing or older than the photo), or None."""
    from captioner.images import ImageError, open_image

    name = hashlib.sha1(os.path.abspath(photo).encode()).hexdigest()[:20] + ".jpg"
    dest = folder / name
    try:
        if dest.is_file() and dest.stat().st_mtime >= os.stat(photo).st_mtime:
            return name
        img = open_image(photo, at_least=2 * THUMB)   # a large JPEG decodes at the scale the thumbnail needs
        img.thumbnail((THUMB, THUMB))
        tmp = folder / f".{name}.{threading.get_ident()}.tmp"   # made by several threads at once
        img.save(tmp, "JPEG", quality=80)
        os.replace(tmp, dest)
        return name
    except (ImageError, OSError):
        return None


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.4rem;margin:0 0 .3rem} .summary{margin:0 0 1rem;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:1rem}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.6rem;display:flex;flex-direction:column;gap:.35rem}
.card.doubt{border-color:#d9822b;border-width:2px} .card.error{border-color:#c0392b;border-width:2px}
.card img{width:100%;height:190px;object-fit:contain;background:#eee;border-radius:4px}
.noimg{height:190px;display:flex;align-items:center;justify-content:center;background:#eee;color:#595959}
.alt{font-weight:600;overflow-wrap:anywhere} .cap{color:#555;font-size:.9rem} .path{color:#595959;font-size:.75rem;word-break:break-all}
.conf{font-size:.85rem} .bar{height:5px;background:#eee;border-radius:3px}
.bar span{display:block;height:5px;border-radius:3px;background:#2e86c1}
.flag{display:inline-block;font-size:.75rem;padding:.05rem .4rem;margin:0 .25rem .2rem 0;border-radius:10px;background:#fdebd0;color:#7e5109}
.flag.error{background:#f5b7b1;color:#78281f}
.decision{font-size:.85rem;background:#f4f4f4;color:#222;border-radius:4px;padding:.2rem .4rem;overflow-wrap:anywhere}
.read{white-space:pre-wrap;font-size:.8rem;max-height:12rem;overflow:auto;background:#f4f4f4;padding:.3rem}
"""


def _plain(text: str) -> str:
    return " ".join(text.lower().rstrip(".").split())


def _decision(d: dict) -> str:
    import time

    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(d["at"]))
    what = {"accept": "accepted", "edit": f"edited to \u201c{d['text']}\u201d",
            "decorative": "decorative (empty alt text)"}[d["action"]]
    return f"reviewed: {what}, by {d['reviewer']}, {when}"


def _card(rec: dict, thumb: str | None, thumbs: Path, page: Path, decision: dict | None = None) -> str:
    e = html.escape
    fl = flags(rec)
    cls = "card error" if "error" in rec else "card doubt" if fl and fl != ["metadata written"] else "card"
    href = Path(os.path.relpath(os.path.abspath(rec["image"]), page.parent.resolve())).as_posix()
    img = (f'<a href="{e(href)}"><img loading="lazy" src="{e(thumbs.name + "/" + thumb)}" alt="{e(rec.get("alt_text", ""))}"></a>'
           if thumb else '<div class="noimg">no preview</div>')
    word = status(rec, decision)
    parts = [f'<div class="{cls}" data-image="{e(rec["image"])}">', img,
             f'<div><span class="status status-{word}">{word}</span></div>']
    if decision is not None:
        parts.append(f'<div class="decision">{e(_decision(decision))}</div>')
    if "error" in rec:
        parts.append(f'<div class="alt">{e(rec["error"])}</div>')
    if rec.get("alt_text"):
        parts.append(f'<div class="alt">{e(rec["alt_text"])}</div>')
    if rec.get("caption") and _plain(rec["caption"]) != _plain(rec.get("alt_text", "")):
        parts.append(f'<div class="cap">caption: {e(rec["caption"])}</div>')
    if rec.get("kind"):
        kind = rec["kind"] + (f' ({rec["chart_type"]})' if rec.get("chart_type") else "")
        prob = f' {rec["kind_probability"]:.2f}' if rec.get("kind_probability") is not None else ""
        parts.append(f'<div class="cap">kind: {e(kind)}{prob}</div>')
    read = (rec.get("text") or {}).get("text")
    if read or rec.get("long_description"):
        parts.append(f'<details class="cap"><summary>text read</summary><pre class="read">'
                     f'{e(rec.get("long_description") or read)}</pre></details>')
    if rec.get("text_error"):
        parts.append(f'<div class="cap">text not read: {e(rec["text_error"])}</div>')
    if (rec.get("metadata") or {}).get("status") == "failed":
        parts.append(f'<div class="cap">metadata not written: {e(rec["metadata"].get("error", ""))}</div>')
    conf = rec.get("confidence")
    if conf is not None:
        parts.append(f'<div class="conf">confidence {conf:.2f}<div class="bar"><span style="width:{100 * conf:.0f}%">'
                     '</span></div></div>')
    if fl:
        parts.append("<div>" + "".join(f'<span class="flag{" error" if f == "error" else ""}">{e(f)}</span>'
                                       for f in fl) + "</div>")
    parts.append(f'<div class="path">{e(rec["image"])}</div></div>')
    return "\n".join(parts)


def write_report(records: list[dict], out, decisions: dict[str, dict] | None = None) -> Path:
    """Write the page for ``records`` to ``out`` (atomically) -> its path.  ``decisions``: image -> a
    person's final decision (``ReviewStore.finals``), shown on its card."""
    decisions = decisions or {}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    thumbs = out.with_name(out.stem + "_thumbs")
    thumbs.mkdir(exist_ok=True)
    recs = sorted(records, key=doubt)
    n_err = sum("error" in r for r in recs)
    n_ood = sum(r.get("in_domain") is False for r in recs)
    n_low = sum(r.get("confidence") is not None and r["confidence"] < LOW_CONFIDENCE for r in recs)
    n_rev = sum(r["image"] in decisions for r in recs)
    # the thumbnails on every core (Pillow decodes, resizes and saves outside Python's lock): one thread each
    # made them in turn, 29 ms for a phone's photo, minutes for a large library
    with ThreadPoolExecutor(cores()) as pool:
        names = list(pool.map(lambda r: _thumbnail(r["image"], thumbs), recs))
    body = "\n".join(_card(r, name, thumbs, out, decisions.get(r["image"])) for r, name in zip(recs, names))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>captioner review: {len(recs)} photos</title><style>{CSS}{_status_css()}</style></head>
<body><main><h1>captioner review: {len(recs)} photos</h1>
<p class="summary">{n_err} failed, {n_ood} out of domain, {n_low} with confidence below {LOW_CONFIDENCE};
most doubtful first{f"; {n_rev} reviewed by a person" if decisions else ""}. Click a thumbnail for the photo.</p>
<div class="grid">
{body}
</div></main></body></html>
"""
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def review_decisions(results) -> dict[str, dict]:
    """The person's final decisions on ``results``' photos, if it has been reviewed (else {})."""
    from captioner.library.decisions import ReviewStore, default_path

    if not default_path(results).exists():
        return {}
    with ReviewStore(results) as store:
        return store.finals()


def main(argv=None) -> int:
    from captioner.library.results import open_results

    ap = argparse.ArgumentParser(prog="python -m captioner.library.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a results file of a library run (.jsonl or .parquet)")
    ap.add_argument("html", help="the page to write")
    args = ap.parse_args(argv)
    if not Path(args.results).exists():
        raise SystemExit(f"{args.results}: no such results file")
    with open_results(args.results) as store:
        records = store.records()
    print(write_report(records, args.html, review_decisions(args.results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
