"""What the model knows of its limits: the out-of-domain flag, guided captions, confidence and
alt text, with the shipped model on drawn and real images, and the parts on their own."""
import random

import pytest
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from captioner.knowledge import alttext
from captioner import modelfile
from captioner.training import checkpoint
from captioner.knowledge.confidence import Calibrator, expected_calibration_error, risk_coverage
from captioner.training.calibrate import fit_calibrator, per_image_quality
from captioner.search import generate
from captioner.knowledge.tags import Tag, caption_words, imagenet_classes, plural
from conftest import ROOT, SHARED, needs_shared

shipped = pytest.mark.skipif(not checkpoint.DEFAULT_MODEL.is_file(), reason="no shipped model")
PEOPLE_AND_DOGS = {"man", "men", "woman", "women", "boy", "boys", "girl", "girls", "person", "people", "child",
                   "children", "kid", "kids", "baby", "lady", "player", "dog", "dogs", "puppy"}
CAT = ROOT / "src" / "captioner" / "examples" / "cat.jpg"


def words(text):
    return set(text.lower().replace(".", " ").replace(",", " ").replace(":", " ").split())


def bar_chart(seed=0):
    rng = random.Random(seed)
    im = Image.new("RGB", (400, 300), "white")
    d = ImageDraw.Draw(im)
    d.line([40, 260, 380, 260], fill="black", width=2)
    d.line([40, 20, 40, 260], fill="black", width=2)
    for i in range(6):
        h = rng.randint(30, 220)
        d.rectangle([55 + i * 55, 260 - h, 95 + i * 55, 259], fill=(60, 110, 200))
        d.text((65 + i * 55, 266), f"Q{i + 1}", fill="black", font=ImageFont.load_default(size=12))
    d.text((150, 4), "Revenue by quarter", fill="black", font=ImageFont.load_default(size=14))
    return im


def settings_screenshot():
    im = Image.new("RGB", (480, 360), (246, 246, 248))
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=15)
    d.rectangle([0, 0, 480, 32], fill=(60, 90, 160))
    d.text((12, 8), "Settings", fill="white", font=font)
    for r, label in enumerate(["Wi-Fi", "Bluetooth", "Notifications", "Dark mode", "Location", "Backup"]):
        y = 50 + r * 48
        d.text((20, y), label, fill=(30, 30, 30), font=font)
        on = r % 2 == 0
        d.rounded_rectangle([400, y, 450, y + 22], 11, fill=(70, 160, 90) if on else (150, 150, 150))
        d.ellipse([(439 if on else 411) - 9, y + 2, (439 if on else 411) + 9, y + 20], fill="white")
        d.line([20, y + 34, 460, y + 34], fill=(200, 200, 200))
    return im


@pytest.fixture(scope="module")
def shipped_captioner():
    from captioner.api import Captioner

    return Captioner()


# ---------------------------------------------------------------- with the shipped model

@shipped
def test_knowledge_is_read_from_the_model_file_never_recomputed(monkeypatch):
    from captioner.training import calibrate
    from captioner.knowledge import domain
    from captioner.api import Captioner

    def refuse(*a, **k):
        raise AssertionError("statistics recomputed at start-up")

    monkeypatch.setattr(domain.DomainCheck, "fit", refuse)
    monkeypatch.setattr(domain.DomainCheck, "set_threshold", refuse)
    monkeypatch.setattr(calibrate, "fit_calibrator", refuse)
    monkeypatch.setattr(calibrate, "calibrate", refuse)
    cap = Captioner()
    stored, info = checkpoint.load_knowledge()
    assert cap.knowledge is not None and cap.knowledge.calibrator is not None
    assert cap.knowledge.domain.threshold == info["domain"]["threshold"]
    assert np.array_equal(cap.knowledge.domain.bank, stored["knowledge.domain.bank"].numpy())
    assert info["fitted_on"]["dev_images"] == 1000 and "test" not in str(info["fitted_on"])


