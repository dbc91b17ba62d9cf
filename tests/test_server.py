"""The HTTP API against a real uvicorn server on loopback, with the shipped model."""
import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
from PIL import Image

from captioner.training.checkpoint import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*args):
    """A real ``captioner serve`` on a free loopback port -> (process, base URL), once /health answers
    (at most a minute); a server that exits first fails the test with what it printed."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "captioner", "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode())
            time.sleep(0.5)
    return proc, base


@pytest.fixture(scope="module")
def server():
    proc, base = start_server("--max-upload-mb", "1")
    yield base
    proc.terminate()
    proc.wait(10)


def post(url, files, timeout=60):
    """multipart/form-data POST with the standard library; files = [(field, filename, bytes)]."""
    boundary = uuid.uuid4().hex
    body = b""
    for field, name, data in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def jpeg(size=(120, 90), colour=(200, 120, 40)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def test_health_and_openapi(server):
    h = json.loads(urllib.request.urlopen(server + "/health").read())
    assert h["status"] == "ok" and h["vocabulary"] > 100
    from captioner import modelfile

    assert h["version"] == modelfile.read().version["weights"] and h["backend"] == "onnx"   # the shipped file's digest
    from captioner import parallel

    plan = parallel.plan()   # how many captioning processes serve, and the threads of each
    assert (h["processes"], h["threads"]) == (plan.processes, plan.threads)
    spec = json.loads(urllib.request.urlopen(server + "/openapi.json").read())
    assert "/caption" in spec["paths"] and "/caption/batch" in spec["paths"]


def test_health_names_the_package_version_and_links_the_model_card(server):
    import captioner
    from captioner.info import model_card

    h = json.loads(urllib.request.urlopen(server + "/health").read())
    assert h["captioner"] == captioner.__version__ and h["model_card"] == "/model-card"
    assert len(json.dumps(h)) < 1000   # light: the card is a link, not a field
    with urllib.request.urlopen(server + h["model_card"]) as r:
        assert r.headers["content-type"].startswith("text/markdown")
        assert r.read().decode("utf-8") == model_card()


def test_caption_with_beams(server):
    status, body = post(server + "/caption?beam_size=3&n_best=3", [("image", "a.jpg", jpeg())])
    assert status == 200, body
    assert body["caption"] and len(body["beams"]) == 3
    assert body["beams"][0]["caption"] == body["caption"]


def test_bad_uploads_are_4xx_json_and_server_stays_up(server):
    assert post(server + "/caption", [("image", "t.jpg", b"hello")]) [0] == 400
    assert post(server + "/caption", [("image", "e.jpg", b"")])[0] == 400
    assert post(server + "/caption", [("image", "c.jpg", jpeg()[:300])])[0] == 400
    status, body = post(server + "/caption", [("image", "big.jpg", b"\xff" * (2 * 2**20))])
    assert status == 413 and "too large" in body["detail"]
    assert post(server + "/caption", [("wrong", "a.jpg", jpeg())])[0] == 422
    assert post(server + "/caption?beam_size=99", [("image", "a.jpg", jpeg())])[0] == 422
    assert post(server + "/caption", [("image", "a.jpg", jpeg())])[0] == 200


def test_batch_reports_each_image(server):
    status, body = post(server + "/caption/batch", [("images", "a.jpg", jpeg()), ("images", "b.txt", b"text"),
                                                    ("images", "c.png", jpeg(colour=(10, 10, 200)))])
    assert status == 200
    r = body["results"]
    assert [x["filename"] for x in r] == ["a.jpg", "b.txt", "c.png"]
    assert "caption" in r[0] and "error" in r[1] and "caption" in r[2]


def test_caption_carries_flag_confidence_tags_and_alt_text(server):
    from test_knowledge import bar_chart

    buf = io.BytesIO()
    bar_chart().save(buf, "PNG")
    status, body = post(server + "/caption", [("image", "chart.png", buf.getvalue())])
    assert status == 200, body
    assert body["in_domain"] is False and 0 <= body["confidence"] < 0.3
    assert body["tags"] and {"name", "prob"} <= set(body["tags"][0])
    assert body["alt_text"] and body["alt_text"] != body["caption"]
    status, body = post(server + "/caption/batch", [("images", "chart.png", buf.getvalue())])
    assert status == 200 and body["results"][0]["in_domain"] is False


def test_serve_takes_the_model_settings_and_a_pooled_server_loads_no_model_itself(monkeypatch):
    """``captioner serve``'s model flags reach every captioning process (here the int8 decoder, which
    /health reports as the workers loaded it), and with a pool the server's own process loads no model:
    it only hands uploads out (a Captioner made there fails this test).  The real command line and
    app, with uvicorn's loop replaced by a test client."""
    import uvicorn
    from fastapi.testclient import TestClient

    from captioner import cli
    from captioner.serve import http

    def refuse(*args, **kwargs):
        raise AssertionError("the server's own process loaded a model")

    seen = {}

    def run(asgi, host, port, log_level):
        assert host == "127.0.0.1"   # loopback unless told otherwise
        with TestClient(asgi) as client:
            seen["health"] = client.get("/health").json()
            seen["caption"] = client.post("/caption", files={"image": ("a.jpg", jpeg(), "image/jpeg")})

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(http, "Captioner", refuse)
    assert cli.main(["serve", "--processes", "2", "--precision", "int8", "--backend", "onnx"]) == 0
    h = seen["health"]
    assert (h["processes"], h["backend"], h["precision"], h["model"]) == (2, "onnx", "int8", DEFAULT_MODEL.name), h
    assert seen["caption"].status_code == 200 and seen["caption"].json()["caption"]


