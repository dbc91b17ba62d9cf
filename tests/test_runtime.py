"""Inference back-ends (runtime.py, backends/) and decoding constraints: each fast path gives the same
captions as the plain PyTorch fp32 path, within the precision it trades."""
import copy

import pytest
import torch

from captioner.search import block_repeats, generate
from captioner.training.model import CaptionModel, ModelConfig
from captioner.backends.torch import Bf16LSTMCell, bf16_matmuls, resolve_precision
from test_model import VOCAB



@pytest.mark.parametrize("name", ["efficientnet_lite2", "resnet50"])
def test_a_training_checkpoint_is_exported_on_first_load_and_cached(name, tmp_path, monkeypatch):
    """A checkpoint straight from ``captioner train`` has no ONNX graphs: they are made once (torch is
    here), cached under the file's digest, reused, and made again for a changed checkpoint."""
    from captioner.backends.onnx import OnnxModel
    from captioner.training import checkpoint
    from captioner.vocab import SPECIALS, Vocab

    monkeypatch.setenv("CAPTIONER_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    vocab = Vocab([*SPECIALS, *[f"w{i}" for i in range(20)]])
    cfg = ModelConfig(vocab_size=len(vocab), encoder=name, feature_dim=1280 if name == "efficientnet_lite2" else 2048,
                      image_size=64, embed_dim=16, hidden_dim=24, attention_dim=20, max_len=6)
    model = CaptionModel(cfg, pretrained_encoder=False).eval()
    path = tmp_path / "best.safetensors"
    checkpoint.save_model(path, model, vocab, include_encoder=True)
    x = torch.randn(3, 3, 64, 64)
    got = OnnxModel(path).encode(x.numpy())
    with torch.inference_mode():
        ref = model.encoder(x).numpy()
    assert got.shape == ref.shape and abs(got - ref).max() < 1e-3
    specs = list((tmp_path / "cache" / "onnx").glob("*/spec.json"))
    assert len(specs) == 1
    stamp = specs[0].stat().st_mtime_ns
    OnnxModel(path)                                                     # same file: reused
    assert specs[0].stat().st_mtime_ns == stamp
    with torch.no_grad():
        next(model.decoder.parameters()).mul_(2)                        # new weights: a new export
    checkpoint.save_model(path, model, vocab, include_encoder=True)
    OnnxModel(path)
    assert len(list((tmp_path / "cache" / "onnx").glob("*/spec.json"))) == 2


def test_backend_and_precision_choices_are_checked():
    from captioner.runtime import choose_backend

    with pytest.raises(ValueError, match="backend 'tensorrt'"):
        choose_backend("tensorrt")
    with pytest.raises(ValueError, match="precision 'fp8'"):
        choose_backend("auto", "cpu", "fp8")
    with pytest.raises(ValueError, match="bf16 runs on the torch back-end"):
        choose_backend("onnx", "cpu", "bf16")
    assert choose_backend("auto", "cpu", "auto") == "onnx"
    assert choose_backend("auto", "auto", "bf16") == "torch"
    assert choose_backend("auto", "mps", "auto") == "torch"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"


def test_bf16_matmuls_keep_the_decoder_close_to_fp32():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(VOCAB), image_size=64, embed_dim=16, hidden_dim=24, attention_dim=20,
                      max_len=8)
    m = CaptionModel(cfg, pretrained_encoder=False).eval()
    fast = copy.deepcopy(m)
    bf16_matmuls(fast.decoder)
    assert isinstance(fast.decoder.lstm, Bf16LSTMCell)
    feats = torch.randn(4, 4, cfg.feature_dim)
    words = torch.tensor([1, 4, 5, 9])
    with torch.inference_mode():
        outs = []
        for model in (m, fast):
            state, memory = model.decoder.init_state(feats)
            logits, (h, c), alpha = model.decoder.step(words, state, memory)
            outs.append((logits, c, alpha))
    for a, b in zip(*outs):
        assert a.dtype == b.dtype == torch.float32        # fp32 in, fp32 out: callers see no change
        assert torch.allclose(a, b, atol=3e-2, rtol=3e-2)
    hyps = generate(fast, feats, beam_size=3, n_best=3)
    assert len(hyps) == 4 and all(len(h) == 3 and h[0].score >= h[2].score for h in hyps)


@pytest.mark.parametrize("xp", ["torch", "numpy"])
def test_block_repeats_bans_only_the_word_that_repeats_an_ngram(xp):
    import numpy as np

    lib = torch if xp == "torch" else np
    tokens = lib.asarray([[[5, 6, 7, 5, 6], [5, 6, 7, 8, 9]]])
    logp = lib.zeros((1, 2, 10))
    block_repeats(logp, tokens, 3)
    assert logp[0, 0, 7] == float("-inf") and bool(lib.isfinite(logp[0, 0, :7]).all())   # "5 6 7" again
    assert bool(lib.isfinite(logp[0, 1]).all())
    logp = lib.zeros((1, 2, 10))
    block_repeats(logp, tokens, 2)
    assert logp[0, 0, 7] == float("-inf") and bool(lib.isfinite(logp[0, 1]).all())


def test_generated_captions_never_repeat_a_bigram_when_asked():
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=len(VOCAB), image_size=64, embed_dim=16, hidden_dim=24, attention_dim=20,
                      max_len=12)
    m = CaptionModel(cfg, pretrained_encoder=False).eval()
    feats = torch.randn(6, 4, cfg.feature_dim)
    free = [h[0].tokens for h in generate(m, feats, beam_size=3, no_repeat_ngram=0)]
    blocked = [h[0].tokens for h in generate(m, feats, beam_size=3, no_repeat_ngram=2)]
    bigrams = lambda t: list(zip(t, t[1:]))  # noqa: E731
    assert any(len(set(bigrams(t))) < len(bigrams(t)) for t in free), "the random model should repeat itself"
    assert all(len(set(bigrams(t))) == len(bigrams(t)) for t in blocked)