@shipped
@pytest.mark.parametrize("name,image", [("chart", bar_chart()), ("screenshot", settings_screenshot())])
def test_drawn_chart_and_screenshot_are_flagged_and_alt_text_invents_no_one(shipped_captioner, name, image):
    c = shipped_captioner.caption(image)
    assert c.in_domain is False, (name, c.domain_distance)
    assert not words(c.alt_text) & PEOPLE_AND_DOGS, c.alt_text
    assert c.confidence < 0.3
    assert c.tags and all(0 <= t.prob <= 1 for t in c.tags)
    assert len(c.alt_text) <= alttext.MAX_CHARS


@shipped
def test_bundled_cat_alt_text_names_a_cat_and_no_person_or_dog(shipped_captioner):
    c = shipped_captioner.caption(str(CAT))
    assert "cat" in words(c.alt_text), c.alt_text
    assert not words(c.alt_text) & PEOPLE_AND_DOGS, c.alt_text
    assert c.tags[0].word == "cat"


@shipped
@needs_shared
def test_flickr8k_test_photos_are_in_domain_with_their_caption_as_alt_text(shipped_captioner):
    names = (SHARED / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()[:8]
    caps = shipped_captioner.caption([str(SHARED / "Images" / n) for n in names])
    assert sum(c.in_domain for c in caps) >= 7          # the threshold lets about 5 % through
    for c in caps:
        if c.in_domain and c.confidence >= alttext.ALT_MIN_CONFIDENCE:
            assert c.alt_text == alttext.sentence(c.text)
        assert 0 < c.confidence < 1


@shipped
def test_guided_decode_contains_its_required_word(shipped_captioner):
    cap = shipped_captioner
    from captioner.images import open_image

    x = np.stack([cap.preprocess(open_image(str(CAT))), cap.preprocess(bar_chart())])
    g = cap._grids(x)[0]
    feats = g.reshape(g.shape[0], g.shape[1], -1).transpose(0, 2, 1)
    v = cap.vocab
    plain = generate(cap.decoding, feats, 3)
    guided = generate(cap.decoding, feats, 3, required=[{v.stoi["cat"]}, None], n_best=3)
    assert all(v.stoi["cat"] in h.tokens for h in guided[0])
    assert guided[1][0].tokens == plain[1][0].tokens     # an image without a constraint is unchanged
    assert guided[0][0].score <= plain[0][0].score + 1e-6 or v.stoi["cat"] in plain[0][0].tokens


@shipped
def test_json_carries_every_field(shipped_captioner):
    d = shipped_captioner.caption(str(CAT)).to_dict()
    assert {"caption", "alt_text", "in_domain", "confidence", "tags", "guided"} <= set(d)
    assert d["tags"][0]["name"] and 0 <= d["tags"][0]["prob"] <= 1


# ---------------------------------------------------------------- the parts

def test_constraint_is_met_by_a_tiny_random_decoder():
    from captioner.training.model import CaptionModel, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=30, encoder="vgg16", feature_dim=512, embed_dim=8, hidden_dim=16,
                      attention_dim=8, dropout=0.0, max_len=8)
    model = CaptionModel(cfg, pretrained_encoder=False).eval()
    feats = torch.randn(4, 9, 512)
    req = [{17}, None, {5, 6}, {29}]
    out = generate(model, feats, 3, required=req)
    plain = generate(model, feats, 3)
    for r, hyps, p in zip(req, out, plain):
        if r is None:
            assert hyps[0].tokens == p[0].tokens
        elif hyps:                                        # empty: not met within max_len words
            assert set(hyps[0].tokens) & r
    assert any(out[i] for i in (0, 2, 3))


def test_class_words_follow_wordnet_and_the_vocabulary():
    from captioner.vocab import Vocab

    classes = imagenet_classes()
    assert len(classes) == 1000 and classes[285]["name"] == "Egyptian cat"
    v = Vocab(["<pad>", "<start>", "<end>", "<unk>", "cat", "cats", "coffee", "rocket", "dog"])
    ids = caption_words(v)
    assert ids[285] == (4, 5)                                 # Egyptian cat -> cat, cats
    assert ids[967] == (6,)                                   # espresso -> coffee
    assert ids[657] == (7,)                                   # missile -> rocket
    assert ids[207] == (8,)                                   # golden retriever -> dog
    assert plural("glass") == "glasses" and plural("puppy") == "puppies" and plural("toy") == "toys"


