"""The two wings: the inference wing imports and captions with torch made unimportable, and no
module of it imports the training wing (``training/``) or torch at module level."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "captioner"
ROOT = PKG.parents[1]
PHOTO = PKG / "examples" / "cat.jpg"

BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def inference_modules() -> list[str]:
    out = []
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = rel.parts
        if "training" in parts or parts[-1] == "__main__" or rel.as_posix() == "captioner/backends/torch":
            continue
        if rel.as_posix() == "captioner/serve/app":
            continue   # the [app] extra's Streamlit page: imported by `captioner app`, checked below by its AST
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def run_blocked(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def test_inference_wing_imports_and_captions_without_torch(tmp_path):
    mods = inference_modules()
    assert "captioner.api" in mods and "captioner.backends.onnx" in mods and "captioner.library.run" in mods
    code = f"""
import importlib, json, sys
for m in {mods!r}:
    importlib.import_module(m)
import captioner
c = captioner.load()
r = c.caption({str(PHOTO)!r})
print(json.dumps({{"backend": c.backend, "alt": r.alt_text, "torch": "torch" in sys.modules,
                  "attention": None if r.attention is None else list(r.attention.shape)}}))
"""
    p = run_blocked(code, {"CAPTIONER_CACHE": str(tmp_path)})
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["backend"] == "onnx" and not got["torch"]
    assert got["alt"] == "Image may show: Egyptian cat."
    assert got["attention"][1] == 49


def test_cli_captions_without_torch_and_says_what_needs_it(tmp_path):
    code = f"""
import sys
from captioner.cli import main
sys.exit(main(["caption", {str(PHOTO)!r}]))
"""
    p = run_blocked(code, {"CAPTIONER_CACHE": str(tmp_path)})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Egyptian cat" in p.stdout
    p = run_blocked(code.replace('"caption", ', '"caption", "--backend", "torch", '))
    assert p.returncode != 0 and "captioner[train]" in p.stderr and "Traceback" not in p.stderr
    p = run_blocked('import sys\nfrom captioner.cli import main\nsys.exit(main(["train", "--epochs", "1"]))')
    assert p.returncode == 2 and "captioner[train]" in p.stderr and "Traceback" not in p.stderr


def test_no_inference_module_imports_training_or_torch_at_module_level():
    bad = []
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG).as_posix()
        if rel.startswith("training/") or rel == "backends/torch.py":
            continue
        tree = ast.parse(p.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in ("torch", "torchvision", "timm") and id(node) in top:
                    bad.append(f"{rel}: imports {n}")
                if n.startswith("captioner.training") and not _lazy_bridge(rel, n):
                    bad.append(f"{rel}: imports {n}")
    assert not bad, bad


def _lazy_bridge(rel: str, name: str) -> bool:
    """The documented doors from inference into training, taken only where torch is installed and the
    user asked: exporting a checkpoint that has no graphs (backends/onnx.py), and the training commands
    of the CLI (``captioner train`` / ``evaluate``)."""
    return (rel, name) in {("backends/onnx.py", "captioner.training.export"), ("cli.py", "captioner.training")}


@pytest.mark.parametrize("decoder", ["attention", "plain", "updown", "adaptive"])
def test_exported_step_gives_the_torch_captions(tmp_path, decoder):
    """Every decoder type: the model file's ONNX graphs and the torch model caption alike."""
    torch = pytest.importorskip("torch")
    from captioner.backends.onnx import OnnxModel
    from captioner.search import generate
    from captioner.training import export
    from captioner.training.model import CaptionModel, ModelConfig
    from captioner.vocab import SPECIALS, Vocab

    torch.manual_seed(0)
    vocab = Vocab([*SPECIALS, *[f"w{i}" for i in range(40)]])
    cfg = ModelConfig(vocab_size=len(vocab), decoder=decoder, image_size=64, embed_dim=16, hidden_dim=24,
                      attention_dim=20, max_len=8, encoder="resnet50", feature_dim=2048)
    model = CaptionModel(cfg, pretrained_encoder=False).eval()
    path = tmp_path / "m.safetensors"
    export.write(path, model, vocab, {}, dtype=torch.float32)
    onnx_model = OnnxModel(path, threads=1)
    x = torch.randn(3, 3, 64, 64)
    grid_o = onnx_model.encode(x.numpy())
    with torch.inference_mode():
        grid_t = model.encoder(x)
    assert abs(grid_o - grid_t.numpy()).max() < 1e-3
    feats = grid_t.flatten(2).transpose(1, 2)
    if hasattr(model.decoder, "fuse_for_inference"):
        model.decoder.fuse_for_inference()
    with torch.inference_mode():
        want = generate(model, feats, 3, n_best=3)
    got = generate(onnx_model, feats.numpy(), 3, n_best=3)
    assert [[h.tokens for h in hs] for hs in got] == [[h.tokens for h in hs] for hs in want]
    for hs_o, hs_t in zip(got, want):
        for a, b in zip(hs_o, hs_t):
            assert abs(a.score - b.score) < 1e-4
            assert (a.attention is None) == (b.attention is None)
    # the int8 step (--precision int8): the same interface, scores near the fp32 ones
    q = generate(OnnxModel(path, threads=1, precision="int8"), feats.numpy(), 3)
    assert len(q) == 3 and all(hs and abs(hs[0].score - w[0].score) < 0.5 for hs, w in zip(q, want))


def test_shipped_model_is_one_versioned_file_both_back_ends_read():
    torch = pytest.importorskip("torch")
    from captioner import modelfile
    from captioner.training import checkpoint, export

    mf = modelfile.read()
    assert mf.path.stat().st_size <= 40_000_000
    assert set(mf.graphs) == {"encoder", "init", "step", "step_int8"} and mf.knowledge_info is not None
    model, _, _ = checkpoint.load_model()                  # the torch back-end reads the same tensors
    assert export.versions(model) == mf.version            # the version is the digest of these weights
    assert torch.is_tensor(next(model.parameters()))


def test_both_back_ends_give_the_same_answers_on_the_bundled_images():
    pytest.importorskip("torch")
    from captioner.api import Captioner

    photos = sorted(str(p) for p in (PKG / "examples").iterdir() if p.suffix in (".jpg", ".png"))
    a = Captioner(backend="onnx").caption(photos, n_best=3)
    b = Captioner(backend="torch", precision="fp32").caption(photos, n_best=3)
    for x, y in zip(a, b):
        assert (x.text, x.alt_text, x.in_domain, x.kind, x.guided) == (y.text, y.alt_text, y.in_domain, y.kind, y.guided)
        assert [t for t, _ in x.beams] == [t for t, _ in y.beams]
        assert [t.name for t in x.tags] == [t.name for t in y.tags]
        assert abs(x.confidence - y.confidence) < 1e-4 and abs(x.score - y.score) < 1e-4
        assert x.attention.shape == y.attention.shape and abs(x.attention - y.attention).max() < 1e-3
