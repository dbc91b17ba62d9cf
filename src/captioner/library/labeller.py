"""Photos in, records out: one model (and, when asked, one ExifTool process) per process - the local
library run's, or each Ray actor's (``run.py``, ``ray_engine.py``; both import this, neither the
other's internals).
"""
from __future__ import annotations

from itertools import islice

from captioner.library.results import record


class Labeller:
    """A model and, when asked, an ExifTool process: paths -> records.  One per process (the local
    run, or each Ray actor), loaded once."""

    def __init__(self, model: dict, metadata: str | None = None, overwrite: bool = False):
        from captioner.api import Captioner
        from captioner.library.metadata import MetadataWriter

        self.captioner = Captioner(**model)
        self.writer = MetadataWriter(metadata, overwrite) if metadata else None

    def label(self, results) -> list[dict]:
        """(path, Caption or error message) pairs -> records, metadata written where asked."""
        from captioner.library.metadata import MetadataError

        out = []
        for path, res in results:
            rec = record(path, res)
            if self.writer is not None and "error" not in rec:
                try:
                    rec.update(self.writer.write_record(rec))
                except MetadataError as e:
                    # the caption stands (it is in the results); only the metadata failed, and
                    # `captioner write-metadata RESULTS MODE` writes it again without captioning
                    rec["metadata"] = {"status": "failed", "error": str(e)}
            out.append(rec)
        return out

    def __call__(self, paths: list[str], batch_size: int = 16, workers: int = 0):
        """Yield lists of at most ``batch_size`` records, in input order."""
        it = self.captioner.caption_paths(paths, batch_size, workers)
        while chunk := list(islice(it, batch_size)):
            yield self.label(chunk)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
