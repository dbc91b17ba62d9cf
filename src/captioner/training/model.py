"""The captioning model: ``ModelConfig`` (every hyper-parameter, saved with the weights),
four LSTM decoders sharing one ``step()`` interface, and ``CaptionModel`` = encoder + decoder.

Decoders
  * ``attention`` - Show, Attend and Tell (Xu et al. 2015): soft attention over the feature
    grid, a sigmoid gate on the context (beta), and the doubly stochastic penalty
    sum_i (1 - sum_t alpha_ti)^2 that asks every region to be attended to at some point.
  * ``adaptive`` - adaptive attention with a visual sentinel (Lu et al. 2017): the model decides
    per word how much to look at the photo at all.
  * ``updown`` - the two-layer top-down attention LSTM of Anderson et al. 2018 on the grid.
  * ``plain`` - a Show and Tell style baseline: the pooled image is fed to the
    LSTM once at the start, then only words; no attention.

Experts (``training/adapt.py``): a model taught a new world keeps the decoders it started from in
``CaptionModel.experts`` (frozen, each with its own ``ModelConfig``; the same encoder feeds them all);
an image is captioned by the one whose domain it is nearest (``knowledge/bundle.py``).  ``decoder`` is
always the newest, expert 0.

``step(words, state, memory)`` advances every row of a batch by one word and returns
logits, the new state and the attention weights.  Memory (the image grid and its projected
keys) is kept once per image; rows are image-major groups of K (beams or samples).  Teacher forcing, greedy and beam search
(``search.py``) all call it, so there is one code path for training and inference.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from captioner.backends.fused import fused_tables
from captioner.training.encoders import Encoder, build_encoder


@dataclass
class ModelConfig:
    vocab_size: int
    decoder: str = "attention"          # attention | adaptive | updown | plain (`captioner train`: adaptive)
    encoder: str = "efficientnet_lite2"  # efficientnet_lite2 | resnet50 | vgg16
    image_size: int = 224
    feature_dim: int = 1280             # channels of the encoder grid
    embed_dim: int = 256
    hidden_dim: int = 512
    attention_dim: int = 512
    dropout: float = 0.5
    max_len: int = 30                   # longest caption generated, in words

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


class AttentionDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, H, A, E = cfg.feature_dim, cfg.hidden_dim, cfg.attention_dim, cfg.embed_dim
        self.embed = nn.Embedding(cfg.vocab_size, E)
        self.feat_att = nn.Linear(D, A)
        self.hid_att = nn.Linear(H, A)
        self.att_out = nn.Linear(A, 1)
        self.init_h = nn.Linear(D, H)
        self.init_c = nn.Linear(D, H)
        self.gate = nn.Linear(H, D)
        self.lstm = nn.LSTMCell(E + D, H)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(H, cfg.vocab_size)

    def init_state(self, feats: torch.Tensor):
        """feats [B, L, D] -> (state, memory). Memory holds what every step reuses."""
        mean = feats.mean(1)
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))
        memory = (feats, self.feat_att(feats))  # keys projected once, not per word
        return (h, c), memory

    def step(self, words, state, memory):
        """``memory`` holds one entry per image, ``state`` and ``words`` one row per caption; the
        rows are image-major groups of equal size (beams or samples of one image), so beams
        share their image's memory instead of each holding a copy of it."""
        feats, keys = memory                                   # [B, L, D], [B, L, A]
        h, c = state                                           # [B*K, H]
        B, L = keys.shape[:2]
        K = h.size(0) // B
        q = self.hid_att(h).view(B, K, 1, -1)
        e = self.att_out(torch.tanh(keys.unsqueeze(1) + q)).view(B * K, L)
        alpha = e.softmax(1)                                   # [B*K, L]
        # a batched matrix product, not (alpha * feats).sum(): no [B, K, L, D] temporary per word
        context = torch.bmm(alpha.view(B, K, L), feats).view(B * K, -1)
        context = torch.sigmoid(self.gate(h)) * context
        h, c = self.lstm(torch.cat([self.embed(words), context], 1), (h, c))
        return self.out(self.drop(h)), (h, c), alpha


class PlainDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, H = cfg.embed_dim, cfg.hidden_dim
        self.embed = nn.Embedding(cfg.vocab_size, E)
        self.img = nn.Linear(cfg.feature_dim, E)
        self.lstm = nn.LSTMCell(E, H)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(H, cfg.vocab_size)

    def init_state(self, feats):
        x = self.drop(torch.relu(self.img(feats.mean(1))))
        state = self.lstm(x)  # the image is the LSTM's first input, as in Show and Tell
        return state, None

    def step(self, words, state, memory):
        h, c = self.lstm(self.embed(words), state)
        return self.out(self.drop(h)), (h, c), None


