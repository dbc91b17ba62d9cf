"""Bounded load test of the HTTP API on loopback: mixed good and bad uploads from concurrent
clients; counts status codes, checks that no request is dropped and no 5xx is returned, and
samples the server's memory.  Stops by itself.

    python benchmarks/load_test.py --requests 2000 --concurrency 32
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def payloads(images: Path):
    photos = sorted(images.glob("*.jpg"))[:20]
    good = [("image", p.name, p.read_bytes()) for p in photos]
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "PNG")
    bad = [("image", "text.jpg", b"just some text"), ("image", "empty.jpg", b""),
           ("image", "trunc.jpg", photos[0].read_bytes()[:500]), ("image", "random.png", random.randbytes(5000)),
           ("image", "big.jpg", b"\xff" * (3 * 2**20)), ("wrong_field", "a.png", buf.getvalue())]
    return good, bad


def upload(url, field, name, data) -> urllib.request.Request:
    """A multipart/form-data POST of one file, as a browser's form sends it."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def post_json(url, field, name, data):
    """One upload -> (status, the answer's JSON); raises on a dropped connection."""
    try:
        with urllib.request.urlopen(upload(url, field, name, data), timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def post(url, field, name, data):
    req = upload(url, field, name, data)
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        e.read()
        code = e.code
    except Exception as e:  # connection reset, timeout: a dropped request
        code = f"dropped ({type(e).__name__})"
    return code, time.perf_counter() - t, name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="total requests")
    ap.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    ap.add_argument("--bad-share", type=float, default=0.5, help="share of bad uploads")
    ap.add_argument("--images", default="../shared/flickr8k/originals", help="folder of good photos")
    ap.add_argument("--max-upload-mb", type=float, default=2.0, help="server upload limit")
    args = ap.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "captioner", "serve", "--port", str(port),
                               "--max-upload-mb", str(args.max_upload_mb)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        good, bad = payloads(Path(args.images))
        rng = random.Random(0)
        jobs = [rng.choice(bad) if rng.random() < args.bad_share else rng.choice(good) for _ in range(args.requests)]
        post(base + "/caption", *good[0])  # warm-up
        mem = [rss_mb(server.pid)]
        stop = threading.Event()

        def sample():
            while not stop.wait(2):
                mem.append(rss_mb(server.pid))
        threading.Thread(target=sample, daemon=True).start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda j: post(base + "/caption", *j), jobs))
        wall = time.perf_counter() - t0
        stop.set()
        mem.append(rss_mb(server.pid))
        alive = urllib.request.urlopen(base + "/health", timeout=5).status == 200
    finally:
        server.terminate()
        server.wait(10)

    codes = collections.Counter(str(c) for c, _, _ in results)
    by_kind = collections.defaultdict(list)
    for c, t, name in results:
        by_kind[name if name in {b[1] for b in bad} else "good photo"].append((c, t))
    print(f"{args.requests} requests, {args.concurrency} concurrent clients, {wall:.1f} s "
          f"({args.requests / wall:.1f} requests/s)")
    print("status codes:", json.dumps(dict(codes)))
    print("| upload | count | status | median latency ms | max latency ms |")
    print("| --- | --- | --- | --- | --- |")
    for kind, rows in sorted(by_kind.items()):
        lat = [t * 1000 for _, t in rows]
        print(f"| {kind} | {len(rows)} | {sorted({str(c) for c, _ in rows})} | {statistics.median(lat):.0f} | "
              f"{max(lat):.0f} |")
    print(f"server memory (RSS MB): start {mem[0]:.0f}, peak {max(mem):.0f}, end {mem[-1]:.0f}; through the run "
          f"(every 2 s): {' '.join(f'{m:.0f}' for m in mem)}")
    fivexx = sum(v for k, v in codes.items() if k.startswith("5"))
    dropped = sum(v for k, v in codes.items() if k.startswith("dropped"))
    print(f"5xx: {fivexx}, dropped: {dropped}, server alive after: {alive}")
    return 0 if (fivexx == 0 and dropped == 0 and alive) else 1


if __name__ == "__main__":
    raise SystemExit(main())
