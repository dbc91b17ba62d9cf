"""Self-critical sequence training (SCST, Rennie et al. 2017): after cross-entropy training,
optimise CIDEr-D directly.

For every training image the model proposes ``n_samples`` captions, either the beams of a
beam search (``candidates="beam"``, as in M2 Transformer; the default) or multinomial samples
(``"sample"``, as in Rennie et al.), each is scored with CIDEr-D against that image's
references, and the log-probability of each candidate is pushed up or down by how much it
beats the mean score of the image's *other* candidates (the baseline of Luo 2020, which needs
no extra greedy pass).  This trains on the quantity the model is selected and reported on,
decoding freely as at inference.

The encoder stays fixed here (its features are computed once), so an epoch costs decoder
time only.  Run as the last stage of ``captioner train`` (``--scst-epochs``).  On Flickr8k it
did not beat cross-entropy training (README): the 6,000 training images are already fit
(beam captions score CIDEr-D ~1.0 on them vs ~0.52 on dev), so the reward mostly teaches
memorisation.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from captioner.search import NEVER_GENERATED, generate
from captioner.training.distributed import Dist
from captioner.training.metrics import CiderD

END_TOKEN = "<end>"  # scored as a word, so that a caption cut off mid-phrase loses reward


def sample(model, feats: torch.Tensor, n_samples: int, max_len: int, start: int = 1, end: int = 2):
    """Draw ``n_samples`` captions per image by multinomial sampling, keeping the graph.

    -> (tokens [B*n, T] with 0 after <end>, log-probabilities [B*n, T] of the drawn words,
    mask [B*n, T] of the words that count (up to and including <end>))."""
    dec = model.decoder
    state, memory = dec.init_state(feats.float())
    rows = torch.arange(feats.size(0), device=feats.device).repeat_interleave(n_samples)
    state = tuple(s[rows] for s in state)  # memory stays one entry per image (model.py)
    banned = torch.tensor(NEVER_GENERATED, device=feats.device)
    words = torch.full((rows.numel(),), start, dtype=torch.long, device=feats.device)
    done = torch.zeros(rows.numel(), dtype=torch.bool, device=feats.device)
    tokens, logps, masks = [], [], []
    for _ in range(max_len + 1):
        logits, state, _ = dec.step(words, state, memory)
        logp = logits.index_fill(1, banned, float("-inf")).log_softmax(-1)
        with torch.no_grad():
            w = torch.multinomial(logp.exp(), 1).squeeze(1)
        w = w.masked_fill(done, 0)
        masks.append(~done)
        # finished rows drew <pad>, whose log-probability is -inf: zero it rather than mask it
        # later, since -inf * 0 would be NaN
        logps.append(logp.gather(1, w.unsqueeze(1)).squeeze(1).masked_fill(done, 0.0))
        tokens.append(w)
        done = done | (w == end)
        words = w
        if bool(done.all()):
            break
    return torch.stack(tokens, 1), torch.stack(logps, 1), torch.stack(masks, 1).float()


def beam_candidates(model, feats: torch.Tensor, k: int, max_len: int, start: int = 1, end: int = 2):
    """The ``k`` beams of a beam search (no gradient), then their log-probabilities re-computed
    with the graph by one teacher-forced pass -> (tokens, log-probabilities, mask) as ``sample``."""
    with torch.no_grad():
        hyps = generate(model, feats.float(), k, max_len=max_len, n_best=k)   # cached features may be fp16
    seqs = [h.tokens + [end] for hs in hyps for h in hs]
    T = max(len(s) for s in seqs)
    tokens = torch.zeros(len(seqs), T, dtype=torch.long, device=feats.device)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s)
    inputs = torch.cat([torch.full_like(tokens[:, :1], start), tokens[:, :-1]], 1)
    logits, _ = model.teacher_forced(feats, inputs, k)
    logps = logits.log_softmax(-1).gather(2, tokens.unsqueeze(2)).squeeze(2)
    mask = (tokens != 0).float()
    return tokens, logps * mask, mask


def to_words(ids: list[int], vocab) -> list[str]:
    """Token ids -> words for the reward, with <end> kept as a word when it was emitted."""
    words = vocab.decode(ids)
    return words + [END_TOKEN] if vocab.end in ids else words


def reward_scorer(refs: list[list[list[str]]]) -> CiderD:
    """CIDEr-D with document frequencies over the training references, each ending in <end>."""
    return CiderD([[r + [END_TOKEN] for r in rs] for rs in refs])


def scst_one_epoch(model, feats, scorer: CiderD, vocab, optimizer, params,
                   batch_size: int = 32, n_samples: int = 5, max_len: int = 20, clip: float = 5.0,
                   generator: torch.Generator | None = None, desc="scst", progress=True,
                   candidates: str = "beam", dist=None) -> dict:
    """One pass over ``feats`` (row i belongs to reference set i of ``scorer``).
    Returns the mean sampled reward and loss (in data-parallel runs the reward of the whole batch,
    the loss this rank's part of it, as ``stages.train_one_epoch``).

    In data-parallel training (``dist``: ``distributed.Dist`` with several ranks) every rank draws
    the same order, proposes captions for its share of each global batch, and normalises its loss by
    the whole batch's word count; the gradients, summed over the ranks, are then those of one
    process on the whole batch.  (No DDP wrapper: beam search and sampling do not go through
    ``forward``.)"""
    dist = dist or Dist(torch.device("cpu"))
    device = next(model.parameters()).device
    # beam candidates come from the policy used at inference (no dropout); samples from the training one
    model.train(candidates == "sample")
    order = torch.randperm(feats.size(0), generator=generator)
    total_r = total_loss = 0.0
    n = 0
    bar = tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress or not dist.is_main,
               mininterval=5)
    for i in bar:
        idx, weight = dist.share(order[i:i + batch_size]), 1.0
        if idx.numel() == 0:   # a rank left without images still steps, so that the all-reduce meets
            idx, weight = order[i:i + 1], 0.0
        f = feats[idx].to(device)
        if candidates == "beam":
            tokens, logp, mask = beam_candidates(model, f, n_samples, max_len)
        else:
            tokens, logp, mask = sample(model, f, n_samples, max_len)
        ids = tokens.tolist()
        rewards = torch.tensor([scorer.score(to_words(ids[j], vocab), int(idx[j // n_samples]))
                                for j in range(len(ids))]).view(-1, n_samples)
        # baseline: the mean reward of the other samples of the same image
        baseline = (rewards.sum(1, keepdim=True) - rewards) / (n_samples - 1)
        adv = (rewards - baseline).view(-1, 1).to(logp.device)
        words = dist.sum(float(mask.sum()) * weight)   # the whole batch's
        loss = -(adv * logp * mask).sum() * weight / words
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dist.sum_grads(params)
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if dist.distributed:
            total_r += dist.sum(float(rewards.sum()) * weight) / dist.sum(rewards.numel() * weight)
        else:
            total_r += float(rewards.mean())
        total_loss += loss.item()   # this rank's part: the ranks' parts sum to the batch's loss
        n += 1
        bar.set_postfix(reward=f"{total_r / n:.3f}", refresh=False)
    return {"reward": total_r / max(n, 1), "loss": total_loss / max(n, 1)}
