"""Training end to end on a tiny synthetic dataset: both stages, checkpoints, curves, resume."""
import argparse
import json

import pytest
import torch

from captioner.training import checkpoint
from captioner.training.train import add_arguments, main, sample_prob


def run_args(data, out, cache, **over):
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    argv = ["--data", str(data), "--out", str(out), "--feature-cache", str(cache), "--image-size", "64",
            "--embed-dim", "16", "--hidden-dim", "32", "--attention-dim", "16", "--batch-size", "8",
            "--finetune-batch-size", "6", "--workers", "0", "--min-count", "1", "--max-len", "10",
            "--lr", "5e-3", "--dropout", "0.0", "--no-calibrate"]
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


def test_scheduled_sampling_ramps_up_and_is_logged(tiny_data, tmp_path):
    args = run_args(tiny_data, tmp_path / "run", tmp_path / "f.safetensors", epochs=3, finetune_epochs=1,
                    finetune_blocks=1, scheduled_sampling=0.25, scheduled_sampling_start=2,
                    scheduled_sampling_increase=0.1)
    assert [sample_prob(args, e) for e in range(1, 6)] == [0.0, 0.1, 0.2, 0.25, 0.25]
    history = main(args)
    assert [h["sample_prob"] for h in history] == [0.0, 0.1, 0.2, 0.25]


def test_runs_compared_in_one_figure(tmp_path):
    from captioner.training import plots
    hist = [{"epoch": 1, "stage": "frozen", "train_loss": 3.0, "dev": {"CIDEr-D": 0.3}},
            {"epoch": 2, "stage": "finetune", "train_loss": 2.9, "dev": {"CIDEr-D": 0.4}}]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "history.json").write_text(json.dumps(hist))
    out = tmp_path / "cmp.png"
    plots.main([str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "A", "B", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="no history.json"):
        plots.main([str(tmp_path), "--out", str(out)])


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


def test_scst_stage_follows_cross_entropy_and_keeps_the_best(tiny_data, tmp_path):
    out = tmp_path / "run"
    history = main(run_args(tiny_data, out, tmp_path / "f.safetensors", epochs=2, finetune_epochs=0,
                            scst_epochs=2, scst_lr=1e-3, scst_batch_size=4, scst_max_len=8))
    assert [h["stage"] for h in history] == ["frozen", "frozen", "scst", "scst"]
    assert all(0.0 <= h["train_reward"] for h in history[2:])
    assert (out / "best_xe.safetensors").is_file()            # the cross-entropy model, for the ablation
    assert (out / "features_final_encoder.npy").is_file() and (out / "features_final_encoder.json").is_file()
    best = max(h["dev"]["CIDEr-D"] for h in history)
    _, _, meta = checkpoint.load_model(out / "best.safetensors")
    assert meta["dev"]["CIDEr-D"] == best


def test_sampler_masks_words_after_end_and_rewards_follow_cider():
    import torch

    from captioner.training.model import ModelConfig
    from captioner.training.scst import reward_scorer, sample, to_words
    from captioner.vocab import Vocab

    vocab = Vocab(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "runs", "cat"])
    cfg = ModelConfig(vocab_size=len(vocab), encoder="efficientnet_lite2", feature_dim=8, embed_dim=8,
                      hidden_dim=16, attention_dim=8, max_len=6, dropout=0.0)
    from captioner.training.model import AttentionDecoder

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.decoder = AttentionDecoder(cfg)
    tokens, logp, mask = sample(model, torch.randn(3, 4, 8), n_samples=4, max_len=6)
    assert tokens.shape[0] == 12 and tokens.shape == logp.shape == mask.shape
    assert torch.isfinite(logp).all()
    for row, m in zip(tokens.tolist(), mask.tolist()):
        assert 1 not in row and 3 not in row                  # <start>, <unk> never drawn
        if 2 in row:                                          # after <end>: padding, not counted
            e = row.index(2)
            assert all(t == 0 for t in row[e + 1:]) and m[:e + 1] == [1.0] * (e + 1) and not any(m[e + 1:])
    logp.sum().backward()                                     # the graph is kept for the policy gradient
    scorer = reward_scorer([[["a", "dog", "runs"], ["a", "dog"]], [["a", "cat"], ["a", "cat", "runs"]]])
    good = scorer.score(to_words([4, 5, 6, 2], vocab), 0)
    assert good > scorer.score(to_words([4, 7, 2], vocab), 0)
    assert good > scorer.score(to_words([4, 5, 6], vocab), 0)   # no <end>: cut off, lower reward


