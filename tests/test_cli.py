"""The command line end to end, as a user runs it, on real photos with the shipped model."""
import json
import shutil
import subprocess
import sys

import pytest

from captioner.training.checkpoint import DEFAULT_MODEL
from conftest import SHARED, needs_shared

pytestmark = [needs_shared, pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model")]


def run(*args):
    return subprocess.run([sys.executable, "-m", "captioner", *args], capture_output=True, text=True, timeout=300)


def originals(n):
    return sorted((SHARED / "originals").glob("*.jpg"))[:n]


def test_caption_one_photo_prints_a_sentence():
    r = run("caption", str(originals(1)[0]))
    assert r.returncode == 0, r.stderr
    words = r.stdout.strip().split()
    assert 3 <= len(words) <= 30 and "\t" not in r.stdout
    assert r.stdout.count("\n") == 1


def test_folder_glob_jsonl_and_bad_inputs(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in originals(3):
        shutil.copy(p, imgs / p.name)
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    r = run("caption", str(imgs), str(tmp_path / "*.png"), str(tmp_path / "notes.jpg"),
            str(tmp_path / "missing.jpg"), "--format", "jsonl", "--beam-size", "2", "--n-best", "2")
    assert r.returncode == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 6
    good = [x for x in rows if "caption" in x]
    bad = {x["image"]: x["error"] for x in rows if "error" in x}
    assert len(good) == 3 and all(len(x["beams"]) == 2 and x["caption"] for x in good)
    assert set(bad) == {str(tmp_path / "empty.png"), str(tmp_path / "notes.jpg"), str(tmp_path / "missing.jpg")}
    assert "empty file" in bad[str(tmp_path / "empty.png")]
    assert "not an image" in bad[str(tmp_path / "notes.jpg")]
    assert "no such file" in bad[str(tmp_path / "missing.jpg")]
    assert "Traceback" not in r.stderr


def test_text_mode_errors_are_one_line_and_others_still_captioned(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    good = originals(2)
    r = run("caption", str(good[0]), str(tmp_path / "bad.jpg"), str(good[1]), "--attention-dir", str(tmp_path / "att"))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [str(good[0]), str(good[1])]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "bad.jpg" in err[0] and err[0].startswith("captioner: error:")
    assert len(list((tmp_path / "att").glob("*.png"))) == 2


def test_help_on_every_command():
    for cmd in ([], ["caption"], ["train"], ["evaluate"]):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "usage: captioner" in r.stdout


@pytest.mark.parametrize("flags", [["--batch-size", "-3"], ["--batch-size", "0", "--output", "o.jsonl"],
                                   ["--beam-size", "0"], ["--n-best", "0"], ["--processes", "-1"],
                                   ["--threads", "two"], ["--no-repeat-ngram", "-1"]])
def test_a_bad_number_is_named_before_anything_runs(flags, tmp_path):
    """A count out of range is refused by the flag that took it (before: a batch size of -3 captioned
    nothing and exited 0; a beam size of 0 ended in a traceback)."""
    r = subprocess.run([sys.executable, "-m", "captioner", "caption", str(originals(1)[0]), *flags],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    assert f"error: argument {flags[0]}: '{flags[1]}': give a whole number" in r.stderr, r.stderr
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("args", [["serve", "--port", "70000"], ["serve", "--max-upload-mb", "-1"],
                                  ["serve", "--processes", "-2"], ["review", "r.jsonl", "--port", "-5"],
                                  ["app", "--port", "99999"]])
def test_the_servers_name_a_bad_port_or_size_before_they_start(args, tmp_path):
    """Before, a port out of range ended in a traceback from the socket, and a negative upload limit
    started a server that refused every upload."""
    r = subprocess.run([sys.executable, "-m", "captioner", *args], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"error: argument {args[-2]}: '{args[-1]}': give a " in r.stderr, r.stderr


def test_the_python_api_names_a_bad_number():
    import captioner

    with pytest.raises(ValueError, match="beam_size 0: give a whole number, 1 or more"):
        captioner.Captioner(beam_size=0)
    model = captioner.load()
    with pytest.raises(ValueError, match="batch_size -3"):
        list(model.caption_paths(originals(2), batch_size=-3))
    with pytest.raises(ValueError, match="beam_size -1"):
        model.caption(originals(1)[0], beam_size=-1)


def test_python_api_on_pil_paths_and_batches():
    from PIL import Image

    import captioner
    model, preprocess = captioner.load(with_preprocess=True)
    paths = originals(2)
    one = model.caption(paths[0])
    many = model.caption([Image.open(paths[0]), paths[1]])
    assert one.text == many[0].text and len(many) == 2
    assert preprocess(Image.open(paths[0])).shape == (3, model.model.cfg.image_size, model.model.cfg.image_size)
    assert one.attention is not None and one.attention.shape[0] == len(one.words)
    with pytest.raises(captioner.ImageError, match="no such file"):
        model.caption(SHARED / "nope.jpg")
    assert model.caption([]) == []                    # nothing in, nothing out (before: a numpy error)
    with pytest.raises(TypeError, match="give a path, a file object or a PIL image, not int"):
        model.caption(123)


def test_a_large_jpeg_gets_one_caption_by_every_way_in_and_its_text_is_read_in_full(tmp_path, monkeypatch):
    """A photo of 2,000 pixels decodes at half its size for the model whether it comes as a path, in a list
    of paths or as uploaded bytes (one caption for all three), and the text reader still gets every pixel."""
    from PIL import Image

    import captioner

    path = tmp_path / "big.jpg"
    Image.open(originals(1)[0]).resize((2000, 1332), Image.BICUBIC).save(path, quality=90)
    model = captioner.load()
    seen = []
    monkeypatch.setattr(model.reader, "read", lambda image, photo: seen.append(image.size))
    one = model.caption(path, read_text="always")
    [(_, listed)] = list(model.caption_paths([path], read_text="always"))
    upload = model.caption_bytes("big.jpg", path.read_bytes(), read_text="always")
    assert one.text == listed.text == upload.text
    assert seen == [(2000, 1332)] * 3


def test_every_kind_of_file_in_one_batch(tmp_path):
    """Odd formats are captioned, bad files get an error object each, the batch goes on, exit 1."""
    from test_images import make_zoo

    expect = make_zoo(tmp_path / "zoo")
    paths = [str(tmp_path / "zoo" / n) for n in sorted(expect)]
    r = run("caption", *paths, "--format", "jsonl")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    rows = {json.loads(line)["image"]: json.loads(line) for line in r.stdout.splitlines()}
    assert set(rows) == set(paths)
    for p in paths:
        good = expect[p.split("/")[-1]]
        assert ("caption" in rows[p]) == good and ("error" in rows[p]) == (not good), rows[p]


def test_jsonl_carries_knowledge_and_text_mode_prints_marked_alt_text(tmp_path):
    from test_knowledge import CAT, bar_chart

    bar_chart().save(tmp_path / "chart.png")
    photo = originals(1)[0]
    r = run("caption", str(CAT), str(tmp_path / "chart.png"), str(photo), "--format", "jsonl")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    for row in rows:
        assert {"caption", "alt_text", "in_domain", "confidence", "tags", "guided"} <= set(row)
    assert rows[1]["in_domain"] is False and rows[2]["in_domain"] is True
    r = run("caption", str(CAT), str(photo))
    cat_line, photo_line = r.stdout.splitlines()
    assert cat_line.startswith(f"{CAT}\t[out of domain] ") and "cat" in cat_line.split("\t")[1]
    assert "[out of domain]" not in photo_line
    r = run("caption", str(photo), "--caption-only")
    assert r.stdout.strip() == rows[2]["caption"]


def test_model_flag_takes_one_path_and_misread_arguments_are_named(tmp_path):
    photo = str(sorted(SHARED.glob("originals/*.jpg"))[0]) if SHARED.is_dir() else None
    r = run("caption", "--model", "photo.jpg", "cat.jpg")
    assert r.returncode == 2 and "--model photo.jpg: read as a model file, but it is an image" in r.stderr
    r = run("caption", str(DEFAULT_MODEL))
    assert r.returncode == 2 and f"write --model {DEFAULT_MODEL}" in r.stderr
    if photo:   # the photo after --model MODEL is a photo now, not a second model
        r = run("caption", "--model", str(DEFAULT_MODEL), photo)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr


def _first_line_then_close(args, cwd=None):
    """Run ``captioner ARGS`` with its stdout into a real pipe, read one line, close the pipe, as
    ``| head -1`` does -> (the line, exit status, stderr).  The pipe is shrunk to one page (4 KiB)
    and the output is made longer than that, so the command is still writing when the reader goes:
    the closed pipe is met on every run, not by chance."""
    import fcntl
    import os

    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen([sys.executable, "-m", "captioner", *map(str, args)], stdout=w,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    os.close(w)
    with os.fdopen(r) as reader:
        line = reader.readline()
    err = proc.stderr.read()
    return line, proc.wait(timeout=300), err


@pytest.mark.parametrize("mode", [["--format", "text"], ["--format", "jsonl"], ["--html", "report.html"]])
def test_a_closed_output_pipe_ends_quietly(tmp_path, mode):
    """``captioner caption photos/ | head -1``: plain text, JSON lines and a library run (records
    printed at its end) stop without a traceback, exit status 1 (the Python docs' recipe)."""
    photos = originals(120)
    mode = [str(tmp_path / m) if m == "report.html" else m for m in mode]   # never into the working directory
    full = run("caption", *photos[:3], *mode[:2])
    assert full.returncode == 0 and len(full.stdout) / 3 * len(photos) > 2 * 4096   # outgrows the pipe
    line, code, err = _first_line_then_close(["caption", *photos, *mode], cwd=tmp_path)
    assert line.startswith(f"{photos[0]}\t") or json.loads(line)["image"] == str(photos[0])
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    assert code == 1
