/* pappus CPU backend: HIP kernel source compiled as plain C++17 for the host CPU.
 *
 * Included first in every kernel library (the builder passes -include pappus_hip_cpu.h, and
 * <hip/hip_runtime.h> points here too). It maps the HIP kernel language onto a single-threaded
 * process: blocks run one after another, the threads of a block run on fibers. A thread starts
 * as a plain call on the current fiber; only a thread that blocks in __syncthreads() leaves its
 * fiber and the next thread starts on a fresh one, so kernels without barriers cost about a
 * function call per thread. Because every invocation runs in a freshly forked child process,
 * `static` is exactly per-block shared memory for blocks that run one after another, and every
 * global, static and stack starts from its load-time image.
 *
 * Nothing here is a security boundary: the sandbox is the child process and its seccomp filter.
 */
#ifndef PAPPUS_HIP_CPU_H
#define PAPPUS_HIP_CPU_H

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "pappus cpu: HIP sources are compiled as C++17 (g++ -std=c++17)"
#endif
#if !defined(__x86_64__) && !defined(__aarch64__)
#error "pappus cpu: only x86-64 and aarch64 hosts are supported"
#endif

/* The C library headers kernel code commonly uses, included before the macros below redefine
 * printf and malloc, so later includes of them are no-ops. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <assert.h>

#include <type_traits>
#include <utility>

#include "pappus_cpu_abi.h"

/* ---------------------------------------------------------------------------------------- */
/* Qualifiers                                                                                */
/* ---------------------------------------------------------------------------------------- */

#ifdef __PAPPUS_SCAN__
/* The builder preprocesses the source with this marker to find kernel definitions. */
#define __global__ __pappus_global__
#else
#define __global__
#endif
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __shared__ static
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __HIP_PLATFORM_PAPPUS_CPU__ 1
#define __HIP__PAPPUS_CPU 1
#define HIP_DYNAMIC_SHARED_ATTRIBUTE

#define PAPPUS_INLINE inline __attribute__((always_inline))

/* ---------------------------------------------------------------------------------------- */
/* Vector types                                                                              */
/* ---------------------------------------------------------------------------------------- */

#define PAPPUS_VEC(T, N)                                                                     \
    struct N##1 { T x; };                                                                    \
    struct N##2 { T x, y; };                                                                 \
    struct N##3 { T x, y, z; };                                                              \
    struct __attribute__((aligned(sizeof(T) * 4))) N##4 { T x, y, z, w; };                   \
    static PAPPUS_INLINE N##1 make_##N##1(T x) { return N##1{x}; }                           \
    static PAPPUS_INLINE N##2 make_##N##2(T x, T y) { return N##2{x, y}; }                   \
    static PAPPUS_INLINE N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }           \
    static PAPPUS_INLINE N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }

PAPPUS_VEC(signed char, char)
PAPPUS_VEC(unsigned char, uchar)
PAPPUS_VEC(short, short)
PAPPUS_VEC(unsigned short, ushort)
PAPPUS_VEC(int, int)
PAPPUS_VEC(unsigned int, uint)
PAPPUS_VEC(long, long)
PAPPUS_VEC(unsigned long, ulong)
PAPPUS_VEC(long long, longlong)
PAPPUS_VEC(unsigned long long, ulonglong)
PAPPUS_VEC(float, float)
PAPPUS_VEC(double, double)
#undef PAPPUS_VEC

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

/* ---------------------------------------------------------------------------------------- */
/* The block scheduler: fibers and barriers                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Built-in indices. Hidden globals (not statics) so the compiler reloads them after the opaque
 * fiber switch in __syncthreads(). */
static constexpr int warpSize = 64;

inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

