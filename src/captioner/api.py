"""The Python API every entry point calls: load a model once, caption images.

    import captioner
    model = captioner.load()                       # the shipped model, offline
    print(model.caption("photo.jpg").text)
    for path, result in model.caption_paths(["a.jpg", "b.png"]):   # batched, errors per image
        ...
    model, preprocess = captioner.load(with_preprocess=True)   # CLIP-style

Every Caption also says what the model knows of its limits (``knowledge/bundle.py``, stored in the
model file): ``in_domain``, ``confidence``, ``tags``, ``guided`` (the word a guided caption was
required to contain) and ``alt_text`` (``alttext.py``); what kind of image it is (``kind``: photo,
screenshot, document, chart, drawing; ``knowledge/kind.py``), the text read in it (``image_text``, ``"text"`` in records; ``knowledge/ocr.py``) and a
``long_description``.  Text is read where the kind says it pays (``read_text="auto"``: every image
not classed a photo), on every image (``"always"``) or never (``"never"``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device as device_of, to_device

from captioner import modelfile, runtime, wording
from captioner.ensemble import Ensemble
from captioner.images import Blob, ImageError, open_image
from captioner.knowledge import alttext
from captioner.knowledge import kind as kinds
from captioner.knowledge.bundle import Knowledge
from captioner.knowledge.ocr import ImageText, TextReader, TextReaderError
from captioner.knowledge.tags import Tag
from captioner.preprocess import to_array
from captioner.search import DEFAULT_LENGTH_PENALTY, DEFAULT_NO_REPEAT_NGRAM, generate, take_rows


@dataclass
class Caption:
    text: str
    words: list[str]
    score: float                                   # length-normalised log-probability
    beams: list[tuple[str, float]] = field(default_factory=list)  # (text, score), best first
    attention: Any = None                          # numpy [len(words), grid cells]; None for the plain decoder
    grid: int = 0                                  # side of the attention grid
    alt_text: str = ""                             # the text recommended for an alt attribute
    in_domain: bool | None = None                  # resembles the training photos (None: model not calibrated)
    confidence: float | None = None                # calibrated P(caption acceptable)
    tags: list[Tag] = field(default_factory=list)  # top ImageNet classes, most probable first
    guided: str | None = None                      # the word a guided caption had to contain
    domain_distance: float | None = None           # distance to the nearest training photos
    kind: str | None = None                        # photo, screenshot, document, chart, drawing (kind.py)
    kind_probability: float | None = None
    chart_type: str | None = None                  # bar, line, pie, scatter where a chart's type is clear
    image_text: ImageText | None = None            # the text read in the image ("text" in to_dict); None: not read
    long_description: str = ""                     # all text read; for a chart its parts (alttext.py)
    text_error: str | None = None                  # why text could not be read, when it could not
    taught: bool = False                           # from an adapted model's own decoder (training/adapt.py)

    def to_dict(self) -> dict:
        d = {"caption": self.text, "score": round(self.score, 4),
             "alt_text": self.alt_text, "in_domain": self.in_domain,
             "confidence": None if self.confidence is None else round(self.confidence, 4),
             "tags": [t.to_dict() for t in self.tags], "guided": self.guided,
             "domain_distance": None if self.domain_distance is None else round(self.domain_distance, 4),
             "kind": self.kind, "kind_probability": None if self.kind_probability is None else round(self.kind_probability, 4),
             "chart_type": self.chart_type, "text": None if self.image_text is None else self.image_text.to_dict(),
             "long_description": self.long_description}
        if self.text_error:
            d["text_error"] = self.text_error
        if len(self.beams) > 1:
            d["beams"] = [{"caption": t, "score": round(s, 4)} for t, s in self.beams]
        return d


def _numpy(x) -> np.ndarray:
    """A back-end's array (numpy, or a torch tensor on any device) as a numpy array on the CPU."""
    return np.asarray(to_device(x, "cpu"))


