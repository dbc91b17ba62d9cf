"""Captioning a photo library: a resumable run that writes one record per photo to a results file
(``results.py``), optionally the alt text into each photo's metadata (``metadata.py``) and an HTML
report for a person to review (``report.py``); on this process (``engine="local"``) or spread over
a Ray cluster (``engine="ray"``, ``ray_engine.py``), each worker of either labelling photos with one
``labeller.Labeller``.  The CLI's ``caption --output`` calls
``caption_library``.

    captioner caption ~/Pictures --output pictures.jsonl --write-metadata sidecar --html review.html
    captioner caption --from-list photos.txt --output captions.parquet --engine ray --ray-address auto
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from captioner.library.results import open_results


@dataclass
class LibraryJob:
    """What one library run does; ``model`` holds ``api.Captioner``'s keyword arguments."""
    paths: list[str]
    output: str | None = None             # .jsonl or .parquet; None: records are only returned
    model: dict = field(default_factory=dict)
    batch_size: int | None = None         # None: 16 on a CPU, 256 on a GPU (parallel.py)
    workers: int = 0                      # local engine, one process: image decoding threads
    processes: int | None = None          # local engine: captioning processes (None: one per core; parallel.py)
    threads: int | None = None            # local engine: each process's model threads (None: chosen)
    metadata: str | None = None           # "sidecar", "embed" or None
    overwrite_metadata: bool = False
    retry_errors: bool = False
    html: str | None = None
    engine: str = "local"                 # "local" or "ray"
    ray_address: str | None = None        # None: a local Ray; "auto" or ray://host:port: a cluster
    ray_cpus: int | None = None           # CPUs of a local Ray (None: all)
    ray_workers: int | None = None        # actors in the pool (None: one per CPU, or per GPU)
    num_gpus_per_worker: float = 0.0
    progress: bool | None = None          # None: a bar when stderr is a terminal


LISTED = 10   # problems the summary keeps, to repeat at the end of a long run


@dataclass
class Summary:
    total: int = 0            # paths asked for
    skipped: int = 0          # already in the results file
    captioned: int = 0        # metadata failures included: their caption is in the results
    failed: int = 0           # not captioned
    metadata_failed: int = 0  # captioned, but the metadata asked for was not written
    repaired: str = ""        # what opening the results file had to mend
    records: list = field(default_factory=list)   # this run's records when there is no results file
    problems: list = field(default_factory=list)  # the first LISTED problems(), in the order met


def problems(rec: dict) -> list[str]:
    """What went wrong with one record, each as one line naming the photo: a failed caption
    ("PATH: why"), or a captioned photo whose metadata was not written ("captioned, metadata not
    written: PATH: why")."""
    if "error" in rec:
        return [rec["error"] if rec["error"].startswith(rec["image"]) else f"{rec['image']}: {rec['error']}"]
    meta = rec.get("metadata") or {}
    if meta.get("status") == "failed":
        why = meta.get("error") or "unknown error"
        why = why[len(rec["image"]) + 2:] if why.startswith(rec["image"] + ": ") else why
        return [f"captioned, metadata not written: {rec['image']}: {why}"]
    return []


def caption_library(job: LibraryJob, report=None) -> Summary:
    """Caption ``job.paths`` into ``job.output``, skipping what is already there -> a summary.
    ``report``: called with each ``problems()`` line as it is met (the command line prints them)."""
    from tqdm import tqdm

    if job.engine not in ("local", "ray"):
        raise ValueError(f"--engine {job.engine}: choose local or ray")
    if job.engine == "ray" and not job.output:
        raise ValueError("--engine ray needs --output FILE (.jsonl or .parquet)")
    if job.metadata:   # fail on a missing ExifTool before any work (and before any Ray actor starts)
        from captioner.library.metadata import check

        check(job.metadata)
    summary = Summary(total=len(job.paths))
    store = open_results(job.output, job.retry_errors) if job.output else None
    try:
        todo = store.pending(job.paths) if store else list(job.paths)
        summary.skipped, summary.repaired = len(job.paths) - len(todo), store.repaired if store else ""
        show = sys.stderr.isatty() if job.progress is None else job.progress
        bar = tqdm(total=len(todo), unit="photo", disable=not show or not todo, file=sys.stderr,
                   dynamic_ncols=True, smoothing=0.1)
        if job.engine == "ray":
            from captioner.library.ray_engine import ray_batches

            batches = ray_batches(todo, job)
        else:
            batches = _local_batches(todo, job)
        for recs in batches:
            if store:
                store.append(recs)
            else:
                summary.records += recs
            failed = sum("error" in r for r in recs)
            summary.failed += failed
            summary.captioned += len(recs) - failed
            summary.metadata_failed += sum((r.get("metadata") or {}).get("status") == "failed" for r in recs)
            for line in (line for r in recs for line in problems(r)):
                if len(summary.problems) < LISTED:
                    summary.problems.append(line)
                if report is not None:
                    with tqdm.external_write_mode(file=sys.stderr):   # above the bar, not through it
                        report(line)
            bar.update(len(recs))
        bar.close()
        if job.html:
            from captioner.library.report import review_decisions, write_report

            write_report(store.records() if store else summary.records, job.html,
                         review_decisions(job.output) if job.output else None)
    finally:
        if store:
            store.close()
    return summary