#define hipThreadIdx_x (threadIdx.x)
#define hipThreadIdx_y (threadIdx.y)
#define hipThreadIdx_z (threadIdx.z)
#define hipBlockIdx_x (blockIdx.x)
#define hipBlockIdx_y (blockIdx.y)
#define hipBlockIdx_z (blockIdx.z)
#define hipBlockDim_x (blockDim.x)
#define hipBlockDim_y (blockDim.y)
#define hipBlockDim_z (blockDim.z)
#define hipGridDim_x (gridDim.x)
#define hipGridDim_y (gridDim.y)
#define hipGridDim_z (gridDim.z)

extern "C" void __pappus_fiber_switch(void **save_sp, void *to_sp);

/* Save the callee-saved registers on the current stack, store the stack pointer in *save_sp,
 * switch to to_sp and restore the registers saved there. A new fiber's stack is prepared by
 * __pappus::fiber_init so that the first switch "returns" into its start function. */
#if defined(__x86_64__)
__asm__(
    ".text\n"
    ".weak __pappus_fiber_switch\n"
    ".hidden __pappus_fiber_switch\n"
    ".type __pappus_fiber_switch,@function\n"
    "__pappus_fiber_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size __pappus_fiber_switch, .-__pappus_fiber_switch\n");
#define PAPPUS_FIBER_FRAME_WORDS 8 /* 6 registers, return address, alignment slot */
#elif defined(__aarch64__)
__asm__(
    ".text\n"
    ".weak __pappus_fiber_switch\n"
    ".hidden __pappus_fiber_switch\n"
    ".type __pappus_fiber_switch,%function\n"
    "__pappus_fiber_switch:\n"
    "  sub sp, sp, #176\n"
    "  stp x19, x20, [sp, #0]\n  stp x21, x22, [sp, #16]\n  stp x23, x24, [sp, #32]\n"
    "  stp x25, x26, [sp, #48]\n  stp x27, x28, [sp, #64]\n  stp x29, x30, [sp, #80]\n"
    "  stp d8, d9, [sp, #96]\n  stp d10, d11, [sp, #112]\n  stp d12, d13, [sp, #128]\n"
    "  stp d14, d15, [sp, #144]\n"
    "  mov x9, sp\n  str x9, [x0]\n"
    "  mov sp, x1\n"
    "  ldp x19, x20, [sp, #0]\n  ldp x21, x22, [sp, #16]\n  ldp x23, x24, [sp, #32]\n"
    "  ldp x25, x26, [sp, #48]\n  ldp x27, x28, [sp, #64]\n  ldp x29, x30, [sp, #80]\n"
    "  ldp d8, d9, [sp, #96]\n  ldp d10, d11, [sp, #112]\n  ldp d12, d13, [sp, #128]\n"
    "  ldp d14, d15, [sp, #144]\n"
    "  add sp, sp, #176\n"
    "  ret\n"
    ".size __pappus_fiber_switch, .-__pappus_fiber_switch\n");
#define PAPPUS_FIBER_FRAME_WORDS 22 /* 176 bytes of saved registers */
#endif