def test_init_from_a_finetuned_model_never_reuses_the_pip_encoders_features(tiny_data, tmp_path, capsys):
    cache = tmp_path / "f.safetensors"
    main(run_args(tiny_data, tmp_path / "a", cache, epochs=1, finetune_epochs=1, finetune_blocks=1))
    capsys.readouterr()
    main(run_args(tiny_data, tmp_path / "b", cache, epochs=1, finetune_epochs=0,
                  init=tmp_path / "a" / "last.safetensors", init_mode="continue"))
    assert "does not match this run; recomputing" in capsys.readouterr().out


def test_a_training_run_ends_with_a_calibrated_best_model(tiny_data, tmp_path):
    from captioner.api import Captioner

    args = run_args(tiny_data, tmp_path / "run", tmp_path / "f.safetensors", epochs=2, finetune_epochs=0)
    args.calibrate = True                       # the default of `captioner train`
    main(args)
    stored = checkpoint.load_knowledge(tmp_path / "run" / "best.safetensors")
    assert stored is not None
    tensors, info = stored
    assert info["fitted_on"]["train_images"] == 12 and info["fitted_on"]["dev_images"] == 3
    assert tensors["knowledge.domain.bank"].shape == (12, 12)   # 64 projected dimensions at most, 12 images
    c = Captioner(tmp_path / "run" / "best.safetensors").caption(str(tiny_data / "Images" / "red_5.jpg"))
    assert isinstance(c.in_domain, bool) and 0 <= c.confidence <= 1 and c.tags and c.alt_text


def test_train_and_evaluate_on_an_own_jsonl_without_split(tmp_path):
    """Your own captions: a JSON-lines file of image,caption, the split assigned by hash and
    written to the run folder, then scored by `captioner evaluate --data`."""
    import shutil

    from captioner.api import Captioner
    from captioner.training.evaluate import evaluate
    from conftest import COLOURS, WORDS, make_dataset

    make_dataset(tmp_path / "tiny", n_per_colour=12)
    rows = []
    for p in sorted((tmp_path / "tiny" / "Images").glob("*.jpg")):
        (tmp_path / "own" / "pics").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, tmp_path / "own" / "pics" / p.name)
        colour = p.name.split("_")[0]
        rows += [json.dumps({"image": f"pics/{p.name}", "caption": WORDS[colour]}),
                 json.dumps({"image": f"pics/{p.name}", "caption": f"a {colour} picture"})]
    data = tmp_path / "own" / "captions.jsonl"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    main(run_args(data, out, tmp_path / "f.safetensors", epochs=2, finetune_epochs=0))
    split = json.loads((out / "split.json").read_text())
    assert len(split) == 12 * len(COLOURS) and set(split.values()) <= {"train", "dev", "test"}
    cap = Captioner(out / "best.safetensors", knowledge=False)
    scores, captions = evaluate(cap, str(data), "dev", with_meteor=False)
    assert scores["images"] == sum(v == "dev" for v in split.values()) and all(k.startswith("pics/") for k in captions)


@pytest.mark.parametrize("decoder", ["adaptive", "updown"])
def test_every_stage_resume_and_the_product_path_for_each_decoder(tiny_data, tmp_path, decoder):
    """Frozen, fine-tuning and SCST epochs, --resume, then the user-facing path: calibration, guided
    (constrained) captions, attention maps, and an ensemble with the attention decoder."""
    from captioner.api import Captioner
    from captioner.search import generate
    from captioner.images import open_image

    cache = tmp_path / "f.npy"
    kw = dict(decoder=decoder, finetune_blocks=1, patience=9, scst_lr=1e-3, scst_batch_size=4, scst_max_len=8)
    args = run_args(tiny_data, tmp_path / "a", cache, epochs=2, finetune_epochs=1, scst_epochs=1, **kw)
    args.calibrate = True                       # the default of `captioner train`
    full = main(args)
    assert [h["stage"] for h in full] == ["frozen", "frozen", "finetune", "scst"]
    main(run_args(tiny_data, tmp_path / "b", cache, epochs=2, finetune_epochs=0, scst_epochs=0, **kw))
    resumed = main(run_args(tiny_data, tmp_path / "b", cache, epochs=2, finetune_epochs=1, scst_epochs=1,
                            resume=True, **kw))
    for a, b in zip(full, resumed):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["dev"] == pytest.approx(b["dev"], rel=1e-4)
    best = tmp_path / "a" / "best.safetensors"
    model, vocab, _ = checkpoint.load_model(best)
    assert model.cfg.decoder == decoder
    cap = Captioner(best, backend="torch")
    assert cap.knowledge is not None
    photo = tiny_data / "Images" / "red_5.jpg"
    res = cap.caption(photo)
    assert res.text and res.alt_text and res.attention.shape == (len(res.words), res.grid ** 2)
    # guided decoding: the constrained search on this decoder's step() puts the required word in
    # the default back-end (ONNX Runtime) exports this training checkpoint on first load and agrees
    assert Captioner(best).caption(photo).text == res.text
    feats = model.eval().encode(torch.from_numpy(cap.preprocess(open_image(photo)))[None])
    word = vocab.stoi["green"]
    _, guided = generate(model, feats, 3, required=[{word}], also_unconstrained=True)
    assert guided[0] and word in guided[0][0].tokens
    # an ensemble with an attention-decoder model trained on the same vocabulary
    main(run_args(tiny_data, tmp_path / "c", cache, epochs=1, finetune_epochs=0, decoder="attention"))
    both = Captioner([best, tmp_path / "c" / "best.safetensors"], backend="torch", knowledge=False)
    assert both.caption(photo).text


