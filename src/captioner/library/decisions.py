"""A person's decisions on a library run's alt texts, and the index a review reads, in one SQLite
database beside the results file (``RESULTS.review.sqlite``).  Standard library only.

    store = ReviewStore("captions.jsonl")
    store.index()                                    # new records of the results file, incrementally
    store.decide("photos/a.jpg", "edit", "A red kite over the dunes.", reviewer="ana")
    store.final("photos/a.jpg")                      # -> the latest decision, or None

Guarantees:
  * The results file is only read, never rewritten.
  * Every decision is kept (the audit trail: reviewer, time, action, text); the latest one per photo
    wins.  Each is one transaction in WAL mode with ``synchronous=FULL``, so a decision that was
    acknowledged survives a kill -9 or a power cut, and several connections (two tabs, two reviewers)
    write without losing one another's.
  * Indexing is incremental: a JSON-lines results file is read from where the last index stopped (whole
    lines only, so a run still appending is no problem), a Parquet one by its parts not seen yet; the
    order (doubtful first), filters, counts and text search (FTS5) are queries, not scans of the file.

Actions: ``accept`` (the machine's alt text), ``edit`` (a person's text), ``decorative`` (empty alt text:
the image adds nothing a reader needs), ``skip`` (looked at, no decision).
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path

ACTIONS = ("accept", "edit", "decorative", "skip")
STATUSES = ("failed", "out of domain", "reviewed", "unreviewed")

SCHEMA_VERSION = 2   # 1: the first layout (the text index keyed by path: a full scan per record)
SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY, image TEXT NOT NULL UNIQUE, rec TEXT NOT NULL, failed INTEGER NOT NULL,
    in_domain INTEGER, confidence REAL, kind TEXT, alt_text TEXT, rank_group INTEGER NOT NULL,
    rank_conf REAL NOT NULL);
CREATE INDEX IF NOT EXISTS photos_order ON photos (rank_group, rank_conf, image);
CREATE INDEX IF NOT EXISTS photos_kind ON photos (kind);
CREATE VIRTUAL TABLE IF NOT EXISTS photos_text USING fts5 (image, alt_text, caption, text);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, image TEXT NOT NULL REFERENCES photos (image),
    action TEXT NOT NULL, text TEXT, reviewer TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_image ON decisions (image, id);
CREATE TABLE IF NOT EXISTS indexed (source TEXT PRIMARY KEY, position INTEGER NOT NULL);
"""
# the index of the results file is derived data: a database of an older layout drops and rebuilds it,
# and keeps every decision
DERIVED = ("photos_text", "photos", "indexed")
BLOCK = 8 << 20      # bytes of the results file read (and indexed in one transaction) at a time


def default_path(results) -> Path:
    results = Path(results)
    return results.with_name(results.name + ".review.sqlite")


