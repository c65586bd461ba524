#!/usr/bin/env bash
# The NVIDIA checks of issue 12 on a GPU machine with no network: install the project from a
# wheelhouse, then run the named stages, each under its own time limit, logs into $OUT.
#
#   tools/gpu_checks.sh WHEELHOUSE OUT STAGE...    (OUT/results.tgz: every log and report)
#   stages: env tests device conformance-seq conformance-mp bench-cuda bench-engines
#           bench-open bench-faults bench-faults-quota onchip fs-writes
#
# The wheelhouse (made by tools/gpu_wheelhouse.sh) holds pappus (pip wheel --no-deps .) and what
# the machine lacks (cffi, pycparser, pyelftools); everything else (cuda-bindings, numpy, pluggy,
# pytest, ...) is there.
#
# A GPU whose kernels can reach pageable host memory (HMM, ATS) is refused unless allowed
# (pappus/host_access.py): the env stage prints what this one reports, the device stage tests it,
# and PAPPUS_ALLOW_HOST_MEMORY_ACCESS=1 in this script's environment lets the engine stages run
# on it anyway (record that the figures were taken so).
#
# Engine workers lock themselves down after open (pappus/engine/lockdown.py, a seccomp deny-list
# that has not run under the CUDA driver before): if engine stages fail where the device stage's
# DeviceAPI tests pass, rerun them with PAPPUS_WORKER_LOCKDOWN=0 to tell whether it is the cause.
set -u
WHL=$1; DEST=$2; shift 2
OUT=/tmp/gpu-checks  # many files; DEST gets one archive of them, refreshed after every stage
mkdir -p "$OUT" "$DEST"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl \
    >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
export PAPPUS_EXAMPLES=$PWD/examples PAPPUS_HOME=/tmp/pappus-home
PY=python3

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s): $*"
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "=== $name: rc=$rc in $((SECONDS - t0))s"
    tail -n 25 "$OUT/$name.log"
    tar -czf "$DEST/results.tgz" -C "$OUT" .
}

for s in "$@"; do
    case $s in
    env)
        stage env 60 bash -c "nvidia-smi; nvcc --version | tail -2; $PY -c 'import cuda.bindings, sys; print(sys.version, cuda.bindings.__version__)';
            $PY -m pip list 2>/dev/null | grep -i -E 'cuda|numpy|pluggy|pytest|hypothesis'; $PY -m pappus plugins;
            $PY -c 'from cuda.bindings import driver as d; d.cuInit(0); a = d.CUdevice_attribute
for n in (\"PAGEABLE_MEMORY_ACCESS\", \"PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES\"):
    print(n, d.cuDeviceGetAttribute(getattr(a, \"CU_DEVICE_ATTRIBUTE_\" + n), d.cuDeviceGet(0)[1]))'" ;;
    tests)
        stage tests 240 $PY -m pytest -q -rs -p no:cacheprovider -n 8 tests/cuda --ignore=tests/cuda/test_device.py ;;
    device)
        PAPPUS_CUDA_DEVICE_REPORT=$OUT/cuda-device-report.json \
            stage device 240 $PY -m pytest -q -rs -s -p no:cacheprovider tests/cuda/test_device.py ;;
    conformance-seq)
        stage conformance-seq 300 $PY -m pappus conformance --backend cuda --engine sequential -n 4 \
            --report "$OUT/conformance-seq" ;;
    conformance-mp)
        stage conformance-mp 300 $PY -m pappus conformance --backend cuda --engine multiprocess -n 4 \
            --report "$OUT/conformance-mp" ;;
    bench-cuda)
        stage bench-cuda 240 $PY benchmarks/bench_cuda.py --json "$OUT/bench-cuda.json" ;;
    bench-engines)
        stage bench-engines 240 $PY benchmarks/bench_engines.py --backend cuda --json "$OUT/bench-engines.json" ;;
    bench-open)
        stage bench-open 240 $PY -m pappus bench matmul128 --target cuda-sequential,cuda-multiprocess \
            --rps 100,500,1000,2000 --duration 3 --quiet --no-plot --out "$OUT/bench-open" ;;
    bench-faults)
        stage bench-faults 240 $PY benchmarks/bench_fault_isolation.py --engine cuda-multiprocess \
            --engine cuda-sequential --rounds 2 --duration 4 --json "$OUT/bench-faults.json" ;;
    bench-faults-quota)  # M under a fault_rate quota of 1/s (burst 2): what the quota buys B
        stage bench-faults-quota 240 $PY benchmarks/bench_fault_isolation.py --engine cuda-multiprocess \
            --engine cuda-sequential --rounds 2 --duration 4 --fault-quota 1:2 --json "$OUT/bench-faults-quota.json" ;;
    onchip)
        stage onchip 120 $PY tools/cuda_onchip_probe.py ;;
    fs-writes)  # what the CUDA engines write to the file system while they serve, fault and recover
        # (the data a file-system confinement of GPU workers needs first; docs/security.md)
        stage fs-writes 240 bash -c "touch /tmp/fs-writes-stamp && sleep 1 &&
            $PY -m pytest -q -p no:cacheprovider tests/cuda/test_device.py -k runtime_end_to_end;
            find /tmp /var/tmp /dev/shm /run \"\$HOME\" \"\$PWD\" \( -path $OUT -o -path /tmp/site \) -prune -o \
                -newer /tmp/fs-writes-stamp -print 2>/dev/null | grep -v -e __pycache__ -e /pytest-of- | sort -u | head -300" ;;
    *) echo "unknown stage $s"; exit 2 ;;
    esac
done
