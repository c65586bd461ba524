// A compute-bound kernel of a chosen length for benchmarks/bench_fairness.py on the CPU
// backend: one thread runs a dependent chain of `iterations` multiply-adds (nothing to
// vectorise or skip), so its duration scales with `iterations` and nothing else.
#include <hip/hip_runtime.h>
#include <stdint.h>

__global__ void spin(uint64_t iterations, uint64_t* out) {
    if (threadIdx.x | blockIdx.x) return;
    uint64_t x = iterations;
    for (uint64_t i = 0; i < iterations; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    out[0] = x;
}
