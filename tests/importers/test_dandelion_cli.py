"""``pappus import/export dandelion`` and ``pappus register function --format dandelion`` as a
user meets them: the examples of their help run, errors name the options the user typed."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from pathlib import Path

import pytest

from pappus.cli import build_parser, main
from pappus.errors import ValidationError
from pappus.importers import export_dandelion, import_dandelion

from .conftest import DATA

ROOT = Path(__file__).resolve().parents[2]


def matmul_para(module: str = "mlops.hsaco") -> dict:
    """The shape of upstream's machine_interface/tests/data/hip/test_gpu_matmul_para.json."""
    fi = {"FromInput": {"bufname": "cfg", "idx": 0}}
    return {
        "modules": [{"module_name": module, "path": module}],
        "kernels": [{"module_name": module, "kernel_name": "matmul_para"}],
        "blueprint": {
            "inputs": ["cfg", "A"], "buffers": {"B": {"Sizeof": "A"}}, "outputs": ["B"],
            "control_flow": [{"ExecKernel": ["matmul_para", [{"Ptr": "A"}, {"Sizeof": "A"}, {"Ptr": "B"}], {
                "grid_dim_x": fi, "grid_dim_y": fi, "grid_dim_z": {"Absolute": 1},
                "block_dim_x": {"Absolute": 32}, "block_dim_y": {"Absolute": 32}, "block_dim_z": {"Absolute": 1},
                "shared_mem_bytes": {"Absolute": 0}}]}],
        },
    }


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory laid out like a Dandelion checkout (configs and libs where upstream keeps them), the cwd."""
    hip = tmp_path / "machine_interface" / "tests" / "data" / "hip"
    libs = tmp_path / "machine_interface" / "tests" / "libs"
    hip.mkdir(parents=True)
    libs.mkdir(parents=True)
    (hip / "test_gpu_matmul_para.json").write_text(json.dumps(matmul_para()))
    # an AMD clang offload bundle, as upstream's mlops.hsaco is (the import does not read it further)
    (libs / "mlops.hsaco").write_bytes(b"__CLANG_OFFLOAD_BUNDLE__" + bytes(40))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def epilog_commands(command: str) -> list[list[str]]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices[command].epilog
    lines = text.replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.strip().startswith("pappus ")]


def test_the_help_examples_run_as_written_in_a_checkout(checkout, capsys) -> None:
    imports, exports = epilog_commands("import"), epilog_commands("export")
    first = next(c for c in imports if "test_gpu_matmul_para.json" in " ".join(c))
    code, _, err = cli(capsys, *first)
    assert code == 0, err
    (export,) = exports  # it exports the matmul.json the first import example wrote
    code, _, err = cli(capsys, *export)
    assert code == 0, err
    out = export[export.index("-o") + 1]
    assert json.loads(Path(out).read_text()) == matmul_para()  # upstream's config again


FATBIN = Path(__file__).resolve().parents[1] / "cuda" / "prebuilt" / "clean.fatbin"  # built by nvcc


def test_import_hint_gives_the_engine_and_the_one_step_registration(checkout, capsys, tmp_path) -> None:
    """The hint names the engine of the installed backend whose driver reads the library: a real
    AMD code object gets hip-sequential, a real NVIDIA fatbin (whatever its name) cuda-sequential."""
    from pappus_hip.build import build_hsaco, find_hipcc

    if find_hipcc() is None:
        pytest.skip("hipcc is not installed (make test installs ROCm's)")
    libs = checkout / "machine_interface" / "tests" / "libs"
    source = tmp_path / "k.hip"
    source.write_text('#include <hip/hip_runtime.h>\nextern "C" __global__ void k(int* p) { p[0] = 1; }\n')
    shutil.copy(build_hsaco(source, tmp_path / "build", ["gfx90a"])[0], libs / "mlops.hsaco")
    code, _, err = cli(capsys, "import", "dandelion", "machine_interface/tests/data/hip/test_gpu_matmul_para.json",
                       "--modules-dir", "machine_interface/tests/libs")
    assert code == 0, err
    assert f"(pappus register library mlops.hsaco {libs / 'mlops.hsaco'} --engine hip-sequential)" in err
    assert ("pappus register function NAME machine_interface/tests/data/hip/test_gpu_matmul_para.json "
            "--format dandelion --modules-dir machine_interface/tests/libs --engine hip-sequential") in err
    shutil.copy(FATBIN, libs / "k.bin")
    doc = checkout / "k.json"
    doc.write_text(json.dumps(matmul_para("k.bin")))
    code, _, err = cli(capsys, "import", "dandelion", str(doc), "--modules-dir", str(libs))
    assert code == 0 and f"{libs / 'k.bin'} --engine cuda-sequential)" in err


def test_import_hint_names_no_engine_that_no_backend_reads(checkout, capsys) -> None:
    # checkout's mlops.hsaco is only a bundle's magic bytes: no installed driver reads it
    code, _, err = cli(capsys, "import", "dandelion", "machine_interface/tests/data/hip/test_gpu_matmul_para.json",
                       "--modules-dir", "machine_interface/tests/libs")
    assert code == 0 and "--engine" not in err, err


def test_input_size_errors_say_bytes(checkout, capsys) -> None:
    base = ["import", "dandelion", "machine_interface/tests/data/hip/test_gpu_matmul_para.json",
            "--modules-dir", "machine_interface/tests/libs"]
    code, _, err = cli(capsys, *base, "--input-size", "cfg")
    assert code == 1 and "--input-size: 'cfg' is not NAME=BYTES" in err
    code, _, err = cli(capsys, *base, "--input-size", "cfg=-8")
    assert code == 1 and "--input-size: cfg=-8: BYTES must be a non-negative whole number of bytes" in err
    code, _, err = cli(capsys, *base, "--input-size", "nope=8")
    assert code == 1 and "--input-size nope: 'nope' is not an input of this config" in err
    code, _, err = cli(capsys, *base, "--input-size", "cfg=4")
    assert code == 1 and "(declared with --input-size)" in err and "input_sizes" not in err


def test_modules_dir_that_is_no_directory_is_named(checkout, capsys) -> None:
    cfg = "machine_interface/tests/data/hip/test_gpu_matmul_para.json"
    (checkout / "file").write_text("x")
    code, _, err = cli(capsys, "import", "dandelion", cfg, "--modules-dir", "file")
    assert code == 1 and "--modules-dir: 'file' is not a directory" in err
    code, _, err = cli(capsys, "import", "dandelion", cfg, "--modules-dir", "missing")
    assert code == 1 and "--modules-dir: 'missing' does not exist" in err
    with pytest.raises(ValidationError) as info:
        import_dandelion(checkout / cfg, modules_dir=checkout / "file")
    assert info.value.errors[0].path == "modules_dir" and "is not a directory" in info.value.errors[0].message


def test_unwritable_output_names_the_option_and_the_path(checkout, capsys) -> None:
    cfg = "machine_interface/tests/data/hip/test_gpu_matmul_para.json"
    bad = str(checkout / "no" / "such" / "x.json")
    code, _, err = cli(capsys, "import", "dandelion", cfg, "--modules-dir", "machine_interface/tests/libs", "-o", bad)
    assert code == 1 and f"-o: cannot write {bad!r}: No such file or directory" in err and "Errno" not in err
    assert cli(capsys, "import", "dandelion", cfg, "--modules-dir", "machine_interface/tests/libs",
               "-o", "matmul.json")[0] == 0
    code, _, err = cli(capsys, "export", "dandelion", "matmul.json", "--module-path", "mlops.hsaco=m.hsaco", "-o", bad)
    assert code == 1 and f"-o: cannot write {bad!r}" in err


def test_export_errors_name_the_options(checkout, capsys) -> None:
    cfg = "machine_interface/tests/data/hip/test_gpu_matmul_para.json"
    assert cli(capsys, "import", "dandelion", cfg, "--modules-dir", "machine_interface/tests/libs",
               "--input-size", "cfg=48", "-o", "m48.json")[0] == 0
    code, out, err = cli(capsys, "export", "dandelion", "m48.json", "--module-path", "matmul=mlops.hsaco")
    assert code == 1 and out == ""
    assert ("--module-path mlops.hsaco: no module path given for library 'mlops.hsaco'; "
            "give --module-path mlops.hsaco=PATH") in err
    assert "--module-path matmul: the function has no library 'matmul' (its libraries: 'mlops.hsaco')" in err
    assert "pass --allow-lossy to drop it" in err and "module_paths" not in err and "allow_lossy" not in err
    code, out, err = cli(capsys, "export", "dandelion", "m48.json", "--module-path", "mlops.hsaco=mlops.hsaco",
                         "--module-path", "bogus=x.hsaco", "--allow-lossy")
    assert code == 1 and out == ""
    assert "--module-path bogus: the function has no library 'bogus' (its libraries: 'mlops.hsaco')" in err
    code, out, err = cli(capsys, "export", "dandelion", "m48.json", "--module-path", "mlops.hsaco=../m.hsaco")
    assert code == 1 and "--module-path mlops.hsaco: must not contain '..'" in err


def test_export_of_an_upstream_config_says_it_is_one_already(checkout, capsys) -> None:
    cfg = "machine_interface/tests/data/hip/test_gpu_matmul_para.json"
    code, out, err = cli(capsys, "export", "dandelion", cfg, "--module-path", "mlops.hsaco=mlops.hsaco")
    assert code == 1 and out == ""
    assert "it is a Dandelion config already (modules generation" in err and "pappus import dandelion" in err
    assert "schema: is required" not in err
    with pytest.raises(ValidationError, match="Dandelion config already .thesis generation"):
        export_dandelion(DATA / "thesis" / "listing_4_1.json", module_paths={})


@pytest.fixture(scope="module")
def matmul_so(tmp_path_factory) -> Path:
    from pappus_cpu.build import build_library

    out = tmp_path_factory.mktemp("dandelion-cli")
    (so,) = [p for p in build_library(ROOT / "examples" / "matmul" / "matmul.hip", out, ["cpu"]) if p.suffix == ".so"]
    return so


def matmul_at_config(libs: Path, matmul_so: Path, configs: Path) -> Path:
    """examples/matmul's library in ``libs`` as matmul.so, and an upstream-shaped config that
    launches its matmul_at in ``configs`` (mm.json), which is returned."""
    libs.mkdir(exist_ok=True)
    configs.mkdir(exist_ok=True)
    shutil.copy(matmul_so, libs / "matmul.so")
    doc = matmul_para("matmul.so")
    doc["kernels"][0]["kernel_name"] = "matmul_at"
    doc["blueprint"]["control_flow"][0]["ExecKernel"][0] = "matmul_at"
    (configs / "mm.json").write_text(json.dumps(doc))
    return configs / "mm.json"


def test_register_function_takes_modules_dir(tmp_path, capsys, matmul_so) -> None:
    libs, configs = tmp_path / "libs", tmp_path / "configs"
    matmul_at_config(libs, matmul_so, configs)
    state = ["--state-dir", str(tmp_path / "state"), "--engine", "cpu-sequential"]
    code, out, err = cli(capsys, "register", "function", "mm", str(configs / "mm.json"), "--format", "dandelion",
                         "--modules-dir", str(libs), *state)
    assert code == 0, err
    assert out.startswith("function mm: engine cpu-sequential, libraries matmul.so@")
    code, _, err = cli(capsys, "register", "function", "mm", str(configs / "mm.json"), "--format", "dandelion",
                       "--modules-dir", str(libs / "matmul.so"), *state)
    assert code == 1 and "--modules-dir: " in err and "is not a directory" in err
    code, _, err = cli(capsys, "register", "library", "m", str(matmul_so), "--modules-dir", str(libs), *state)
    assert code == 1 and "--modules-dir: applies to functions" in err


def test_register_function_takes_input_sizes(tmp_path, capsys, matmul_so) -> None:
    libs = tmp_path / "libs"
    config = matmul_at_config(libs, matmul_so, libs)
    state = ["--state-dir", str(tmp_path / "state"), "--engine", "cpu-sequential"]
    register = ["register", "function", "mm", str(config), "--format", "dandelion"]

    def declared_cfg() -> int:
        import pappus

        with pappus.Runtime(state_dir=tmp_path / "state") as rt:
            inputs = rt.registry.get_function("default", "mm").config["blueprint"]["inputs"]
        return next(i["size"] for i in inputs if i["name"] == "cfg")

    assert cli(capsys, *register, *state)[0] == 0
    assert declared_cfg() == 8  # what FromInput idx 0 reads
    code, _, err = cli(capsys, *register, "--input-size", "cfg=48", *state)
    assert code == 0, err
    assert declared_cfg() == 48  # what upstream's callers send

    code, _, err = cli(capsys, *register, "--input-size", "nope=8", "--input-size", "cfg=x", *state)
    assert code == 1 and "--input-size: cfg=x: BYTES must be a non-negative whole number of bytes" in err
    code, _, err = cli(capsys, *register, "--input-size", "nope=8", *state)
    assert code == 1 and "--input-size nope: 'nope' is not an input of this config" in err
    assert "input_sizes" not in err
    code, _, err = cli(capsys, "register", "library", "m", str(matmul_so), "--input-size", "cfg=8",
                       "--modules-dir", str(libs), *state)
    assert code == 1 and "--input-size: applies to functions" in err and "--modules-dir: applies to functions" in err
    code, _, err = cli(capsys, "register", "function", "native", str(ROOT / "examples" / "matmul" / "matmul.json"),
                       "--input-size", "A=8", *state)
    assert code == 1 and "--input-size: applies to Dandelion configs only" in err


def test_register_function_engine_picks_the_backend_that_reads_the_modules(tmp_path, matmul_so) -> None:
    """``Runtime.register_function(..., engine=)``: a Dandelion config cannot name an engine, so
    the caller does; that engine's backend registers and checks the modules, whatever the
    runtime's own default engine is (here the host backend, which cannot read a CPU library)."""
    import struct

    import numpy as np

    import pappus

    libs = tmp_path / "libs"
    config = matmul_at_config(libs, matmul_so, tmp_path / "configs")
    with pappus.Runtime(engine="host-sequential", state_dir=tmp_path / "state") as rt:
        with pytest.raises(ValidationError):
            rt.register_function("mm", config, format="dandelion", modules_dir=libs)  # the host backend refuses matmul.so
        with pytest.raises(ValidationError) as info:
            rt.register_function("mm", config, format="dandelion", modules_dir=libs, engine="cpu-turbo")
        assert [e.path for e in info.value.errors] == ["engine"]
        rec = rt.register_function("mm", config, format="dandelion", modules_dir=libs, engine="cpu-sequential")
        assert rec.engine == "cpu-sequential" and rec.config["engine"] == "cpu-sequential"
        assert rt.registry.get_library("default", "matmul.so").backend == "cpu"
        a = (np.arange(16, dtype=np.int64) % 5).reshape(4, 4)
        out = rt.invoke("mm", {"cfg": struct.pack("<Q", 1), "A": a.tobytes()})
        assert (np.frombuffer(out["B"], np.int64).reshape(4, 4) == a @ a.T).all()
        # A pappus config names its engine itself.
        with pytest.raises(ValidationError) as info:
            rt.register_function("native", ROOT / "examples" / "matmul" / "matmul.json", engine="cpu-sequential")
        assert [(e.path, e.message) for e in info.value.errors] == [
            ("engine", "applies to Dandelion configs only; a pappus config names its engine itself (its 'engine' "
                       "field)")]