class Captioner:
    """A loaded model with its preprocessing and vocabulary. ``path`` may list several checkpoints:
    they then caption as one ensemble (``ensemble.py``)."""

    def __init__(self, path=None, device: str = "cpu", beam_size: int = 3, length_penalty: float = DEFAULT_LENGTH_PENALTY,
                 encoder_weights: str | None = None, backend: str = "auto", precision: str = "auto",
                 no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM, knowledge: bool = True, guidance: bool = True,
                 read_text: str = "auto", gender_neutral: bool = False, max_chars: int = alttext.MAX_CHARS,
                 text_threads: int | None = None, threads: int | None = None):
        # several checkpoints caption as one ensemble (ensemble.py); the first sets the preprocessing
        # what it was made with, so that worker processes (parallel.py) can load the same model
        self.settings = dict(path=path, device=device, beam_size=beam_size, length_penalty=length_penalty,
                             encoder_weights=encoder_weights, backend=backend, precision=precision,
                             no_repeat_ngram=no_repeat_ngram, knowledge=knowledge, guidance=guidance,
                             read_text=read_text, gender_neutral=gender_neutral, max_chars=max_chars,
                             text_threads=text_threads)
        runtime.whole("beam_size", beam_size, 1)
        runtime.whole("no_repeat_ngram", no_repeat_ngram, 0)
        paths = list(path) if isinstance(path, (list, tuple)) else [path]
        if not paths:
            raise ValueError("no checkpoint given")
        # back-end, device and precision chosen once, here (runtime.py); the search follows the arrays
        self.members = [runtime.load_model(p, backend, device, precision, threads, encoder_weights) for p in paths]
        self.model = self.members[0]
        self.vocab, self.meta = self.model.vocab, self.model.meta
        for p, m in zip(paths[1:], self.members[1:]):
            if m.vocab.itos != self.vocab.itos:
                raise ValueError(f"{p}: its vocabulary differs from {paths[0] or 'the shipped model'}'s; "
                                 "ensemble members must share one")
            if (m.preprocess.mean, m.preprocess.std) != (self.preprocess.mean, self.preprocess.std):
                raise ValueError(f"{p}: its input normalisation differs from {paths[0] or 'the shipped model'}'s")
        self.backend = self.model.name
        self.version = self.model.version     # the first model file's weights digest (None: a training checkpoint)
        self.device = getattr(self.model, "device", "cpu")
        self.precision = getattr(self.model, "precision", "fp32")
        self.sizes = sorted({m.preprocess.size for m in self.members})
        # a JPEG file is decoded at the smallest of 1/2, 1/4, 1/8 of its size that keeps twice the model's
        # side (images.open_image): the same for every way in (files, uploads); the text is read in full
        self.decode_side = 2 * max(self.sizes)
        self.decoding = self.model if len(self.members) == 1 else Ensemble(self.members)
        # an adapted model's decoders (training/adapt.py), the model's own first; the knowledge routes
        self.experts = [self.decoding, *getattr(self.model, "experts", [])]
        if len(self.experts) > 1 and len(self.members) > 1:
            raise ValueError(f"{paths[0]}: an adapted model (with the experts it started from) cannot be part "
                             "of an ensemble")
        self.beam_size, self.length_penalty, self.no_repeat_ngram = beam_size, length_penalty, no_repeat_ngram
        self.paths = [Path(p) if p else modelfile.DEFAULT_MODEL for p in paths]
        self.path = self.paths[0]
        # the first member's file says what the model knows of its limits; read, never recomputed
        stored = modelfile.read(self.path).knowledge() if knowledge else None
        self.knowledge = Knowledge.from_file(*stored, self.vocab) if stored else None
        if self.knowledge is not None and len(self.knowledge.experts) != len(self.experts):
            raise modelfile.CheckpointError(f"{self.path}: its knowledge covers {len(self.knowledge.experts)} "
                                            f"decoders, the file holds {len(self.experts)}")
        self.guidance = guidance      # guided captions where the knowledge allows them (knowledge.py)
        # what kind of image: the full classifier for the encoder it was fitted on, else colour-only
        loaded_kind = kinds.load(self.model.digest) if knowledge else None
        self.kinds, self.kind_info = loaded_kind if loaded_kind else (None, None)
        self.read_text, self.gender_neutral, self.max_chars = _read_mode(read_text), gender_neutral, _limit(max_chars)
        self.reader = TextReader(text_threads)   # the OCR engine loads on the first image it reads

    def describe(self) -> dict:
        """What this model is, in plain values (the HTTP API's ``/health``; a pool's workers send it)."""
        return {"model": self.path.name, "version": self.version, "device": str(self.device),
                "encoder": self.model.cfg.encoder, "decoder": self.model.cfg.decoder,
                "vocabulary": len(self.vocab), "backend": self.backend, "precision": self.precision}

    def encode_images(self, x):
        """Preprocessed images [B, 3, S, S] -> the first member's feature grid [B, C, H, W]."""
        return self.model.encode(x)

    def preprocessed(self, image) -> dict:
        """A PIL image -> {input size: array [3, S, S]}, one per size the members read."""
        p = self.preprocess
        return {s: to_array(image, s, p.mean, p.std) for s in self.sizes}

    def _inputs(self, x) -> dict:
        """Images as {size: [B, 3, S, S]} or one array [B, 3, S, S] (resized for a member of another
        input size, bicubic, as its own preprocessing would)."""
        if isinstance(x, dict):
            return x
        x = _numpy(x).astype(np.float32)
        out = {x.shape[-1]: x}
        for s in self.sizes:
            if s not in out:
                out[s] = _resize(x, s)
        return out

    def _grids(self, x) -> list:
        """Preprocessed images -> one feature grid per member."""
        inputs = self._inputs(x)
        return [m.encode(inputs[m.preprocess.size]) for m in self.members]

    @property
    def preprocess(self):
        return self.model.preprocess

    def caption_tensors(self, x, beam_size: int | None = None, n_best: int = 1,
                        gender_neutral: bool | None = None, max_chars: int | None = None,
                        colour=None) -> list[Caption]:
        """Preprocessed images [B, 3, S, S] (numpy, or any array; or {size: array} for an ensemble of
        several input sizes) -> one Caption each, its kind decided; no text read yet (``caption`` and
        ``caption_paths`` read it where it pays).  ``colour``: the images' colour statistics where
        they were computed already (``preprocess.decode_batch``)."""
        neutral = self.gender_neutral if gender_neutral is None else gender_neutral
        limit = self.max_chars if max_chars is None else _limit(max_chars)
        out = self._caption_tensors(x, beam_size, n_best, neutral, colour)
        for c in out:
            c.alt_text = self._compose(c, limit)
        return out

    def _caption_tensors(self, x, beam_size, n_best, neutral, colour=None) -> list[Caption]:
        k = runtime.whole("beam_size", beam_size or self.beam_size, 1)
        inputs = self._inputs(x)
        grids = self._grids(inputs)
        side = grids[0].shape[-1]
        feats = [_sequence(g) for g in grids]
        feats = feats[0] if len(feats) == 1 else feats
        pooled_here = array_namespace(grids[0]).mean(grids[0], axis=(2, 3))
        pooled = _numpy(pooled_here)
        decode = dict(length_penalty=self.length_penalty, n_best=max(n_best, 1), no_repeat_ngram=self.no_repeat_ngram)
        kn = self.knowledge
        if kn is None:   # a model file that was never calibrated: the caption is the alt text
            return [self._caption(hyps, side, neutral) for hyps in generate(self.decoding, feats, k, **decode)]
        # the ImageNet head and the domain check run on the pooled grid already computed; on a GPU,
        # there (on the CPU numpy keeps its numbers: torch's CPU arithmetic differs in the last bits)
        on_cpu = str(device_of(pooled_here)) == "cpu"
        probs, dist, in_domain, route = kn.assess_routed(pooled if on_cpu else pooled_here)
        cand = kn.candidates(probs, in_domain) if self.guidance else [None] * len(probs)
        results, guided = [None] * len(probs), [None] * len(probs)

        def rows(idx):
            return [_take(f, idx) for f in feats] if isinstance(feats, list) else _take(feats, idx)

        # each image by its expert: the model's own decoder, or one it was adapted from (training/adapt.py)
        for e, decoding in enumerate(self.experts):
            mine = [i for i in range(len(probs)) if route[i] == e]
            if e > 0:   # an earlier expert's vocabulary is the first part of the model's
                cand = [c if route[i] != e or c is None else ({w for w in c if w < decoding.cfg.vocab_size} or None)
                        for i, c in enumerate(cand)]
            todo = [i for i in mine if cand[i]]
            rest = [i for i in mine if not cand[i]]
            if rest:
                for i, hyps in zip(rest, generate(decoding, rows(rest), k, **decode)):
                    results[i] = hyps
            if todo:  # the images that may be guided: plain and guided search in one pass
                plain, constrained = generate(decoding, rows(todo), k, required=[cand[i] for i in todo],
                                              also_unconstrained=True, **decode)
                for i, p, g in zip(todo, plain, constrained):
                    results[i] = p
                    if g and not kn.already_named(probs[i], p[0].tokens) and kn.accept_guided(p[0].score, g[0].score):
                        results[i] = g
                        guided[i] = next(self.vocab.itos[t] for t in g[0].tokens if t in cand[i])
        out = [self._caption(hyps, side, neutral) for hyps in results]
        top = kn.tagger.top(probs, 5)
        conf = kn.confidence([c.score for c in out], [len(c.words) for c in out], dist, probs.max(1), route)
        for i, c in enumerate(out):
            c.tags, c.guided, c.in_domain = top[i], guided[i], bool(in_domain[i])
            c.taught = len(self.experts) > 1 and int(route[i]) == 0   # an adapted model's own decoder
            c.domain_distance = float(dist[i])
            c.confidence = float(conf[i]) if conf is not None else None
        if self.kinds is not None:   # from the pooled grid and the pixels already at hand
            colour = self._colour(inputs) if colour is None else colour
            decided = self.kinds.decide(self.kinds.probs(pooled, colour))
            for c, d in zip(out, decided):
                c.kind, c.kind_probability, c.chart_type = d.name, d.probability, d.chart_type
        return out

    def _colour(self, inputs: dict) -> np.ndarray:
        """The colour statistics of ``kind.py`` from the preprocessed images (taken back to [0, 1] pixels)."""
        return kinds.colour_features(_numpy(inputs[self.preprocess.size]), self.preprocess.mean, self.preprocess.std)

    def _caption(self, hyps, side: int, neutral: bool = False) -> Caption:
        best = hyps[0]
        words = self.vocab.decode(best.tokens)
        beams = [(" ".join(self.vocab.decode(h.tokens)), h.score) for h in hyps]
        attention = best.attention
        if neutral:
            mapped = wording.neutral(" ".join(words)).split()
            # attention has a row per generated word: kept where the mapping kept the word count
            attention = attention if len(mapped) == len(words) else None
            words = mapped
            beams = [(wording.neutral(t), sc) for t, sc in beams]
        return Caption(" ".join(words), words, best.score, beams, attention, side)

    def _compose(self, c: Caption, limit: int) -> str:
        return alttext.compose(c.text, c.in_domain, c.confidence, c.tags, c.kind, c.image_text, c.chart_type, limit,
                               taught=c.taught)

    def wants_text(self, c: Caption, mode: str | None = None) -> bool:
        """Whether to read the text of the image behind ``c``: auto reads every image not classed a
        photo (a photo's text costs about 20 captions and is mostly misread; docs/text.md)."""
        mode = self.read_text if mode is None else _read_mode(mode)
        return mode == "always" or (mode == "auto" and c.kind is not None and c.kind != "photo")

    def read(self, c: Caption, image, mode: str | None = None, max_chars: int | None = None) -> Caption:
        """Read the text of ``image`` (PIL, or a function that opens it: called only if its text is read)
        into ``c`` where ``wants_text`` says so, then compose its alt text and long description again.
        A missing or failing reader is recorded in ``c.text_error`` and the caption still comes."""
        if self.wants_text(c, mode):
            image = image() if callable(image) else image
            try:
                c.image_text = self.reader.read(image, photo=c.kind in (None, "photo"))
            except TextReaderError as e:
                c.text_error = str(e)
            c.long_description = alttext.long_description(c.kind, c.image_text, c.chart_type)
            c.alt_text = self._compose(c, self.max_chars if max_chars is None else _limit(max_chars))
        return c

    def _load(self, path, out: dict | None = None):
        """-> ({size: array}, None) or (None, the error) for one file: one bad file never stops a batch.
        ``out``: {size: array [3, S, S]} to write the arrays into (a batch's row)."""
        try:
            image = open_image(path, at_least=self.decode_side)   # the text reader opens it again, in full
            if out is None:
                return self.preprocessed(image), None
            p = self.preprocess
            return {s: to_array(image, s, p.mean, p.std, out[s]) for s in self.sizes}, None
        except ImageError as e:
            return None, str(e)
        except Exception as e:  # never let one odd file stop a batch
            return None, f"{path}: cannot read image ({type(e).__name__}: {e})"

    def _batches(self, paths: list, batch_size: int, workers: int = 0):
        """Yield (batch of (index, error or None), the readable images' indices, their inputs
        {size: [b, 3, S, S]} or None).  ``workers`` threads open and preprocess the next batch while
        the model computes (PIL's decoding and resizing release the GIL).  Each image is preprocessed
        straight into its row of the batch."""
        def load(lo):
            hi = min(lo + batch_size, len(paths))
            rows = {s: np.empty((hi - lo, 3, s, s), np.float32) for s in self.sizes}
            errors, good = [], []
            for i in range(lo, hi):
                _, err = self._load(paths[i], {s: rows[s][len(good)] for s in self.sizes})
                errors.append((i, err))
                if err is None:
                    good.append(i)
            inputs = {s: rows[s][:len(good)] for s in self.sizes} if good else None
            return errors, good, inputs

        starts = range(0, len(paths), batch_size)
        if workers <= 0:
            yield from (load(lo) for lo in starts)
            return
        with ThreadPoolExecutor(workers) as pool:
            pending = []
            for lo in starts:
                pending.append(pool.submit(load, lo))
                if len(pending) > workers:          # a bounded read-ahead, in input order
                    yield pending.pop(0).result()
            for f in pending:
                yield f.result()

    def _device_batches(self, paths: list, batch_size: int, workers: int = 0):
        """For a model on a GPU (torch back-end): yield (batch of (index, error or None), the readable
        images' indices, {size: normalised images on the device}, their colour statistics).  Files are
        decoded and resized in ``workers`` processes (default: all cores but this one's), a bounded
        number of batches ahead, so the next batches are ready while the device runs this one; the
        pixels travel as uint8 (through shared memory where it has room: ``shared_batches.py``), are
        copied from pinned memory and normalised on the device."""
        import multiprocessing as mp
        from collections import deque
        from concurrent.futures import ProcessPoolExecutor
        from contextlib import nullcontext

        from captioner.parallel import cores, exit_with_parent, main_not_rerun
        from captioner.preprocess import decode_batch
        from captioner.shared_batches import Ring, room_for

        size, p = self.sizes[0], self.preprocess
        n = workers if workers > 0 else max(cores() - 1, 1)
        if len(paths) <= batch_size:   # one batch: decoding processes would only add their start
            errors, pixels, colour = decode_batch(paths, size, p.mean, p.std)
            batch = list(enumerate(errors))
            yield (batch, [i for i, e in batch if e is None],
                   {size: self.model.normalise(pixels)} if pixels is not None else None, colour)
            return
        # the pixels come back through shared memory (a block per batch in flight) where it has room
        in_flight, nbytes = n + 2, batch_size * size * size * 3
        with (Ring(in_flight, nbytes) if room_for(in_flight * nbytes) else nullcontext()) as ring, \
                ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=exit_with_parent) as pool:
            pending = deque()

            def ready():
                lo, slot, fut = pending.popleft()
                try:
                    errors, pixels, colour = fut.result()
                    if slot is not None and pixels is not None:    # their count: the pixels are in the block
                        pixels, slot = ring.take(slot, (pixels, size, size, 3)), None
                finally:
                    if slot is not None:
                        ring.give_back(slot)
                batch = [(lo + j, e) for j, e in enumerate(errors)]
                idx = [i for i, e in batch if e is None]
                x = {size: self.model.normalise(pixels)} if pixels is not None else None
                return batch, idx, x, colour

            for lo in range(0, len(paths), batch_size):
                slot = ring.lend() if ring is not None else None
                with main_not_rerun():   # the first submit spawns the decoding processes
                    fut = pool.submit(decode_batch, paths[lo:lo + batch_size], size, p.mean, p.std, slot)
                pending.append((lo, slot, fut))
                if len(pending) > n + 1:
                    yield ready()
            while pending:
                yield ready()

    def pooled_features(self, paths, batch_size: int = 32):
        """Yield (path, pooled encoder features [D] (numpy) or an error message): the encoder only,
        for calibration (``training/calibrate.py``)."""
        paths = list(paths)
        for batch, idx, x in self._batches(paths, batch_size):
            pooled = dict(zip(idx, self._pooled(x))) if idx else {}
            for i, err in batch:
                yield paths[i], pooled.get(i, err)

    def _pooled(self, x) -> np.ndarray:
        g = self._grids(x)[0]
        return _numpy(array_namespace(g).mean(g, axis=(2, 3)))

    def kind_inputs(self, paths, batch_size: int = 32):
        """Yield (path, (pooled features [D], colour statistics [12]) or an error message): what the
        kind classifier reads, for fitting it (``training/kind_train.py``)."""
        paths = list(paths)
        for batch, idx, x in self._batches(paths, batch_size):
            got = {}
            if idx:
                pooled = self._pooled(x)
                colour = self._colour(x)
                got = {i: (p, c) for i, p, c in zip(idx, pooled, colour)}
            for i, err in batch:
                yield paths[i], got.get(i, err)

    def caption(self, images, beam_size: int | None = None, n_best: int = 1, read_text: str | None = None,
                gender_neutral: bool | None = None, max_chars: int | None = None):
        """A path, ``images.Blob``, PIL image, or a list of them -> Caption (or a list). Raises ImageError.
        ``read_text``, ``gender_neutral``, ``max_chars``: this call's wording, over the model's."""
        single = not isinstance(images, (list, tuple))
        sources = [images] if single else list(images)
        if not sources:
            return []
        items = [open_image(im, at_least=self.decode_side) for im in sources]
        arrays = [self.preprocessed(im) for im in items]
        x = {s: np.stack([a[s] for a in arrays]) for s in self.sizes}
        caps = self.caption_tensors(x, beam_size, n_best, gender_neutral, max_chars)
        # the text is read from the image in full, opened again only where it is read
        res = [self.read(c, functools.partial(_in_full, src, im), read_text, max_chars)
               for c, src, im in zip(caps, sources, items)]
        return res[0] if single else res

    def caption_paths(self, paths, batch_size: int = 16, workers: int = 0, beam_size: int | None = None,
                      n_best: int = 1, read_text: str | None = None, gender_neutral: bool | None = None,
                      max_chars: int | None = None, processes: int | None = None, attention: bool = True):
        """Yield (path, Caption or error message) in input order; a bad file never stops the batch.
        A path may also be an ``images.Blob`` (a file's bytes and its name: a picture inside a document).

        ``processes``: captioning processes (``parallel.py``; None: one per core this process may use,
        on a CPU, where there are at least two batches; 1: this process only).  Each loads the model
        once and takes whole batches (the same batches as one process: the same captions).  Within
        one process, ``workers`` threads open and preprocess the next batch while the model computes.
        ``attention=False`` leaves out the per-word attention maps (nobody asked for them: less to
        copy between processes).  The images whose text is read are opened once more for it, at full
        size."""
        from captioner import parallel

        paths = list(paths)
        runtime.whole("batch_size", batch_size, 1)
        opts = dict(beam_size=beam_size, n_best=n_best, read_text=read_text, gender_neutral=gender_neutral,
                    max_chars=max_chars, attention=attention)
        per_process = parallel.worker_mb(self.backend, len(self.members))
        plan = parallel.plan(processes, device=str(self.device), per_process_mb=per_process)
        if plan.pooled and len(paths) > batch_size and not parallel.in_worker():
            with parallel.CaptionPool(self.settings, plan) as pool:
                yield from pool.caption_paths(paths, batch_size, workers=0, **opts)
            return
        yield from self._caption_paths(paths, batch_size, workers, **opts)

    def _caption_paths(self, paths: list, batch_size: int, workers: int, beam_size, n_best, read_text,
                       gender_neutral, max_chars, attention: bool):
        on_gpu = self.backend == "torch" and str(self.device).startswith("cuda") and len(self.sizes) == 1
        batches = self._device_batches(paths, batch_size, workers) if on_gpu else (
            (batch, idx, x, None) for batch, idx, x in self._batches(paths, batch_size, workers))
        for batch, idx, x, colour in batches:
            results = dict(zip(idx, self.caption_tensors(x, beam_size, n_best, gender_neutral, max_chars,
                                                         colour))) if idx else {}
            for i, err in batch:
                res = results.get(i, err)
                if not attention and not isinstance(res, str):
                    res.attention = None
                if not isinstance(res, str) and self.wants_text(res, read_text):
                    try:
                        res = self.read(res, functools.partial(open_image, paths[i]), read_text, max_chars)
                    except ImageError as e:   # changed or removed since it was captioned
                        res.text_error = str(e)
                yield paths[i], res


    def caption_bytes(self, name: str, data: bytes, beam_size: int | None = None, n_best: int = 1,
                      read_text: str | None = None, gender_neutral: bool | None = None,
                      max_chars: int | None = None) -> Caption:
        """One uploaded file's bytes -> its Caption (``ImageError`` for an empty or unreadable one)."""
        return self.caption(Blob(name, data), beam_size, n_best, read_text, gender_neutral, max_chars)


