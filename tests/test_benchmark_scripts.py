"""The scale, concurrency and quiet-machine parts of the benchmarks run (at tiny sizes, measuring
nothing), and a table is never written from a run the machine's load spoilt unless marked as such."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_backends  # noqa: E402
import bench_embed  # noqa: E402
import bench_scale  # noqa: E402
import bench_service  # noqa: E402
import machine  # noqa: E402

from scinsearch.errors import ScinSearchError  # noqa: E402
from scinsearch.openvino_tower import import_openvino  # noqa: E402


@pytest.fixture
def machine_load(monkeypatch):
    """Set the load average before/after and the share of CPU ticks other processes take."""

    def set_load(load: float, others_share: float):
        monkeypatch.setattr(machine.os, "getloadavg", lambda: (load, load, load))
        monkeypatch.setattr(machine, "own_cpu_seconds", lambda: 0.0)
        ticks = iter([(0, 0), (int(others_share * 1000), 1000)] * 10)
        monkeypatch.setattr(machine, "busy_and_total_ticks", lambda: next(ticks))

    return set_load


def test_a_quiet_run_writes_its_table(tmp_path, machine_load):
    machine_load(0.0, 0.0)
    watch = machine.LoadWatch().stop(drift=0.02)
    assert watch.quiet and "quiet" in watch.describe()
    assert machine.write_table(tmp_path / "t.md", "| a |", watch)
    assert (tmp_path / "t.md").read_text() == "| a |\n"


@pytest.mark.parametrize(
    ("load", "others", "drift", "reason"),
    [(3.0, 0.0, None, "load average 3.00"), (0.0, 0.4, None, "other processes took 40%"), (0.0, 0.0, 0.3, "drift 30%")],
)
def test_a_run_under_load_is_refused_unless_marked(tmp_path, machine_load, capsys, load, others, drift, reason):
    machine_load(load, others)
    watch = machine.LoadWatch().stop(drift=drift)
    assert not watch.quiet and reason in watch.describe()
    assert not machine.write_table(tmp_path / "t.md", "| a |", watch)
    assert not (tmp_path / "t.md").exists()
    assert capsys.readouterr().err.startswith("Error: not writing")
    assert machine.write_table(tmp_path / "t.md", "| a |", watch, under_load=True)
    written = (tmp_path / "t.md").read_text()
    assert written.startswith("**Measured under load**") and reason in written and written.endswith("| a |\n")


def test_bench_backends_refuses_to_write_under_load(tmp_path, machine_load):
    machine_load(5.0, 0.5)
    out = tmp_path / "backends.md"
    args = [
        "--model",
        machine.TINY,
        "--backends",
        "eager",
        "--batch-sizes",
        "2,1",
        "--rounds",
        "1",
        "--min-images",
        "2",
    ]
    assert bench_backends.main([*args, "--out", str(out)]) == 1
    assert not out.exists()
    assert bench_backends.main([*args, "--out", str(out), "--under-load"]) == 0
    assert out.read_text().startswith("**Measured under load**")


def test_bench_backends_runs_openvino_as_scinsearch_does(capsys):
    """The OpenVINO rows go through `openvino_tower.compile_tower` (the `openvino` extra): one conversion
    serves both batch sizes, and the vectors point the way eager fp32's do."""
    try:
        import_openvino()  # first, as scinsearch imports it: with its telemetry off
    except ScinSearchError:
        pytest.skip("needs the openvino extra")
    args = ["--model", machine.TINY, "--backends", "eager,openvino", "--batch-sizes", "2,1", "--rounds", "1"]
    assert bench_backends.main([*args, "--min-images", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| OpenVINO")]
    assert rows and all(float(row.split("|")[6]) >= 0.999 for row in rows), rows


def test_bench_embed_refuses_to_write_when_its_rates_drifted(tmp_path, machine_load, monkeypatch):
    machine_load(0.0, 0.0)  # a quiet machine, but the script's own before/after rates disagree
    monkeypatch.setattr(bench_embed, "make_dataset", lambda folder, images: None)
    monkeypatch.setattr(bench_embed, "mean_png_mb", lambda folder: 2.0)
    monkeypatch.setattr(bench_embed, "measure", lambda args: print("| table |") or 0.3)
    out = tmp_path / "embed.md"
    monkeypatch.setattr(sys, "argv", ["bench_embed.py", "--model", machine.TINY, "--images", "4", "--out", str(out)])
    with pytest.raises(SystemExit) as exited:
        bench_embed.main()
    assert exited.value.code == 1 and not out.exists()
    monkeypatch.setattr(bench_embed, "measure", lambda args: print("| table |") or 0.02)
    bench_embed.main()
    assert "| table |" in out.read_text() and "quiet" in out.read_text()


@pytest.mark.parametrize(("backend", "builds"), [("edge", ("float", "int8")), ("local", ("float",))])
def test_bench_scale_measures_each_setting(tmp_path, backend, builds):
    results = []
    for build in builds:
        job = dict(backend=backend, build=build, size=300, dim=16, clusters=10, queries=4, warmup=1)
        job["folder"] = str(tmp_path / build)
        results.append((job, bench_scale.worker(job)))
    for _, result in results:
        assert 0 < result["skin_share"] < 1
        exact = result["settings"].get("exact")
        if exact:  # exact search is the reference's answer
            assert exact["none"]["recall"] == exact["skin"]["recall"] == 1.0
        for by_filter in result["settings"].values():
            assert all(row["p95_ms"] >= row["p50_ms"] > 0 for row in by_filter.values())
        assert result["peak_rss_mib"] >= result["data_rss_mib"] > 0
    text = bench_scale.table(results)
    settings = [s for build in builds for s in bench_scale.BUILDS[backend][build]]
    assert all(f"| {backend} | 300 | {s} |" in text for s in settings), text
    bench_scale.plot(results, tmp_path / "scale.png", "test")
    assert (tmp_path / "scale.png").read_bytes().startswith(b"\x89PNG")


def test_bench_scale_rows_say_whether_their_build_was_measured_under_load(tmp_path):
    # A resumed run (--keep) must not pass off rows measured under load as quiet: each keeps its own share.
    job = dict(backend="edge", build="float", size=300, dim=16, clusters=10, queries=4, warmup=1)
    job["folder"] = str(tmp_path / "edge-300-float")

    def measure(job):
        result = bench_scale.worker(job)  # writes the kept result beside the folder
        Path(job["folder"]).with_suffix(".json").write_text(json.dumps(result))
        return {**result, "wall_s": 1.0}

    fresh = bench_scale.with_others_share(job, measure)
    assert 0.0 <= fresh["others_share"] <= 1.0
    kept = json.loads(Path(job["folder"]).with_suffix(".json").read_text())
    Path(job["folder"]).with_suffix(".json").write_text(json.dumps({**kept, "others_share": 0.4}))
    again = bench_scale.with_others_share(job, lambda job: pytest.fail("a kept result is measured again"))
    assert again["others_share"] == 0.4 and not bench_scale.quiet_build(again)
    assert "40% (under load)" in bench_scale.table([(job, again)])


def test_bench_scale_exact_reference_applies_the_filter_and_one_per_case():
    vectors = np.eye(4, dtype=np.float32)[[0, 0, 1, 2]] + 0.01
    payloads = [
        {"image_id": "a", "case_ids": ["1"], "fitzpatrick_skin_type": "FST5"},
        {"image_id": "b", "case_ids": ["1"], "fitzpatrick_skin_type": "FST5"},  # same case as a: dropped
        {"image_id": "c", "case_ids": ["2"], "fitzpatrick_skin_type": "FST1"},  # filtered out
        {"image_id": "d", "case_ids": ["3"], "fitzpatrick_skin_type": "FST6"},
    ]
    query = np.array([1.0, 0.5, 0.2, 0.0], dtype=np.float32)
    assert bench_scale.exact_answers(vectors, payloads, [query], None) == [["a", "c", "d"]]
    assert bench_scale.exact_answers(vectors, payloads, [query], bench_scale.skin_filter()) == [["a", "d"]]


class Slow(http.server.BaseHTTPRequestHandler):
    """Answers every POST after 20 ms, one request at a time (like one inference at a time)."""

    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with self.lock:
            threading.Event().wait(0.02)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_bench_service_queues_several_clients():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/search/text"
        one, one_qps = bench_service.concurrent_queries(bench_service.post_text, url, ["x"], 6, 1)
        four, four_qps = bench_service.concurrent_queries(bench_service.post_text, url, ["x"], 6, 4)
    finally:
        server.shutdown()
    assert one["n"] == 6 and four["n"] == 8  # at least two requests per client
    assert four["p50"] > one["p50"]  # queued behind one another
    assert four_qps < 60 and one_qps < 60  # never faster than one request per 20 ms


def test_bench_service_batching_rows(tiny_embedder):
    from scinsearch import testing

    photos = [testing.scin_sized_png(0, size=(64, 48))]
    rates = bench_service.batched_rates(tiny_embedder, photos, [1, 4], repeats=1)
    assert set(rates) == {"photo", "text"} and all(rates[k][n] > 0 for k in rates for n in (1, 4))
    http = {"photo": {1: ({}, 2.0), 4: ({}, 2.1)}, "text": {1: ({}, 5.0), 4: ({}, 5.5)}}
    lines = bench_service.batching_table([("off", 1.0, {}, http)], rates)
    assert sum(line.startswith("| photo |") or line.startswith("| text |") for line in lines) == 4
