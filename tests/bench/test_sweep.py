"""Workloads, the dedicated baseline and small sweeps on the real CPU backend, results checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pappus.bench.report import plot_experiment, write_json
from pappus.bench.suite import figures_markdown, target_figures
from pappus.bench.sweep import Level, kept_up, rps_levels, run_series
from pappus.bench.targets import DedicatedTarget, RuntimeTarget, make_target
from pappus.bench.workloads import Workload, load_workload, workload
from pappus.errors import ValidationError

pytestmark = pytest.mark.usefixtures("cpu_backend")

LEVEL_KEYS = {"x", "workload", "label", "rps_offered", "duration_s", "deadline_s", "sent", "completed", "errors",
              "error_kinds", "error_rate", "throughput", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms",
              "lag_s", "span_s", "wrong_results"}


@pytest.fixture(scope="module")
def matmul(bench_caches: tuple[Path, Path]) -> Workload:
    return load_workload("matmul128", "cpu", bench_caches[1])


@pytest.fixture(scope="module")
def inference(bench_caches: tuple[Path, Path]) -> Workload:
    return load_workload("inference3", "cpu", bench_caches[1])


# --- workloads ------------------------------------------------------------------------------


def test_workload_names() -> None:
    assert workload("matmul128").function == "matmul128"
    assert workload("matmul128-tiled").function == "matmul128_tiled"
    assert workload("inference50").params == {"repeat": 50}
    assert workload("batched4").params == {"batch": 4}
    with pytest.raises(ValidationError, match="unknown workload"):
        workload("matmul256")


def test_build_is_cached_by_content(matmul: Workload, tmp_path: Path) -> None:
    again = load_workload("matmul128")
    assert again.library_path == matmul.library_path
    stamp = Path(str(matmul.library_path)).parent / ".built"
    assert stamp.read_text().split("\n")[1] == str(matmul.library_path)


def test_check_catches_a_wrong_result(matmul: Workload, inference: Workload) -> None:
    inputs = matmul.inputs(0)
    want = matmul.expected(inputs, seed=0)["B"]
    matmul.check(inputs, {"B": want}, seed=0)
    with pytest.raises(AssertionError, match="differs from numpy"):
        matmul.check(inputs, {"B": b"\0" + want[1:]}, seed=0)
    with pytest.raises(AssertionError, match="missing"):
        matmul.check(inputs, {}, seed=0)
    inputs = inference.inputs(0)
    out = inference.expected(inputs, seed=0)["out"].copy()
    out[7] += 1.0
    with pytest.raises(AssertionError, match="max error"):
        inference.check(inputs, {"out": out.tobytes()}, seed=0)


# --- the dedicated baseline -------------------------------------------------------------------


def test_direct_function_matches_numpy(matmul: Workload, inference: Workload) -> None:
    from pappus_cpu.direct import DirectFunction

    for wl in (matmul, inference):
        fn = DirectFunction(wl.config, wl.libraries)
        for seed in (0, 1):
            inputs = wl.inputs(seed)
            wl.check(inputs, fn(inputs))


def test_dedicated_server_runs_and_sheds_expired_requests(matmul: Workload, inference: Workload) -> None:
    from pappus.bench.dedicated import DeadlineExpired, DedicatedServer

    with DedicatedServer(workers=2) as srv:
        for wl in (matmul, inference):
            srv.register(wl.function, wl.config, wl.libraries)
        futures = [(wl, seed, srv.submit(wl.function, wl.inputs(seed)))
                   for seed in range(3) for wl in (matmul, inference)]
        for wl, seed, fut in futures:
            wl.check(wl.inputs(seed), fut.result(timeout=60), seed)
        # A request whose deadline passed while it waited is failed without running.
        blockers = [srv.submit(inference.function, load_workload("inference40").inputs(0)) for _ in range(2)]
        expired = srv.submit(matmul.function, matmul.inputs(0), deadline=0.001)
        with pytest.raises(DeadlineExpired):
            expired.result(timeout=60)
        for fut in blockers:
            fut.result(timeout=60)
        assert srv.expired >= 1


# --- sweeps ---------------------------------------------------------------------------------


def test_tiny_sweep_on_each_target_checks_every_result(matmul: Workload) -> None:
    levels = [Level(x=r, workload=matmul, rps=r) for r in (20, 60)]
    for make in (lambda: RuntimeTarget("cpu-sequential"), lambda: RuntimeTarget("cpu-multiprocess", workers=2),
                 lambda: DedicatedTarget(workers=2)):
        with make() as target:
            target.setup([matmul])
            series = run_series(target, levels, duration=0.5, deadline=5.0, warmup=1, pause=0.0)
        doc = series.to_dict()
        assert set(doc) == {"target", "levels", "stopped", "max_throughput", "saturated", "wrong_results"}
        assert doc["stopped"] is None and doc["wrong_results"] == []
        assert [lv["x"] for lv in doc["levels"]] == [20, 60]
        for lv in doc["levels"]:
            assert LEVEL_KEYS <= set(lv)
            assert lv["sent"] == lv["completed"] + lv["errors"]
            assert lv["errors"] == 0, lv["error_kinds"]
            assert lv["p50_ms"] > 0 and lv["p99_ms"] >= lv["p50_ms"]
        json.dumps(doc)  # JSON-ready as it is


def test_a_wrong_result_stops_the_series(matmul: Workload) -> None:
    from concurrent.futures import Future

    class Broken(DedicatedTarget):
        def submitter(self, wl: Workload, inputs: Any, deadline: float, *, n: int = 0, seed: int = 0,
                      warm: bool = False) -> Any:
            good = super().submitter(wl, inputs, deadline, n=n, seed=seed)
            if warm:
                return good

            def submit(i: int) -> Future[Any]:
                fut: Future[Any] = Future()
                fut.set_result({"B": b"\0" * 131072})
                return fut

            return submit

    with Broken(workers=1) as target:
        target.setup([matmul])
        series = run_series(target, [Level(10, matmul, 10), Level(20, matmul, 20)], duration=0.3, deadline=5.0,
                            warmup=1)
    assert len(series.levels) == 1 and series.stopped and "wrong results" in series.stopped
    assert series.levels[0]["error_kinds"].get("wrong_result")
    assert "differs from numpy" in series.wrong_results[0]


def test_cold_mix_sends_cold_requests_to_fresh_tenants(matmul: Workload) -> None:
    with RuntimeTarget("cpu-sequential", hot=0.5) as target:
        target.setup([matmul])
        series = run_series(target, [Level(20, matmul, 20)], duration=0.5, deadline=5.0, warmup=1)
        executor = target.rt.engine("cpu-sequential").executor
        assert executor.cold >= 2 and executor.hot >= 2  # both kinds happened
        assert target.info()["cold_mix"] == "fresh tenant per cold request"
    assert series.levels[0]["errors"] == 0


def test_every_request_cold_with_module_cache_zero(matmul: Workload) -> None:
    with RuntimeTarget("cpu-sequential", hot=0.0) as target:
        target.setup([matmul])
        run_series(target, [Level(20, matmul, 20)], duration=0.3, deadline=5.0, warmup=1)
        executor = target.rt.engine("cpu-sequential").executor
        assert executor.hot == 0 and executor.cold >= 3
        assert target.name == "cpu-sequential (0% hot)"


def test_make_target_refuses_what_cannot_be_measured() -> None:
    with pytest.raises(ValidationError, match="no cold start"):
        make_target("dedicated", hot=0.5)
    with pytest.raises(ValidationError, match="needs --http"):
        make_target("http")
    with pytest.raises(ValidationError, match="unknown target"):
        make_target("sequential")


def test_rps_levels() -> None:
    assert rps_levels("20,50,100") == [20, 50, 100]
    assert rps_levels("100:300:100") == [100, 200, 300]
    assert rps_levels("1:2:0.5") == [1, 1.5, 2]
    for bad in ("", "a,b", "0,10", "10:5:1", "1:5:0", "1:2"):
        with pytest.raises(ValidationError):
            rps_levels(bad)


def test_kept_up_and_max_throughput() -> None:
    base = {"completed": 100, "errors": 0, "error_rate": 0.0, "sent": 100, "duration_s": 1.0, "throughput": 98.0}
    assert kept_up(base)
    assert not kept_up({**base, "error_rate": 0.02, "errors": 2})
    assert not kept_up({**base, "throughput": 60.0})  # the backlog drained after the level


def test_plot_json_and_target_figures(tmp_path: Path) -> None:
    def level(x: float, p50: float, thr: float, err: float = 0.0) -> dict[str, Any]:
        return {"x": x, "rps_offered": x, "sent": int(x), "completed": int(x), "errors": int(err * x),
                "error_rate": err, "error_kinds": {}, "duration_s": 1.0, "throughput": thr, "p50_ms": p50,
                "p99_ms": p50 * 2}

    def series(name: str, levels: list[dict[str, Any]], mt: float) -> dict[str, Any]:
        return {"target": {"name": name}, "levels": levels, "stopped": None, "max_throughput": mt,
                "saturated": True, "wrong_results": []}

    doc = {"experiments": [
        {"name": "matmul-hot", "title": "t", "x_label": "offered load (rps)",
         "series": [series("cpu-sequential", [level(50, 1.2, 50)], 300),
                    series("dedicated", [level(50, 1.0, 50)], 600)]},
        {"name": "inference-load", "series": [series("cpu-sequential", [level(2, 100, 2)], 10.0),
                                              series("cpu-multiprocess", [level(2, 101, 2)], 19.0)]},
        {"name": "cold-first", "engines": {"cpu-sequential": {"ratio_p50": 1.5, "cold_p50_ms": 3.0,
                                                               "hot_p50_ms": 2.0}}},
    ]}
    figures = target_figures(doc, {"overhead": {"sequential_overhead_us": 80, "multiprocess_overhead_us": 400,
                                                "sequential_p50_us": 1100, "multiprocess_p50_us": 1420,
                                                "direct_p50_us": 1020, "process_hop_us": 90}})
    by = {f["figure"]: f for f in figures}
    assert "in-process cpu-multiprocess p50 / cpu-sequential p50, matmul 128" not in by  # no p50-compare run
    assert by["in-process cpu-sequential p50 / dedicated p50, matmul 128"]["measured"] == pytest.approx(1.2)
    assert by["in-process cpu-sequential p50 / dedicated p50, matmul 128"]["met"] is True
    assert by["max throughput cpu-multiprocess (2 workers) / cpu-sequential, inference 50"]["measured"] == 1.9
    assert by["engine-kit overhead, cpu-multiprocess"]["met"] is False
    hop = next(f for name, f in by.items() if name.startswith("a bare process hop"))
    assert (hop["measured"], hop["met"]) == (90, None) and "minus sequential overhead 320 us" in hop["detail"]
    # With p50-compare (targets interleaved at one load), its figures are taken instead.
    def case(p50s: dict[str, float]) -> dict[str, Any]:
        return {"rps": 50, "targets": {t: {"p50_ms": v, "n": 100} for t, v in p50s.items()}}

    doc["experiments"].append({"name": "p50-compare", "cases": {
        "matmul128": case({"cpu-sequential": 2.2, "cpu-multiprocess": 3.0, "dedicated": 2.0})}})
    compared = {f["figure"]: f for f in target_figures(doc, {})}
    assert compared["in-process cpu-sequential p50 / dedicated p50, matmul 128"]["measured"] == pytest.approx(1.1)
    mp = compared["in-process cpu-multiprocess p50 / cpu-sequential p50, matmul 128"]
    assert (mp["measured"], mp["met"], mp["target"]) == (pytest.approx(1.364), False, "<= 1.3x")
    md = figures_markdown(figures)
    assert "**no**" in md and "| yes |" in md
    png = plot_experiment(doc["experiments"][0], tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_json({"x": tmp_path}, tmp_path / "d.json")
    assert json.loads((tmp_path / "d.json").read_text()) == {"x": str(tmp_path)}


def test_report_table_prints_names_verbatim() -> None:
    """Target names and notes are data: a '[...]' in them is not Rich markup to be swallowed."""
    from rich.console import Console

    from pappus.bench.report import rich_table

    level = {"x": 10.0, "rps_offered": 10.0, "throughput": 9.5, "p50_ms": 1.2, "p99_ms": 3.4, "errors": 0,
             "error_rate": 0.0, "sent": 20, "foreign_cpu": None}
    experiment = {"name": "demo[quick]", "x_label": "rps", "series": [{"target": {"name": "cpu[fast]"},
                                                                        "levels": [level]}]}
    console = Console(record=True, width=200)
    console.print(rich_table(experiment))
    text = console.export_text()
    assert "cpu[fast]" in text and "demo[quick]" in text