namespace __pappus {

struct fiber {
    void *sp;
    uint3 tid;
    unsigned gen;
    fiber *next_free;
};

enum { max_threads = 1024 };

struct sched_t {
    const pappus_launch *L;
    unsigned nthreads;  /* threads in the current block */
    unsigned next;      /* next thread of the block to start */
    uint3 tnext;        /* its threadIdx */
    fiber *cur;         /* fiber running now */
    void *main_sp;      /* the launch loop's stack while a fiber runs */
    fiber **waiting;    /* fibers blocked at the barrier, in arrival order */
    unsigned nwait;
    fiber *free_list;
    unsigned slots_used;
    unsigned gen;       /* barrier generation, for __syncthreads_count/and/or */
    int acc[2];
    void (*start)();    /* fiber start function of the current kernel */
    void *body;         /* the current kernel's per-thread closure */
    void *dyn_shared;
    fiber *wbuf[2][max_threads + 1];
};

inline sched_t S;

[[noreturn]] PAPPUS_INLINE void fatal() { __builtin_trap(); }

PAPPUS_INLINE void advance_tid() {
    uint3 &t = S.tnext;
    if (++t.x == blockDim.x) {
        t.x = 0;
        if (++t.y == blockDim.y) {
            t.y = 0;
            ++t.z;
        }
    }
}

/* A fiber whose first switch enters S.start. The fiber record sits at the top of its slot;
 * the stack grows down from right below it. */
inline fiber *fiber_alloc() {
    fiber *f = S.free_list;
    if (f) {
        S.free_list = f->next_free;
    } else {
        const pappus_launch *L = S.L;
        if (S.slots_used >= L->stack_count) fatal(); /* more blocked threads than stacks */
        char *slot_top = L->stacks + (uint64_t)(S.slots_used + 1) * L->stack_stride;
        S.slots_used++;
        f = reinterpret_cast<fiber *>(slot_top - 64);
    }
    void **sp = reinterpret_cast<void **>(reinterpret_cast<uintptr_t>(f) & ~uintptr_t(15));
#if defined(__x86_64__)
    *--sp = nullptr;                                /* alignment: entry sees rsp % 16 == 8 */
    *--sp = reinterpret_cast<void *>(S.start);      /* popped by ret */
    for (int i = 0; i < 6; i++) *--sp = nullptr;    /* rbp rbx r12 r13 r14 r15 */
#elif defined(__aarch64__)
    sp -= PAPPUS_FIBER_FRAME_WORDS;
    for (int i = 0; i < PAPPUS_FIBER_FRAME_WORDS; i++) sp[i] = nullptr;
    sp[11] = reinterpret_cast<void *>(S.start);     /* x30: where ret goes */
#endif
    f->sp = sp;
    return f;
}

/* The start function of every fiber: start threads until all have started (a thread that
 * blocks leaves this loop on its fiber; the next thread starts on a fresh fiber), then give
 * the fiber back and return to the launch loop. Never returns. */
template <class B>
[[noreturn]] void fiber_main() {
    B &body = *static_cast<B *>(S.body);
    for (;;) {
        while (S.next < S.nthreads) {
            S.next++;
            threadIdx = S.tnext;
            advance_tid();
            body();
        }
        fiber *me = S.cur;
        me->next_free = S.free_list;
        S.free_list = me;
        __pappus_fiber_switch(&me->sp, S.main_sp);
        __builtin_unreachable(); /* a freed fiber is re-initialised before it runs again */
    }
}

/* Block on the barrier; returns the generation whose accumulator holds the combined predicate. */
inline unsigned barrier_wait(int contribution) {
    fiber *me = S.cur;
    me->tid = threadIdx;
    me->gen = S.gen;
    S.acc[S.gen & 1] += contribution;
    S.waiting[S.nwait++] = me;
    if (S.next < S.nthreads) {
        fiber *g = fiber_alloc();
        S.cur = g;
        __pappus_fiber_switch(&me->sp, g->sp);
    } else {
        __pappus_fiber_switch(&me->sp, S.main_sp);
    }
    S.cur = me;
    threadIdx = me->tid;
    return me->gen;
}

template <class B>
inline void run_block(B &body) {
    S.next = 0;
    S.tnext = uint3{0, 0, 0};
    S.nwait = 0;
    S.body = &body;
    S.start = &fiber_main<B>;
    fiber *f = fiber_alloc();
    S.cur = f;
    __pappus_fiber_switch(&S.main_sp, f->sp);
    while (S.nwait) { /* every live thread has reached the barrier: release them in order */
        fiber **list = S.waiting;
        unsigned n = S.nwait;
        S.waiting = (list == S.wbuf[0]) ? S.wbuf[1] : S.wbuf[0];
        S.nwait = 0;
        S.gen++;
        S.acc[S.gen & 1] = 0;
        for (unsigned i = 0; i < n; i++) {
            S.cur = list[i];
            __pappus_fiber_switch(&S.main_sp, list[i]->sp);
        }
    }
}

template <class B>
inline void run_grid(const pappus_launch *L, B &body) {
    if (L->abi != PAPPUS_CPU_ABI) fatal();
    S.L = L;
    S.dyn_shared = L->dyn_shared;
    if (!S.waiting) S.waiting = S.wbuf[0];
    blockDim = dim3(L->block[0], L->block[1], L->block[2]);
    gridDim = dim3(L->grid[0], L->grid[1], L->grid[2]);
    uint64_t threads = (uint64_t)L->block[0] * L->block[1] * L->block[2];
    if (threads == 0 || threads > max_threads) fatal();
    S.nthreads = (unsigned)threads;
    for (unsigned z = 0; z < L->grid[2]; z++)
        for (unsigned y = 0; y < L->grid[1]; y++)
            for (unsigned x = 0; x < L->grid[0]; x++) {
                blockIdx = uint3{x, y, z};
                run_block(body);
            }
}

/* Kernel arguments arrive as packed little-endian bytes, one buffer per parameter. */
template <class T>
PAPPUS_INLINE T load_arg(const void *p) {
    static_assert(std::is_trivially_copyable<T>::value,
                  "pappus cpu: kernel parameters must be trivially copyable");
    union U {
        T v;
        unsigned char b[sizeof(T)];
        U() {}
    } u;
    memcpy(u.b, p, sizeof(T));
    return u.v;
}

template <auto F, class... V>
PAPPUS_INLINE void launch_values(const pappus_launch *L, V... vals) {
    auto body = [=]() __attribute__((always_inline)) { F(vals...); };
    run_grid(L, body);
}

template <auto F, class... A, size_t... I>
PAPPUS_INLINE void launch_unpack(const pappus_launch *L, void *const *args, void (*)(A...),
                                 std::index_sequence<I...>) {
    launch_values<F>(L, load_arg<std::decay_t<A>>(args[I])...);
}

template <class T>
struct kernel_traits {
    static_assert(sizeof(T) == 0, "pappus cpu: a __global__ function must return void");
};
template <class... A>
struct kernel_traits<void (*)(A...)> {
    static constexpr size_t nparams = sizeof...(A);
};

template <auto F>
PAPPUS_INLINE void launch(const pappus_launch *L, void *const *args) {
    constexpr size_t n = kernel_traits<decltype(F)>::nparams;
    launch_unpack<F>(L, args, F, std::make_index_sequence<n>{});
}

/* --- the manifest: kernel signatures as constant data in .pappus_manifest ---------------- */

template <class T>
constexpr uint32_t param_kind() {
    using U = std::decay_t<T>;
    if (std::is_pointer<U>::value) return PAPPUS_KIND_POINTER;
    if (std::is_floating_point<U>::value) return PAPPUS_KIND_FLOAT;
    if (std::is_same<U, bool>::value) return PAPPUS_KIND_UINT;
    if (std::is_integral<U>::value) return std::is_signed<U>::value ? PAPPUS_KIND_INT : PAPPUS_KIND_UINT;
    if (std::is_enum<U>::value) return PAPPUS_KIND_INT;
    return PAPPUS_KIND_BYTES;
}

template <size_t N, size_t NL>
struct alignas(8) mrec {
    uint32_t magic;
    uint16_t abi;
    uint16_t type;
    uint32_t size;
    uint32_t nparams;
    uint32_t namelen;
    uint32_t reserved;
    uint32_t params[2 * (N + 1)];
    char name[NL];
};

template <size_t NL, class... A, size_t M>
constexpr mrec<sizeof...(A), NL> make_mrec(void (*)(A...), const char (&name)[M], uint16_t type) {
    static_assert(M <= NL && NL % 8 == 0, "manifest name buffer");
    mrec<sizeof...(A), NL> r{};
    r.magic = PAPPUS_MANIFEST_MAGIC;
    r.abi = PAPPUS_CPU_ABI;
    r.type = type;
    r.size = sizeof(r);
    r.nparams = sizeof...(A);
    r.namelen = M - 1;
    const uint32_t sizes[] = {uint32_t(sizeof(std::decay_t<A>))..., 0u};
    const uint32_t kinds[] = {param_kind<A>()..., 0u};
    for (size_t i = 0; i < sizeof...(A); i++) {
        r.params[2 * i] = sizes[i];
        r.params[2 * i + 1] = kinds[i];
    }
    for (size_t i = 0; i < M; i++) r.name[i] = name[i];
    return r;
}

/* --- dynamic shared memory: `extern __shared__ T name[];` ------------------------------- */

template <class T>
struct dynshared {
    PAPPUS_INLINE T *ptr() const { return static_cast<T *>(S.dyn_shared); }
    PAPPUS_INLINE operator T *() const { return ptr(); }
    template <class U>
    PAPPUS_INLINE explicit operator U *() const { return reinterpret_cast<U *>(S.dyn_shared); }
    PAPPUS_INLINE T &operator[](ptrdiff_t i) const { return ptr()[i]; }
};

template <class... T>
struct always_false {
    static constexpr bool value = false;
};

} /* namespace __pappus */

