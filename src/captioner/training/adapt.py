"""Teach a trained model a library's own world without making it forget its own:
``captioner train --data captions.csv --init [MODEL]`` (the shipped model when MODEL is left out).

    captioner export captions.jsonl --reviewed --out photos/reviewed.csv   # what a person approved
    captioner train --data photos/reviewed.csv --init --out runs/library    # -> runs/library/best.safetensors

What ``--init`` does (``train.py`` calls these; the defaults are ``train.RECIPES["adapt"]``):
  * **The starting decoder is kept, frozen, as an expert** (``keep_experts``), and a copy of it learns
    the new captions.  The model file then holds both (``CaptionModel.experts``), on the one frozen
    encoder; each image is captioned by the decoder whose world it belongs to, chosen by their domain
    checks (``knowledge/bundle.py``: the gate of Expert Gate, Aljundi et al. 2017).  So photos like
    the starting model's training photos get exactly its captions, without its training data.
  * **The vocabulary grows** (``grow_vocabulary``): words of the new training captions the model
    lacks, seen at least ``--min-count`` times, get new embedding and output rows; every old word
    keeps its id and its rows (so an earlier expert's ids are the first part of the new vocabulary).
  * **The encoder stays frozen**: the experts and the knowledge all read its features.
  * **Learning without Forgetting** (Li & Hoiem 2016), ``--distill W`` (off by default): the starting
    model captions every new training image once (``teacher_captions``),
    and each batch's loss adds W x the KL divergence, at ``--distill-temperature``, from its word
    distributions to the new decoder's along those captions (``distillation_loss``; ``stages.AdaptStage``).
    Measured on the Tux Paint stamps' dev split (docs/review.md): with the gate it is not needed to keep
    Flickr8k's world, and it costs the new world: dev CIDEr-D 0.553 against 0.589 without, and captions
    in the starting model's style for drawings ("a black and white dog is running through the grass" for
    a frog).  Alone on Flickr8k dev the distilled decoder keeps more (CIDEr-D 0.449 against 0.242): what
    the few photos the gate sends to the new decoder by mistake would get.
  * **The knowledge is recalibrated** (``calibrate.calibrate(start=...)``): the new decoder's domain
    check, threshold and confidence are fitted on the new data (one reference per image: see
    ``calibrate.SINGLE_REFERENCE_THRESHOLD``); the kept experts keep the starting model's.
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from captioner.search import generate
from captioner.vocab import Vocab


def keep_experts(model) -> None:
    """Keep the model's decoder (and the experts it already had) as frozen experts, before any change:
    the images of its own world will still be captioned by exactly it (the gate: ``knowledge/bundle.py``)."""
    import copy

    kept = [(copy.deepcopy(model.cfg), copy.deepcopy(model.decoder))] + list(zip(model.expert_cfgs, model.experts))
    model.expert_cfgs, model.experts = [], nn.ModuleList()
    for cfg, dec in kept:
        model.add_expert(cfg, dec.requires_grad_(False).eval())


def grow_vocabulary(model, vocab: Vocab, token_lists, min_count: int) -> tuple[Vocab, list[str]]:
    """Add the words of ``token_lists`` seen at least ``min_count`` times that ``vocab`` lacks ->
    (the larger vocabulary, the new words).  ``model``'s decoder gets a row per new word in its
    embedding and output layer; the old rows are copied unchanged.  A new word's embedding starts
    at the mean of the old words' (the position of a generic word, not noise), its output row at
    zero with the lowest old bias, so before training it is never preferred to an old word."""
    counts = Counter(t for toks in token_lists for t in toks)
    new = sorted((w for w, c in counts.items() if c >= min_count and w not in vocab.stoi),
                 key=lambda w: (-counts[w], w))
    if not new:
        return vocab, []
    dec = model.decoder
    old_embed, old_out = dec.embed, dec.out
    v_old, v_new = old_embed.num_embeddings, old_embed.num_embeddings + len(new)
    embed = nn.Embedding(v_new, old_embed.embedding_dim).to(old_embed.weight.device)
    out = nn.Linear(old_out.in_features, v_new).to(old_out.weight.device)
    with torch.no_grad():
        embed.weight[:v_old] = old_embed.weight
        embed.weight[v_old:] = old_embed.weight[4:].mean(0)       # the specials are not words
        out.weight[:v_old] = old_out.weight
        out.weight[v_old:] = 0.0
        out.bias[:v_old] = old_out.bias
        out.bias[v_old:] = old_out.bias[4:].min()
    dec.embed, dec.out = embed, out
    model.cfg.vocab_size = v_new
    return Vocab(vocab.itos + new), new


@torch.inference_mode()
def teacher_captions(teacher, feats, beam_size: int = 3, batch_size: int = 64, max_len: int = 30) -> list[list[int]]:
    """The teacher's caption of each row of ``feats`` (a tensor or a feature store's rows) as token
    ids with <start> and <end>, the targets of the distillation."""
    teacher.eval()
    dev = next(teacher.parameters()).device
    out = []
    for i in range(0, len(feats), batch_size):
        for hyps in generate(teacher, torch.as_tensor(feats[i:i + batch_size]).to(dev).float(), beam_size,
                             max_len=max_len):
            out.append([1, *[int(t) for t in hyps[0].tokens if int(t) not in (0, 1, 2)], 2])
    return out


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """KL(teacher || student) over the teacher's vocabulary (the student's first columns), at
    temperature T, times T squared (Hinton et al. 2015: gradients of the size of the hard loss),
    averaged over the real (non-padding) steps of ``targets``."""
    v = teacher_logits.size(-1)
    t = temperature
    log_p_student = F.log_softmax(student_logits[..., :v].float() / t, -1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, -1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)     # [B, T]
    mask = (targets != 0).float()
    return (kl * mask).sum() / mask.sum().clamp(min=1.0) * t * t
