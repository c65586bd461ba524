// Kernels of a hostile tenant (and a few honest ones to compare with), for security_tests/.
// Built once per session for the CPU backend by pappus_cpu.build; every attack must be stopped
// (SandboxViolation naming the call, or KernelFault) and leave the engine serving others.
#include <hip/hip_runtime.h>
#include <fcntl.h>
#include <link.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

// ---- honest work ----------------------------------------------------------------------------

// p[i] = v for i < n, grid-stride over x; idempotent, so any grid and block give the same bytes.
__global__ void fill_u8(unsigned char* p, uint64_t n, uint8_t v) {
    uint64_t step = (uint64_t)blockDim.x * gridDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) p[i] = v;
}

// p[i] += v for i < n, by the first thread of the first block only (once per launch).
__global__ void add_u8(unsigned char* p, uint64_t n, uint8_t v) {
    if (threadIdx.x | threadIdx.y | threadIdx.z | blockIdx.x | blockIdx.y | blockIdx.z) return;
    for (uint64_t i = 0; i < n; i++) p[i] = (unsigned char)(p[i] + v);
}

__global__ void noop() {}

// b[i] = a[i] * k + c (int64), by the first thread: the storm's honest function.
__global__ void affine_i64(const int64_t* a, int64_t* b, uint64_t nbytes, int64_t k, int64_t c) {
    if (threadIdx.x | blockIdx.x) return;
    for (uint64_t i = 0; i < nbytes / 8; i++) b[i] = a[i] * k + c;
}

// out[0] = bytes of p[0..n) that are not zero; out[1] = bytes equal to `v`.
__global__ void count_u8(const unsigned char* p, uint64_t n, uint8_t v, uint64_t* out) {
    if (threadIdx.x | blockIdx.x) return;
    uint64_t nz = 0, eq = 0;
    for (uint64_t i = 0; i < n; i++) {
        nz += p[i] != 0;
        eq += p[i] == v;
    }
    out[0] = nz;
    out[1] = eq;
}

// ---- system calls ---------------------------------------------------------------------------

__global__ void sys_openat(int64_t* out) { out[0] = syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY); }
__global__ void sys_open_self_mem(int64_t* out) { out[0] = open("/proc/self/mem", O_RDWR); }
__global__ void sys_open_pid_mem(int64_t pid, int64_t* out) {
    char path[64] = "/proc/";
    char digits[24];
    int n = 0;
    for (int64_t v = pid; v > 0 && n < 20; v /= 10) digits[n++] = (char)('0' + v % 10);
    int at = 6;
    while (n > 0) path[at++] = digits[--n];
    memcpy(path + at, "/mem", 5);
    out[0] = open(path, O_RDONLY);
}
__global__ void sys_socket(int64_t* out) { out[0] = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0); }
__global__ void sys_unix_socket(int64_t* out) { out[0] = syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0); }
__global__ void sys_fork(int64_t* out) { out[0] = syscall(SYS_fork); }
__global__ void sys_clone_thread(int64_t* out) {
    out[0] = syscall(SYS_clone, CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD, 0, 0, 0, 0);
}
__global__ void sys_execve(int64_t* out) {
    const char* argv[] = {"/bin/sh", "-c", "touch /tmp/pappus-escaped", 0};
    out[0] = syscall(SYS_execve, "/bin/sh", argv, 0);
}
__global__ void sys_ptrace_attach(int64_t pid, int64_t* out) { out[0] = syscall(SYS_ptrace, PTRACE_ATTACH, pid, 0, 0); }
__global__ void sys_kill(int64_t pid, int64_t* out) { out[0] = syscall(SYS_kill, pid, SIGKILL); }
__global__ void sys_mprotect_exec(int64_t* out) {
    out[0] = syscall(SYS_mprotect, (uintptr_t)out & ~(uintptr_t)4095, 4096, PROT_READ | PROT_WRITE | PROT_EXEC);
}
__global__ void sys_mmap_exec(int64_t* out) {
    out[0] = syscall(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}
// Reads 8 bytes of process `pid` at `address` into out[1].
__global__ void sys_process_vm_readv(int64_t pid, uint64_t address, int64_t* out) {
    struct iovec local = {out + 1, 8}, remote = {(void*)address, 8};
    out[0] = syscall(SYS_process_vm_readv, pid, &local, 1, &remote, 1, 0);
}
__global__ void sys_write_stdout(int64_t* out) { out[0] = syscall(SYS_write, 1, "escaped\n", 8); }
__global__ void sys_sigaction(int64_t* out) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    out[0] = sigaction(SIGSEGV, &sa, 0);
}
__global__ void sys_raw(int64_t nr, int64_t a0, int64_t a1, int64_t a2, int64_t* out) { out[0] = syscall(nr, a0, a1, a2); }
// The 32-bit system call ABI (int 0x80): eax 5 is open there. The filters check the ABI first.
__global__ void sys_int80_open(int64_t* out) {
#if defined(__x86_64__)
    long ret;
    static const char path[] = "/etc/passwd";
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(5), "b"((long)(uintptr_t)path), "c"(0L) : "memory");
    out[0] = ret;