/* The builder rewrites `extern __shared__ T name[];` to this form; sources may use it too. */
#define HIP_DYNAMIC_SHARED(type, var) [[maybe_unused]] static constexpr ::__pappus::dynshared<type> var{};

/* Exported entry point and manifest record of one kernel (used by the generated wrapper). */
#define PAPPUS_EXPORT_KERNEL(ident, fn, name_literal, name_bytes)                                \
    extern "C" __attribute__((visibility("default"), used)) void __pappus_entry_##ident(          \
        const pappus_launch *L, void *const *args) {                                              \
        ::__pappus::launch<fn>(L, args);                                                          \
    }                                                                                             \
    __attribute__((used, section(PAPPUS_MANIFEST_SECTION))) static constexpr auto                 \
        __pappus_manifest_##ident = ::__pappus::make_mrec<name_bytes>(fn, name_literal, PAPPUS_RECORD_KERNEL);

/* ---------------------------------------------------------------------------------------- */
/* Synchronisation                                                                           */
/* ---------------------------------------------------------------------------------------- */

static PAPPUS_INLINE void __syncthreads() {
    if (__pappus::S.nthreads > 1) __pappus::barrier_wait(0);
}
static PAPPUS_INLINE int __syncthreads_count(int predicate) {
    if (__pappus::S.nthreads <= 1) return predicate != 0;
    unsigned gen = __pappus::barrier_wait(predicate != 0);
    return __pappus::S.acc[gen & 1];
}
static PAPPUS_INLINE int __syncthreads_and(int predicate) {
    return __syncthreads_count(predicate) == (int)__pappus::S.nthreads;
}
static PAPPUS_INLINE int __syncthreads_or(int predicate) { return __syncthreads_count(predicate) != 0; }
static PAPPUS_INLINE void __threadfence() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static PAPPUS_INLINE void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static PAPPUS_INLINE void __threadfence_system() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