def test_alt_text_rules():
    tags = [Tag("espresso", 0.97, "coffee"), Tag("cup", 0.02, "cup")]
    assert alttext.compose("a dog runs on the grass", True, 0.8, tags) == "A dog runs on the grass."
    assert alttext.compose("a dog runs on the grass", True, 0.3, tags) == "Image may show: a dog runs on the grass."
    assert alttext.compose("a man is sitting", False, 0.1, tags) == "Image may show: espresso."
    assert alttext.compose("a man is sitting", False, 0.1, [Tag("web site", 0.4, None)]) == alttext.NO_DESCRIPTION
    assert alttext.compose("a dog", None, None, []) == "A dog."
    long = alttext.compose(" ".join(["word"] * 60), True, 0.9, [])
    assert len(long) <= alttext.MAX_CHARS and long.endswith("…")


def test_calibrator_recovers_a_logistic_law_and_is_calibrated():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 4, generator=g)
    true = torch.sigmoid(1.5 * x[:, 0] - 0.5 * x[:, 2])
    y = torch.rand(4000, generator=g) < true
    cal = fit_calibrator(x.numpy(), y.numpy())
    p = cal(x.numpy())
    assert np.abs(p - true.numpy()).mean() < 0.03
    assert expected_calibration_error(p, y.numpy()) < 0.03
    again = Calibrator.from_dict(cal.to_dict())
    assert np.allclose(again(x.numpy()), p)


def test_acceptability_and_risk_coverage():
    refs = [[["a", "dog", "runs", "on", "grass"], ["a", "dog", "on", "the", "grass"], ["dog", "running", "in", "grass"]],
            [["a", "man", "rides", "a", "bike"], ["a", "man", "on", "a", "bicycle"], ["man", "riding", "a", "bike"]]]
    model, human = per_image_quality([["a", "dog", "runs", "on", "the", "grass"], ["a", "cat", "sleeps"]], refs)
    assert model[0] >= human[0] and model[1] < human[1]
    rc = risk_coverage(np.array([0.9, 0.1]), model, steps=2)
    assert rc[0] == (0.5, float(model[0])) and rc[1][1] == pytest.approx(float(model.mean()))


def test_knowledge_round_trip_through_a_model_file(tmp_path):
    from captioner.knowledge.domain import DomainCheck
    from captioner.knowledge.bundle import Knowledge
    from captioner.training.model import CaptionModel, ModelConfig
    from captioner.knowledge.tags import Tagger
    from captioner.vocab import Vocab

    v = Vocab(["<pad>", "<start>", "<end>", "<unk>", "cat", "dog"])
    cfg = ModelConfig(vocab_size=len(v), encoder="vgg16", feature_dim=512, embed_dim=8, hidden_dim=16, attention_dim=8)
    path = tmp_path / "m.safetensors"
    checkpoint.save_model(path, CaptionModel(cfg, pretrained_encoder=False), v)
    assert checkpoint.load_knowledge(path) is None
    rng = np.random.default_rng(0)
    pooled = rng.random((50, 512), dtype=np.float32)
    dom = DomainCheck.fit(pooled, dims=8, k=3)
    dev = dom.distance(rng.random((20, 512), dtype=np.float32))
    dom.set_threshold(dev)
    kn = Knowledge(Tagger(rng.standard_normal((1000, 512), dtype=np.float32), np.zeros(1000, np.float32), v), dom,
                   dev, Calibrator(np.zeros(4), np.ones(4), np.array([1.0, 0, -1, 0]), 0.0))
    checkpoint.save_knowledge(path, *kn.to_file())
    model, vocab, _ = checkpoint.load_model(path)        # knowledge tensors do not disturb the weights
    back = Knowledge.from_file(*modelfile.read(path).knowledge(), vocab)
    q = rng.random((5, 512), dtype=np.float32)
    assert np.allclose(back.domain.distance(q), kn.domain.distance(q), atol=1e-3)   # the file stores fp32 here
    assert back.domain.threshold == pytest.approx(dom.threshold)
    far = np.zeros((1, 512), np.float32)
    far[0, 0] = 1.0                                      # a direction no training photo points in
    assert not bool(back.domain.in_domain(back.domain.distance(far))[0])