def _per_row(x: torch.Tensor, rows: int) -> torch.Tensor:
    """A per-image tensor [B, ...] repeated for its K rows (image-major) -> [B*K, ...], as a view."""
    B = x.size(0)
    return x.unsqueeze(1).expand(B, rows // B, *x.shape[1:]).reshape(rows, *x.shape[1:])


class AdaptiveDecoder(nn.Module):
    """Adaptive attention with a visual sentinel (Lu et al. 2017, "Knowing When to Look").

    The LSTM runs first, on the word and the pooled image; attention then looks at the grid with the
    *new* hidden state as query, over the L regions plus a sentinel s_t = g_t * tanh(c_t) (what the
    language model already knows), so that function words ("a", "of") need not look at the photo.
    The word is predicted from (beta * s_t + sum_i alpha_i v_i) + h_t, beta being the sentinel's
    share.  ``step`` returns the L region weights (they sum to 1 - beta)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, H, A, E = cfg.feature_dim, cfg.hidden_dim, cfg.attention_dim, cfg.embed_dim
        self.embed = nn.Embedding(cfg.vocab_size, E)
        self.regions = nn.Linear(D, H)        # v_i = ReLU(W_a a_i), in the hidden state's space
        self.glob = nn.Linear(D, E)           # v_g = ReLU(W_b mean(a)), an LSTM input at every step
        self.init_h = nn.Linear(D, H)
        self.init_c = nn.Linear(D, H)
        self.lstm = nn.LSTMCell(2 * E, H)
        self.gate_x = nn.Linear(2 * E, H)     # the sentinel's gate g_t from the input ...
        self.gate_h = nn.Linear(H, H, bias=False)   # ... and the previous hidden state
        self.feat_att = nn.Linear(H, A)
        self.sent_att = nn.Linear(H, A)
        self.hid_att = nn.Linear(H, A)
        self.att_out = nn.Linear(A, 1)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(H, cfg.vocab_size)

    def init_state(self, feats: torch.Tensor):
        mean = feats.mean(1)
        v = self.drop(torch.relu(self.regions(feats)))                       # [B, L, H]
        vg = self.drop(torch.relu(self.glob(mean)))
        state = (torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)))
        if self._fused_ready():
            t = self._fused
            # the keys doubled once (tanh(u) = 2 sigmoid(2u) - 1) and the image's part of the LSTM
            # and gate inputs computed once per image instead of once per word and beam
            return state, (v, 2.0 * self.feat_att(v), torch.addmm(t["img_b"], vg, t["img_w"].t()))
        return state, (v, self.feat_att(v), vg)

    def fuse_for_inference(self) -> None:
        """Precompute two exact rewrites of ``step()`` for fp32 inference (eval mode):
          * the LSTM's and the sentinel gate's input is [embedding(word), v_g]: its word part
            becomes a lookup table (embedding x input weights, [V, 5H]) and its image part is computed
            once per image (``init_state``);
          * in the attention, tanh(u) = 2 sigmoid(2u) - 1 (fp32 tanh is several times slower than
            sigmoid on CPUs): the 2 folds into the keys once per image, and the -1 and the output
            bias shift every score of a softmax alike, so they drop out.
        The tables follow the weights they were made from; any change to those weights (training)
        switches the rewrite off until it is fused again."""
        with torch.no_grad():   # the tables of backends/fused.py, which the ONNX back-end makes too
            tables = fused_tables({k: v.detach() for k, v in self.named_parameters()})
            self._fused = {**{k: v.contiguous() for k, v in tables.items()}, "versions": self._weight_versions()}

    def _weight_versions(self):
        return tuple(p._version for p in self.parameters())

    def _fused_ready(self) -> bool:
        f = getattr(self, "_fused", None)
        return (f is not None and not self.training and isinstance(self.lstm, nn.LSTMCell)
                and f["versions"] == self._weight_versions())

    def _fused_step(self, words, state, memory):
        v, keys2, img = memory                                 # [B, L, H], [B, L, A] doubled, [B, 5H]
        t = self._fused
        h0, c0 = state
        N, H = h0.shape
        B, L = keys2.shape[:2]
        K = N // B
        pre = (t["word"][words].view(B, K, -1) + img.unsqueeze(1)).view(N, -1)   # all input products but h's
        gates = torch.addmm(pre[:, :4 * H], h0, self.lstm.weight_hh.t())
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        s = torch.sigmoid(pre[:, 4 * H:] + self.gate_h(h0)) * torch.tanh(c)
        q2 = 2.0 * self.hid_att(h)
        e = torch.sigmoid(keys2.unsqueeze(1) + q2.view(B, K, 1, -1)).matmul(t["att"]).view(N, L)
        e_s = torch.sigmoid(2.0 * self.sent_att(s) + q2).matmul(t["att"]).view(N, 1)
        w = torch.cat([e, e_s], 1).softmax(1)
        alpha, beta = w[:, :L], w[:, L:]
        context = torch.bmm(alpha.view(B, K, L), v).view(N, -1) + beta * s
        return self.out(context + h), (h, c), alpha

    def step(self, words, state, memory):
        if self._fused_ready():
            return self._fused_step(words, state, memory)
        v, keys, vg = memory                                   # [B, L, H], [B, L, A], [B, E]
        h0, c0 = state
        B, L = keys.shape[:2]
        K = h0.size(0) // B
        x = torch.cat([self.embed(words), _per_row(vg, h0.size(0))], 1)
        h, c = self.lstm(x, (h0, c0))
        s = torch.sigmoid(self.gate_x(x) + self.gate_h(h0)) * torch.tanh(c)   # the visual sentinel
        q = self.hid_att(h)
        e = self.att_out(torch.tanh(keys.unsqueeze(1) + q.view(B, K, 1, -1))).view(B * K, L)
        e_s = self.att_out(torch.tanh(self.sent_att(s) + q))                 # [B*K, 1]
        w = torch.cat([e, e_s], 1).softmax(1)
        alpha, beta = w[:, :L], w[:, L:]
        context = torch.bmm(alpha.view(B, K, L), v).view(B * K, -1) + beta * s
        return self.out(self.drop(context + h)), (h, c), alpha


class UpDownDecoder(nn.Module):
    """The top-down attention LSTM of Anderson et al. 2018 ("Up-Down"), on the grid's regions.

    Two LSTMs per word: the attention LSTM reads the language LSTM's last state, the pooled image and
    the word, and its state is the query of soft attention over the regions; the language LSTM reads
    the attended context and the attention LSTM's state and predicts the word.  The regions are first
    embedded into the hidden size (ReLU, dropout), as the common re-implementations do
    (``att_embed``): raw 1,280-d features into both LSTMs saturate their gates and train slowly."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, H, A, E = cfg.feature_dim, cfg.hidden_dim, cfg.attention_dim, cfg.embed_dim
        self.embed = nn.Embedding(cfg.vocab_size, E)
        self.regions = nn.Linear(D, H)
        self.att_lstm = nn.LSTMCell(H + H + E, H)
        self.lang_lstm = nn.LSTMCell(H + H, H)
        self.feat_att = nn.Linear(H, A)
        self.hid_att = nn.Linear(H, A)
        self.att_out = nn.Linear(A, 1)
        self.init_h = nn.Linear(D, 2 * H)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(H, cfg.vocab_size)

    def init_state(self, feats: torch.Tensor):
        v = self.drop(torch.relu(self.regions(feats)))                       # [B, L, H]
        h1, h2 = torch.tanh(self.init_h(feats.mean(1))).chunk(2, 1)
        zero = torch.zeros_like(h1)
        return (h1, zero, h2, zero), (v, self.feat_att(v), v.mean(1))

    def step(self, words, state, memory):
        v, keys, mean = memory                                 # [B, L, H], [B, L, A], [B, H]
        h1, c1, h2, c2 = state
        B, L = keys.shape[:2]
        K = h1.size(0) // B
        h1, c1 = self.att_lstm(torch.cat([h2, _per_row(mean, h1.size(0)), self.embed(words)], 1), (h1, c1))
        e = self.att_out(torch.tanh(keys.unsqueeze(1) + self.hid_att(h1).view(B, K, 1, -1))).view(B * K, L)
        alpha = e.softmax(1)
        context = torch.bmm(alpha.view(B, K, L), v).view(B * K, -1)
        h2, c2 = self.lang_lstm(torch.cat([context, h1], 1), (h2, c2))
        return self.out(self.drop(h2)), (h1, c1, h2, c2), alpha


DECODERS = {"attention": AttentionDecoder, "adaptive": AdaptiveDecoder, "updown": UpDownDecoder,
            "plain": PlainDecoder}


class CaptionModel(nn.Module):
    def __init__(self, cfg: ModelConfig, encoder: Encoder | None = None, pretrained_encoder: bool = True,
                 encoder_weights: str | None = None):
        super().__init__()
        if cfg.decoder not in DECODERS:
            raise ValueError(f"unknown decoder '{cfg.decoder}'; choose one of {', '.join(DECODERS)}")
        self.cfg = cfg
        self.encoder = encoder or build_encoder(cfg.encoder, pretrained=pretrained_encoder,
                                                weights_path=encoder_weights, image_size=cfg.image_size)
        if self.encoder.out_channels != cfg.feature_dim:
            raise ValueError(f"encoder {cfg.encoder} gives {self.encoder.out_channels} channels, "
                             f"config says feature_dim={cfg.feature_dim}")
        self.decoder = DECODERS[cfg.decoder](cfg)
        self.expert_cfgs: list[ModelConfig] = []      # the configs of ``experts`` (saved in the header)
        self.experts = nn.ModuleList()

    def add_expert(self, cfg: "ModelConfig", decoder: nn.Module | None = None) -> nn.Module:
        """Append a decoder (a new one of ``cfg``'s kind if not given) as the next expert -> it."""
        if cfg.decoder != self.cfg.decoder or cfg.feature_dim != self.cfg.feature_dim:
            raise ValueError(f"an expert must be a {self.cfg.decoder} decoder on {self.cfg.feature_dim} channels")
        decoder = decoder if decoder is not None else DECODERS[cfg.decoder](cfg)
        self.expert_cfgs.append(cfg)
        self.experts.append(decoder)
        return decoder

    @property
    def preprocess(self):
        return self.encoder.preprocess

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] -> feature grid as a sequence [B, L, D]."""
        return self.encoder(images).flatten(2).transpose(1, 2)

    def teacher_forced(self, feats: torch.Tensor, inputs: torch.Tensor, k: int = 1, sample_prob: float = 0.0):
        """Feed ``inputs`` [B*k, T] (rows image-major, ``k`` captions per image of ``feats``
        [B, L, D]) one word per step -> (logits [B*k, T, V], attention weights per step).

        ``sample_prob`` > 0 is scheduled sampling (Bengio et al. 2015): each input word after
        <start> is, with that probability, replaced by a word drawn from the model's own
        prediction at the previous step, so training sees the model's mistakes as generation
        does.  Padding stays padding."""
        state, memory = self.decoder.init_state(feats.float())
        if k > 1:  # each caption starts from its image's state; the memory stays one per image
            rows = torch.arange(feats.size(0), device=feats.device).repeat_interleave(k)
            state = tuple(s[rows] for s in state)
        logits, alphas = [], []
        for t in range(inputs.size(1)):
            words = inputs[:, t]
            if sample_prob > 0 and t > 0:
                swap = (torch.rand(words.shape, device=words.device) < sample_prob) & (words != 0)
                if bool(swap.any()):
                    drawn = torch.multinomial(logits[-1].detach().float().softmax(-1), 1).squeeze(1)
                    words = torch.where(swap, drawn, words)
            lg, state, alpha = self.decoder.step(words, state, memory)
            logits.append(lg)
            alphas.append(alpha)
        return torch.stack(logits, 1), alphas

    def forward(self, images=None, captions=None, feats=None, label_smoothing: float = 0.0,
                att_reg: float = 1.0, sample_prob: float = 0.0, loss_norm: tuple[int, int] | None = None):
        """Teacher-forced pass. ``captions`` [B, T] start with <start>, end with <end>, padded
        with 0.  Give ``images`` (end-to-end) or cached ``feats``.  Returns (logits, loss).
        ``sample_prob``: scheduled sampling (``teacher_forced``).  ``loss_norm`` = (target words,
        captions) of a whole batch of which these captions are a part (data parallel training):
        the loss is then this part's sum over that batch's counts instead of its own mean."""
        if feats is None:
            feats = self.encode(images)
        inputs, targets = captions[:, :-1], captions[:, 1:]
        logits, alphas = self.teacher_forced(feats, inputs, sample_prob=sample_prob)
        flat, gold = logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1)
        if loss_norm is None:
            loss = F.cross_entropy(flat, gold, ignore_index=0, label_smoothing=label_smoothing)
        else:
            loss = F.cross_entropy(flat, gold, ignore_index=0, label_smoothing=label_smoothing,
                                   reduction="sum") / loss_norm[0]
        if alphas[0] is not None and att_reg > 0:
            mask = (targets != 0).float().unsqueeze(2)                  # [B, T, 1]
            att = (torch.stack(alphas, 1).float() * mask).sum(1)       # [B, L]
            penalty = (1.0 - att) ** 2
            loss = loss + att_reg * (penalty.mean() if loss_norm is None
                                     else penalty.sum() / (loss_norm[1] * penalty.size(1)))
        return logits, loss
