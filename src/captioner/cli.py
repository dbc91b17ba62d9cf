"""The ``captioner`` command: caption, train, evaluate. Thin: parse, call the library, print.

    captioner caption photo.jpg                  # alt text from the shipped model, offline
    captioner caption photos/ "more/*.png" --format jsonl --beam-size 5
    captioner train --out runs/main --epochs 12 --finetune-epochs 2
    captioner evaluate --split test
    captioner review captions.jsonl --reviewer ana   # a person approves or corrects a library run
    captioner info                               # the version, the model file's digests, the model card
    captioner check docs/                            # image references without alt text (documents/)
    captioner fill docs/ --output proposals.jsonl    # alt text proposed for them, then --write --from it
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

from captioner import __version__, parallel, runtime
from captioner import wording
from captioner.search import DEFAULT_LENGTH_PENALTY


def _model_args(args) -> dict:
    """``api.Captioner``'s keyword arguments from the command line (plain and library runs alike)."""
    return dict(path=args.model, device=args.device, beam_size=args.beam_size, length_penalty=args.length_penalty,
                backend=args.backend, precision=args.precision, no_repeat_ngram=args.no_repeat_ngram,
                guidance=not args.no_guidance, read_text=args.read_text, gender_neutral=args.gender_neutral,
                max_chars=args.max_chars)


def _caption(args) -> int:
    from captioner.library.run import resolve_inputs
    from captioner.attention import plot_attention
    from captioner.library.results import record

    runtime.check_model_args(args.model, args.paths)
    paths = resolve_inputs(args.paths, args.from_list)
    if args.output or args.write_metadata or args.html or args.engine == "ray":
        return _caption_library(args, paths)
    failed = 0
    many = len(paths) > 1
    if args.attention_dir:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError(f"--attention-dir {args.attention_dir}: attention maps are drawn with matplotlib: "
                             "pip install 'captioner[plots]'")
        Path(args.attention_dir).mkdir(parents=True, exist_ok=True)
    workers = min(args.workers, len(paths) - 1)  # a decoding thread only pays off for several images
    results = parallel.caption_paths(_model_args(args), paths, args.batch_size, args.processes, args.threads,
                                     workers, n_best=args.n_best, attention=bool(args.attention_dir))
    try:
        first = next(results, None)   # the model loads here: its errors are the user's to fix
    except (OSError, ValueError) as e:
        print(f"captioner: error: {e}", file=sys.stderr)
        return 2
    for path, res in itertools.chain([first] if first else [], results):
        rec = record(path, res)
        failed += "error" in rec
        _print_record(rec, args, many, res.beams if args.n_best > 1 and "error" not in rec else None)
        if args.attention_dir and "error" not in rec and res.attention is not None:
            from captioner.images import open_image

            out = Path(args.attention_dir) / (Path(path).stem + "_attention.png")
            plot_attention(open_image(path), res.words, res.attention, out)
    return 1 if failed else 0


def _print_record(rec: dict, args, many: bool, beams=None) -> None:
    """One record as the chosen --format prints it: a JSON line, or (text) the recommended alt text,
    marked when the photo is out of domain, with the top ``beams`` (text, score) below it if given;
    an error goes to stderr in text mode."""
    if args.format == "jsonl":
        print(json.dumps(rec), flush=True)
        return
    if "error" in rec:
        print(f"captioner: error: {rec['error']}", file=sys.stderr, flush=True)
        return
    if rec.get("text_error"):   # the caption still comes; say once per image why its text is missing
        print(f"captioner: warning: {rec['image']}: {rec['text_error']}", file=sys.stderr, flush=True)
    text = rec["caption"] if args.caption_only else rec["alt_text"]
    # the flag is about the caption: a screenshot's or chart's alt text does not use it and says its kind
    if rec.get("in_domain") is False and not args.caption_only and rec.get("kind") in (None, "photo"):
        text = "[out of domain] " + text
    line = text if not many else f"{rec['image']}\t{text}"
    if beams:
        line += "".join(f"\n  {s:.3f}  {t}" for t, s in beams)
    print(line, flush=True)


