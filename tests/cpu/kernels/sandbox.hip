// Kernels a hostile tenant might write. Every one must be stopped or contained by the sandbox.
#include <hip/hip_runtime.h>
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

__global__ void do_open(int* out) { out[0] = open("/etc/passwd", O_RDONLY); }

__global__ void do_fopen(int* out) {
    FILE* f = fopen("/etc/hostname", "r");
    out[0] = f != 0;
}

__global__ void do_proc_mem(int* out) {
    int fd = open("/proc/self/mem", O_RDONLY);
    char buf[16];
    out[0] = (int)pread(fd, buf, sizeof buf, 0x400000);
}

__global__ void do_fork(int* out) { out[0] = (int)fork(); }

__global__ void do_execve(int* out) {
    char* argv[] = {(char*)"/bin/true", 0};
    out[0] = execve("/bin/true", argv, 0);
}

__global__ void do_socket(int* out) { out[0] = socket(AF_INET, SOCK_STREAM, 0); }

__global__ void do_ptrace(int* out) { out[0] = (int)ptrace(PTRACE_TRACEME, 0, 0, 0); }

__global__ void do_mprotect_exec(int* out) {
    void* page = (void*)((uintptr_t)out & ~(uintptr_t)4095);
    out[0] = mprotect(page, 4096, PROT_READ | PROT_WRITE | PROT_EXEC);
}

__global__ void do_syscall(long nr, long* out) { out[0] = syscall(nr, 0, 0, 0); }

// Writes 8 bytes at base + offset: past the function's buffers, past the pool, anywhere.
__global__ void write_at(int64_t* base, int64_t offset) {
    *(volatile int64_t*)((char*)base + offset) = 0x4141414141414141LL;
}

__global__ void fill_u8(unsigned char* p, uint64_t n, uint8_t v) {
    for (uint64_t i = threadIdx.x; i < n; i += blockDim.x) p[i] = v;
}

__global__ void copy_bytes(unsigned char* dst, const unsigned char* src, uint64_t n) {
    for (uint64_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

__global__ void trap(int how) {
    if (how == 0) __builtin_trap();
    if (how == 1) assert(how == 0);
    if (how == 2) abort();
}

__global__ void divide(int a, int b, int* out) { out[0] = a / b; }

__global__ void spin(int* out) {
    volatile int* v = out;
    for (;;) v[0]++;
}

__device__ __noinline__ int deep(int depth) {
    volatile char frame[4096];
    frame[0] = (char)depth;
    if (depth == 0) return frame[0];
    return deep(depth - 1) + frame[0];
}

__global__ void recurse(int depth, int* out) { out[0] = deep(depth); }

// Module globals: a later invocation must see their load-time values.
__device__ int g_value = 7;
static int s_value = 3;

__global__ void globals(int write, int* out) {
    __shared__ int sh;
    out[0] = g_value;
    out[1] = s_value;
    out[2] = sh;
    if (write) {
        g_value = 99;
        s_value = 77;
        sh = 55;
    }
}

// LeftoverLocals: one kernel fills shared memory and its stack; the probe reads both
// uninitialised at the same stack depth and counts non-zero words.
__global__ void fill_private(int* out) {
    volatile int local[4096];
    __shared__ int sh[1024];
    for (int i = 0; i < 4096; i++) local[i] = 0x5a5a5a5a;
    for (int i = 0; i < 1024; i++) sh[i] = 0x5a5a5a5a;
    out[0] = local[17] + sh[3];
}

__global__ void probe_private(int* out) {
    volatile int local[4096];
    __shared__ int sh[1024];
    int on_stack = 0, in_shared = 0;
    for (int i = 0; i < 4096; i++) on_stack += local[i] != 0;
    for (int i = 0; i < 1024; i++) in_shared += sh[i] != 0;
    out[0] = on_stack;
    out[1] = in_shared;
}

// Dynamic shared memory: filled by one launch, probed by another.
__global__ void fill_dyn(int n) {
    extern __shared__ int dyn[];
    for (int i = 0; i < n; i++) dyn[i] = 0x5a5a5a5a;
}

__global__ void probe_dyn(int n, int* out) {
    extern __shared__ int dyn[];
    int c = 0;
    for (int i = 0; i < n; i++) c += dyn[i] != 0;
    out[0] = c;
}

// Writes one int past the end of its dynamic shared memory.
__global__ void dyn_overflow(int n) {
    extern __shared__ int dyn[];
    ((volatile int*)(int*)dyn)[n] = 1;
}

// Ends the process itself, as if it had finished.
__global__ void quit(int* out) {
    out[0] = 1;
    _exit(0);
}

// Reads 8 bytes at an absolute address (another module's code, the template's memory, ...).
__global__ void read_at(uint64_t address, int64_t* out) { out[0] = *(volatile int64_t*)address; }

__global__ void do_read(int fd, int* out) {
    char b;
    out[0] = (int)read(fd, &b, 1);
}

// mprotect to PROT_NONE is allowed (it only takes access away); the write after it faults.
__global__ void do_mprotect_none(int* out) {
    void* page = (void*)((uintptr_t)out & ~(uintptr_t)4095);
    int r = mprotect(page, 4096, PROT_NONE);
    out[0] = r;
}

// The loader's list as a kernel sees it: out[0] = objects listed, out[1] = the sum of their
// load addresses (no system call).
static int count_object(struct dl_phdr_info* info, size_t, void* data) {
    uint64_t* out = (uint64_t*)data;
    out[0]++;
    out[1] += info->dlpi_addr;
    return 0;
}

__global__ void loaded_objects(uint64_t* out) {
    if (threadIdx.x | blockIdx.x) return;
    out[0] = out[1] = 0;
    dl_iterate_phdr(count_object, out);
}
