"""``captioner export``: a library run's final captions, or the review decisions themselves, as a
file.  The results file and the decisions database (``decisions.py``) are only read.

    captioner export captions.jsonl --out photos/final.jsonl            # every photo's final alt text
    captioner export captions.jsonl --reviewed --out photos/train.csv   # accepted and edited: training data
    captioner export captions.jsonl --decisions --out decisions.jsonl   # the audit trail, every decision

The final text of a photo is a person's where there is a deciding decision (an edit's text, the
machine's alt text for an accept, empty for decorative), else the machine's.  ``--reviewed`` keeps the
accepted and edited photos only, with columns ``image,caption`` as ``captioner train --data`` reads
them: ``image`` relative to the output file's folder, so that file must sit above the photos.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from captioner.library.decisions import ReviewStore


def final_records(store: ReviewStore) -> list[dict]:
    """Per captioned photo: image, alt_text (final), caption, source (person or machine), reviewer."""
    finals = store.finals()
    out = []
    for image, rec in store.db.execute("SELECT image, rec FROM photos WHERE failed = 0 ORDER BY image"):
        r, d = json.loads(rec), finals.get(image)
        row = {"image": image, "alt_text": r.get("alt_text"), "caption": r.get("caption"), "source": "machine",
               "reviewer": None, "action": None}
        if d is not None:
            row.update(source="person", reviewer=d["reviewer"], action=d["action"])
            if d["action"] == "edit":
                row["alt_text"] = row["caption"] = d["text"]
            elif d["action"] == "decorative":
                row["alt_text"] = ""
        out.append(row)
    return out


def _relative(image: str, folder: Path) -> str:
    rel = os.path.relpath(Path(image).resolve(), folder.resolve())
    if rel.startswith(".."):
        raise ValueError(f"{image}: not under {folder}, where the training file goes; write --out in a folder "
                         "that holds the photos (captioner train --data reads image paths relative to it)")
    return rel.replace(os.sep, "/")


def export(results, out, reviewed: bool = False, decisions: bool = False) -> int:
    """Write the export -> rows written.  CSV or JSON lines by ``out``'s suffix; written to a temporary
    file and renamed, so a failure leaves no half file."""
    out = Path(out)
    if out.suffix not in (".csv", ".jsonl"):
        raise ValueError(f"--out {out}: write .csv or .jsonl")
    if reviewed and decisions:
        raise ValueError("--reviewed and --decisions: choose one")
    with ReviewStore(results) as store:
        store.index()
        if decisions:
            rows = [{"image": image, **d} for image in
                    [r[0] for r in store.db.execute("SELECT DISTINCT image FROM decisions ORDER BY image")]
                    for d in store.history(image)]
        else:
            rows = final_records(store)
            if reviewed:
                rows = [{"image": _relative(r["image"], out.parent), "caption": r["caption"]} for r in rows
                        if r["action"] in ("accept", "edit") and r["caption"]]
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            if out.suffix == ".jsonl":
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
            else:
                w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image", "caption"])
                w.writeheader()
                w.writerows(rows)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(rows)
