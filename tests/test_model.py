"""A tiny model through forward/backward, greedy and beam decoding, and a checkpoint round trip."""
import pickle

import numpy as np
import pytest
import torch

from captioner.training import checkpoint
from captioner.search import generate
from captioner.training.model import DECODERS, CaptionModel, ModelConfig
from captioner.vocab import Vocab

VOCAB = Vocab(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "runs", "on", "grass", "red"])


def tiny(decoder="attention", **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(VOCAB), decoder=decoder, image_size=64, embed_dim=16, hidden_dim=24,
                      attention_dim=20, max_len=8, **kw)
    return CaptionModel(cfg, pretrained_encoder=False).eval()


def caps():
    return torch.tensor([[1, 4, 5, 6, 2, 0], [1, 9, 8, 7, 4, 2]])


@pytest.mark.parametrize("decoder", DECODERS)
def test_forward_backward(decoder):
    m = tiny(decoder)
    m.train()
    m.encoder.set_trainable(1)
    images = torch.randn(2, 3, 64, 64)
    logits, loss = m(images, caps())
    assert logits.shape == (2, 5, len(VOCAB))
    assert torch.isfinite(loss)
    loss.backward()
    assert m.decoder.out.weight.grad is not None
    top = [p for p in m.encoder.blocks[-1].parameters()]
    low = [p for p in m.encoder.blocks[0].parameters()]
    assert all(p.grad is not None for p in top)      # the unfrozen top stage learns
    assert all(p.grad is None for p in low)          # the frozen stem does not


def test_doubly_stochastic_penalty_adds_to_loss():
    m = tiny()
    feats = torch.randn(2, 4, m.cfg.feature_dim)
    _, plain = m(feats=feats, captions=caps(), att_reg=0.0)
    _, reg = m(feats=feats, captions=caps(), att_reg=1.0)
    assert reg > plain


@pytest.mark.parametrize("decoder", DECODERS)
def test_scheduled_sampling_feeds_the_models_own_words(decoder):
    m = tiny(decoder)
    with torch.no_grad():  # the model now predicts "grass" (id 8) with certainty
        m.decoder.out.weight.zero_()
        m.decoder.out.bias.fill_(-1e4)
        m.decoder.out.bias[8] = 1e4
    fed = []
    step = m.decoder.step
    m.decoder.step = lambda words, state, memory: (fed.append(words.clone()), step(words, state, memory))[1]
    feats = torch.randn(2, 4, m.cfg.feature_dim)
    inputs = caps()[:, :-1]
    m.teacher_forced(feats, inputs, sample_prob=0.0)
    assert torch.equal(torch.stack(fed, 1), inputs)            # off: the reference words
    fed.clear()
    m.teacher_forced(feats, inputs, sample_prob=1.0)
    got = torch.stack(fed, 1)
    assert torch.equal(got[:, 0], inputs[:, 0])                # <start> is never replaced
    rest, ref = got[:, 1:], inputs[:, 1:]
    assert torch.equal(rest[ref != 0], torch.full_like(rest[ref != 0], 8))  # always its own word
    assert torch.equal(rest[ref == 0], ref[ref == 0])          # padding stays padding


@pytest.mark.parametrize("decoder", DECODERS)
def test_loss_decreases_when_overfitting_one_batch(decoder):
    m = tiny(decoder, dropout=0.0)
    m.train()
    feats = torch.randn(2, 4, m.cfg.feature_dim)
    opt = torch.optim.Adam(m.decoder.parameters(), lr=1e-2)
    first = None
    for _ in range(150):   # the two-layer Up-Down decoder needs more steps than the others
        _, loss = m(feats=feats, captions=caps(), att_reg=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first * 0.1
    m.eval()
    out = generate(m, feats, beam_size=1)
    assert VOCAB.decode(out[0][0].tokens) == ["a", "dog", "runs"]


@pytest.mark.parametrize("decoder", DECODERS)
def test_beam_one_equals_manual_greedy_loop(decoder):
    m = tiny(decoder)
    feats = torch.randn(3, 4, m.cfg.feature_dim)
    got = [h[0].tokens for h in generate(m, feats, beam_size=1, no_repeat_ngram=0)]
    with torch.inference_mode():
        state, memory = m.decoder.init_state(feats)
        words = torch.ones(3, dtype=torch.long)
        seqs = [[] for _ in range(3)]
        done = [False] * 3
        for _ in range(m.cfg.max_len + 1):
            logits, state, _ = m.decoder.step(words, state, memory)
            logits[:, [0, 1, 3]] = float("-inf")
            words = logits.argmax(-1)
            for i, w in enumerate(words.tolist()):
                if not done[i]:
                    if w == 2:
                        done[i] = True
                    else:
                        seqs[i].append(w)
    assert got == seqs


@pytest.mark.parametrize("decoder", ["attention", "updown", "adaptive"])
def test_beam_search_batched_sorted_with_attention(decoder):
    m = tiny(decoder)
    feats = torch.randn(3, 4, m.cfg.feature_dim)
    batched = generate(m, feats, beam_size=4, n_best=4)
    for i in range(3):
        alone = generate(m, feats[i:i + 1], beam_size=4, n_best=4)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[i]]
        scores = [h.score for h in batched[i]]
        assert scores == sorted(scores, reverse=True)
        best = batched[i][0]
        assert best.attention.shape == (len(best.tokens), 4)
        total = best.attention.sum(1)   # the adaptive decoder gives the rest to its sentinel
        if decoder == "adaptive":
            assert ((total > 0) & (total < 1)).all()
        else:
            assert np.allclose(total, np.ones(len(best.tokens)), atol=1e-6)
    # with no length normalisation, beam search never does worse than greedy on log-probability
    greedy = generate(m, feats, beam_size=1, length_penalty=0.0)
    beam = generate(m, feats, beam_size=4, length_penalty=0.0)
    for g, b in zip(greedy, beam):
        assert b[0].logprob >= g[0].logprob - 1e-5