/* ---------------------------------------------------------------------------------------- */
/* Atomics: the threads of a child run one at a time and switch only at barriers, so a plain   */
/* read-modify-write is atomic.                                                              */
/* ---------------------------------------------------------------------------------------- */

#define PAPPUS_ATOMIC_ARITH(T)                                                                    \
    static PAPPUS_INLINE T atomicAdd(T *p, T v) { T o = *p; *p = o + v; return o; }               \
    static PAPPUS_INLINE T atomicExch(T *p, T v) { T o = *p; *p = v; return o; }                  \
    static PAPPUS_INLINE T atomicMin(T *p, T v) { T o = *p; *p = v < o ? v : o; return o; }       \
    static PAPPUS_INLINE T atomicMax(T *p, T v) { T o = *p; *p = v > o ? v : o; return o; }       \
    static PAPPUS_INLINE T atomicCAS(T *p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; } \
    static PAPPUS_INLINE T atomicAdd_block(T *p, T v) { return atomicAdd(p, v); }                 \
    static PAPPUS_INLINE T atomicAdd_system(T *p, T v) { return atomicAdd(p, v); }
#define PAPPUS_ATOMIC_INT(T)                                                                      \
    PAPPUS_ATOMIC_ARITH(T)                                                                        \
    static PAPPUS_INLINE T atomicSub(T *p, T v) { T o = *p; *p = o - v; return o; }               \
    static PAPPUS_INLINE T atomicAnd(T *p, T v) { T o = *p; *p = o & v; return o; }               \
    static PAPPUS_INLINE T atomicOr(T *p, T v) { T o = *p; *p = o | v; return o; }                \
    static PAPPUS_INLINE T atomicXor(T *p, T v) { T o = *p; *p = o ^ v; return o; }