class ReviewStore:
    def __init__(self, results, path=None):
        self.results = Path(results)
        self.path = Path(path) if path else default_path(self.results)
        # one connection per thread that uses it (the server's handlers each open their own store)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self._migrate()
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        has_photos = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'photos'").fetchone()
        if has_photos and version < SCHEMA_VERSION:
            with self._transaction():
                for table in DERIVED:
                    self.db.execute(f"DROP TABLE IF EXISTS {table}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ the index
    def index(self) -> int:
        """Add the results file's records not indexed yet -> how many were added (or replaced: a
        failure retried later)."""
        if not self.results.exists():
            raise ValueError(f"{self.results}: no such results file")
        if self.results.is_dir():
            return self._index_parquet()
        return self._index_jsonl()

    def _index_jsonl(self) -> int:
        """Read on from the last position, a block of whole lines at a time, each block one transaction
        (so memory stays bounded and an interrupted first index resumes where it stopped)."""
        row = self.db.execute("SELECT position FROM indexed WHERE source = ?", (str(self.results),)).fetchone()
        pos = row[0] if row else 0
        n = 0
        with open(self.results, "rb") as f:
            if pos > f.seek(0, 2):       # the file was replaced by a shorter one: index it again
                pos = 0
            f.seek(pos)
            buf = b""
            while True:
                data = f.read(BLOCK)
                buf += data
                end = buf.rfind(b"\n") + 1  # whole lines only: a run may be appending
                if end:
                    recs = []
                    for line in buf[:end].splitlines():
                        if line.strip():
                            try:
                                text = line.decode("utf-8")
                                recs.append((json.loads(text), text))
                            except ValueError:
                                continue  # a torn line a repair will drop; the results file is the truth
                    pos += end
                    with self._transaction():
                        self._add(recs)
                        self.db.execute("INSERT OR REPLACE INTO indexed VALUES (?, ?)", (str(self.results), pos))
                    n += len(recs)
                    buf = buf[end:]
                if not data:
                    return n

    def _index_parquet(self) -> int:
        import pyarrow.parquet as pq

        from captioner.library.results import _rows

        n = 0
        seen = {r[0] for r in self.db.execute("SELECT source FROM indexed")}
        for part in sorted(self.results.glob("part-*.parquet")):
            if str(part) in seen:
                continue
            recs = [(r, json.dumps(r, ensure_ascii=False)) for r in _rows(pq.read_table(part))]
            with self._transaction():
                self._add(recs)
                self.db.execute("INSERT OR REPLACE INTO indexed VALUES (?, 0)", (str(part),))
            n += len(recs)
        return n

    def _add(self, recs: list[tuple[dict, str]]) -> None:
        """(record, its JSON) pairs -> rows of the index.  A photo seen again (a failure retried by a
        later run) keeps its row id and gets the newer record; the text index is keyed by that id.  New
        photos, nearly all of them, go in with one statement per table."""
        rows = {}
        for r, raw in recs:
            if "image" not in r:
                continue
            failed = "error" in r
            conf = r.get("confidence")
            # the review page's order (report.doubt): failures, out of domain, then rising confidence
            group = 0 if failed else (1 if r.get("in_domain") is False else 2)
            rank = 0.0 if failed else (2.0 if conf is None else float(conf))
            text = (r.get("text") or {}).get("text", "") if isinstance(r.get("text"), dict) else ""
            rows[r["image"]] = ((r["image"], raw, int(failed), None if r.get("in_domain") is None else int(r["in_domain"]),
                                 conf, r.get("kind"), r.get("alt_text"), group, rank),
                                (r.get("alt_text") or "", r.get("caption") or "", text))   # the latest line wins
        images = list(rows)
        known = {}
        for i in range(0, len(images), 500):
            part = images[i:i + 500]
            known.update(self.db.execute(f"SELECT image, id FROM photos WHERE image IN ({','.join('?' * len(part))})",
                                         part).fetchall())
        first = (self.db.execute("SELECT MAX(id) FROM photos").fetchone()[0] or 0) + 1
        new = [im for im in images if im not in known]
        ids = {im: first + k for k, im in enumerate(new)}
        cols = "image, rec, failed, in_domain, confidence, kind, alt_text, rank_group, rank_conf"
        self.db.executemany(f"INSERT INTO photos (id, {cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [(ids[im], *rows[im][0]) for im in new])
        for im, pid in known.items():
            self.db.execute(f"UPDATE photos SET ({cols}) = (?, ?, ?, ?, ?, ?, ?, ?, ?) WHERE id = ?", (*rows[im][0], pid))
            self.db.execute("DELETE FROM photos_text WHERE rowid = ?", (pid,))
        ids.update(known)
        self.db.executemany("INSERT INTO photos_text (rowid, image, alt_text, caption, text) VALUES (?, ?, ?, ?, ?)",
                            [(ids[im], im, *rows[im][1]) for im in images])

    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction, taken at once (IMMEDIATE), so concurrent writers queue, never deadlock."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------ decisions
    def decide(self, image: str, action: str, text: str | None = None, reviewer: str = "reviewer") -> int:
        """Record one decision (its own transaction, durable once this returns) -> its id."""
        if action not in ACTIONS:
            raise ValueError(f"action {action!r}: choose one of {', '.join(ACTIONS)}")
        if action == "edit":
            text = " ".join(str(text or "").split())
            if not text:
                raise ValueError(f"{image}: an edit needs a text (or choose decorative for an empty alt text)")
        elif action == "decorative":
            text = ""
        else:
            text = None
        if not str(reviewer or "").strip():
            raise ValueError("a decision needs a reviewer's name")
        with self._transaction():
            if self.db.execute("SELECT 1 FROM photos WHERE image = ?", (image,)).fetchone() is None:
                raise ValueError(f"{image}: not a photo of {self.results}")
            cur = self.db.execute("INSERT INTO decisions (image, action, text, reviewer, at) VALUES (?, ?, ?, ?, ?)",
                                  (image, action, text, str(reviewer).strip(), time.time()))
        return int(cur.lastrowid)

    def final(self, image: str) -> dict | None:
        """The latest decision on ``image`` that decides something (skips do not), or None."""
        row = self.db.execute("SELECT id, action, text, reviewer, at FROM decisions WHERE image = ? AND "
                              "action != 'skip' ORDER BY id DESC LIMIT 1", (image,)).fetchone()
        return None if row is None else dict(zip(("id", "action", "text", "reviewer", "at"), row))

    def finals(self) -> dict[str, dict]:
        """image -> its latest deciding decision, for every photo that has one."""
        rows = self.db.execute(
            "SELECT d.image, d.id, d.action, d.text, d.reviewer, d.at FROM decisions d JOIN "
            "(SELECT image, MAX(id) AS id FROM decisions WHERE action != 'skip' GROUP BY image) m ON d.id = m.id")
        return {r[0]: dict(zip(("id", "action", "text", "reviewer", "at"), r[1:])) for r in rows}

    def history(self, image: str) -> list[dict]:
        rows = self.db.execute("SELECT id, action, text, reviewer, at FROM decisions WHERE image = ? ORDER BY id",
                               (image,))
        return [dict(zip(("id", "action", "text", "reviewer", "at"), r)) for r in rows]

    def counts(self) -> dict:
        total = self.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
        # a skip is looked at, not decided: the photo stays unreviewed and comes round again
        reviewed = self.db.execute("SELECT COUNT(DISTINCT image) FROM decisions WHERE action != 'skip'").fetchone()[0]
        return {"photos": total, "reviewed": reviewed}

    def _where(self, kind: str | None, status: str | None, query: str | None) -> tuple[str, list]:
        where, args = [], []
        if kind:
            where.append("p.kind = ?")
            args.append(kind)
        if status == "failed":
            where.append("p.failed = 1")
        elif status == "out of domain":
            where.append("p.in_domain = 0")
        elif status in ("reviewed", "unreviewed"):
            where.append(("" if status == "reviewed" else "NOT ") + "EXISTS (SELECT 1 FROM decisions d WHERE d.image = p.image AND d.action != 'skip')")
        elif status:
            raise ValueError(f"status {status!r}: {', '.join(STATUSES)}")
        if query and query.split():
            where.append("p.id IN (SELECT rowid FROM photos_text WHERE photos_text MATCH ?)")
            args.append(" ".join('"' + w.replace('"', '""') + '"' for w in query.split()))   # words, not syntax
        return (" WHERE " + " AND ".join(where) if where else ""), args

    def page(self, offset: int = 0, limit: int = 50, kind: str | None = None, status: str | None = None,
             query: str | None = None) -> list[dict]:
        """Records in review order (doubtful first), filtered by kind, status (``failed``, ``out of
        domain``, ``reviewed``, ``unreviewed``) and full-text ``query``; each with its final decision."""
        where, args = self._where(kind, status, query)
        sql = ("SELECT p.image, p.rec FROM photos p" + where
               + " ORDER BY p.rank_group, p.rank_conf, p.image LIMIT ? OFFSET ?")
        out = []
        for image, rec in self.db.execute(sql, (*args, int(limit), int(offset))).fetchall():
            out.append({"record": json.loads(rec), "decision": self.final(image)})
        return out

    def count(self, kind: str | None = None, status: str | None = None, query: str | None = None) -> int:
        """How many records ``page`` would list with these filters."""
        where, args = self._where(kind, status, query)
        return self.db.execute("SELECT COUNT(*) FROM photos p" + where, args).fetchone()[0]

    def kinds(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT kind FROM photos WHERE kind IS NOT NULL ORDER BY kind")]

    def record(self, image: str) -> dict | None:
        """The results file's record of ``image`` (as indexed), or None."""
        row = self.db.execute("SELECT rec FROM photos WHERE image = ?", (image,)).fetchone()
        return None if row is None else json.loads(row[0])

    def listed(self, image: str) -> bool:
        """Whether ``image`` is exactly a photo of the results file (the review server serves no other)."""
        return self.db.execute("SELECT 1 FROM photos WHERE image = ?", (image,)).fetchone() is not None
