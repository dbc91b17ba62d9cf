"""The results file of a library run (``captioner caption PATHS --output FILE``), kept so that a
run can stop at any moment and be resumed by running the same command again.

  * ``FILE.jsonl`` - one JSON object per image: ``{"image": ..., "caption": ..., "alt_text": ...}``
    as ``Caption.to_dict()``, or ``{"image": ..., "error": ...}``.  Each batch is appended with one
    ``write`` and ``fsync``: a kill loses at most the batch in flight.  Should a kill cut that write
    short (possible only for a write the kernel splits), the next run removes the incomplete last
    line before it appends, and says so.
  * ``FILE.parquet`` - a folder of Parquet part files, one per batch, each written under a hidden
    temporary name and renamed into place when complete (nested fields as JSON strings).

An image counts as done when a record names it (by absolute path, so rerun from the same folder
when the paths are relative); error records are retried only with ``retry_errors``, which first
drops them from the file (atomically), so that no image is ever listed twice.  One run at a time
may hold a results file (an advisory lock; a second run gets a clear error).
"""
from __future__ import annotations

import fcntl
import json
import os
import uuid
from pathlib import Path

# the Parquet columns; nested values (tags, beams, metadata) are stored as JSON text
COLUMNS = {"image": "string", "error": "string", "caption": "string", "alt_text": "string", "score": "float64",
           "in_domain": "bool", "confidence": "float64", "guided": "string", "domain_distance": "float64",
           "tags": "json", "beams": "json", "metadata": "json", "kind": "string", "kind_probability": "float64",
           "chart_type": "string", "text": "json", "long_description": "string", "text_error": "string"}


def record(path, result) -> dict:
    """(path, ``Caption`` or an error message) -> the object written for it."""
    if isinstance(result, str):
        return {"image": str(path), "error": result}
    return {"image": str(path), **result.to_dict()}


def key(image: str) -> str:
    return os.path.abspath(image)


def open_results(path, retry_errors: bool = False):
    """-> the results store for ``path`` (``.jsonl`` or ``.parquet``), locked for this run."""
    p = Path(path)
    if p.suffix == ".parquet":
        return ParquetResults(p, retry_errors)
    if p.suffix in (".jsonl", ".json", ".ndjson"):
        return JsonlResults(p, retry_errors)
    raise ValueError(f"--output {path}: name a .jsonl (JSON lines) or .parquet file")


class _Results:
    def __init__(self):
        self.done: dict[str, bool] = {}       # absolute path -> captioned (True) or failed (False)
        self.repaired = ""                    # what opening had to mend, for the user

    def pending(self, paths: list[str]) -> list[str]:
        """The paths without a record (errors included once they were dropped by ``retry_errors``)."""
        return [p for p in paths if key(p) not in self.done]

    def _note(self, recs: list[dict]) -> None:
        for r in recs:
            self.done[key(r["image"])] = "error" not in r

    def _lock(self, fd: int, path: Path) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"--output {path}: another captioner run is writing it; wait for it or "
                             "choose another file") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class JsonlResults(_Results):
    def __init__(self, path: Path, retry_errors: bool = False):
        super().__init__()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock(self.fd, path)
        recs = self._read()
        if retry_errors and any("error" in r for r in recs):
            recs = [r for r in recs if "error" not in r]
            self._rewrite(recs)
        self._note(recs)

    def _read(self) -> list[dict]:
        data = Path(self.path).read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):   # an interrupted write: the last line is incomplete; remove it
            os.truncate(self.path, end)
            self.repaired = f"removed an incomplete last line ({len(data) - end} bytes) left by an interrupted run"
            data = data[:end]
        recs = []
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"--output {self.path} line {n}: not JSON ({e.msg}); "
                                 "mend or remove that line, or choose another file") from None
            if not isinstance(r, dict) or not isinstance(r.get("image"), str):
                raise ValueError(f"--output {self.path} line {n}: not a captioner record (no \"image\")")
            recs.append(r)
        return recs

    def _rewrite(self, recs: list[dict]) -> None:
        """The file with only ``recs``, atomically (a temporary file renamed over it)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        old, self.fd = self.fd, os.open(self.path, os.O_RDWR | os.O_APPEND)
        self._lock(self.fd, self.path)
        os.close(old)

    def append(self, recs: list[dict]) -> None:
        """One batch's records: one write, then fsync."""
        if not recs:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        os.fsync(self.fd)
        self._note(recs)

    def records(self) -> list[dict]:
        return self._read()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _table(recs: list[dict]):
    import pyarrow as pa

    cols = {}
    for name, kind in COLUMNS.items():
        vals = [r.get(name) for r in recs]
        if kind == "json":
            cols[name] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in vals], pa.string())
        else:
            cols[name] = pa.array(vals, {"string": pa.string(), "float64": pa.float64(), "bool": pa.bool_()}[kind])
    return pa.table(cols)


# fields a caption record carries even when they are null (``Caption.to_dict``)
_NULLABLE = ("in_domain", "confidence", "guided", "domain_distance", "kind", "kind_probability", "chart_type", "text")


def _rows(table) -> list[dict]:
    out = []
    for row in table.to_pylist():
        r = {k: json.loads(v) if COLUMNS[k] == "json" and v is not None else v for k, v in row.items()}
        keep = _NULLABLE if r.get("error") is None and r.get("caption") is not None else ()
        out.append({k: v for k, v in r.items() if v is not None or k in keep})
    return out


class ParquetResults(_Results):
    def __init__(self, path: Path, retry_errors: bool = False):
        super().__init__()
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"--output {path}: Parquet results need pyarrow: pip install 'captioner[parquet]' "
                             "(or write .jsonl)") from None

        self.path, self.pq = path, pq
        if path.exists() and not path.is_dir():
            raise ValueError(f"--output {path}: exists and is not a folder of Parquet parts")
        path.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._lock(self.fd, path)
        for part in self._parts():
            recs = _rows(pq.read_table(part))
            if retry_errors and any("error" in r for r in recs):
                keep = [r for r in recs if "error" not in r]
                if keep:
                    self._write(keep, name=part.name)   # replaces the part atomically
                else:
                    part.unlink()
                recs = keep
            self._note(recs)

    def _parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def _write(self, recs: list[dict], name: str | None = None) -> None:
        name = name or f"part-{len(self._parts()):08d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.path / f".{name}.tmp"
        self.pq.write_table(_table(recs), tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path / name)

    def append(self, recs: list[dict]) -> None:
        if recs:
            self._write(recs)
            self._note(recs)

    def records(self) -> list[dict]:
        return [r for part in self._parts() for r in _rows(self.pq.read_table(part))]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