PAPPUS_ATOMIC_INT(int)
PAPPUS_ATOMIC_INT(unsigned int)
PAPPUS_ATOMIC_INT(long long)
PAPPUS_ATOMIC_INT(unsigned long long)
PAPPUS_ATOMIC_ARITH(float)
PAPPUS_ATOMIC_ARITH(double)
#undef PAPPUS_ATOMIC_ARITH
#undef PAPPUS_ATOMIC_INT

static PAPPUS_INLINE float atomicSub(float *p, float v) { float o = *p; *p = o - v; return o; }
static PAPPUS_INLINE unsigned int atomicInc(unsigned int *p, unsigned int limit) {
    unsigned int o = *p;
    *p = (o >= limit) ? 0u : o + 1u;
    return o;
}
static PAPPUS_INLINE unsigned int atomicDec(unsigned int *p, unsigned int limit) {
    unsigned int o = *p;
    *p = (o == 0u || o > limit) ? limit : o - 1u;
    return o;
}

/* ---------------------------------------------------------------------------------------- */
/* Math and intrinsics                                                                       */
/* ---------------------------------------------------------------------------------------- */

#define PAPPUS_MINMAX(T)                                                                          \
    static PAPPUS_INLINE T min(T a, T b) { return a < b ? a : b; }                                \
    static PAPPUS_INLINE T max(T a, T b) { return a > b ? a : b; }
PAPPUS_MINMAX(int)
PAPPUS_MINMAX(unsigned int)
PAPPUS_MINMAX(long)
PAPPUS_MINMAX(unsigned long)
PAPPUS_MINMAX(long long)
PAPPUS_MINMAX(unsigned long long)
PAPPUS_MINMAX(float)
PAPPUS_MINMAX(double)
#undef PAPPUS_MINMAX

