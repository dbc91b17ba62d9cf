"""The Streamlit app: ``captioner app [--port N] [--model CKPT] [--examples DIR]``.

Upload photos, take one with the camera, or pick an example; read the recommended alt text (the
headline), the model's own caption and its top beams with their scores, what kind of image it is and
the text read in it (boxes drawn over a copy of the image) with its long description, and - on
request - where the model looked for each word.  The model is loaded once per
server process (``st.cache_resource``).  Run directly with
``streamlit run src/captioner/app.py -- --model CKPT --examples DIR``.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import sys
import time
from pathlib import Path

import streamlit as st

from captioner.api import Captioner
from captioner.images import IMAGE_SUFFIXES, ImageError, open_image
from captioner.info import model_card
from captioner.attention import attention_overlay
from captioner.knowledge.alttext import sentence

BUNDLED_EXAMPLES = Path(__file__).parent.parent / "examples"  # public-domain / CC0 photos, see LICENSES.txt
UPLOAD_TYPES = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)
MAX_UPLOAD_BYTES = 20 * 2**20


def parse_args(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.environ.get("CAPTIONER_MODEL") or None)
    ap.add_argument("--examples", default=os.environ.get("CAPTIONER_EXAMPLES") or None)
    ap.add_argument("--device", default=os.environ.get("CAPTIONER_DEVICE") or "auto")
    return ap.parse_known_args(argv)[0]  # tolerate foreign arguments (AppTest runs inside pytest)


@st.cache_resource(show_spinner="Loading the captioning model…")
def get_captioner(path: str | None, device: str = "auto") -> Captioner:
    return Captioner(path, device=device)


def example_images(folder: str | None, limit: int = 24) -> list[Path]:
    if not folder or not Path(folder).is_dir():
        return []
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:limit]


def caption_one(cap: Captioner, name: str, data: bytes, beam_size: int, n_best: int, wording: dict | None = None):
    """-> (PIL image, Caption, seconds) or raises ImageError with a message for the user.
    ``wording``: read_text, gender_neutral, max_chars for this caption."""
    if not data:
        raise ImageError(f"{name}: empty file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(f"{name}: file too large ({len(data) / 2**20:.1f} MB, limit {MAX_UPLOAD_BYTES // 2**20} MB)")
    img = open_image(io.BytesIO(data), name)   # shown, in full
    t0 = time.perf_counter()
    result = cap.caption_bytes(name, data, beam_size=beam_size, n_best=n_best, **(wording or {}))
    return img, result, time.perf_counter() - t0


def text_boxes(img, image_text):
    """The image with a box drawn round each line of text read in it."""
    from PIL import ImageDraw

    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 400))
    for line in image_text.lines:
        draw.polygon([tuple(p) for p in line.box], outline=(230, 40, 40), width=width)
    return out


def show_text(result) -> None:
    """Kind, the text read and the long description."""
    kind = result.kind or "unknown"
    if result.chart_type:
        kind += f" ({result.chart_type})"
    prob = f" · {result.kind_probability:.0%}" if result.kind_probability is not None else ""
    st.markdown(f"**Kind of image:** {kind}{prob}")
    if result.text_error:
        st.warning(f"Text not read: {result.text_error}")
    elif result.image_text is None:
        note("Text not read (photos are read only with “Read text: always”).")
    elif not result.image_text:
        note("No text found.")
    if result.long_description:
        with st.expander("Long description (all text read)", expanded=result.kind != "photo"):
            st.text(result.long_description)


def show_knowledge(result) -> None:
    """Flag, confidence, alt text and tags: what the model knows of its own limits."""
    if result.in_domain is None:
        note("This model file is not calibrated: no domain flag, confidence or tags.")
        return
    if result.in_domain:
        st.success("In domain: this photo resembles the photos the model learned from.")
    else:
        st.warning("Out of domain: this image is unlike the photos the model learned from, so the "
                   "caption is likely wrong. The alt text below does not use it.")
    st.metric("Confidence that the caption is acceptable", f"{result.confidence:.0%}")
    st.markdown("**Recommended alt text, to copy**")
    st.code(result.alt_text, language=None, wrap_lines=True)  # with a copy button
    if result.guided:
        note(f"Guided caption: the ImageNet tag asked for the word “{result.guided}”.")
    st.markdown("**ImageNet tags**")
    st.table([{"tag": t.name, "probability": round(t.prob, 3)} for t in result.tags])


def note(text: str, where=None) -> None:
    """A line of small print.  Not ``st.caption``: its grey fails WCAG contrast (axe-core) on the
    sidebar and under images; the text is escaped, as file names can hold markdown."""
    (where or st).markdown(re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", text))


def show_result(key: str, name: str, img, result, seconds: float, show_attention: bool):
    """The recommended alt text as the headline; the model's own caption only as a labelled detail
    (for a chart or a page, or out of domain, the alt text does not use it); the photo as it is, with
    the text read boxed and the attention maps only on request."""
    st.markdown("**Recommended alt text**")
    st.subheader(result.alt_text or "(empty)")
    used = result.text.strip().rstrip(".").lower() in result.alt_text.lower()
    note(f"The model's caption{'' if used else ' (not used in the alt text)'}: {sentence(result.text)}")
    left, right = st.columns([3, 2])
    with right:
        show_knowledge(result)
        show_text(result)
        note(f"{name} · {seconds * 1000:.0f} ms · beam score {result.score:.3f}")
        if len(result.beams) > 1:
            st.markdown("**Top beams**")
            st.table([{"caption": t, "score": round(s, 3)} for t, s in result.beams])
    with left:
        st.image(img, width="stretch", alt=result.alt_text)
        if result.image_text:
            with st.expander(f"Where the text was read ({len(result.image_text.lines)} lines, boxed)"):
                st.image(text_boxes(img, result.image_text), width="stretch",
                         alt=f"{result.alt_text} The {len(result.image_text.lines)} lines of text read are boxed.")
        if show_attention and result.attention is not None and result.words:
            # a slider over word positions: repeated words ("a ... a") stay distinct choices
            word_i = st.select_slider("Where the model looked for each word", options=list(range(len(result.words))),
                                      value=0, format_func=lambda i: result.words[i], key=f"word-{key}")
            st.image(attention_overlay(img, result.attention[word_i]), width="stretch",
                     alt=f"{result.alt_text} Overlaid: where the model looked for the word “{result.words[word_i]}”.")
            note(f"attention for “{result.words[word_i]}”")
            with st.expander("All words"):
                cols = st.columns(6)
                for i, w in enumerate(result.words):
                    cols[i % 6].image(attention_overlay(img, result.attention[i]), width="stretch",
                                      alt=f"Where the model looked for the word “{w}”")
                    note(w, cols[i % 6])


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    st.set_page_config(page_title="captioner", page_icon="📝", layout="wide")
    st.title("captioner")
    st.write("Describe a photo in one English sentence — for alt text, search or curation.")
    try:
        cap = get_captioner(args.model, args.device)
    except (OSError, ValueError) as e:
        st.error(f"Could not load the model: {e}")
        st.stop()
    with st.sidebar:
        beam_size = st.slider("Beam size", 1, 5, 3, help="1 = greedy; larger looks at more candidate sentences")
        n_best = min(st.slider("Beams shown", 1, 5, 3, help="at most the beam size"), beam_size)
        show_attention = st.toggle("Attention maps", value=False,
                                   help="where the model looked for each word of its caption, over the photo")
        read_text = st.selectbox("Read text", ["auto", "always", "never"], key="read_text",
                                 help="auto: screenshots, documents, charts and drawings; always: photos too")
        neutral = st.toggle("Gender-neutral wording", value=False, help="person/child instead of man/woman/boy/girl")
        max_chars = st.number_input("Longest alt text (characters)", min_value=20, max_value=1000, value=125, step=5)
        wording = {"read_text": read_text, "gender_neutral": neutral, "max_chars": int(max_chars)}
        cfg = cap.model.cfg
        note(f"Model: {cap.path.name} · {cfg.encoder} + {cfg.decoder} LSTM · {len(cap.vocab)} words")
        with st.expander("About the model"):   # the model card: what it learnt from, is for, and measured
            st.markdown(model_card())

    inputs: list[tuple[str, bytes]] = []
    tab_up, tab_cam, tab_ex = st.tabs(["Upload", "Camera", "Examples"])
    with tab_up:
        files = st.file_uploader("Photos", type=UPLOAD_TYPES, accept_multiple_files=True,
                                 help="JPEG, PNG, WebP, GIF, BMP or TIFF")
        inputs += [(f.name, f.getvalue()) for f in files or []]
    with tab_cam:
        if st.toggle("Use the camera"):
            shot = st.camera_input("Take a photo")
            if shot is not None:
                inputs.append(("camera.jpg", shot.getvalue()))
    with tab_ex:
        folder = args.examples or str(BUNDLED_EXAMPLES)
        examples = example_images(folder)
        if not examples:
            st.info(f"No example photos in {folder}.")
        else:
            picked = st.selectbox("Example photo", ["—"] + [p.name for p in examples], key="example")
            cols = st.columns(6)
            for i, p in enumerate(examples):
                try:
                    thumb = open_image(p, at_least=512)   # a large JPEG decodes at the scale shown
                    thumb.thumbnail((256, 256))
                    cols[i % 6].image(thumb, width="stretch", alt=f"Example photo {p.name}")
                    note(p.name[:14], cols[i % 6])
                except ImageError as e:
                    cols[i % 6].warning(str(e))
            if picked != "—":
                inputs.append((picked, (Path(folder) / picked).read_bytes()))

    if not inputs:
        st.info("Upload a photo, take one, or pick an example to get a caption.")
        return
    for i, (name, data) in enumerate(inputs):
        st.divider()
        try:
            img, result, seconds = caption_one(cap, name, data, beam_size, n_best, wording)
        except ImageError as e:
            st.error(f"Cannot caption this file — {e}")
            continue
        show_result(str(i), name, img, result, seconds, show_attention)


def launch(args) -> int:
    """``captioner app``: run this file under ``streamlit run``, headless.  The process *becomes*
    Streamlit (exec, not a child), so stopping ``captioner app`` stops the server too instead of
    leaving it orphaned and holding the port."""
    import os

    cmd = [sys.executable, "-m", "streamlit", "run", str(Path(__file__).resolve()),
           "--server.headless", "true", "--server.port", str(args.port), "--server.address", args.host,
           "--browser.gatherUsageStats", "false", "--server.maxUploadSize", "20",
           "--client.toolbarMode", "viewer", "--"]   # no developer toolbar ("Deploy") for users
    if args.model:
        cmd += ["--model", args.model]
    if args.examples:
        cmd += ["--examples", args.examples]
    cmd += ["--device", args.device]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)
    return 0  # not reached


if __name__ == "__main__":
    main()
