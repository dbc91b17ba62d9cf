"""What is installed: captioner --version, captioner info (text and JSON), and the model card shipped in the
package (the same text as docs/model-card.md, inside a built wheel, naming the shipped model's digest)."""
import json
import subprocess
import sys
import zipfile

import pytest

import captioner
from captioner import info, modelfile
from conftest import ROOT

needs_model = pytest.mark.skipif(not modelfile.DEFAULT_MODEL.is_file(), reason="no shipped model")


def run(*args):
    return subprocess.run([sys.executable, "-m", "captioner", *args], capture_output=True, text=True, timeout=120)


def pyproject_version():
    tomllib = pytest.importorskip("tomllib")   # Python 3.11+
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in meta["project"]["dynamic"] and "version" not in meta["project"]   # one home for it
    return meta["tool"]["setuptools"]["dynamic"]["version"]["attr"]


def test_version_prints_the_package_version():
    r = run("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"captioner {captioner.__version__}"
    assert pyproject_version() == "captioner.__version__"


@needs_model
def test_info_text_names_the_versions_digests_and_shows_the_card():
    r = run("info")
    assert r.returncode == 0, r.stderr
    mf = modelfile.read()
    assert f"captioner {captioner.__version__}" in r.stdout
    assert str(modelfile.DEFAULT_MODEL) in r.stdout
    assert mf.version["weights"] in r.stdout and mf.version["encoder"] in r.stdout
    assert "it describes this file" in r.stdout
    assert "## Bias, risks and limitations" in r.stdout and "Flickr8k" in r.stdout
    short = run("info", "--no-card")
    assert short.returncode == 0 and "## Uses" not in short.stdout and mf.version["weights"] in short.stdout


@needs_model
def test_info_json_is_one_object_with_the_card():
    r = run("info", "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    mf = modelfile.read()
    assert data["captioner"] == captioner.__version__
    assert data["versions"] == mf.version and data["shipped"] is True
    assert data["decoder"] == mf.config["decoder"] and data["vocabulary"] == len(mf.vocab)
    assert "step" in data["onnx_graphs"] and data["calibrated"] is True
    assert data["model_card"] == info.model_card()
    assert data["model_card_describes"] == mf.version["weights"]


def test_info_on_a_bad_model_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x80\x04not a model")
    r = run("info", "--model", str(bad))
    assert r.returncode == 2
    assert r.stderr.startswith(f"captioner: error: {bad}") and "Traceback" not in r.stderr


def test_the_card_in_docs_is_the_shipped_card():
    # one source: docs/model-card.md is a copy of the package's asset (cp src/captioner/assets/model_card.md docs/)
    assert (ROOT / "docs" / "model-card.md").read_text(encoding="utf-8") == info.model_card()


@needs_model
def test_the_card_describes_the_shipped_model():
    # replacing the shipped weights without revising the card fails here
    assert info.card_digest() == modelfile.read().version["weights"]


def test_the_card_has_the_model_card_sections_and_no_internal_history():
    card = info.model_card()
    for heading in ("## Model details", "## Uses", "### Direct use", "### Out-of-scope use",
                    "## Bias, risks and limitations", "## Training details", "### Training data",
                    "## Evaluation", "## How to get started"):
        assert heading + "\n" in card, heading
    for word in ("--gender-neutral", "--init", "research use", "0.212", "0.569"):
        assert word in card
    assert "issue " not in card.lower()


def test_a_built_wheel_carries_the_card(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                        "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "No module named" in r.stderr:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("captioner-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert z.read("captioner/assets/model_card.md").decode("utf-8") == info.model_card()
        meta = z.read(f"captioner-{captioner.__version__}.dist-info/METADATA").decode()
    assert f"Version: {captioner.__version__}\n" in meta


@pytest.mark.parametrize("command", ["caption", "export", "write-metadata", "train", "evaluate", "serve", "review",
                                     "app", "info"])
def test_help_texts_speak_plainly(command):
    r = run(command, "--help")
    if r.returncode == 2 and "needs PyTorch" in r.stderr:
        pytest.skip("train/evaluate help needs the [train] extra")
    assert r.returncode == 0, r.stderr
    assert "``" not in r.stdout and "issue " not in r.stdout.lower() and "session " not in r.stdout.lower()


@needs_model
def test_the_app_shows_the_card():
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "src" / "captioner" / "serve" / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert "About the model" in [e.label for e in at.expander]
    assert any(m.value.strip() == info.model_card().strip() for m in at.markdown)


def console_examples(text: str) -> list[tuple[list[str], str]]:
    """The ``$ captioner caption ...`` commands of a Markdown text's console blocks, each with the output shown."""
    out, fenced, cmd = [], False, None
    for line in text.splitlines():
        if line.startswith("```"):
            fenced, cmd = line == "```console", None
        elif fenced and line.startswith("$ captioner caption "):
            cmd = (line[2:].split(), [])
            out.append(cmd)
        elif fenced and cmd is not None:
            cmd[1].append(line)
    return [(c, "\n".join(lines) + "\n") for c, lines in out]


@needs_model
def test_the_readme_shows_real_output_of_the_bundled_examples():
    # each "$ captioner caption ..." of the README's console blocks prints exactly what is shown under it
    examples = console_examples((ROOT / "README.md").read_text())
    assert len(examples) >= 2
    for cmd, shown in examples:
        r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert r.stdout == shown, (cmd, r.stdout)