static PAPPUS_INLINE float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static PAPPUS_INLINE double rsqrt(double x) { return 1.0 / sqrt(x); }
/* glibc declares these internal names itself (extern "C", noexcept); define them to match. */
extern "C" {
PAPPUS_INLINE float __expf(float x) noexcept { return expf(x); }
PAPPUS_INLINE float __exp10f(float x) noexcept { return powf(10.0f, x); }
PAPPUS_INLINE float __logf(float x) noexcept { return logf(x); }
PAPPUS_INLINE float __log2f(float x) noexcept { return log2f(x); }
PAPPUS_INLINE float __log10f(float x) noexcept { return log10f(x); }
PAPPUS_INLINE float __sinf(float x) noexcept { return sinf(x); }
PAPPUS_INLINE float __cosf(float x) noexcept { return cosf(x); }
PAPPUS_INLINE float __tanf(float x) noexcept { return tanf(x); }
PAPPUS_INLINE void __sincosf(float x, float *s, float *c) noexcept { *s = sinf(x); *c = cosf(x); }
PAPPUS_INLINE float __powf(float x, float y) noexcept { return powf(x, y); }
}
static PAPPUS_INLINE float __fdividef(float x, float y) { return x / y; }
static PAPPUS_INLINE float __frcp_rn(float x) { return 1.0f / x; }
static PAPPUS_INLINE float __fsqrt_rn(float x) { return sqrtf(x); }
static PAPPUS_INLINE float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
static PAPPUS_INLINE float __fadd_rn(float a, float b) { return a + b; }
static PAPPUS_INLINE float __fsub_rn(float a, float b) { return a - b; }
static PAPPUS_INLINE float __fmul_rn(float a, float b) { return a * b; }
static PAPPUS_INLINE float __fdiv_rn(float a, float b) { return a / b; }
static PAPPUS_INLINE float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static PAPPUS_INLINE double __dadd_rn(double a, double b) { return a + b; }
static PAPPUS_INLINE double __dmul_rn(double a, double b) { return a * b; }
static PAPPUS_INLINE double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static PAPPUS_INLINE float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static PAPPUS_INLINE int __float2int_rn(float x) { return (int)nearbyintf(x); }
static PAPPUS_INLINE int __float2int_rz(float x) { return (int)x; }
static PAPPUS_INLINE int __float2int_rd(float x) { return (int)floorf(x); }
static PAPPUS_INLINE int __float2int_ru(float x) { return (int)ceilf(x); }
static PAPPUS_INLINE unsigned int __float2uint_rn(float x) { return (unsigned int)nearbyintf(x); }
static PAPPUS_INLINE unsigned int __float2uint_rz(float x) { return (unsigned int)x; }
static PAPPUS_INLINE float __int2float_rn(int x) { return (float)x; }
static PAPPUS_INLINE float __uint2float_rn(unsigned int x) { return (float)x; }
static PAPPUS_INLINE int __double2int_rn(double x) { return (int)nearbyint(x); }
static PAPPUS_INLINE float __double2float_rn(double x) { return (float)x; }
static PAPPUS_INLINE int __float_as_int(float x) { int r; memcpy(&r, &x, 4); return r; }
static PAPPUS_INLINE unsigned int __float_as_uint(float x) { unsigned int r; memcpy(&r, &x, 4); return r; }
static PAPPUS_INLINE float __int_as_float(int x) { float r; memcpy(&r, &x, 4); return r; }
static PAPPUS_INLINE float __uint_as_float(unsigned int x) { float r; memcpy(&r, &x, 4); return r; }
static PAPPUS_INLINE long long __double_as_longlong(double x) { long long r; memcpy(&r, &x, 8); return r; }
static PAPPUS_INLINE double __longlong_as_double(long long x) { double r; memcpy(&r, &x, 8); return r; }
static PAPPUS_INLINE int __popc(unsigned int x) { return __builtin_popcount(x); }
static PAPPUS_INLINE int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static PAPPUS_INLINE int __clz(int x) { return x ? __builtin_clz((unsigned int)x) : 32; }
static PAPPUS_INLINE int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static PAPPUS_INLINE int __ffs(int x) { return __builtin_ffs(x); }
static PAPPUS_INLINE int __ffsll(long long x) { return __builtin_ffsll(x); }
static PAPPUS_INLINE unsigned int __brev(unsigned int x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
    return __builtin_bswap32(x);
}
static PAPPUS_INLINE int __mul24(int a, int b) { return ((a << 8) >> 8) * ((b << 8) >> 8); }
static PAPPUS_INLINE unsigned int __umul24(unsigned int a, unsigned int b) { return (a & 0xFFFFFFu) * (b & 0xFFFFFFu); }
static PAPPUS_INLINE int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static PAPPUS_INLINE unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
static PAPPUS_INLINE long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
static PAPPUS_INLINE unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}

static PAPPUS_INLINE long long clock64() {
#if defined(__x86_64__)
    return (long long)__builtin_ia32_rdtsc();
#else
    long long v;
    __asm__ volatile("mrs %0, cntvct_el0" : "=r"(v));
    return v;
#endif
}
static PAPPUS_INLINE long long wall_clock64() { return clock64(); }

/* ---------------------------------------------------------------------------------------- */
/* printf, malloc, abort, assert: never a system call                                        */
/* ---------------------------------------------------------------------------------------- */

template <class... T>
PAPPUS_INLINE int __pappus_printf(const char *, T &&...) { return 0; }