@pytest.mark.parametrize("decoder", DECODERS)
def test_checkpoint_roundtrip(tmp_path, decoder):
    m = tiny(decoder)
    path = tmp_path / "m.safetensors"
    checkpoint.save_model(path, m, VOCAB, {"note": "x"}, include_encoder=True)
    m2, v2, meta = checkpoint.load_model(path)
    assert v2.itos == VOCAB.itos and meta == {"note": "x"} and m2.cfg == m.cfg
    feats = torch.randn(2, 4, m.cfg.feature_dim)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(m.encode(x), m2.encode(x))
    assert [h[0].tokens for h in generate(m, feats)] == [h[0].tokens for h in generate(m2, feats)]
    if decoder != "attention":
        return
    # fp16 storage halves the file and keeps the captions
    half = tmp_path / "h.safetensors"
    checkpoint.save_model(half, m, VOCAB, include_encoder=True, dtype=torch.float16)
    assert half.stat().st_size < path.stat().st_size * 0.6
    m3, _, _ = checkpoint.load_model(half)
    assert next(m3.parameters()).dtype == torch.float32


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {_Evil.marker}",))


def test_pickle_checkpoint_is_refused_unread(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(checkpoint.CheckpointError, match="not a safetensors checkpoint but a pickle"):
        checkpoint.load_model(bad)
    torch.save({"x": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a safetensors checkpoint but a zip archive"):
        checkpoint.load_model(tmp_path / "evil.pt")
    assert not _Evil.marker.exists()


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    m = tiny()
    path = tmp_path / "m.safetensors"
    checkpoint.save_model(path, m, VOCAB, {"v": 1})
    before = path.read_bytes()

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(OSError):
        checkpoint.save_model(path, m, VOCAB, {"v": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


def test_header_length_ending_in_0x80_is_still_a_checkpoint(tmp_path):
    """Regression: the first byte of a safetensors file is the low byte of its header length;
    0x80 there (pickle's opcode) must not make a real checkpoint look like a pickle."""
    m = tiny()
    for pad in range(256):
        path = tmp_path / "m.safetensors"
        checkpoint.save_model(path, m, VOCAB, {"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    checkpoint.load_model(path)


def test_fused_adaptive_step_equals_the_plain_one_and_follows_the_weights():
    torch.manual_seed(0)
    model = tiny("adaptive").eval()
    dec = model.decoder
    with torch.no_grad():   # a trained-looking decoder: weights large enough to matter
        for p in dec.parameters():
            p.mul_(3.0)
    feats = torch.randn(3, 49, model.cfg.feature_dim)
    plain = generate(model, feats, beam_size=3, n_best=3)
    state, memory = dec.init_state(feats)
    rows = torch.arange(3).repeat_interleave(2)
    state = tuple(s[rows] for s in state)
    words = torch.randint(4, model.cfg.vocab_size, (6,))
    ref = dec.step(words, state, memory)
    dec.fuse_for_inference()
    f_state, f_memory = dec.init_state(feats)
    got = dec.step(words, tuple(s[rows] for s in f_state), f_memory)
    for a, b in zip((ref[0], *ref[1], ref[2]), (got[0], *got[1], got[2])):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    fused = generate(model, feats, beam_size=3, n_best=3)
    assert [[h.tokens for h in hs] for hs in fused] == [[h.tokens for h in hs] for hs in plain]
    # weights changed (training): the fused tables are stale and no longer used
    assert dec._fused_ready()
    with torch.no_grad():
        dec.out.weight.add_(0.1)
    assert not dec._fused_ready()
    dec.train()
    dec.fuse_for_inference()
    assert not dec._fused_ready()        # never in training mode


def test_search_on_tensors_reads_back_at_most_twice_a_word():
    """On a GPU each value read back (``bool(t)``, ``int(t)``, ``nonzero``) makes the driving process
    wait for the device: the search reads once for the repeated n-grams and once for how many images
    have ended, per word, plus the rows of the images that end; the required words are copied once."""
    from torch.utils._python_dispatch import TorchDispatchMode

    reads = {"is_nonzero", "_local_scalar_dense", "item", "nonzero", "nonzero_numpy"}

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += func.overloadpacket.__name__ in reads
            return func(*args, **(kwargs or {}))

    m = tiny("adaptive")
    feats = torch.randn(5, 4, m.cfg.feature_dim)
    plain_step, steps = m.decoder.step, []
    m.decoder.step = lambda *a, **k: steps.append(1) or plain_step(*a, **k)
    for required in (None, [{5, 8}, None, {9}, {4}, {6, 7}]):
        steps.clear()
        Count.n = 0
        with Count():
            out = generate(m, feats, beam_size=3, required=required, also_unconstrained=required is not None)
        assert len(out if required is None else out[0]) == 5
        assert 0 < Count.n <= 2 * len(steps) + 5, (Count.n, len(steps))
