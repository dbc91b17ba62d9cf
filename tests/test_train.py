"""Training end to end on a tiny synthetic dataset: both stages, checkpoints, curves, resume."""
import argparse
import json

import pytest

from captioner import checkpoint
from captioner.train import add_arguments, main


def run_args(data, out, cache, **over):
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    argv = ["--data", str(data), "--out", str(out), "--feature-cache", str(cache), "--image-size", "64",
            "--embed-dim", "16", "--hidden-dim", "32", "--attention-dim", "16", "--batch-size", "8",
            "--finetune-batch-size", "6", "--workers", "0", "--min-count", "1", "--max-len", "10",
            "--lr", "5e-3", "--dropout", "0.0"]
    for k, v in over.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return ap.parse_args(argv)


def test_two_stages_write_checkpoints_and_curves(tiny_data, tmp_path):
    out = tmp_path / "run"
    history = main(run_args(tiny_data, out, tmp_path / "f.safetensors", epochs=3, finetune_epochs=1,
                            finetune_blocks=1))
    assert [h["stage"] for h in history] == ["frozen", "frozen", "frozen", "finetune"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for f in ("best.safetensors", "last.safetensors", "train_state.safetensors", "vocab.json",
              "history.json", "curves.png"):
        assert (out / f).is_file(), f
    model, vocab, meta = checkpoint.load_model(out / "last.safetensors")
    assert meta["finetuned"] is True
    assert json.loads(checkpoint.read_header(out / "last.safetensors")["has_encoder"]) is True
    # dev scores come from free decoding: all six metrics present
    assert set(history[0]["dev"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_data, tmp_path):
    cache = tmp_path / "f.safetensors"
    full = main(run_args(tiny_data, tmp_path / "a", cache, epochs=3, patience=9, finetune_epochs=0))
    main(run_args(tiny_data, tmp_path / "b", cache, epochs=1, patience=9, finetune_epochs=0))  # stopped after 1
    resumed = main(run_args(tiny_data, tmp_path / "b", cache, epochs=3, patience=9, finetune_epochs=0, resume=True))
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    for a, b in zip(full, resumed):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["dev"] == pytest.approx(b["dev"], rel=1e-5)


def test_kill_9_mid_run_then_resume_matches_uninterrupted(tiny_data, tmp_path):
    """SIGKILL a real training process mid-run: every file left is loadable, and --resume
    finishes with the same history as a run that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cache = tmp_path / "f.safetensors"
    full = main(run_args(tiny_data, tmp_path / "a", cache, epochs=3, finetune_epochs=1, patience=9))
    out = tmp_path / "b"
    args = run_args(tiny_data, out, cache, epochs=3, finetune_epochs=1, patience=9)
    argv = [sys.executable, "-m", "captioner", "train"]
    for k, v in vars(args).items():
        if v is None or v is False or k == "resume":
            continue
        argv += ["--" + k.replace("_", "-")] + ([] if v is True else [str(v)])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "train_state.safetensors"
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # somewhere after epoch 1, possibly mid-write
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert state.exists()
    from safetensors import safe_open
    with safe_open(str(state), "pt") as f:
        assert json.loads(f.metadata()["info"])["epoch"] < 4
    for f in ("last.safetensors", "best.safetensors"):
        checkpoint.load_model(out / f)          # never a corrupt checkpoint
    resumed = main(run_args(tiny_data, out, cache, epochs=3, finetune_epochs=1, patience=9, resume=True))
    assert [h["epoch"] for h in resumed] == [1, 2, 3, 4]
    for a, b in zip(full, resumed):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["dev"] == pytest.approx(b["dev"], rel=1e-5)
