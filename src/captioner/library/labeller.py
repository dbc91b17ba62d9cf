"""Photos in, records out: one model (and, when asked, one ExifTool process) per labeller - the local
library run's, or each Ray actor's (``run.py``, ``ray_engine.py``; both import this, neither the
other's internals).  The local run's labeller may spread the model over worker processes
(``parallel.py``): it then holds a ``CaptionPool`` instead of a model, and writes metadata itself.
"""
from __future__ import annotations

from itertools import islice

from captioner.library.results import record


class Labeller:
    """A model (or a pool of processes each holding one) and, when asked, an ExifTool process:
    paths -> records.  ``processes``/``threads`` as ``parallel.plan`` takes them (1: this process,
    as a Ray actor does)."""

    def __init__(self, model: dict, metadata: str | None = None, overwrite: bool = False,
                 processes: int | None = 1, threads: int | None = None):
        from captioner import parallel
        from captioner.library.metadata import MetadataWriters

        self.plan = parallel.plan_for(model, processes, threads)
        self.model, self.source = dict(model), None
        if not self.plan.pooled:
            from captioner.api import Captioner

            self.source = Captioner(**{**model, "threads": model.get("threads") or threads or self.plan.threads})
        # a pool's records are written by as many ExifTool processes as it has workers (in this process's
        # threads): one writer would cap a run at its speed (4 phone-size photos a second, embedding)
        self.writers = MetadataWriters(metadata, overwrite, self.plan.processes) if metadata else None

    def label(self, results) -> list[dict]:
        """(path, Caption or error message) pairs -> records, metadata written where asked."""
        out = [record(path, res) for path, res in results]
        if self.writers is not None:
            done = [rec for rec in out if "error" not in rec]
            for rec, meta in zip(done, self.writers.map(_write_metadata, done)):
                rec.update(meta)
        return out

    def __call__(self, paths: list[str], batch_size: int = 16, workers: int = 0):
        """Yield lists of at most ``batch_size`` records, in input order (records need no attention maps)."""
        from captioner import parallel

        if self.source is None:
            self.source = parallel.CaptionPool(self.model, self.plan)   # started on first use
        if isinstance(self.source, parallel.CaptionPool):
            it = self.source.caption_paths(paths, batch_size, attention=False)
        else:
            it = self.source.caption_paths(paths, batch_size, workers, processes=1, attention=False)
        while chunk := list(islice(it, batch_size)):
            yield self.label(chunk)

    def close(self) -> None:
        from captioner import parallel

        if isinstance(self.source, parallel.CaptionPool):
            self.source.close()
        if self.writers is not None:
            self.writers.close()


def _write_metadata(writer, rec: dict) -> dict:
    """What ``writer`` did with a captioned record's alt text, a failure included."""
    from captioner.library.metadata import MetadataError

    try:
        return writer.write_record(rec)
    except MetadataError as e:
        # the caption stands (it is in the results); only the metadata failed, and
        # `captioner write-metadata RESULTS MODE` writes it again without captioning
        return {"metadata": {"status": "failed", "error": str(e)}}