/* Device malloc: a bump allocator over the per-invocation arena whose size is the heap limit
 * (limit 0: always NULL). The record in .pappus_uses_heap tells the static validator that the
 * library calls it, so functions using it are refused at registration under a heap limit of 0. */
extern "C" __attribute__((noinline)) inline void *__pappus_device_malloc(size_t n) {
    __attribute__((used, section(PAPPUS_HEAP_SECTION))) static constexpr auto heap_record =
        ::__pappus::make_mrec<16>(static_cast<void (*)(size_t)>(nullptr), "__device_malloc", PAPPUS_RECORD_HEAP);
    const pappus_launch *L = __pappus::S.L;
    if (!L || n == 0 || L->heap_size == 0) return nullptr;
    size_t need = (n + 15) & ~size_t(15);
    if (need < n) return nullptr;
    uint64_t used = *L->heap_used;
    if (need > L->heap_size - used) return nullptr;
    *L->heap_used = used + need;
    return L->heap_base + used;
}
extern "C" __attribute__((noinline)) inline void __pappus_device_free(void *) {}

namespace std {
using ::__pappus_device_free;
using ::__pappus_device_malloc;
using ::__pappus_printf;
}

#undef printf
#define printf(...) __pappus_printf(__VA_ARGS__)
#undef malloc
#define malloc(n) __pappus_device_malloc(n)
#undef free
#define free(p) __pappus_device_free(p)

/* abort(), a failed assert() and a smashed stack trap (a KernelFault with reason "trap")
 * instead of writing to stderr and raising a signal through system calls. These hidden
 * definitions bind every call inside the library; the C library's versions are never reached. */
extern "C" __attribute__((noreturn, visibility("hidden"))) inline void __pappus_trap() { __builtin_trap(); }
namespace std {
using ::__pappus_trap;
}
#undef abort
#define abort() __pappus_trap()
extern "C" {
__attribute__((noreturn, visibility("hidden"))) void __assert_fail(const char *, const char *, unsigned int,
                                                                   const char *) noexcept {
    __builtin_trap();
}
__attribute__((noreturn, visibility("hidden"))) void __stack_chk_fail(void) { __builtin_trap(); }
}

/* ---------------------------------------------------------------------------------------- */
/* What the CPU backend cannot run: fail at compile time with the reason                     */
/* ---------------------------------------------------------------------------------------- */

#define PAPPUS_UNSUPPORTED(fn, why)                                                                \
    template <class... T>                                                                          \
    inline int fn(T...) {                                                                          \
        static_assert(::__pappus::always_false<T...>::value,                                       \
                      "pappus cpu: " #fn " is not supported by the CPU backend: " why);            \
        return 0;                                                                                  \
    }
#define PAPPUS_NO_WARPS "threads run one at a time, there are no lockstep warps"
PAPPUS_UNSUPPORTED(__shfl, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__shfl_up, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__shfl_down, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__shfl_xor, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__shfl_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__shfl_up_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__shfl_down_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__shfl_xor_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__ballot, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__ballot_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__any, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__all, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__any_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__all_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__activemask, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__syncwarp, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__lane_id, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__match_any_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__match_all_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__reduce_add_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__reduce_min_sync, PAPPUS_NO_WARPS)
PAPPUS_UNSUPPORTED(__reduce_max_sync, PAPPUS_NO_WARPS)
#undef PAPPUS_NO_WARPS
#undef PAPPUS_UNSUPPORTED

namespace cooperative_groups {
template <class... T>
struct __unsupported {
    static_assert(::__pappus::always_false<T...>::value,
                  "pappus cpu: cooperative groups are not supported by the CPU backend");
};
template <class... T>
inline int this_thread_block(T...) { return __unsupported<T...>{}, 0; }
template <class... T>
inline int this_grid(T...) { return __unsupported<T...>{}, 0; }
template <class... T>
inline int tiled_partition(T...) { return __unsupported<T...>{}, 0; }
} /* namespace cooperative_groups */

#endif /* PAPPUS_HIP_CPU_H */
