"""Data-parallel training with torchrun + DistributedDataParallel, 2 processes over gloo on the CPU,
against one process with the same global batch; a rank killed mid-run and resumed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from captioner.training import checkpoint
from captioner.training.distributed import resolve_device, resolve_train_precision

TINY = ["--image-size", "64", "--embed-dim", "16", "--hidden-dim", "32", "--attention-dim", "16",
        "--batch-size", "8", "--finetune-batch-size", "6", "--workers", "0", "--min-count", "1", "--max-len", "10",
        "--lr", "5e-3", "--dropout", "0.0", "--patience", "9", "--no-calibrate", "--device", "cpu"]


def train(data, out, *extra, nproc=1, max_restarts=0, wait=True):
    args = ["train", "--data", str(data), "--out", str(out), *TINY, *extra]
    if nproc == 1:
        cmd = [sys.executable, "-m", "captioner", *args]
    else:
        # --standalone: a c10d rendezvous on a free port, with a fresh round after each restart (the
        # static rendezvous reuses the old round's keys, and the restarted ranks can then fail to meet)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "--max-restarts", str(max_restarts), "-m", "captioner", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    return log


def children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


def decoder_params(path):
    # the attention's output bias gets a zero gradient (a softmax ignores a constant), which Adam
    # turns into steps of float noise: it is the one parameter the two runs may not share
    return {k: v for k, v in load_file(str(path)).items() if k.startswith("decoder.") and k != "decoder.att_out.bias"}


def same_decoder_and_histories(one, two):
    """-> the two runs' histories, once their decoders' parameters agree within float noise."""
    a, b = decoder_params(one / "last.safetensors"), decoder_params(two / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        # Adam divides by the root of tiny second moments (rare words): float noise grows to ~1e-5
        assert torch.allclose(a[k], b[k], atol=2e-4), (k, (a[k] - b[k]).abs().max())
    return [json.loads((d / "history.json").read_text()) for d in (one, two)]


def test_two_processes_equal_one_process_with_the_same_global_batch(tiny_data, tmp_path):
    cache = tmp_path / "cache.npy"
    train(tiny_data, tmp_path / "one", "--epochs", "1", "--finetune-epochs", "0", "--feature-cache", cache)
    train(tiny_data, tmp_path / "two", "--epochs", "1", "--finetune-epochs", "0", "--feature-cache", cache, nproc=2)
    ha, hb = same_decoder_and_histories(tmp_path / "one", tmp_path / "two")
    assert ha[0]["train_loss"] == pytest.approx(hb[0]["train_loss"], rel=1e-5)


def test_scst_in_two_processes_equals_one_process(tiny_data, tmp_path):
    # beam candidates (the default) are deterministic, so the two runs must agree; 5 training images
    # in batches of 2 leave the second rank without an image in the last batch, which must still step
    cache = tmp_path / "cache.npy"
    train(tiny_data, tmp_path / "xe", "--epochs", "1", "--finetune-epochs", "0", "--feature-cache", cache)
    scst = ["--init", tmp_path / "xe" / "best.safetensors", "--init-mode", "continue", "--epochs", "0", "--finetune-epochs", "0",
            "--scst-epochs", "1", "--scst-batch-size", "2", "--scst-samples", "3", "--scst-max-len", "6", "--limit", "5"]
    train(tiny_data, tmp_path / "one", *scst)
    log = train(tiny_data, tmp_path / "two", *scst, nproc=2)
    assert log.count("best dev CIDEr-D") == 1
    ha, hb = same_decoder_and_histories(tmp_path / "one", tmp_path / "two")
    assert [h["stage"] for h in hb] == ["scst"]
    assert ha[0]["train_reward"] == pytest.approx(hb[0]["train_reward"], rel=1e-5)
    assert ha[0]["train_loss"] == pytest.approx(hb[0]["train_loss"], rel=1e-4, abs=1e-6)
    # the final encoder's grids were encoded by both ranks and written once
    assert sorted(p.name for p in (tmp_path / "two").glob("features_final_encoder*")) == \
        ["features_final_encoder.json", "features_final_encoder.npy"]


def test_two_processes_write_one_cache_and_one_loadable_checkpoint(tiny_data, tmp_path):
    train(tiny_data, tmp_path / "one", "--epochs", "1", "--finetune-epochs", "0",
          "--feature-cache", tmp_path / "c1.npy")
    log = train(tiny_data, tmp_path / "two", "--epochs", "1", "--finetune-epochs", "1",
                "--feature-cache", tmp_path / "c2.npy", nproc=2)
    assert "2 process(es)" in log and log.count("best dev CIDEr-D") == 1      # one voice: rank 0's
    # the encoding was split between the ranks and written once; conv arithmetic differs with
    # the batch's make-up, by at most an fp16 step
    assert sorted(p.name for p in tmp_path.glob("c2*")) == ["c2.json", "c2.npy"]
    assert np.allclose(np.load(tmp_path / "c1.npy").astype(np.float32), np.load(tmp_path / "c2.npy").astype(np.float32),
                       atol=1e-2)
    out = tmp_path / "two"
    assert [h["stage"] for h in json.loads((out / "history.json").read_text())] == ["frozen", "finetune"]
    assert not list(out.glob(".*tmp*"))
    model, vocab, meta = checkpoint.load_model(out / "last.safetensors")
    assert meta["finetuned"] and checkpoint.load_model(out / "best.safetensors")[0] is not None


def test_a_killed_rank_ends_the_run_and_max_restarts_resumes_it(tiny_data, tmp_path):
    cache = tmp_path / "cache.npy"
    train(tiny_data, tmp_path / "whole", "--epochs", "4", "--finetune-epochs", "0", "--feature-cache", cache, nproc=2)
    out = tmp_path / "killed"
    proc = train(tiny_data, out, "--epochs", "4", "--finetune-epochs", "0", "--feature-cache", cache, "--resume",
                 nproc=2, max_restarts=1, wait=False)
    deadline = time.time() + 300
    while not (out / "train_state.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = children(proc.pid)
    assert len(workers) == 2 and proc.poll() is None, "the run ended before a rank could be killed"
    os.kill(max(workers), signal.SIGKILL)       # one rank dies after the first epoch
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert "exitcode: -9" in log or "Signal 9" in log or "SIGKILL" in log, log[-3000:]   # torchrun says which
    assert "resumed from" in log                                                        # restarted with --resume
    whole = json.loads((tmp_path / "whole" / "history.json").read_text())
    resumed = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["dev"]["CIDEr-D"] == pytest.approx(b["dev"]["CIDEr-D"], rel=1e-5)


def test_device_and_precision_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu7")
    assert resolve_train_precision("auto", torch.device("cpu")) is None        # the CPU stays fp32
    assert resolve_train_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_train_precision("fp16", torch.device("cpu"))
