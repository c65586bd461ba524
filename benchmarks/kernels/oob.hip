// A kernel that writes past the pool, for benchmarks/bench_fault_isolation.py: `offset` bytes
// past its own buffer (1 GiB lands in the no-access reservation around the CPU device's pool).
#include <hip/hip_runtime.h>
#include <stdint.h>

extern "C" __global__ void write_past(uint64_t* p, uint64_t offset) {
    *(volatile uint64_t*)((char*)p + offset) = 0x4141414141414141ULL;
}
