// Kernels of the pappus conformance suite. Portable HIP: they build for the CPU backend (its
// compatibility header), for AMD GPUs (hipcc) and for NVIDIA GPUs (the CUDA backend's shim).
// Each is small and does one thing the suite needs; none of them is clever.
#include <hip/hip_runtime.h>
#include <stdint.h>
#include <stddef.h>

#define GRID_STRIDE(i, n) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

// Tenant A: write a secret pattern into every byte of a buffer.
extern "C" __global__ void fill_secret(uint8_t* p, size_t n, uint32_t pattern) {
    GRID_STRIDE(i, n) { p[i] = (uint8_t)(pattern >> (8 * (i & 3))) | 1u; }
}

// Tenant B: count the nonzero bytes it finds in a buffer it never wrote. The count is *added*
// to *out, so leftovers in the output buffer itself show as well.
extern "C" __global__ void count_nonzero(const uint8_t* p, size_t n, unsigned long long* out) {
    unsigned long long local = 0;
    GRID_STRIDE(i, n) { local += p[i] != 0; }
    if (local) atomicAdd(out, local);
}

// Shared memory, private memory and registers: tenant A leaves a secret in all three, tenant B
// reads them before writing anything. A's words are SCRATCH_SECRET + k for k < SCRATCH_WORDS and
// B counts a word as A's when word - SCRATCH_SECRET < SCRATCH_WORDS, so nothing B computes
// itself is ever one of A's words (B never holds the secret, only differences from it) and B's
// own stale values do not count, only A's.
//
// Compilers keep a private array in registers, or drop it, when every index is known: nvcc
// removed A's constant-indexed volatile array altogether (sm_90, CUDA 13). Indexing through the
// runtime argument `stride` (always 1) puts it in private (local, scratch) memory for real. A's
// registers are filled by volatile loads of its shared words, which no compiler may drop or
// recompute later; B reads registers through empty asm statements that claim to write them.
#define SCRATCH_SECRET 0x0BADC0DEu
#define LEFTOVER_WORDS 2048  // shared memory, per block: A's words SECRET + [0, 2048)
#define PRIVATE_WORDS 256    // private memory, per thread: SECRET + 2048 + [0, 256)
#define REGISTER_WORDS 64    // registers, per thread: 64 of the shared words
#define SCRATCH_WORDS (LEFTOVER_WORDS + PRIVATE_WORDS)
#if defined(__AMDGCN__)
#define SCRATCH_REG "v"
#else
#define SCRATCH_REG "r"
#endif

__device__ static inline unsigned long long is_scratch_secret(uint32_t word) {
    return word - SCRATCH_SECRET < SCRATCH_WORDS;
}

extern "C" __global__ void fill_scratch(uint32_t stride, unsigned long long* sink) {
    __shared__ uint32_t shared_area[LEFTOVER_WORDS];
    volatile uint32_t private_area[PRIVATE_WORDS];
    for (int i = threadIdx.x; i < LEFTOVER_WORDS; i += blockDim.x) shared_area[i] = SCRATCH_SECRET + (uint32_t)i;
    for (uint32_t i = 0; i < PRIVATE_WORDS; ++i)
        private_area[(i * stride) % PRIVATE_WORDS] = SCRATCH_SECRET + LEFTOVER_WORDS + i;
    __syncthreads();
    uint32_t held[REGISTER_WORDS];
#pragma unroll
    for (int i = 0; i < REGISTER_WORDS; ++i)
        held[i] = ((volatile uint32_t*)shared_area)[(threadIdx.x + i) % LEFTOVER_WORDS];
    // Never true (both words are A's), but no compiler can know, and stores to distinct words
    // cannot be merged: every word of `held` is in a register of its own up to here.
    if (private_area[(7 * stride) % PRIVATE_WORDS] == 0 && shared_area[3] == 0) {
#pragma unroll
        for (int i = 0; i < REGISTER_WORDS; ++i) ((volatile uint32_t*)sink)[i] = held[i];
    }
}

// Tenant B: A's words found in shared and private memory...
extern "C" __global__ void probe_scratch(uint32_t stride, unsigned long long* out) {
    __shared__ uint32_t shared_area[LEFTOVER_WORDS];
    volatile uint32_t private_area[PRIVATE_WORDS];
    unsigned long long found = 0;
    for (int i = threadIdx.x; i < LEFTOVER_WORDS; i += blockDim.x) found += is_scratch_secret(shared_area[i]);
    for (uint32_t i = 0; i < PRIVATE_WORDS; ++i) found += is_scratch_secret(private_area[(i * stride) % PRIVATE_WORDS]);
    if (found) atomicAdd(out, found);
}