def test_flip_mirrors_the_photo_and_swaps_left_and_right(tiny_data, tmp_path):
    import torch

    from captioner.training.data import load_dataset
    from captioner.training.encoders import Preprocess
    from captioner.training.stages import finetune_loader, mirror_caption
    from captioner.vocab import Vocab

    vocab = Vocab(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "left", "right", "turns"])
    ids = vocab.encode("a dog turns left a right".split())
    assert vocab.decode(mirror_caption(ids, vocab)) == "a dog turns right a left".split()
    from PIL import Image

    ds = load_dataset(tiny_data)
    names = ds.images("train")[:4]
    for n in names:   # a left half unlike the right one, so that a mirror image differs
        im = Image.new("RGB", (64, 64), (200, 30, 30))
        im.paste((30, 30, 200), (0, 0, 20, 64))
        im.save(ds.image_dir / n)
    pre = Preprocess(64)
    for p, flipped in ((0.0, False), (1.0, True)):
        args = run_args(tiny_data, tmp_path / "r", tmp_path / "f.npy", flip=p, finetune_batch_size=4)
        x, _ = next(iter(finetune_loader(ds, names, vocab, pre, args, torch.Generator().manual_seed(0))))
        args0 = run_args(tiny_data, tmp_path / "r", tmp_path / "f.npy", flip=0.0, finetune_batch_size=4)
        x0, _ = next(iter(finetune_loader(ds, names, vocab, pre, args0, torch.Generator().manual_seed(0))))
        assert torch.equal(x, x0.flip(-1)) == flipped and torch.equal(x, x0) == (not flipped)


@pytest.mark.parametrize("per_colour", [12, 8])
def test_one_caption_per_image_trains_and_calibrates(tmp_path, per_colour):
    """A library's own captions - one per photo - train to the end and calibrate ("acceptable" against a
    single reference: calibrate.SINGLE_REFERENCE_THRESHOLD), no ZeroDivisionError; with a single dev
    photo (8 per colour) no confidence can be fitted and none is made up."""
    import shutil

    from captioner.api import Captioner
    from captioner.training.calibrate import SINGLE_REFERENCE_THRESHOLD, per_image_quality
    from conftest import WORDS, make_dataset

    model_q, human_q = per_image_quality([["a", "red", "square"], ["a", "blue", "sky"]],
                                         [[["a", "red", "square"]], [["a", "green", "field"]]])
    assert model_q[0] > SINGLE_REFERENCE_THRESHOLD > model_q[1] and (human_q == SINGLE_REFERENCE_THRESHOLD).all()
    make_dataset(tmp_path / "tiny", n_per_colour=per_colour)
    (tmp_path / "own" / "pics").mkdir(parents=True)
    lines = ["image,caption"]
    for p in sorted((tmp_path / "tiny" / "Images").glob("*.jpg")):
        shutil.copy(p, tmp_path / "own" / "pics" / p.name)
        lines.append(f"pics/{p.name},{WORDS[p.name.split('_')[0]]}")
    data = tmp_path / "own" / "captions.csv"
    data.write_text("\n".join(lines) + "\n")
    args = run_args(data, tmp_path / "run", tmp_path / "f.safetensors", epochs=2, finetune_epochs=0)
    args.calibrate = True
    main(args)
    _, info = checkpoint.load_knowledge(tmp_path / "run" / "best.safetensors")
    assert 0 <= info["fitted_on"]["dev_acceptable"] <= 1
    c = Captioner(tmp_path / "run" / "best.safetensors").caption(str(tmp_path / "own" / "pics" / "red_0.jpg"))
    assert isinstance(c.in_domain, bool) and c.tags and c.alt_text
    if info["fitted_on"]["dev_images"] >= 2 and 0 < info["fitted_on"]["dev_acceptable"] < 1:
        assert info["calibrator"] is not None and 0 <= c.confidence <= 1
    else:   # the domain check and tags are stored, no confidence is made up
        assert info["calibrator"] is None and info["fitted_on"]["dev_ece"] is None and c.confidence is None