def _caption_library(args, paths: list[str]) -> int:
    """A library run: results file, metadata, report, Ray.  Each problem is named on stderr as it is
    met, and the first ones again at the end of a run with many.  Exit status 1 if a photo failed
    or its metadata, asked for, was not written."""
    from captioner.library.run import LISTED, LibraryJob, caption_library, describe

    if args.attention_dir or args.n_best > 1:
        raise ValueError("--attention-dir and --n-best work without --output, --write-metadata, --html "
                         "and --engine ray")
    job = LibraryJob(paths, args.output, _model_args(args), args.batch_size, args.workers, args.processes,
                     args.threads, args.write_metadata, args.overwrite_metadata, args.retry_errors, args.html,
                     args.engine, args.ray_address, args.ray_cpus, args.ray_workers, args.num_gpus_per_worker)
    summary = caption_library(job, report=lambda line: print(f"captioner: error: {line}", file=sys.stderr,
                                                               flush=True))
    if summary.repaired:
        print(f"captioner: {args.output}: {summary.repaired}", file=sys.stderr)
    for rec in summary.records:
        if "error" not in rec or args.format == "jsonl":   # failures were named on stderr already
            _print_record(rec, args, len(paths) > 1)
    n_problems = summary.failed + summary.metadata_failed
    if n_problems > 3:   # the lines above scrolled away in a long run: the first ones again
        more = f" (the first {len(summary.problems)})" if n_problems > len(summary.problems) else ""
        print(f"captioner: {n_problems} problems{more}:", file=sys.stderr)
        for line in summary.problems[:LISTED]:
            print(f"  {line}", file=sys.stderr)
    print(f"captioner: {describe(summary, args.output, args.write_metadata)}", file=sys.stderr)
    return 1 if summary.failed or summary.metadata_failed else 0


def _write_metadata(args) -> int:
    from captioner.library.run import metadata_from_results

    done = metadata_from_results(args.results, args.mode, args.overwrite_metadata, reviewed_only=args.reviewed_only)
    for f in done["failures"]:
        print(f"captioner: error: {f}", file=sys.stderr)
    parts = [f"{done[k]} {k}" for k in ("written", "unchanged", "kept existing description",
                                        "decorative, not written", "failed") if done.get(k)]
    print(f"captioner: {done['photos']} photos: " + (", ".join(parts) or "nothing to do"), file=sys.stderr)
    return 1 if done["failed"] else 0


def _document_arguments(p: argparse.ArgumentParser) -> None:
    """What ``check`` and ``fill`` both read: the documents, and the site's top folder."""
    p.add_argument("paths", nargs="+", metavar="PATH", help="documents or folders")
    p.add_argument("--root", default=None, metavar="DIR", help="the site's top folder, for paths such as /img/x.png")