#else
    out[0] = syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY);
#endif
}
// x32 ABI: the number with bit 30 set.
__global__ void sys_x32_getpid(int64_t* out) {
#if defined(__x86_64__)
    out[0] = syscall(0x40000000L | SYS_getpid);
#else
    out[0] = syscall(SYS_getpid);
#endif
}
// rt_sigreturn is allowed; with a garbage frame it must only hurt the caller.
__global__ void sys_sigreturn_garbage(int64_t* out) {
    out[0] = 1;
    syscall(SYS_rt_sigreturn);
}
// Ends the process as if it had finished, before writing its output.
__global__ void exit_early(int64_t* out) { syscall(SYS_exit_group, 0); out[0] = 1; }

// ---- memory faults and hangs ----------------------------------------------------------------

__global__ void write_at(int64_t* base, int64_t offset) { *(volatile int64_t*)((char*)base + offset) = 0x4141414141414141LL; }
__global__ void read_abs(uint64_t address, int64_t* out) { out[0] = *(volatile int64_t*)address; }
__global__ void spin(int64_t* out) {
    volatile int64_t* v = out;
    for (;;) v[0]++;
}
__global__ void trap() { __builtin_trap(); }

// ---- the template's control structures --------------------------------------------------------
// `offs` holds the offsets of the template's globals (from its symbol table: the binary is
// public, so an attacker knows them): status_pages, cmd, cmd_size, pool, pool_size, status,
// page size, done_wr (the done pipes). The program's load address comes from the loader's own list (no system call).

static int first_object(struct dl_phdr_info* info, size_t, void* data) {
    *(uintptr_t*)data = info->dlpi_addr;
    return 1;  // the first object is the program itself
}

static uintptr_t program_base() {
    uintptr_t base = 0;
    dl_iterate_phdr(first_object, &base);
    return base;
}

struct ctl {
    char* status_pages;
    char* cmd;
    uint64_t cmd_size;
    char* pool;
    uint64_t pool_size;
    char* status;
    uint64_t page;
    char** status_var;
    int* done_wr;
};

static ctl locate(const uint64_t* offs) {
    uintptr_t b = program_base();
    ctl c;
    c.status_pages = *(char**)(b + offs[0]);
    c.cmd = *(char**)(b + offs[1]);
    c.cmd_size = *(uint64_t*)(b + offs[2]);
    c.pool = *(char**)(b + offs[3]);
    c.pool_size = *(uint64_t*)(b + offs[4]);
    c.status = *(char**)(b + offs[5]);
    c.page = offs[6];
    c.status_var = (char**)(b + offs[5]);
    c.done_wr = (int*)(b + offs[7]);
    return c;
}

