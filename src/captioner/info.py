"""What is installed: ``captioner --version`` and ``captioner info [--model PATH] [--format text|json]``.

    captioner info                      # the package version, the shipped model file and its model card
    captioner info --model run/best.safetensors --format json

The package version has one home, ``captioner.__version__`` (pyproject.toml reads it from there).
The model file's facts come from its header through ``modelfile.read`` (nothing is loaded or run);
its ``version`` entry holds short digests of its weights, written when the file was exported.  The
model card (``assets/model_card.md``, the same text as docs/model-card.md) ships inside the package,
so an installed wheel can show it; it describes the shipped model, whose weights digest it names.
"""
from __future__ import annotations

from importlib import resources

from captioner import __version__, modelfile

CARD = "model_card.md"


def model_card() -> str:
    """The model card's Markdown text, from the installed package."""
    return resources.files("captioner").joinpath("assets", CARD).read_text(encoding="utf-8")


def card_digest(card: str | None = None) -> str | None:
    """The weights digest the card says it describes (its ``weights digest: `X` `` line), or None."""
    for line in (card if card is not None else model_card()).splitlines():
        if "weights digest" in line and "`" in line:
            return line.split("`")[1]
    return None


def model_info(path=None) -> dict:
    """The package version and what a model file says of itself (``path=None``: the shipped model)."""
    mf = modelfile.read(path)
    card = model_card()
    dev = mf.meta.get("dev") or {}
    return {
        "captioner": __version__,
        "model": str(mf.path),
        "shipped": mf.path.resolve() == modelfile.DEFAULT_MODEL.resolve(),
        "versions": mf.version,   # {"weights": digest, "encoder": digest}; empty for a training checkpoint
        "encoder": mf.config.get("encoder"),
        "decoder": mf.config.get("decoder"),
        "experts": len(mf.experts),   # decoders a taught model (captioner train --init) kept from its start
        "vocabulary": len(mf.vocab),
        "image_size": mf.config.get("image_size"),
        "onnx_graphs": sorted(mf.graphs) if mf.graphs else [],
        "calibrated": mf.knowledge_info is not None,
        "dev_scores": {k: round(v, 4) for k, v in dev.items() if isinstance(v, (int, float))},
        "size_mb": round(mf.path.stat().st_size / 1e6, 1),
        "model_card_describes": card_digest(card),
        "model_card": card,
    }


def format_text(info: dict, card: bool = True) -> str:
    """``info`` as the lines ``captioner info`` prints, then the model card."""
    v = info["versions"] or {}
    applies = info["model_card_describes"] and info["model_card_describes"] == v.get("weights")
    dev = ", ".join(f"{k} {s:.3f}" for k, s in info["dev_scores"].items())
    lines = [
        f"captioner {info['captioner']}",
        f"model file:      {info['model']} ({info['size_mb']} MB{', shipped' if info['shipped'] else ''})",
        f"weights digest:  {v.get('weights') or 'none (a training checkpoint: not exported)'}",
        f"encoder digest:  {v.get('encoder') or 'none'}",
        f"architecture:    {info['encoder']} encoder + {info['decoder']} LSTM decoder"
        + (f" (+{info['experts']} kept expert decoder(s))" if info["experts"] else "")
        + f", {info['vocabulary']} words, {info['image_size']} px",
        f"ONNX graphs:     {', '.join(info['onnx_graphs']) or 'none (made on first load where torch is installed)'}",
        f"calibrated:      {'yes (out-of-domain flag, confidence, tags)' if info['calibrated'] else 'no'}",
    ]
    if dev:
        lines.append(f"dev scores:      {dev}")
    lines.append("model card:      " + ("below; it describes this file" if applies else
                                       f"below; it describes the shipped model (weights digest "
                                       f"{info['model_card_describes']}), not this file"))
    if card:
        lines += ["", info["model_card"].rstrip()]
    return "\n".join(lines)
