"""``--json FILE`` of the benchmark scripts (benchmarks/json_out.py): a path that cannot be
written fails when the arguments are parsed, before a run that can take minutes; missing
directories (``out/bench/`` in a fresh clone) are created."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pappus.bench.report import write_json

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from json_out import json_file  # noqa: E402

#: every script with a --json FILE option (bench_cpu_kernels' --json prints to stdout)
SCRIPTS = ["bench_auth_quota", "bench_cluster", "bench_core", "bench_cuda", "bench_engines", "bench_fairness",
           "bench_fault_isolation"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_unwritable_json_path_fails_before_the_run(script, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    bench = importlib.import_module(script)
    start = time.monotonic()
    with pytest.raises(SystemExit) as info:
        bench.main(["--json", str(tmp_path / "afile" / "bench" / "out.json")])
    assert info.value.code == 2 and time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert "argument --json" in err and "afile is a file, not a directory" in err, err


def test_json_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(argparse.ArgumentTypeError, match="is a directory"):
        json_file(str(tmp_path))


def test_json_file_creates_missing_directories_up_front(tmp_path):
    path = json_file(str(tmp_path / "out" / "bench" / "cluster.json"))
    assert path.parent.is_dir() and not path.exists()
    (tmp_path / "x").mkdir()
    write_json({"a": 1}, tmp_path / "x" / "y" / "z.json")  # and again when writing
    assert json.loads((tmp_path / "x" / "y" / "z.json").read_text()) == {"a": 1}


def test_script_writes_json_into_directories_that_did_not_exist(tmp_path, monkeypatch):
    import bench_auth_quota

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its state directory

    out = tmp_path / "out" / "bench" / "auth.json"
    bench_auth_quota.main(["--n", "200", "--tenants", "5", "--json", str(out)])
    assert json.loads(out.read_text())["n"] == 200