def _n(count: int, noun: str) -> str:
    """"1 image", "3 images", "0 images"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _check(args) -> int:
    from captioner.documents import check, location_text
    from captioner.documents.refs import suspicious

    refs = check(args.paths, args.root)
    for e in refs.errors:
        print(f"captioner: error: {e}", file=sys.stderr)
    counts = {s: 0 for s in ("missing", "suspicious", "decorative", "ok")}
    for r in refs:
        counts[r.status] += 1
        if args.format == "jsonl":
            print(json.dumps(r.to_dict(), ensure_ascii=False))
        elif r.status in ("missing", "suspicious"):
            why = [f'alt "{r.alt}" is {suspicious(r.alt, r.src)}'] if r.status == "suspicious" else []
            why += [r.problem] if r.problem else []
            print(f"{r.document}:{location_text(r)}: {r.status}: {r.src[:80]}" + "".join(f" ({w})" for w in why))
    print(f"captioner: {_n(len(refs), 'image')} in {_n(refs.documents, 'document')}: "
          + ", ".join(f"{n} {s}" for s, n in counts.items()), file=sys.stderr)
    return 2 if refs.errors else (1 if counts["missing"] or counts["suspicious"] else 0)


def _fill(args) -> int:
    from captioner import documents

    if args.output is None and not args.write:
        raise ValueError("choose --output PROPOSALS.jsonl (for a review) or --write (into the documents)")
    if args.output is not None and (args.write or args.from_):
        raise ValueError("--output makes proposals; --write (with --from) writes them: choose one")
    if args.from_ is not None or args.diff or args.reviewed_only:
        args.write = True
    runtime.check_model_args(args.model, args.paths)
    if args.output is not None:
        props = documents.fill(args.paths, None, args.output, args.root, _model_args(args), args.overwrite,
                               processes=args.processes, threads=args.threads)
        for e in props.errors:
            print(f"captioner: error: {e}", file=sys.stderr)
        print(f"captioner: {args.output}: {_n(len(props), 'image')} proposed from {_n(props.documents, 'document')} "
              f"({props.captioned} captioned, {props.by_rule} references decided by context"
              + (f", {props.skipped} already there" if props.skipped else "") + ")", file=sys.stderr)
        return 2 if props.errors else 0
    done = documents.write(args.paths, args.from_, args.reviewed_only, args.overwrite, args.diff, args.root,
                           model_args=_model_args(args), processes=args.processes, threads=args.threads)
    for e in done.errors:
        print(f"captioner: error: {e}", file=sys.stderr)
    if done.errors and not done.written:
        print("captioner: nothing was written", file=sys.stderr)
        return 2
    if args.diff:
        sys.stdout.write(done.diff)
        return 0
    for d in done.written:
        print(f"captioner: wrote {d}", file=sys.stderr)
    for d, where in done.not_decorative:
        print(f"captioner: warning: {d}:{where}: decided decorative, but this format cannot mark an image "
              "decorative (Markdown: use <img src=\"…\" alt=\"\">); left as it was", file=sys.stderr)
    print(f"captioner: {_n(done.alts, 'alt text')} written into {_n(len(done.written), 'document')}"
          + (f", {done.kept} written by a person kept (--overwrite replaces them)" if done.kept else "")
          + (f"; {len(done.errors)} not written (above)" if done.errors else ""), file=sys.stderr)
    return 2 if done.errors else 0


def _core_arguments(p) -> None:
    """--processes and --threads: how a command that captions uses the machine (``parallel.plan``)."""
    p.add_argument("--processes", type=runtime.whole_type(0), default=None,
                   help="captioning processes, each with the model loaded once (default: one per core this "
                        "command may use, as taskset or a container allows, and no more than its free memory holds at "
                        "about 1 GB each, 1.5 GB with --backend torch, 0.5 GB more for each further model of an "
                        "ensemble; one on a GPU)")
    p.add_argument("--threads", type=runtime.whole_type(0), default=None,
                   help="threads of each process's model (default: 1 with several processes, else every core)")


def _model_arguments(p) -> None:
    """The model flags ``caption`` and ``fill`` share."""
    runtime.add_model_argument(p)
    p.add_argument("--beam-size", type=runtime.whole_type(1), default=3,
                   help="candidate captions weighed at once (1: the likeliest word at each step; larger is slower)")
    p.add_argument("--length-penalty", type=float, default=DEFAULT_LENGTH_PENALTY,
                   help="higher favours longer captions (a candidate's score is its log-probability divided by "
                        "its length to this power)")


def _app_arguments(p):
    p.add_argument("--port", type=runtime.whole_type(0, 65535), default=8501, help="port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--model", default=None, help="checkpoint (.safetensors); default: the shipped model")
    p.add_argument("--examples", default=None, help="folder of example photos for the gallery")
    p.add_argument("--device", default="auto", help=runtime.DEVICE_HELP)


def _export(args) -> int:
    from captioner.library.export import export

    n = export(args.results, args.out, args.reviewed, args.decisions)
    print(f"captioner: wrote {n} rows to {args.out}", file=sys.stderr)
    return 0


def _info(args) -> int:
    from captioner.info import format_text, model_info

    info = model_info(args.model)
    print(json.dumps(info, indent=1) if args.format == "json" else format_text(info, card=not args.no_card))
    return 0


def _app(args) -> int:
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        print("captioner app: needs Streamlit: pip install 'captioner[app]'", file=sys.stderr)
        return 2
    from captioner.serve.app import launch  # imports streamlit only when the app is asked for

    return launch(args)


def _description(module) -> str:
    """A module's docstring as a command's --help text: the reST literal marks (double backquotes) that
    help the source's reader are noise on a terminal."""
    return (module.__doc__ or "").replace("``", "")


