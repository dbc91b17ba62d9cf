"""Figures a person would rather look at than read: training curves, several runs' dev curves
side by side (attention maps: ``captioner.attention``).

    python -m captioner.training.plots runs/recipe runs/ss --labels recipe "scheduled sampling" --out levers.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_history(history: list[dict], path: str | Path) -> None:
    """Training loss and dev-split scores per epoch (from free-running decoding)."""
    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    xe = [h for h in history if h.get("stage") != "scst"]  # SCST's policy loss is not comparable
    a.plot([h["epoch"] for h in xe], [h["train_loss"] for h in xe], "o-", label="train loss")
    a.set_xlabel("epoch"), a.set_ylabel("cross-entropy (+ attention penalty)"), a.grid(alpha=0.3)
    for key in ("BLEU-1", "BLEU-4", "CIDEr-D"):
        b.plot(ep, [h["dev"][key] for h in history], "o-", label=f"dev {key}")
    sc = [h for h in history if h.get("stage") == "scst"]
    if sc:
        b.plot([h["epoch"] for h in sc], [h["train_reward"] for h in sc], "s--", label="train samples CIDEr-D (SCST)")
    for stage in ("finetune", "scst"):  # mark where fine-tuning and SCST start
        first = next((h for h in history if h.get("stage") == stage), None)
        if first:
            a.axvline(first["epoch"] - 0.5, color="grey", ls="--"), b.axvline(first["epoch"] - 0.5, color="grey", ls="--")
    b.set_xlabel("epoch"), b.set_ylabel("score"), b.grid(alpha=0.3), b.legend()
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_runs(histories: dict[str, list[dict]], path: str | Path, metric: str = "CIDEr-D") -> None:
    """Dev ``metric`` per epoch for several runs on one axis (label -> history), so levers can be
    compared at a glance; fine-tuning epochs are drawn as squares."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, history in histories.items():
        xe = [h for h in history if h.get("stage") != "scst"]
        line, = ax.plot([h["epoch"] for h in xe], [h["dev"][metric] for h in xe], "o-", ms=4, label=label)
        ft = [h for h in xe if h.get("stage") == "finetune"]
        ax.plot([h["epoch"] for h in ft], [h["dev"][metric] for h in ft], "s", color=line.get_color(), ms=6)
    ax.set_xlabel("epoch (circles: frozen encoder, squares: fine-tuning)"), ax.set_ylabel(f"dev {metric}")
    ax.grid(alpha=0.3), ax.legend()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Compare the dev curves of training runs (their history.json).")
    ap.add_argument("runs", nargs="+", help="run folders written by 'captioner train'")
    ap.add_argument("--labels", nargs="+", default=None, help="one legend label per run (default: folder names)")
    ap.add_argument("--metric", default="CIDEr-D", help="dev metric to draw")
    ap.add_argument("--out", required=True, help="image file to write")
    args = ap.parse_args(argv)
    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"--labels: {len(labels)} labels for {len(args.runs)} runs")
    histories = {}
    for label, run in zip(labels, args.runs):
        f = Path(run) / "history.json"
        if not f.is_file():
            raise SystemExit(f"{run}: no history.json (is it a 'captioner train' run folder?)")
        histories[label] = json.loads(f.read_text())
    plot_runs(histories, args.out, args.metric)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