// What the attacker learns: where everything is, and that the structures are what it thinks.
__global__ void ctl_recon(const uint64_t* offs, uint64_t* out) {
    ctl c = locate(offs);
    out[0] = (uint64_t)(uintptr_t)c.status_pages;
    out[1] = (uint64_t)(uintptr_t)c.cmd;
    out[2] = c.cmd_size;
    out[3] = (uint64_t)(uintptr_t)c.pool;
    out[4] = c.pool_size;
    out[5] = (uint64_t)(uintptr_t)c.status;
    out[6] = ((volatile uint32_t*)c.cmd)[1];     // the command header's magic
    out[7] = ((volatile uint32_t*)c.cmd)[0];     // go: this invocation's number
    out[8] = ((volatile uint32_t*)c.status)[0];  // our own status: RUNNING
    out[9] = ((volatile uint32_t*)c.status)[7];  // and its sequence number
    out[10] = (uint64_t)(uintptr_t)offs;         // our first buffer: the pool's first byte
}

struct child_status_v1 {
    uint32_t state;
    int32_t sig, code, syscall_nr;
    uint32_t arch, launch_id, trap, seq;
    uint64_t addr, pc;
};

__global__ void ctl_attack(const uint64_t* offs, uint64_t which, uint64_t* out) {
    ctl c = locate(offs);
    child_status_v1* mine = (child_status_v1*)c.status;
    char* other = c.status_pages + (c.status == c.status_pages ? c.page : 0);
    switch (which) {
    case 0: ((volatile uint32_t*)c.cmd)[1] = 0; break;                    // the command header (read-only)
    case 1: ((volatile uint32_t*)c.cmd)[0] += 1; break;                   // `go`: wake the next child early
    case 2: ((volatile uint32_t*)(c.cmd + c.cmd_size - 8))[0] = 1; break; // the program area
    case 3: ((volatile uint32_t*)other)[0] = 2; break;                    // the next child's status
    case 4:                                                               // claim success, skip the work
        mine->state = 2;
        syscall(SYS_exit_group, 0);
        break;
    case 5:                                                               // claim a violation it did not make
        mine->state = 3;
        mine->sig = SIGSYS;
        mine->syscall_nr = 59;
        mine->arch = 0xC000003E;
        mine->launch_id = 0x7fffffff;
        mine->addr = ~0ull;
        mine->pc = ~0ull;
        syscall(SYS_exit_group, 3);
        break;
    case 6:                                                               // nonsense in every field
        mine->state = 0xdeadbeef;
        mine->sig = 0x7fffffff;
        mine->code = -1;
        mine->syscall_nr = -5;
        mine->arch = 0x12345678;
        mine->launch_id = 0xffffffff;
        mine->trap = 7;
        syscall(SYS_exit_group, 3);
        break;
    case 7:                                                               // a fault with a huge signal number
        mine->state = 3;
        mine->sig = 1000;
        syscall(SYS_exit_group, 3);
        break;
    case 8: c.pool[c.pool_size - 8] = 1; break;                           // the pool past our buffers
    case 9: c.pool[c.pool_size] = 1; break;                               // past the pool's end
    case 10: c.pool[-8] = 1; break;                                       // before the pool
    case 11:                                                              // the fault handler reports into the
        *c.status_var = other;                                            // next child's page (read-only)
        __builtin_trap();
        break;
    case 12:                                                              // ... or into our own buffer
        *c.status_var = (char*)out;
        __builtin_trap();
        break;
    case 13:                                                              // take our own view of the command
        syscall(SYS_mprotect, (uintptr_t)c.cmd, c.cmd_size, PROT_NONE);  // region away (allowed) and finish
        out[0] = 1;
        break;
    case 14:                                                              // say "done" on our done pipe, then
    case 15: {                                                            // keep writing (14) or spin (15)
        unsigned char b = (unsigned char)mine->seq;
        syscall(SYS_write, c.done_wr[mine->seq & 1], &b, 1);
        volatile uint64_t* v = out;
        for (uint64_t i = 0; which == 15 || i < 20000000; i++) v[2] = i;
        break;
    }
    case 16: {                                                            // fill our done pipe with every byte
        unsigned char all[4096];                                          // value (the next child of this slot
        for (int i = 0; i < 4096; i++) all[i] = (unsigned char)i;         // must not be taken for done), finish
        for (int k = 0; k < 32; k++) syscall(SYS_write, c.done_wr[mine->seq & 1], all, sizeof all);
        out[0] = 1;
        break;
    }
    }
    out[1] = which;
}

