"""Inference back-ends (runtime.py) and decoding constraints: each fast path gives the same
captions as the plain PyTorch fp32 path, within the precision it trades."""
import copy

import pytest
import torch

from captioner.decode import block_repeats, generate
from captioner.encoders import build_encoder
from captioner.model import CaptionModel, ModelConfig
from captioner.runtime import (Bf16LSTMCell, OnnxEncoder, TorchEncoder, bf16_matmuls, make_encoder,
                               onnxruntime_available, resolve_precision)
from test_model import VOCAB

needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime is not installed")


@needs_ort
@pytest.mark.parametrize("name", ["efficientnet_lite2", "resnet50"])
def test_onnx_encoder_matches_pytorch_and_is_cached(name, tmp_path):
    torch.manual_seed(0)
    enc = build_encoder(name, pretrained=False, image_size=64)
    x = torch.randn(3, 3, 64, 64)
    onnx = OnnxEncoder(enc, cache=tmp_path)
    ref = TorchEncoder(copy.deepcopy(enc))(x)
    got = onnx(x)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-3), (got - ref).abs().max()
    assert torch.allclose(onnx(x[:1]), ref[:1], atol=1e-4, rtol=1e-3)    # any batch size
    files = list(tmp_path.glob("*.onnx"))
    assert len(files) == 1 and name in files[0].name
    stamp = files[0].stat().st_mtime_ns
    OnnxEncoder(enc, cache=tmp_path)                                     # same weights: reused
    assert files[0].stat().st_mtime_ns == stamp
    with torch.no_grad():
        next(enc.trunk.stages[-1].parameters()).mul_(2)                    # new weights: a new file
    OnnxEncoder(enc, cache=tmp_path)
    assert len(list(tmp_path.glob("*.onnx"))) == 2


def test_backend_and_precision_choices_are_checked():
    enc = build_encoder("efficientnet_lite2", pretrained=False, image_size=64)
    with pytest.raises(ValueError, match="backend 'tensorrt'"):
        make_encoder(enc, "tensorrt")
    with pytest.raises(ValueError, match="onnx.*CPU only"):
        make_encoder(enc, "onnx", torch.device("cuda"))
    assert isinstance(make_encoder(enc, "torch"), TorchEncoder)
    with pytest.raises(ValueError, match="precision 'fp8'"):
        resolve_precision("fp8", torch.device("cpu"))
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


def test_block_repeats_bans_only_the_word_that_repeats_an_ngram():
    tokens = torch.tensor([[[5, 6, 7, 5, 6], [5, 6, 7, 8, 9]]])
    logp = torch.zeros(1, 2, 10)
    block_repeats(logp, tokens, 3)
    assert logp[0, 0, 7] == float("-inf") and torch.isfinite(logp[0, 0, :7]).all()   # "5 6 7" again
    assert torch.isfinite(logp[0, 1]).all()
    logp = torch.zeros(1, 2, 10)
    block_repeats(logp, tokens, 2)
    assert logp[0, 0, 7] == float("-inf") and torch.isfinite(logp[0, 1]).all()


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