def _needs_torch(command: str) -> int:
    print(f"captioner {command}: needs PyTorch and the training wing: pip install 'captioner[train]'",
          file=sys.stderr)
    return 2


def _pipe_closed() -> int:
    """The reader of our output went away (``captioner caption photos/ | head -1``): stop quietly, as
    Unix tools do, with no traceback.  The Python docs' recipe ("Note on SIGPIPE"): point stdout (and
    stderr, which may be the same pipe) at /dev/null so that Python's own flush at exit cannot fail
    again; exit status 1, as the recipe and most Python command-line tools give."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):   # a stream without a file descriptor (replaced by a caller)
            pass
    return 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the training and serving commands import their modules only when they are the command asked
    # for, so captioning starts without torch, FastAPI or Streamlit (and works where torch is absent)
    command = next((a for a in argv if not a.startswith("-")), None)
    ap = argparse.ArgumentParser(prog="captioner", description="Describe photos in English sentences.")
    ap.add_argument("--version", action="version", version=f"captioner {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("caption", help="caption images (files, folders, globs)",
                       description="Print the recommended alt text of each image: one line each (with several "
                                   "images, the path, a tab, then the text). Exit status 1 if any image failed, or "
                                   "(--write-metadata) its metadata could not be written.")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image files, folders (walked recursively for .jpg .jpeg .png .bmp .gif .webp .tif .tiff, "
                        "any case; hidden names skipped) or glob patterns")
    p.add_argument("--from-list", default=None, metavar="FILE",
                   help="also caption the paths in FILE, one a line (for lists too long for a shell)")
    _model_arguments(p)
    p.add_argument("--n-best", type=runtime.whole_type(1), default=1,
                   help="also show this many top beams with their scores")
    p.add_argument("--format", choices=["text", "jsonl"], default="text",
                   help="text (the alt text), or one JSON object per line with image, caption, alt_text, "
                        "in_domain, confidence, tags (or error)")
    p.add_argument("--caption-only", action="store_true",
                   help="text mode: print the model's caption instead of the recommended alt text")
    p.add_argument("--batch-size", type=runtime.whole_type(1), default=None,
                   help="images per batch (default: 16 on a CPU, 256 on a GPU)")
    _core_arguments(p)
    # 0 by default: on 2 cores a decoding thread competes with the encoder (benchmarks/bench_inference.py)
    p.add_argument("--workers", type=runtime.whole_type(0), default=0,
                   help="with one process: threads that open and preprocess the next batch while the model "
                        "computes (0: none); on a GPU, the processes that decode images for it (0: all other cores)")
    runtime.add_arguments(p)
    p.add_argument("--attention-dir", default=None, help="save an attention map PNG per image into this folder")
    wording.add_arguments(p)
    g = p.add_argument_group("photo libraries: a results file, metadata, a review page")
    g.add_argument("--output", default=None, metavar="FILE",
                   help="append one record per photo to FILE (.jsonl, or .parquet: a folder of parts), flushed per "
                        "batch; a rerun skips the photos already there")
    g.add_argument("--retry-errors", action="store_true",
                   help="with --output: caption again the photos that failed in an earlier run")
    g.add_argument("--write-metadata", choices=["sidecar", "embed"], default=None,
                   help="write the alt text (IPTC Alt Text, dc:description) into PHOTO.xmp beside each photo, or "
                        "into the photo itself (also EXIF ImageDescription); needs exiftool")
    g.add_argument("--overwrite-metadata", action="store_true",
                   help="replace a description a person wrote (kept by default)")
    g.add_argument("--html", default=None, metavar="FILE",
                   help="write a review page: thumbnails with alt text, caption, confidence, flags; doubtful first")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this computer, this process; ray: spread over a Ray cluster "
                        "(pip install 'captioner[ray]'), needs --output")
    g.add_argument("--ray-address", default=None,
                   help="an existing Ray cluster (auto, or ray://HOST:10001); default: start a local one")
    g.add_argument("--ray-cpus", type=runtime.whole_type(1), default=None,
                   help="CPUs of a local Ray (default: all of this machine's)")
    g.add_argument("--ray-workers", type=runtime.whole_type(1), default=None,
                   help="copies of the model working at once, each loaded once (default: one per CPU, no more "
                        "than the cluster's memory holds at about 1 GB each, 1.5 GB with --backend torch; or one per "
                        "share of a GPU)")
    g.add_argument("--num-gpus-per-worker", type=float, default=0.0,
                   help="GPUs for each copy of the model (e.g. 1, or 0.5 to share one GPU between two)")
    p.set_defaults(func=_caption)

    p = sub.add_parser("export", help="a library run's final captions (or the review decisions) as CSV / JSON lines",
                       description="The final alt text of each photo of a results file: a person's decision where "
                                   "there is one (from captioner review), else the machine's.")
    p.add_argument("results", help="a results file of a library run (.jsonl or .parquet)")
    p.add_argument("--out", required=True, help="the file to write (.csv or .jsonl)")
    p.add_argument("--reviewed", action="store_true",
                   help="only accepted and edited photos, as image,caption for captioner train --data (image paths "
                        "relative to --out's folder)")
    p.add_argument("--decisions", action="store_true", help="every review decision (the audit trail) instead")
    p.set_defaults(func=_export)

    p = sub.add_parser("write-metadata", help="write the alt text of a results file into the photos' metadata",
                       description="Each captioned photo's alt text (and long description) from a results file "
                                   "into an XMP sidecar or the photo itself, without captioning again; photos whose "
                                   "metadata already says exactly that are not touched, so a rerun writes only what "
                                   "changed. Exit status 1 if any photo failed.")
    p.add_argument("results", help="a results file of a library run (.jsonl or .parquet)")
    p.add_argument("mode", choices=["sidecar", "embed"], help="PHOTO.xmp beside each photo, or into the photo itself")
    p.add_argument("--reviewed-only", action="store_true",
                   help="only the photos a person decided on (accepted or edited) in the review database beside "
                        "RESULTS; their text is signed with the reviewer's name")
    p.add_argument("--overwrite-metadata", action="store_true",
                   help="replace a description a person wrote (kept by default)")
    p.set_defaults(func=_write_metadata)

    for name, help_ in (("train", "train a model on Flickr8k (needs captioner[train])"),
                        ("evaluate", "score a model on a split: BLEU, ROUGE-L, CIDEr-D, METEOR (needs captioner[train])")):
        if command != name:
            sub.add_parser(name, help=help_)
        elif not runtime.torch_available():
            return _needs_torch(name)
        else:
            from captioner.training import evaluate, train

            mod = train if name == "train" else evaluate
            p = sub.add_parser(name, help=help_, description=_description(mod),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
            mod.add_arguments(p)
            p.set_defaults(func=(lambda a: (train.main(a), 0)[1]) if name == "train" else evaluate.main)

    if command == "serve":
        from captioner.serve import http as server

        p = sub.add_parser("serve", help="run the HTTP API", description=_description(server),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        server.add_arguments(p)
        p.set_defaults(func=server.main)
    else:
        sub.add_parser("serve", help="run the HTTP API")

    if command == "review":
        from captioner.serve import review

        p = sub.add_parser("review", help="review a library run's alt texts in the browser",
                           description=_description(review), formatter_class=argparse.RawDescriptionHelpFormatter)
        review.add_arguments(p)
        p.set_defaults(func=review.main)
    else:
        sub.add_parser("review", help="review a library run's alt texts in the browser")

    p = sub.add_parser("info", help="the package version, the model file's versions and digests, and its model card",
                       description="What is installed: the package version; the model file, its weights and "
                                   "encoder digests and architecture; and the model card (what the shipped model "
                                   "learnt from, what it is for and not for, and how well it does).")
    p.add_argument("--model", default=None, help="model file (.safetensors); default: the shipped model")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text (facts, then the model card), or one JSON object with the card as a field")
    p.add_argument("--no-card", action="store_true", help="text format: the facts only, without the model card")
    p.set_defaults(func=_info)
    p = sub.add_parser("check", help="list the image references of web pages, Markdown, Word, PowerPoint and EPUB "
                                     "files without good alt text",
                       description="Every image reference of the documents (.html .htm .xhtml .md .markdown .docx "
                                   ".pptx .epub; folders walked) with its status: missing, suspicious, decorative, "
                                   "ok. Never loads the model. Exit status 1 if any is missing or suspicious, 2 if a "
                                   "document could not be read, else 0.")
    _document_arguments(p)
    p.add_argument("--format", choices=["text", "jsonl"], default="text",
                   help="text: one line per missing or suspicious image (file:line:column: status: src (why)); jsonl: one "
                        "object per reference with document, location, src, image, alt, status")
    p.set_defaults(func=_check)

    p = sub.add_parser("fill", help="propose alt text for the images of documents, or write it into them",
                       description="Caption each image that needs alt text once, however many documents use it, "
                                   "with the document's context deciding where it can (links, captions, logos, "
                                   "spacers). --output writes proposals for captioner review; --write puts the alt "
                                   "text into the documents (only where it is missing or suspicious).")
    _document_arguments(p)
    p.add_argument("--output", default=None, metavar="FILE", help="write the proposals to FILE (.jsonl) for a review")
    p.add_argument("--write", action="store_true", help="write the alt text into the documents")
    p.add_argument("--from", dest="from_", default=None, metavar="FILE",
                   help="with --write: the proposals of an earlier --output, with the review's decisions")
    p.add_argument("--reviewed-only", action="store_true", help="with --from: only the images a person decided on")
    p.add_argument("--overwrite", action="store_true", help="also replace alt text a person wrote")
    p.add_argument("--diff", action="store_true", help="print what --write would change, and write nothing")
    _model_arguments(p)
    _core_arguments(p)
    runtime.add_arguments(p)
    wording.add_arguments(p)
    p.set_defaults(func=_fill)

    p = sub.add_parser("app", help="run the Streamlit web app (headless)")
    _app_arguments(p)
    p.set_defaults(func=_app)

    args = ap.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()   # a reader that went away shows here, not in Python's flush at exit
        return code
    except BrokenPipeError:
        return _pipe_closed()
    except KeyboardInterrupt:
        print("captioner: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as e:
        print(f"captioner: error: {e}", file=sys.stderr)
        return 2
    except parallel.WorkerError as e:   # a worker process died (killed, out of memory): what it did is kept
        kept = (f"; every photo captioned before it is in {args.output}, and the same command again captions "
                "the rest") if getattr(args, "output", None) else ""
        print(f"captioner: error: {e}{kept}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