@pytest.mark.parametrize("kind", ["missing", "photo"])
def test_serve_names_a_wrong_model_in_one_line_before_it_starts(kind, tmp_path, monkeypatch, capsys):
    import uvicorn

    from captioner import cli

    def run(*args, **kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", run)
    model = tmp_path / "nothing.safetensors"
    if kind == "photo":
        model = tmp_path / "photo.jpg"
        model.write_bytes(jpeg())
    assert cli.main(["serve", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"captioner: error: {model}: "), err
    assert ("checkpoint not found" if kind == "missing" else "but a JPEG image") in err, err


def test_a_killed_worker_is_replaced_and_the_server_keeps_serving():
    """A captioning process killed (SIGKILL, as the out-of-memory killer does) under a pooled server:
    the next request is told so (503, JSON, retry), the server starts its processes again, and the
    request after it is captioned; nothing is left behind when the server stops."""
    import os
    import signal
    from pathlib import Path

    proc, base = start_server("--processes", "2")

    def workers():
        kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        return [int(k) for k in kids if "spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes().decode(errors="replace")]

    try:
        assert post(base + "/caption", [("image", "a.jpg", jpeg())])[0] == 200
        first = workers()
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        time.sleep(2)   # the pool notices within its half-second poll
        status, body = post(base + "/caption", [("image", "a.jpg", jpeg())])
        assert status == 503, body
        assert "was killed by SIGKILL" in body["detail"] and "send the request again" in body["detail"], body
        status, body = post(base + "/caption", [("image", "a.jpg", jpeg())])
        assert status == 200 and body["caption"], body
        health = json.loads(urllib.request.urlopen(base + "/health", timeout=10).read())
        assert health["processes"] == 2 and health["backend"] == "onnx", health   # as the new workers loaded it
        now = workers()
        assert len(now) == 2 and not set(now) & set(first), (first, now)   # all new: the old pool was closed
    finally:
        kids = workers()
        proc.terminate()
        try:
            out = proc.communicate(timeout=20)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:   # never leave a server behind, even when the test fails
            proc.kill()
            proc.wait(10)
            raise
    assert "leaked semaphore" not in out and "Traceback" not in out, out[-3000:]   # a clean stop
    for pid in kids:   # the server's workers end with it
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"worker {pid} outlived the server")