// ---- leftovers (LeftoverLocals, CVE-2023-4969) -------------------------------------------------
// One kernel, two modes. Fill (mode 0) writes `pattern` into its stack (a local array, before
// and after a barrier: with more than one thread the second is on a fiber stack), its static
// shared memory and its dynamic shared memory. Probe (mode 1) reads the same places
// uninitialised and counts words equal to the pattern and words that are not zero. A fill
// and a probe launched in one invocation (one process) are the positive control: there the
// probe must see the pattern, so a zero across invocations and tenants means something.

#define LEFT_WORDS 4096

__device__ __noinline__ void frame_fill(uint32_t pattern) {
    volatile uint32_t local[LEFT_WORDS];
    for (int i = 0; i < LEFT_WORDS; i++) local[i] = pattern;
}

__device__ __noinline__ void frame_probe(uint32_t pattern, uint64_t* same, uint64_t* nonzero) {
    volatile uint32_t local[LEFT_WORDS];
    uint64_t s = 0, nz = 0;
    for (int i = 0; i < LEFT_WORDS; i++) {
        uint32_t v = local[i];
        s += v == pattern;
        nz += v != 0;
    }
    *same = s;
    *nonzero = nz;
}

__device__ __noinline__ void frame(uint32_t mode, uint32_t pattern, uint64_t* same, uint64_t* nonzero) {
    if (mode == 0) frame_fill(pattern);
    else frame_probe(pattern, same, nonzero);
}

// out: for thread t of block 0, [4t + 0, 4t + 1] = stack same/nonzero before the barrier,
// [4t + 2, 4t + 3] after it; then out[4 * threads + 0..3] = static shared same/nonzero and
// dynamic shared same/nonzero (probe mode only).
__global__ void leftover(uint32_t mode, uint32_t pattern, uint64_t dyn_words, uint64_t* out) {
    __shared__ uint32_t sh[1024];
    extern __shared__ uint32_t dyn[];
    unsigned t = threadIdx.x;
    uint64_t a = 0, b = 0;
    frame(mode, pattern, &a, &b);
    if (mode == 1 && blockIdx.x == 0) {
        out[4 * t + 0] = a;
        out[4 * t + 1] = b;
    }
    __syncthreads();
    frame(mode, pattern, &a, &b);
    if (mode == 1 && blockIdx.x == 0) {
        out[4 * t + 2] = a;
        out[4 * t + 3] = b;
    }
    __syncthreads();
    if (mode == 0) {
        for (unsigned i = t; i < 1024; i += blockDim.x) sh[i] = pattern;
        for (uint64_t i = t; i < dyn_words; i += blockDim.x) dyn[i] = pattern;
        return;
    }
    if (t == 0 && blockIdx.x == 0) {
        uint64_t s = 0, nz = 0, ds = 0, dnz = 0;
        for (int i = 0; i < 1024; i++) {
            s += sh[i] == pattern;
            nz += sh[i] != 0;
        }
        for (uint64_t i = 0; i < dyn_words; i++) {
            ds += dyn[i] == pattern;
            dnz += dyn[i] != 0;
        }
        uint64_t* tail = out + 4 * blockDim.x;
        tail[0] = s;
        tail[1] = nz;
        tail[2] = ds;
        tail[3] = dnz;
    }
}

// Module globals and statics: read (out[0..1]) then overwrite.
__device__ uint64_t g_counter = 7;
static uint64_t s_counter = 3;
__global__ void globals_rw(uint64_t write, uint64_t* out) {
    if (threadIdx.x | blockIdx.x) return;
    out[0] = g_counter;
    out[1] = s_counter;
    if (write) {
        g_counter = 0x5151515151515151ull;
        s_counter = 0x5252525252525252ull;
    }
}

// Fills p with v, then faults (or spins): its buffers were written when it died.
__global__ void fill_then_fault(unsigned char* p, uint64_t n, uint8_t v) {
    for (uint64_t i = 0; i < n; i++) p[i] = v;
    __builtin_trap();
}
__global__ void fill_then_spin(unsigned char* p, uint64_t n, uint8_t v) {
    for (uint64_t i = 0; i < n; i++) p[i] = v;
    volatile uint64_t k = 0;
    for (;;) k++;
}