def _local_batches(paths: list[str], job: LibraryJob):
    if not paths:
        return
    from captioner.library.labeller import Labeller

    # a list that does not fill two batches is captioned here, on every core
    few = len(paths) <= (job.batch_size or 16) and not job.processes
    labeller = Labeller(job.model, job.metadata, job.overwrite_metadata, 1 if few else job.processes, job.threads)
    try:
        yield from labeller(paths, job.batch_size or labeller.plan.batch_size, min(job.workers, max(len(paths) - 1, 0)))
    finally:
        labeller.close()


# the memory ``write-metadata`` counts for each of its writers (ExifTool, and two decodings of a photo)
WRITER_MB = 250


def metadata_from_results(results: str, mode: str, overwrite: bool = False, progress: bool | None = None,
                          reviewed_only: bool = False) -> dict:
    """``captioner write-metadata RESULTS sidecar|embed``: each captioned photo's final alt text (and
    long description) from a results file into its metadata, without captioning again: a person's
    decision where the review database beside it (``decisions.py``) holds one, signed with the
    reviewer's name in ``photoshop:CaptionWriter``, else the machine's (``reviewed_only``: only the
    decided photos).  Decorative photos (an empty alt text) are left as they are.  A photo whose
    metadata already says exactly that is not touched, so a rerun writes only what changed.
    -> counts by status, and the failures (path: why)."""
    from pathlib import Path

    from tqdm import tqdm

    from captioner import parallel
    from captioner.library.metadata import MetadataError, MetadataWriters, check

    check(mode)
    if not Path(results).exists():
        raise ValueError(f"{results}: no such results file")
    with open_results(results) as store:
        recs = [r for r in store.records() if "error" not in r]
    from captioner.library.decisions import ReviewStore, default_path

    finals = {}
    if default_path(results).exists():   # never created here: only `captioner review` makes one
        with ReviewStore(results) as review:
            finals = review.finals()
    if reviewed_only:
        recs = [r for r in recs if r["image"] in finals]
    counts = {"written": 0, "unchanged": 0, "kept existing description": 0, "decorative, not written": 0,
              "failed": 0}
    failures = []
    show = sys.stderr.isatty() if progress is None else progress

    def write(writer, r: dict) -> tuple[str, str | None]:
        d = finals.get(r["image"])
        try:
            if d is not None and d["action"] == "decorative":
                return "decorative, not written", None
            if d is not None:
                text = d["text"] if d["action"] == "edit" else (r.get("alt_text") or r["caption"])
                return writer.write(r["image"], text, r.get("long_description") or "",
                                    writer=d["reviewer"])["metadata"]["status"], None
            return writer.write_record(r)["metadata"]["status"], None
        except MetadataError as e:
            return "failed", str(e)

    # one ExifTool process a core, no more than the free memory holds (a writer embedding in a 12-megapixel
    # photo holds its pixels twice for the check: about 100 MB), in chunks so that the progress bar moves
    n = parallel.plan(per_process_mb=WRITER_MB).processes
    with MetadataWriters(mode, overwrite, n) as writers, \
            tqdm(total=len(recs), unit="photo", disable=not show, file=sys.stderr) as bar:
        for lo in range(0, len(recs), 64):
            for status, failure in writers.map(write, recs[lo:lo + 64]):
                counts[status] = counts.get(status, 0) + 1
                failures += [failure] if failure else []
            bar.update(len(recs[lo:lo + 64]))
    return {"photos": len(recs), **counts, "failures": failures}


def describe(summary: Summary, output: str | None, metadata: str | None = None) -> str:
    """One line for the terminal: "21 photos: 20 captioned (1 with metadata not written), 1 failed"."""
    where = f" in {output}" if output else ""
    captioned = f"{summary.captioned} captioned"
    if summary.metadata_failed:
        captioned += f" ({summary.metadata_failed} with metadata not written)"
    parts = [captioned, f"{summary.failed} failed"]
    if summary.skipped:
        parts.append(f"{summary.skipped} already{where}, skipped")
    line = f"{summary.total} photo{'' if summary.total == 1 else 's'}: " + ", ".join(parts)
    if summary.metadata_failed and output and metadata:
        line += f"; write the missing metadata again with: captioner write-metadata {output} {metadata}"
    return line


def resolve_inputs(paths: list[str], from_list: str | None) -> list[str]:
    """The command line's PATHS and ``--from-list`` -> the photos, folders walked recursively."""
    from captioner.images import expand_inputs, read_path_list

    items = list(paths) + (read_path_list(from_list) if from_list else [])
    if not items:
        raise ValueError("no photos given: name files, folders or globs, or --from-list FILE")
    return expand_inputs(items)