// ...and in registers: each asm claims to have written a register, so B reads whatever the
// register held when B's kernel started. `never` is 0; the stores it guards keep all of `held`
// live at once where the compiler takes an empty asm for a definition. ptxas does not (PTX has
// no instruction for it) and gave B 10 registers on sm_90: enough to find A's words there.
extern "C" __global__ void probe_registers(uint32_t never, unsigned long long* out) {
    uint32_t held[REGISTER_WORDS];
#pragma unroll
    for (int i = 0; i < REGISTER_WORDS; ++i) asm volatile("" : "=" SCRATCH_REG(held[i]));
    unsigned long long found = 0;
#pragma unroll
    for (int i = 0; i < REGISTER_WORDS; ++i) found += is_scratch_secret(held[i]);
    if (found) atomicAdd(out, found);
    if (never) {
#pragma unroll
        for (int i = 0; i < REGISTER_WORDS; ++i) ((volatile uint32_t*)out)[2 + i] = held[i];
    }
}

// Faults. Offsets are kernel arguments so no compiler can prove the access out of bounds.
extern "C" __global__ void write_at(uint8_t* p, uint64_t offset) {
    if (threadIdx.x == 0 && blockIdx.x == 0) ((volatile uint8_t*)p)[offset] = 0xAA;
}

extern "C" __global__ void read_at(const uint8_t* p, uint64_t offset, uint8_t* out) {
    if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = ((volatile const uint8_t*)p)[offset];
}

extern "C" __global__ void write_null(uint64_t zero) {
    if (threadIdx.x == 0 && blockIdx.x == 0) *(volatile uint32_t*)(uintptr_t)zero = 1u;
}

// Reads 8 bytes at an address it was given: what a kernel reaches outside its own buffers.
extern "C" __global__ void read_address(uint64_t address, uint64_t* out) {
    if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = *(volatile const uint64_t*)(uintptr_t)address;
}

extern "C" __global__ void trap_now(uint8_t* p) {
    if (threadIdx.x == 0 && blockIdx.x == 0) { p[0] = 1; __builtin_trap(); }
}

// Runs until something stops it, writing to its buffer all the while. (2^64 rounds is forever;
// the loop's exit is there because hipcc 5.2 crashes on a loop it can prove infinite.)
extern "C" __global__ void spin_writing(uint8_t* p, size_t n) {
    for (uint64_t round = 1; round != 0; ++round) {
        GRID_STRIDE(i, n) { ((volatile uint8_t*)p)[i] = (uint8_t)(round | 1u); }
    }
}

// An honest, checkable workload: out[i] = a[i] * k + i.
extern "C" __global__ void affine(const int64_t* a, int64_t* out, size_t count, int64_t k) {
    GRID_STRIDE(i, count) { out[i] = a[i] * k + (int64_t)i; }
}

// Copies the bytes of every scalar argument it received, in order and packed, into out: what
// the backend delivered, of every width and kind, whatever padding the kernel's ABI puts
// between them (a u16 after an i8, a double after a float).
static __device__ void put_bytes(uint8_t* out, unsigned* at, const void* value, unsigned n) {
    const uint8_t* bytes = (const uint8_t*)value;
    for (unsigned i = 0; i < n; ++i) out[(*at)++] = bytes[i];
}

extern "C" __global__ void echo_scalars(uint8_t* out, int8_t a, uint16_t b, int32_t c, float d, uint64_t e,
                                        double f, int16_t g, uint8_t h, uint32_t v) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    unsigned at = 0;
    put_bytes(out, &at, &a, sizeof a);
    put_bytes(out, &at, &b, sizeof b);
    put_bytes(out, &at, &c, sizeof c);
    put_bytes(out, &at, &d, sizeof d);
    put_bytes(out, &at, &e, sizeof e);
    put_bytes(out, &at, &f, sizeof f);
    put_bytes(out, &at, &g, sizeof g);
    put_bytes(out, &at, &h, sizeof h);
    put_bytes(out, &at, &v, sizeof v);
}