def _in_full(source, opened):
    """``opened`` (``open_image`` of ``source``, perhaps at a smaller scale) in full: opened again from a
    path, ``Blob`` or file object; a PIL image given as it was is already whole."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return opened
    if hasattr(source, "seek"):
        source.seek(0)
    return open_image(source)


def _sequence(grid):
    """Feature grid [B, C, H, W] -> the decoder's sequence [B, H*W, C], in the grid's own array type.
    A numpy grid is transposed into a new array at once: taking rows of the transposed view later
    (one expert's or the guided images) cost 2.5 times this copy."""
    xp = array_namespace(grid)
    B, C = grid.shape[:2]
    seq = xp.permute_dims(xp.reshape(grid, (B, C, -1)), (0, 2, 1))
    return np.ascontiguousarray(seq) if isinstance(seq, np.ndarray) else seq


def _take(x, idx: list[int]):
    xp = array_namespace(x)
    return take_rows(x, xp.asarray(idx, dtype=xp.int64, device=device_of(x)), xp)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Normalised images [B, 3, S, S] -> [B, 3, size, size], each channel resized bicubic (PIL)."""
    from PIL import Image

    return np.stack([np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC), np.float32)
                               for c in im]) for im in x])


def _read_mode(mode: str) -> str:
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"read_text '{mode}': choose auto (images not classed photos), always or never")
    return mode


def _limit(max_chars) -> int:
    try:
        n = int(max_chars)
    except (TypeError, ValueError):
        raise ValueError(f"max_chars {max_chars!r}: give a whole number of characters") from None
    if n < 20:
        raise ValueError(f"max_chars {n}: at least 20 characters, so an alt text can say something")
    return n


def load(path=None, device: str = "cpu", with_preprocess: bool = False, **kwargs):
    """Load a checkpoint (default: the shipped model). ``with_preprocess=True`` returns
    ``(captioner, preprocess)`` like CLIP's ``load()``."""
    c = Captioner(path, device, **kwargs)
    return (c, c.preprocess) if with_preprocess else c