def test_init_adapts_with_experts_a_grown_vocabulary_and_recalibration(tiny_data, tmp_path, capsys):
    """--init on a library's own captions (one per image, new words): the starting decoder is kept as
    an expert, the vocabulary grows with the old rows kept, LwF distils from the starting model, and
    the knowledge has one part per decoder; both back-ends route each image to one of them."""
    from captioner.api import Captioner
    from captioner.training.adapt import distillation_loss, grow_vocabulary
    from captioner.training.calibrate import calibrate

    main(run_args(tiny_data, tmp_path / "a", tmp_path / "f.safetensors", epochs=2, finetune_epochs=0))
    calibrate(tmp_path / "a" / "best.safetensors", str(tiny_data), log=lambda *_: None)
    words = {"red": "a crimson tile glowing", "blue": "a cobalt tile glowing", "green": "a jade tile glowing"}
    split = {"5": "test", "4": "dev"}
    rows = ["image,caption,split"] + [f"Images/{p.name},{words[p.stem.split('_')[0]]},{split.get(p.stem[-1], 'train')}"
                                      for p in sorted((tiny_data / "Images").glob("*.jpg"))]
    (tiny_data / "library.csv").write_text("\n".join(rows) + "\n")

    old, vocab, _ = checkpoint.load_model(tmp_path / "a" / "best.safetensors")
    emb, out_w = old.decoder.embed.weight.clone(), old.decoder.out.weight.clone()
    grown, new = grow_vocabulary(old, vocab, [w.split() for w in words.values()], min_count=1)
    assert set(new) == {"crimson", "tile", "glowing", "cobalt", "jade"} - set(vocab.stoi)
    assert grown.itos[:len(vocab)] == vocab.itos and old.cfg.vocab_size == len(grown)
    assert torch.equal(old.decoder.embed.weight[:len(vocab)], emb)
    assert torch.equal(old.decoder.out.weight[:len(vocab)], out_w)
    logits = torch.randn(2, 3, len(vocab))
    assert distillation_loss(logits, logits, torch.ones(2, 3, dtype=torch.long), 2.0).abs() < 1e-5

    capsys.readouterr()
    with pytest.raises(SystemExit, match="encoder frozen"):
        main(run_args(tiny_data / "library.csv", tmp_path / "x", tmp_path / "g.safetensors", epochs=1,
                      finetune_epochs=1, init=tmp_path / "a" / "best.safetensors"))
    args = run_args(tiny_data / "library.csv", tmp_path / "b", tmp_path / "g.safetensors", epochs=2,
                    init=tmp_path / "a" / "best.safetensors", distill=1.0)
    args.calibrate = True
    history = main(args)
    assert [h["stage"] for h in history] == ["adapt", "adapt"] and history[0]["train_distill"] >= 0
    printed = capsys.readouterr().out
    assert "1 decoder(s) kept as experts" in printed and "crimson" in printed
    model, v2, _ = checkpoint.load_model(tmp_path / "b" / "best.safetensors")
    assert {"crimson", "cobalt", "jade"} <= set(v2.stoi) and v2.itos[:len(vocab)] == vocab.itos
    assert len(model.experts) == 1 and model.expert_cfgs[0].vocab_size == len(vocab)
    for k, v in old.decoder.state_dict().items():           # the expert is the starting decoder, unchanged
        if not k.startswith(("embed", "out")):
            assert torch.equal(model.experts[0].state_dict()[k], v), k
    _, info = checkpoint.load_knowledge(tmp_path / "b" / "best.safetensors")
    assert len(info["experts"]) == 1 and info["fitted_on"]["adapted_from"].endswith("best.safetensors")
    images = sorted((tiny_data / "Images").glob("*.jpg"))
    caps = {}
    for backend in ("onnx", "torch"):
        c = Captioner(tmp_path / "b" / "best.safetensors", backend=backend)
        assert len(c.experts) == 2
        caps[backend] = [r.text for _, r in c.caption_paths(images)]
    assert caps["onnx"] == caps["torch"]


def test_a_run_trains_alike_whether_it_computes_its_features_or_reads_them(tiny_data, tmp_path):
    """Computing features draws from torch's global generator (a DataLoader does): with dropout on, a run
    that computes them and one that reads them from the cache must still train identically."""
    cache = tmp_path / "f.safetensors"
    ha = main(run_args(tiny_data, tmp_path / "a", cache, epochs=2, finetune_epochs=0, dropout=0.5))  # computes
    hb = main(run_args(tiny_data, tmp_path / "b", cache, epochs=2, finetune_epochs=0, dropout=0.5))  # reads
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
