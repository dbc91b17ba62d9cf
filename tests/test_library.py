"""Library runs (library.py, results.py): a results file that survives kill -9 and reruns, errors
retried only when asked, paths from a list, Parquet output, and the Ray engine giving the local
engine's captions."""
import json
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from captioner.training.checkpoint import DEFAULT_MODEL
from captioner.library.results import open_results
from conftest import SHARED, needs_shared

needs_model = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model")


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "captioner", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture
def library(tmp_path):
    """20 real photos in nested folders, one unreadable file and one that is not an image."""
    root = tmp_path / "photos"
    for i, p in enumerate(sorted((SHARED / "originals").glob("*.jpg"))[:20]):
        dest = root / ("a" if i % 2 else "b/c") / p.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dest)
    (root / "notes.jpg").write_text("not an image")
    return root


def test_a_torn_last_line_is_removed_and_the_rest_kept(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"image": "a.jpg", "caption": "x"}\n{"image": "b.jpg", "error": "bad"}\n{"image": "c.j')
    with open_results(out) as store:
        assert "incomplete last line" in store.repaired
        assert store.pending(["a.jpg", "b.jpg", "c.jpg"]) == ["c.jpg"]      # errors count as done ...
    with open_results(out, retry_errors=True) as store:
        assert store.pending(["a.jpg", "b.jpg", "c.jpg"]) == ["b.jpg", "c.jpg"]   # ... unless retried
    assert records(out) == [{"image": "a.jpg", "caption": "x"}]            # the error line dropped, atomically
    (tmp_path / "bad.jsonl").write_text('{"image": "a.jpg"}\nnot json\n{"image": "b.jpg"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl line 2: not JSON"):
        open_results(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="name a .jsonl"):
        open_results(tmp_path / "r.csv")


def test_one_run_at_a_time_holds_a_results_file(tmp_path):
    with open_results(tmp_path / "r.jsonl"):
        with pytest.raises(ValueError, match="another captioner run is writing it"):
            open_results(tmp_path / "r.jsonl")
    with open_results(tmp_path / "r.parquet"):
        with pytest.raises(ValueError, match="another captioner run"):
            open_results(tmp_path / "r.parquet")


@needs_shared
@needs_model
def test_kill_9_at_any_moment_then_rerun_loses_and_duplicates_nothing(library, tmp_path):
    whole = tmp_path / "whole.jsonl"
    t0 = time.time()
    r = run("caption", library, "--output", whole, "--batch-size", "2")
    took = time.time() - t0
    assert r.returncode == 1 and "20 captioned, 1 failed" in r.stderr, r.stderr   # notes.jpg fails
    want = {rec["image"]: rec for rec in records(whole)}
    assert len(want) == 21 and len(records(whole)) == 21

    out = tmp_path / "killed.jsonl"
    rng = random.Random(0)
    kills = 0
    for _ in range(24):
        if kills >= 4:
            break
        proc = subprocess.Popen([sys.executable, "-m", "captioner", "caption", str(library), "--output", str(out),
                                 "--batch-size", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # while the model loads, or anywhere in the run once lines are being written (a whole run takes
        # ``took``; a rerun only what is left)
        time.sleep(rng.uniform(0.05, 0.5 * took))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if out.exists():   # between runs: whole lines only (at most a torn last one), no image twice
            lines = out.read_bytes().split(b"\n")
            done = [json.loads(line)["image"] for line in lines[:-1]]
            assert len(done) == len(set(done))
            if len(done) == len(want):   # a run finished before its kill (``took`` was long): start over, so
                out.unlink()             # the next runs have work left to be killed in
    assert kills >= 3
    r = run("caption", library, "--output", out, "--batch-size", "2")
    assert r.returncode in (0, 1), r.stderr
    got = records(out)
    assert len(got) == 21 and {rec["image"] for rec in got} == set(want)       # nothing lost, nothing twice
    for rec in got:
        assert rec == want[rec["image"]]                                          # the same captions
    r = run("caption", library, "--output", out)                                 # idempotent
    assert "0 captioned, 0 failed, 21 already" in r.stderr and len(records(out)) == 21


@needs_shared
@needs_model
def test_errors_are_retried_only_when_asked_and_lists_of_paths(library, tmp_path):
    out = tmp_path / "r.jsonl"
    bad = library / "notes.jpg"
    r = run("caption", bad, "--output", out)
    assert r.returncode == 1 and "not an image" in records(out)[0]["error"]
    shutil.copy(sorted((SHARED / "originals").glob("*.jpg"))[30], bad)        # the user mends the file
    assert "1 already" in run("caption", bad, "--output", out).stderr          # not retried by default
    r = run("caption", bad, "--output", out, "--retry-errors")
    assert r.returncode == 0, r.stderr
    got = records(out)
    assert len(got) == 1 and "error" not in got[0] and got[0]["caption"]      # replaced, not duplicated
    listed = sorted(str(p) for p in library.rglob("*.jpg"))[:3]
    (tmp_path / "list.txt").write_text("# three photos\n" + "\n".join(listed) + "\n")
    r = run("caption", "--from-list", tmp_path / "list.txt", "--output", tmp_path / "l.jsonl")
    assert r.returncode == 0 and [rec["image"] for rec in records(tmp_path / "l.jsonl")] == listed


@needs_shared
@needs_model
def test_each_failed_photo_is_named_with_why_and_the_first_ones_again_at_the_end(library, tmp_path):
    """Corrupt files among real photos: each is named on stderr with its reason as the run meets
    it, and a run with many repeats the first ones at the end, above the counts."""
    good = sorted(library.rglob("*.jpg"))[0].read_bytes()
    bad = [library / f"broken_{i}.jpg" for i in range(12)]
    for i, p in enumerate(bad):
        p.write_bytes(good[: 200 + 50 * i])           # a real JPEG cut short: unreadable
    out = tmp_path / "r.jsonl"
    r = run("caption", library, "--output", out, "--batch-size", "4")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    named = [l for l in lines if l.startswith("captioner: error: ")]
    assert len(named) == 13                            # the 12 broken photos and notes.jpg, one line each
    for p in [*bad, library / "notes.jpg"]:
        line = next(l for l in named if l.startswith(f"captioner: error: {p}: "))
        assert len(line) > len(f"captioner: error: {p}: ") + 5    # and why
    end = lines.index("captioner: 13 problems (the first 10):")
    assert end > lines.index(named[-1])
    assert [l.strip() for l in lines[end + 1:end + 11]] == [l[len("captioner: error: "):] for l in named[:10]]
    assert lines[-1] == "captioner: 33 photos: 20 captioned, 13 failed"


@needs_shared
@needs_model
def test_ray_actors_are_no_more_than_the_clusters_memory_holds():
    from captioner.library.ray_engine import actors
    from captioner import parallel

    gb = parallel.WORKER_MB * 2 ** 20
    assert actors({"CPU": 16, "memory": 100 * gb}) == (16, 1, {"memory": gb})   # one actor a CPU, each asks its memory
    assert actors({"CPU": 16, "memory": 4.5 * gb}) == (4, 4, {"memory": gb})    # memory for 4: the CPUs shared out
    assert actors({"CPU": 16, "memory": 0.5 * gb}) == (16, 1, {})               # Ray could place none: as before
    assert actors({"CPU": 16, "memory": 4.5 * gb}, workers=8) == (8, 2, {})     # what the user asked for stands
    assert actors({"CPU": 16, "GPU": 2, "memory": gb}, gpus=1) == (2, 1, {})    # one actor a GPU
    big = parallel.TORCH_WORKER_MB * 2 ** 20                                      # the torch back-end's larger actors
    assert actors({"CPU": 16, "memory": 4.5 * gb}, per_actor_mb=parallel.TORCH_WORKER_MB) == (3, 5, {"memory": big})


def test_ray_engine_gives_the_local_engines_records_and_parquet_resumes(library, tmp_path):
    pytest.importorskip("ray")
    local, ray_out, pq = tmp_path / "local.jsonl", tmp_path / "ray.jsonl", tmp_path / "ray.parquet"
    assert run("caption", library, "--output", local, "--batch-size", "4").returncode == 1
    ray = ["--engine", "ray", "--ray-cpus", "2", "--batch-size", "4"]
    r = run("caption", library, "--output", ray_out, *ray)
    assert r.returncode == 1 and "20 captioned, 1 failed" in r.stderr, r.stderr[-3000:]
    a = {rec["image"]: rec for rec in records(local)}
    b = {rec["image"]: rec for rec in records(ray_out)}
    assert len(records(ray_out)) == 21 and a == b
    # Parquet: half the photos first, then the whole library resumes from the parts already written
    half = sorted(str(p) for p in library.rglob("*.jpg"))[:10]
    r = run("caption", *half, "--output", pq, *ray)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("caption", library, "--output", pq, *ray)
    assert "10 captioned, 1 failed, 10 already" in r.stderr, r.stderr[-3000:]
    with open_results(pq) as store:
        c = {rec["image"]: rec for rec in store.records()}
    assert c == a
