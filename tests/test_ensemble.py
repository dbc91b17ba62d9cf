"""Ensembles: one beam search over several models' mean word log-probabilities."""
import numpy as np
import pytest
import torch

from captioner.training import checkpoint
from captioner.api import Captioner
from captioner.search import generate
from captioner.ensemble import Ensemble
from captioner.training.model import CaptionModel, ModelConfig
from test_model import VOCAB, tiny


def test_ensemble_of_one_model_twice_decodes_like_the_model():
    m = tiny()
    feats = torch.randn(3, 4, m.cfg.feature_dim)
    alone = generate(m, feats, beam_size=3, n_best=3)
    both = generate(Ensemble([m, m]), [feats, feats], beam_size=3, n_best=3)
    for a, b in zip(alone, both):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [round(h.score, 4) for h in a] == [round(h.score, 4) for h in b]
        assert np.allclose(a[0].attention, b[0].attention)


def test_ensemble_scores_are_the_mean_log_probability():
    """Greedy, one word: the ensemble picks the argmax of the mean of its members' log-probs."""
    a, b = tiny(), tiny()
    torch.manual_seed(1)
    for p in b.decoder.parameters():
        p.data.normal_(0, 0.5)
    fa, fb = torch.randn(2, 4, a.cfg.feature_dim), torch.randn(2, 9, b.cfg.feature_dim)  # grids may differ
    ens = Ensemble([a, b])
    state, memory = ens.decoder.init_state([fa, fb])
    words = torch.ones(2, dtype=torch.long)
    logp, _, alpha = ens.decoder.step(words, state, memory)
    want = []
    for m, f in ((a, fa), (b, fb)):
        s, mem = m.decoder.init_state(f)
        want.append(m.decoder.step(words, s, mem)[0].log_softmax(-1))
    assert torch.allclose(logp, (want[0] + want[1]) / 2, atol=1e-6)
    assert alpha.shape == (2, 4)           # attention of the first member
    hyps = generate(ens, [fa, fb], beam_size=2)
    assert all(len(h[0].tokens) <= a.cfg.max_len for h in hyps)


def test_captioner_ensemble_mixes_input_sizes_and_refuses_other_vocabularies(tmp_path):
    a = tiny()
    torch.manual_seed(2)
    cfg = ModelConfig(vocab_size=len(VOCAB), image_size=96, embed_dim=16, hidden_dim=24, attention_dim=20, max_len=8)
    b = CaptionModel(cfg, pretrained_encoder=False).eval()
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    checkpoint.save_model(pa, a, VOCAB, include_encoder=True)
    checkpoint.save_model(pb, b, VOCAB, include_encoder=True)
    cap = Captioner([pa, pb], backend="torch", precision="fp32")
    x = torch.randn(2, 3, 64, 64)
    grids = cap._grids(x)
    assert grids[0].shape[-1] != grids[1].shape[-1]     # each member at its own input size
    res = cap.caption_tensors(x)
    assert len(res) == 2 and all(isinstance(r.text, str) for r in res)

    other = VOCAB.itos[:-1] + ["blue"]
    from captioner.vocab import Vocab
    pc = tmp_path / "c.safetensors"
    checkpoint.save_model(pc, a, Vocab(other), include_encoder=True)
    with pytest.raises(ValueError, match="c.safetensors: its vocabulary differs"):
        Captioner([pa, pc], backend="torch", precision="fp32")
