/* A stub libcuda.so.1 for driving the CUDA backend through the real cuda-bindings without a GPU.
 *
 * Compiled by tests/cuda/test_real_bindings.py with `cc` and loaded by cuda-bindings in place
 * of the NVIDIA driver (LD_LIBRARY_PATH). It implements, with host memory, exactly the driver
 * entry points the backend calls (plugins/pappus_cuda, core/pappus/devices), with the C ABI
 * cuda-bindings 13.x declares for them (cuda/bindings/cydriver.pxd, generated from cuda.h).
 *
 * How cuda-bindings finds them: cuda.pathfinder dlopens "libcuda.so.1" (system search, so
 * LD_LIBRARY_PATH), then cuda.bindings._internal.driver dlsyms only cuGetProcAddress_v2 and asks
 * it for every entry point by base name and CUDA version ("cuMemAlloc", 3020 -> cuMemAlloc_v2;
 * "cuCtxCreate", 12050 -> cuCtxCreate_v4; "cuCtxSynchronize", 2000 -> cuCtxSynchronize and
 * 13000 -> cuCtxSynchronize_v2). cuGetProcAddress_v2 below answers as the driver does: the
 * variant introduced at or before the requested version; a name or variant this stub does not
 * implement is CUDA_ERROR_NOT_FOUND, which the bindings report as FunctionNotFoundError when called.
 *
 * What it models (as documented for the driver API, and as measured on an H100 where noted in
 * plugins/pappus_cuda/README.md):
 * - a current context per thread (a stack: cuCtxCreate pushes, cuCtxSetCurrent replaces the top,
 *   cuCtxDestroy pops it from the calling thread only; other threads that still have a destroyed
 *   context current get CUDA_ERROR_CONTEXT_IS_DESTROYED); a primary context per device, retained
 *   and released by count, which cuDevicePrimaryCtxReset destroys (the next retain makes a new one);
 * - memory per context at unique addresses (unified addressing: copies and memsets reach any
 *   live allocation; a kernel only its own context's), fresh allocations filled with 0xa5;
 * - modules from a cubin (ELF: kernels are STT_FUNC symbols with STO_CUDA_ENTRY; the cubin's SM
 *   major must be the device's) or PTX text (".entry NAME"); fatbins are refused, as pappus
 *   loads the one entry it validated;
 * - kernels this stub knows by name (tests/cuda/kernels, scrub.cu), with their parameter
 *   layout as cuobjdump prints it; a launch reads the arguments through kernelParams or the
 *   CU_LAUNCH_PARAM_BUFFER_POINTER buffer of `extra`, is recorded, and performs the kernel's
 *   effect on the host (fill_u8 fills, scalars sums its by-value arguments, ...);
 * - dynamic shared memory: without cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) a function
 *   may use 48 KiB less its static shared memory; an opt-in must keep static + dynamic within
 *   MAX_SHARED_MEMORY_PER_BLOCK_OPTIN; function handles and their opt-ins belong to one module
 *   of one context;
 * - faults are sticky: a kernel touching memory outside its context's allocations (or
 *   stub_fail_next_sync) is reported by the next call that waits for the GPU (cuCtxSynchronize,
 *   the synchronous copies); from then on every call in that context fails with the same error,
 *   and no new context can be made in the process (measured on the H100: the process must end).
 *
 * Test controls are the stub_* functions at the end, called through ctypes.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct stub_ctx *CUcontext;
typedef struct stub_module *CUmodule;
typedef struct stub_func *CUfunction;
typedef void *CUstream;

enum {
  CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1, CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3, CUDA_ERROR_NO_DEVICE = 100, CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_IMAGE = 200, CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_NO_BINARY_FOR_GPU = 209, CUDA_ERROR_UNSUPPORTED_LIMIT = 215,
  CUDA_ERROR_INVALID_HANDLE = 400, CUDA_ERROR_NOT_FOUND = 500, CUDA_ERROR_ILLEGAL_ADDRESS = 700,
  CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701, CUDA_ERROR_CONTEXT_IS_DESTROYED = 709, CUDA_ERROR_LAUNCH_FAILED = 719,
  CUDA_ERROR_NOT_SUPPORTED = 801,
};

/* CUdevice_attribute, CUfunction_attribute, CUlimit values (cydriver.pxd) */
enum {
  ATTR_MAX_THREADS_PER_BLOCK = 1, ATTR_MAX_BLOCK_DIM_X = 2, ATTR_MAX_BLOCK_DIM_Y = 3,
  ATTR_MAX_BLOCK_DIM_Z = 4, ATTR_MAX_GRID_DIM_X = 5, ATTR_MAX_GRID_DIM_Y = 6,
  ATTR_MAX_GRID_DIM_Z = 7, ATTR_MAX_SHARED_MEMORY_PER_BLOCK = 8, ATTR_MULTIPROCESSOR_COUNT = 16,
  ATTR_COMPUTE_CAPABILITY_MAJOR = 75, ATTR_COMPUTE_CAPABILITY_MINOR = 76,
  ATTR_PAGEABLE_MEMORY_ACCESS = 88, ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
  ATTR_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES = 100, N_ATTRS = 256,
};
enum {
  FUNC_MAX_THREADS_PER_BLOCK = 0, FUNC_SHARED_SIZE_BYTES = 1, FUNC_CONST_SIZE_BYTES = 2,
  FUNC_LOCAL_SIZE_BYTES = 3, FUNC_NUM_REGS = 4, FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
};
enum { LIMIT_STACK_SIZE = 0, LIMIT_PRINTF_FIFO_SIZE = 1, LIMIT_MALLOC_HEAP_SIZE = 2 };

#define DEFAULT_SHARED (48 * 1024) /* what a block may use in all without opting in */
#define MAX_DEVICES 4
#define MAX_OBJECTS 1024
#define MAX_KERNELS_PER_MODULE 64
#define MAX_PARAMS 8
#define PARAM_BANK 4096
#define MAX_LAUNCHES 4096
#define LOG_BYTES (1 << 20)

/* ---- state ----------------------------------------------------------------------------- */

struct stub_ctx {
  int id;
  int device;
  int primary;    /* the device's primary context */
  int destroyed;  /* destroyed (cuCtxDestroy, primary released to 0 or reset) */
  CUresult sticky; /* after a fault every call in the context returns it */
  CUresult pending; /* a kernel's fault, not yet reported: the next synchronising call does */
  size_t heap_limit, stack_limit, printf_limit;
};

struct stub_alloc {
  struct stub_ctx *ctx;
  CUdeviceptr base;
  size_t size;
  unsigned char *host;
  int live;
};

struct kernel_def {
  const char *name;
  int nparams;
  unsigned sizes[MAX_PARAMS], offsets[MAX_PARAMS];
  int static_shared, local_bytes, num_regs;
  int effect; /* enum effect */
};

struct stub_module {
  struct stub_ctx *ctx;
  int live;
  int kind; /* 1 cubin, 2 ptx */
  int nkernels;
  char names[MAX_KERNELS_PER_MODULE][64];
  struct stub_func *funcs[MAX_KERNELS_PER_MODULE];
};

struct stub_func {
  struct stub_module *module;
  char name[64];
  const struct kernel_def *def; /* NULL: a kernel this stub cannot run */
  int static_shared, local_bytes, num_regs;
  int max_dynamic_shared; /* CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES */
};

/* One launch as the stub saw it (read by stub_launch through ctypes). */
struct stub_launch {
  char name[64];
  unsigned grid[3], block[3], shared;
  int mode;            /* 1: kernelParams, 2: extra (CU_LAUNCH_PARAM_BUFFER_POINTER) */
  int ctx;             /* the context's id */
  int device;          /* the context's device */
  unsigned long long buffer_size; /* CU_LAUNCH_PARAM_BUFFER_SIZE as given (mode 2) */
  unsigned param_bytes; /* the kernel's parameter bank: end of its last parameter */
  unsigned char params[256];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int initialized;
static int driver_version = 13000;
static int device_count = 1;
static int attrs[N_ATTRS];
static int attr_set[N_ATTRS];
static size_t mem_free = (size_t)64 << 30, mem_total = (size_t)80 << 30;
static size_t min_heap = (size_t)4 << 20; /* measured on the H100: smaller requests are rounded up */
static int refuse_below_min_heap;
static CUresult poisoned;      /* a sticky fault happened: no new context in this process */
static CUresult fail_next_sync;

static struct stub_ctx *contexts[MAX_OBJECTS];
static int n_contexts;
static struct {
  int refcount;
  struct stub_ctx *ctx;
} primaries[MAX_DEVICES];
static struct stub_alloc allocs[MAX_OBJECTS];
static int n_allocs;
static CUdeviceptr next_va = 0x7f4200000000ULL;
static struct stub_module *modules[MAX_OBJECTS];
static int n_modules;
static struct stub_func *funcs[MAX_OBJECTS];
static int n_funcs;
static struct stub_launch launches[MAX_LAUNCHES];
static int n_launches;
static char call_log[LOG_BYTES];
static size_t log_len;
static int static_shared_override_n;
static struct {
  char name[64];
  int bytes;
} static_shared_override[32];

static __thread struct stub_ctx *ctx_stack[16];
static __thread int ctx_depth;

static void enter(void) { pthread_mutex_lock(&lock); }

/* Every entry point logs "name=result" and returns through here. */
static CUresult leave(const char *name, CUresult r) {
  int n = snprintf(call_log + log_len, LOG_BYTES - log_len, "%s=%d\n", name, r);
  if (n > 0 && log_len + (size_t)n < LOG_BYTES) log_len += (size_t)n;
  pthread_mutex_unlock(&lock);
  return r;
}

static int device_attr(int attrib) {
  if (attrib >= 0 && attrib < N_ATTRS && attr_set[attrib]) return attrs[attrib];
  switch (attrib) {
    case ATTR_MAX_THREADS_PER_BLOCK: return 1024;
    case ATTR_MAX_BLOCK_DIM_X: return 1024;
    case ATTR_MAX_BLOCK_DIM_Y: return 1024;
    case ATTR_MAX_BLOCK_DIM_Z: return 64;
    case ATTR_MAX_GRID_DIM_X: return 2147483647;
    case ATTR_MAX_GRID_DIM_Y: return 65535;
    case ATTR_MAX_GRID_DIM_Z: return 65535;
    case ATTR_MAX_SHARED_MEMORY_PER_BLOCK: return 49152;
    case ATTR_MULTIPROCESSOR_COUNT: return 4;
    case ATTR_COMPUTE_CAPABILITY_MAJOR: return 9;
    case ATTR_COMPUTE_CAPABILITY_MINOR: return 0;
    case ATTR_PAGEABLE_MEMORY_ACCESS: return 0;
    case ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: return 232448; /* an H100's */
    case ATTR_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES: return 0;
    default: return -1; /* not modelled: CUDA_ERROR_INVALID_VALUE */
  }
}

static struct stub_ctx *current(void) { return ctx_depth ? ctx_stack[ctx_depth - 1] : NULL; }

/* The calling thread's usable current context, or the error every call gets without one. */
static CUresult live_current(struct stub_ctx **out) {
  if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
  struct stub_ctx *c = current();
  if (c == NULL) return CUDA_ERROR_INVALID_CONTEXT;
  if (c->destroyed) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  if (c->sticky) return c->sticky;
  *out = c;
  return CUDA_SUCCESS;
}

static int known_ctx(struct stub_ctx *c) {
  for (int i = 0; i < n_contexts; i++)
    if (contexts[i] == c) return 1;
  return 0;
}

static struct stub_ctx *new_ctx(int device, int primary) {
  if (n_contexts >= MAX_OBJECTS) return NULL;
  struct stub_ctx *c = calloc(1, sizeof *c);
  c->id = n_contexts + 1;
  c->device = device;
  c->primary = primary;
  c->heap_limit = (size_t)8 << 20;
  c->stack_limit = 1024;
  c->printf_limit = (size_t)1 << 20;
  contexts[n_contexts++] = c;
  return c;
}

/* Everything of a context goes with it. Handles stay valid memory (never freed), so a stale
 * one is reported, not dereferenced after free. */
static void destroy_ctx(struct stub_ctx *c) {
  c->destroyed = 1;
  for (int i = 0; i < n_allocs; i++)
    if (allocs[i].ctx == c && allocs[i].live) {
      allocs[i].live = 0;
      free(allocs[i].host);
      allocs[i].host = NULL;
    }
  for (int i = 0; i < n_modules; i++)
    if (modules[i]->ctx == c) modules[i]->live = 0;
  if (ctx_depth && ctx_stack[ctx_depth - 1] == c) ctx_depth--; /* popped from this thread only */
}

static void fault(struct stub_ctx *c, CUresult err) {
  c->sticky = err;
  c->pending = 0;
  poisoned = err;
}

/* A call that waits for the GPU (cuCtxSynchronize, the synchronous copies) reports a kernel's
 * fault; from then on every call does. Launches and memsets only enqueue, and see it later. */
static CUresult synchronising(struct stub_ctx *c) {
  if (c->pending) fault(c, c->pending);
  return c->sticky;
}

/* Host memory behind [address, address + n) in one live allocation (of `ctx`, or of any
 * context when ctx is NULL: unified addressing lets copies find it). */
static unsigned char *resolve(struct stub_ctx *ctx, CUdeviceptr address, size_t n) {
  for (int i = 0; i < n_allocs; i++) {
    struct stub_alloc *a = &allocs[i];
    if (!a->live || (ctx && a->ctx != ctx)) continue;
    if (address >= a->base && n <= a->size && address - a->base <= a->size - n)
      return a->host + (address - a->base);
  }
  return NULL;
}

/* ---- the kernels this stub knows ------------------------------------------------------- */

enum effect {
  FX_NONE, FX_MATMUL_AT_I64, FX_SCALARS, FX_BLOCK_SUM, FX_FILL_U8, FX_COPY_U8, FX_OOB_WRITE,
  FX_TRAP, FX_SCRUB, FX_DYN_SUM,
};

/* Parameter sizes and offsets as cuobjdump --dump-elf prints them (EIATTR_KPARAM_INFO) for the
 * sm_90 cubins of tests/cuda/kernels, and as scrub.ptx declares them; static shared memory as
 * the sources declare it. */
static const struct kernel_def KERNELS[] = {
  {"noop", 0, {0}, {0}, 0, 0, 16, FX_NONE},
  {"matmul_at_i64", 3, {8, 8, 8}, {0, 8, 16}, 0, 0, 32, FX_MATMUL_AT_I64},
  {"matmul_tiled_f32", 4, {8, 8, 8, 4}, {0, 8, 16, 24}, 2048, 0, 40, FX_NONE},
  {"block_sum", 2, {8, 8}, {0, 8}, 1024, 0, 16, FX_BLOCK_SUM},
  {"dyn_sum", 3, {8, 8, 4}, {0, 8, 16}, 0, 0, 16, FX_DYN_SUM},
  {"scalars", 6, {8, 4, 4, 8, 24, 1}, {0, 8, 12, 16, 24, 48}, 0, 0, 16, FX_SCALARS},
  {"histogram", 3, {8, 8, 8}, {0, 8, 16}, 0, 0, 16, FX_NONE},
  {"oob_write", 3, {8, 8, 8}, {0, 8, 16}, 0, 0, 16, FX_OOB_WRITE},
  {"trap_now", 1, {8}, {0}, 0, 0, 16, FX_TRAP},
  {"fill_u8", 3, {8, 8, 1}, {0, 8, 16}, 0, 0, 16, FX_FILL_U8},
  {"copy_u8", 3, {8, 8, 8}, {0, 8, 16}, 0, 0, 16, FX_COPY_U8},
  {"pappus_scrub_shared", 5, {8, 8, 4, 8, 4}, {0, 8, 16, 24, 32}, 0, 0, 16, FX_SCRUB},
  {"pappus_scrub_local_1k", 5, {8, 8, 4, 8, 4}, {0, 8, 16, 24, 32}, 0, 1024, 16, FX_SCRUB},
  {"pappus_scrub_local_4k", 5, {8, 8, 4, 8, 4}, {0, 8, 16, 24, 32}, 0, 4096, 16, FX_SCRUB},
  {"pappus_scrub_local_16k", 5, {8, 8, 4, 8, 4}, {0, 8, 16, 24, 32}, 0, 16384, 16, FX_SCRUB},
  {"pappus_scrub_registers", 5, {8, 8, 4, 8, 8}, {0, 8, 16, 24, 32}, 0, 0, 255, FX_SCRUB},
};

static const struct kernel_def *kernel_def(const char *name) {
  for (size_t i = 0; i < sizeof KERNELS / sizeof KERNELS[0]; i++)
    if (strcmp(KERNELS[i].name, name) == 0) return &KERNELS[i];
  return NULL;
}

static uint64_t u64_at(const unsigned char *bank, unsigned off) {
  uint64_t v;
  memcpy(&v, bank + off, 8);
  return v;
}

/* Runs a known kernel's effect in context c; returns the fault it raises, if any. */
static CUresult run_kernel(struct stub_ctx *c, const struct kernel_def *k, const unsigned grid[3],
                           const unsigned block[3], const unsigned char *bank) {
  uint64_t threads = (uint64_t)grid[0] * grid[1] * grid[2] * block[0] * block[1] * block[2];
  switch (k->effect) {
    case FX_NONE: return CUDA_SUCCESS;
    case FX_TRAP: return CUDA_ERROR_LAUNCH_FAILED;
    case FX_FILL_U8: {
      uint64_t n = u64_at(bank, 8);
      if (n > threads) n = threads;
      unsigned char *p = resolve(c, u64_at(bank, 0), n);
      if (n && !p) return CUDA_ERROR_ILLEGAL_ADDRESS;
      if (n) memset(p, bank[16], n);
      return CUDA_SUCCESS;
    }
    case FX_COPY_U8: {
      uint64_t n = u64_at(bank, 16);
      if (n > threads) n = threads;
      unsigned char *dst = resolve(c, u64_at(bank, 0), n), *src = resolve(c, u64_at(bank, 8), n);
      if (n && (!dst || !src)) return CUDA_ERROR_ILLEGAL_ADDRESS;
      if (n) memmove(dst, src, n);
      return CUDA_SUCCESS;
    }
    case FX_OOB_WRITE: {
      uint64_t index = u64_at(bank, 8);
      unsigned char *p = resolve(c, u64_at(bank, 0) + 8 * index, 8);
      if (!p) return CUDA_ERROR_ILLEGAL_ADDRESS;
      memcpy(p, bank + 16, 8);
      return CUDA_SUCCESS;
    }
    case FX_SCALARS: { /* out[0] = i + (ll)f + (ll)d + s.a + (ll)s.b + s.c + c */
      int32_t i;
      float f;
      double d, sb;
      int64_t sa, out;
      int32_t sc;
      int8_t ch;
      memcpy(&i, bank + 8, 4);
      memcpy(&f, bank + 12, 4);
      memcpy(&d, bank + 16, 8);
      memcpy(&sa, bank + 24, 8);
      memcpy(&sb, bank + 32, 8);
      memcpy(&sc, bank + 40, 4);
      memcpy(&ch, bank + 48, 1);
      out = i + (int64_t)f + (int64_t)d + sa + (int64_t)sb + sc + ch;
      unsigned char *p = resolve(c, u64_at(bank, 0), 8);
      if (!p) return CUDA_ERROR_ILLEGAL_ADDRESS;
      memcpy(p, &out, 8);
      return CUDA_SUCCESS;
    }
    case FX_MATMUL_AT_I64: { /* B = A x A^T for the rows and columns the grid covers */
      uint64_t size = u64_at(bank, 8), n = 1;
      while (n * n * 8 < size) n++;
      const unsigned char *a = resolve(c, u64_at(bank, 0), n * n * 8);
      unsigned char *b = resolve(c, u64_at(bank, 16), n * n * 8);
      if (!a || !b) return CUDA_ERROR_ILLEGAL_ADDRESS;
      uint64_t rows = (uint64_t)grid[1] * block[1], cols = (uint64_t)grid[0] * block[0];
      for (uint64_t r = 0; r < n && r < rows; r++)
        for (uint64_t col = 0; col < n && col < cols; col++) {
          int64_t sum = 0, x, y;
          for (uint64_t k2 = 0; k2 < n; k2++) {
            memcpy(&x, a + 8 * (r * n + k2), 8);
            memcpy(&y, a + 8 * (col * n + k2), 8);
            sum += x * y;
          }
          memcpy(b + 8 * (r * n + col), &sum, 8);
        }
      return CUDA_SUCCESS;
    }
    case FX_BLOCK_SUM: { /* out[b] = sum of in[256 b .. 256 b + 256) */
      for (unsigned blk = 0; blk < grid[0]; blk++) {
        const unsigned char *in = resolve(c, u64_at(bank, 0) + 1024ULL * blk, 1024);
        unsigned char *out = resolve(c, u64_at(bank, 8) + 4ULL * blk, 4);
        if (!in || !out) return CUDA_ERROR_ILLEGAL_ADDRESS;
        float s = 0.0f, v;
        for (int i = 0; i < 256; i++) {
          memcpy(&v, in + 4 * i, 4);
          s += v;
        }
        memcpy(out, &s, 4);
      }
      return CUDA_SUCCESS;
    }
    case FX_DYN_SUM: { /* out[b] += sum of in[n b .. n b + min(n, blockDim.x)) */
      uint32_t n;
      memcpy(&n, bank + 16, 4);
      for (unsigned blk = 0; blk < grid[0]; blk++) {
        unsigned m = n < block[0] ? n : block[0];
        const unsigned char *in = resolve(c, u64_at(bank, 0) + 4ULL * n * blk, 4ULL * m);
        unsigned char *out = resolve(c, u64_at(bank, 8) + 4ULL * blk, 4);
        if ((m && !in) || !out) return CUDA_ERROR_ILLEGAL_ADDRESS;
        int32_t s, v;
        memcpy(&s, out, 4);
        for (unsigned i = 0; i < m; i++) {
          memcpy(&v, in + 4 * i, 4);
          s += v;
        }
        memcpy(out, &s, 4);
      }
      return CUDA_SUCCESS;
    }
    case FX_SCRUB: { /* every block arrives and, all being resident, completes */
      unsigned char *arrived = resolve(c, u64_at(bank, 0), 4), *complete = resolve(c, u64_at(bank, 8), 4);
      if (!arrived || !complete) return CUDA_ERROR_ILLEGAL_ADDRESS;
      uint32_t blocks = grid[0] * grid[1] * grid[2], a, done;
      memcpy(&a, arrived, 4);
      memcpy(&done, complete, 4);
      a += blocks;
      done += blocks;
      memcpy(arrived, &a, 4);
      memcpy(complete, &done, 4);
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_NOT_SUPPORTED;
}

/* ---- code objects ---------------------------------------------------------------------- */

static int add_kernel(struct stub_module *m, const char *name, size_t len) {
  if (m->nkernels >= MAX_KERNELS_PER_MODULE || len == 0 || len >= 64) return -1;
  memcpy(m->names[m->nkernels], name, len);
  m->names[m->nkernels][len] = 0;
  m->nkernels++;
  return 0;
}

/* Kernels of a cubin: STT_FUNC symbols with STO_CUDA_ENTRY (st_other & 0x10). */
static CUresult read_cubin(struct stub_module *m, const unsigned char *img) {
  const unsigned char *e = img;
  if (e[4] != 2 || e[5] != 1) return CUDA_ERROR_INVALID_IMAGE; /* ELF64, little-endian */
  uint8_t osabi = e[7], abiversion = e[8];
  uint32_t flags;
  uint64_t shoff;
  uint16_t shentsize, shnum;
  memcpy(&flags, e + 48, 4);
  memcpy(&shoff, e + 40, 8);
  memcpy(&shentsize, e + 58, 2);
  memcpy(&shnum, e + 60, 2);
  /* the SM version: e_flags bits 8..15 in the ABI CUDA 12.8+ writes (OS ABI 0x41), 0..7 before */
  unsigned sm = (osabi == 0x33 || abiversion < 8) ? (flags & 0xFF) : ((flags >> 8) & 0xFF);
  if (sm / 10 != (unsigned)device_attr(ATTR_COMPUTE_CAPABILITY_MAJOR) ||
      sm % 10 > (unsigned)device_attr(ATTR_COMPUTE_CAPABILITY_MINOR))
    return CUDA_ERROR_NO_BINARY_FOR_GPU;
  if (shentsize != 64 || shnum == 0) return CUDA_ERROR_INVALID_IMAGE;
  for (unsigned s = 0; s < shnum; s++) {
    const unsigned char *sh = img + shoff + (uint64_t)s * 64;
    uint32_t type, link;
    uint64_t off, size;
    memcpy(&type, sh + 4, 4);
    if (type != 2) continue; /* SHT_SYMTAB */
    memcpy(&off, sh + 24, 8);
    memcpy(&size, sh + 32, 8);
    memcpy(&link, sh + 40, 4);
    const unsigned char *strsh = img + shoff + (uint64_t)link * 64;
    uint64_t stroff;
    memcpy(&stroff, strsh + 24, 8);
    for (uint64_t i = 0; i + 24 <= size; i += 24) {
      const unsigned char *sym = img + off + i;
      uint32_t st_name;
      memcpy(&st_name, sym, 4);
      uint8_t info = sym[4], other = sym[5];
      if ((info & 0xF) == 2 && (other & 0x10)) {
        const char *name = (const char *)img + stroff + st_name;
        if (add_kernel(m, name, strlen(name)) != 0) return CUDA_ERROR_INVALID_IMAGE;
      }
    }
  }
  return CUDA_SUCCESS;
}

/* Kernels of PTX text: every ".entry NAME(". */
static CUresult read_ptx(struct stub_module *m, const char *text) {
  for (const char *p = strstr(text, ".entry "); p; p = strstr(p + 1, ".entry ")) {
    const char *name = p + 7;
    while (*name == ' ') name++;
    size_t len = strcspn(name, "( \t\n");
    if (add_kernel(m, name, len) != 0) return CUDA_ERROR_INVALID_IMAGE;
  }
  return m->nkernels ? CUDA_SUCCESS : CUDA_ERROR_INVALID_IMAGE;
}

static int known_module(struct stub_module *m) {
  for (int i = 0; i < n_modules; i++)
    if (modules[i] == m) return 1;
  return 0;
}

static int known_func(struct stub_func *f) {
  for (int i = 0; i < n_funcs; i++)
    if (funcs[i] == f) return 1;
  return 0;
}

/* ---- init, version, devices ------------------------------------------------------------ */

EXPORT CUresult cuDriverGetVersion(int *version) {
  enter();
  if (!version) return leave("cuDriverGetVersion", CUDA_ERROR_INVALID_VALUE);
  *version = driver_version;
  return leave("cuDriverGetVersion", CUDA_SUCCESS);
}

EXPORT CUresult cuInit(unsigned int flags) {
  enter();
  if (flags != 0) return leave("cuInit", CUDA_ERROR_INVALID_VALUE);
  initialized = 1;
  return leave("cuInit", device_count ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE);
}

EXPORT CUresult cuDeviceGetCount(int *count) {
  enter();
  if (!initialized) return leave("cuDeviceGetCount", CUDA_ERROR_NOT_INITIALIZED);
  *count = device_count;
  return leave("cuDeviceGetCount", CUDA_SUCCESS);
}

EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal) {
  enter();
  if (!initialized) return leave("cuDeviceGet", CUDA_ERROR_NOT_INITIALIZED);
  if (ordinal < 0 || ordinal >= device_count) return leave("cuDeviceGet", CUDA_ERROR_INVALID_DEVICE);
  *device = ordinal;
  return leave("cuDeviceGet", CUDA_SUCCESS);
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
  enter();
  if (!initialized) return leave("cuDeviceGetName", CUDA_ERROR_NOT_INITIALIZED);
  if (dev < 0 || dev >= device_count) return leave("cuDeviceGetName", CUDA_ERROR_INVALID_DEVICE);
  if (!name || len <= 0) return leave("cuDeviceGetName", CUDA_ERROR_INVALID_VALUE);
  snprintf(name, (size_t)len, "Stub H100 %d (libcuda stub)", dev);
  return leave("cuDeviceGetName", CUDA_SUCCESS);
}

EXPORT CUresult cuDeviceGetAttribute(int *pi, int attrib, CUdevice dev) {
  enter();
  if (!initialized) return leave("cuDeviceGetAttribute", CUDA_ERROR_NOT_INITIALIZED);
  if (dev < 0 || dev >= device_count) return leave("cuDeviceGetAttribute", CUDA_ERROR_INVALID_DEVICE);
  int v = device_attr(attrib);
  if (v < 0) return leave("cuDeviceGetAttribute", CUDA_ERROR_INVALID_VALUE);
  *pi = v;
  return leave("cuDeviceGetAttribute", CUDA_SUCCESS);
}

/* ---- contexts -------------------------------------------------------------------------- */

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
  enter();
  if (!initialized) return leave("cuDevicePrimaryCtxRetain", CUDA_ERROR_NOT_INITIALIZED);
  if (dev < 0 || dev >= device_count) return leave("cuDevicePrimaryCtxRetain", CUDA_ERROR_INVALID_DEVICE);
  if (primaries[dev].ctx == NULL) {
    if (poisoned) return leave("cuDevicePrimaryCtxRetain", poisoned);
    primaries[dev].ctx = new_ctx(dev, 1);
  }
  primaries[dev].refcount++;
  *pctx = primaries[dev].ctx;
  return leave("cuDevicePrimaryCtxRetain", CUDA_SUCCESS);
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
  enter();
  if (!initialized) return leave("cuDevicePrimaryCtxRelease_v2", CUDA_ERROR_NOT_INITIALIZED);
  if (dev < 0 || dev >= device_count) return leave("cuDevicePrimaryCtxRelease_v2", CUDA_ERROR_INVALID_DEVICE);
  if (primaries[dev].refcount == 0) return leave("cuDevicePrimaryCtxRelease_v2", CUDA_ERROR_INVALID_CONTEXT);
  if (--primaries[dev].refcount == 0 && primaries[dev].ctx) {
    destroy_ctx(primaries[dev].ctx);
    primaries[dev].ctx = NULL;
  }
  return leave("cuDevicePrimaryCtxRelease_v2", CUDA_SUCCESS);
}

/* Destroys the primary context's state; the retain count stays (the driver's documented
 * behaviour), and the next retain makes a new context. */
EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev) {
  enter();
  if (!initialized) return leave("cuDevicePrimaryCtxReset_v2", CUDA_ERROR_NOT_INITIALIZED);
  if (dev < 0 || dev >= device_count) return leave("cuDevicePrimaryCtxReset_v2", CUDA_ERROR_INVALID_DEVICE);
  if (primaries[dev].ctx) {
    destroy_ctx(primaries[dev].ctx);
    primaries[dev].ctx = NULL;
  }
  return leave("cuDevicePrimaryCtxReset_v2", CUDA_SUCCESS);
}

EXPORT CUresult cuCtxCreate_v4(CUcontext *pctx, void *params, unsigned int flags, CUdevice dev) {
  (void)flags;
  enter();
  if (!initialized) return leave("cuCtxCreate_v4", CUDA_ERROR_NOT_INITIALIZED);
  if (dev < 0 || dev >= device_count) return leave("cuCtxCreate_v4", CUDA_ERROR_INVALID_DEVICE);
  if (params != NULL) return leave("cuCtxCreate_v4", CUDA_ERROR_NOT_SUPPORTED); /* not modelled */
  if (poisoned) return leave("cuCtxCreate_v4", poisoned);
  if (ctx_depth >= 16) return leave("cuCtxCreate_v4", CUDA_ERROR_INVALID_VALUE);
  struct stub_ctx *c = new_ctx(dev, 0);
  ctx_stack[ctx_depth++] = c; /* a new context is pushed onto the calling thread */
  *pctx = c;
  return leave("cuCtxCreate_v4", CUDA_SUCCESS);
}

EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx) {
  enter();
  if (!initialized) return leave("cuCtxDestroy_v2", CUDA_ERROR_NOT_INITIALIZED);
  if (!known_ctx(ctx) || ctx->destroyed || ctx->primary)
    return leave("cuCtxDestroy_v2", CUDA_ERROR_INVALID_CONTEXT);
  destroy_ctx(ctx);
  return leave("cuCtxDestroy_v2", CUDA_SUCCESS);
}

EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
  enter();
  if (!initialized) return leave("cuCtxSetCurrent", CUDA_ERROR_NOT_INITIALIZED);
  if (ctx == NULL) {
    if (ctx_depth) ctx_depth--;
    return leave("cuCtxSetCurrent", CUDA_SUCCESS);
  }
  if (!known_ctx(ctx) || ctx->destroyed) return leave("cuCtxSetCurrent", CUDA_ERROR_INVALID_CONTEXT);
  if (ctx_depth == 0) ctx_depth = 1;
  ctx_stack[ctx_depth - 1] = ctx;
  return leave("cuCtxSetCurrent", CUDA_SUCCESS);
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx) {
  enter();
  if (!initialized) return leave("cuCtxGetCurrent", CUDA_ERROR_NOT_INITIALIZED);
  *pctx = current();
  return leave("cuCtxGetCurrent", CUDA_SUCCESS);
}

EXPORT CUresult cuCtxSynchronize(void) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r == CUDA_SUCCESS) r = synchronising(c);
  if (r == CUDA_SUCCESS && fail_next_sync) {
    fault(c, fail_next_sync);
    r = fail_next_sync;
    fail_next_sync = 0;
  }
  return leave("cuCtxSynchronize", r);
}

EXPORT CUresult cuCtxSetLimit(int limit, size_t value) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r) return leave("cuCtxSetLimit", r);
  switch (limit) {
    case LIMIT_MALLOC_HEAP_SIZE:
      if (value < min_heap && refuse_below_min_heap) return leave("cuCtxSetLimit", CUDA_ERROR_INVALID_VALUE);
      c->heap_limit = value < min_heap ? min_heap : value;
      break;
    case LIMIT_STACK_SIZE: c->stack_limit = value; break;
    case LIMIT_PRINTF_FIFO_SIZE: c->printf_limit = value; break;
    default: return leave("cuCtxSetLimit", CUDA_ERROR_UNSUPPORTED_LIMIT);
  }
  return leave("cuCtxSetLimit", CUDA_SUCCESS);
}

EXPORT CUresult cuCtxGetLimit(size_t *pvalue, int limit) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r) return leave("cuCtxGetLimit", r);
  switch (limit) {
    case LIMIT_MALLOC_HEAP_SIZE: *pvalue = c->heap_limit; break;
    case LIMIT_STACK_SIZE: *pvalue = c->stack_limit; break;
    case LIMIT_PRINTF_FIFO_SIZE: *pvalue = c->printf_limit; break;
    default: return leave("cuCtxGetLimit", CUDA_ERROR_UNSUPPORTED_LIMIT);
  }
  return leave("cuCtxGetLimit", CUDA_SUCCESS);
}

/* ---- memory ---------------------------------------------------------------------------- */

static size_t allocated(void) {
  size_t n = 0;
  for (int i = 0; i < n_allocs; i++)
    if (allocs[i].live) n += allocs[i].size;
  return n;
}

EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r) return leave("cuMemGetInfo_v2", r);
  size_t used = allocated();
  *free_bytes = used < mem_free ? mem_free - used : 0;
  *total_bytes = mem_total;
  return leave("cuMemGetInfo_v2", CUDA_SUCCESS);
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r) return leave("cuMemAlloc_v2", r);
  if (bytesize == 0) return leave("cuMemAlloc_v2", CUDA_ERROR_INVALID_VALUE);
  size_t used = allocated();
  if (used > mem_free || bytesize > mem_free - used || n_allocs >= MAX_OBJECTS)
    return leave("cuMemAlloc_v2", CUDA_ERROR_OUT_OF_MEMORY);
  unsigned char *host = malloc(bytesize);
  if (!host) return leave("cuMemAlloc_v2", CUDA_ERROR_OUT_OF_MEMORY);
  memset(host, 0xa5, bytesize); /* not zero: whatever an earlier tenant left */
  struct stub_alloc *a = &allocs[n_allocs++];
  a->ctx = c;
  a->base = next_va;
  a->size = bytesize;
  a->host = host;
  a->live = 1;
  next_va += (bytesize + (2u << 20) + ((2u << 20) - 1)) & ~(CUdeviceptr)((2u << 20) - 1);
  *dptr = a->base;
  return leave("cuMemAlloc_v2", CUDA_SUCCESS);
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r) return leave("cuMemFree_v2", r);
  for (int i = 0; i < n_allocs; i++)
    if (allocs[i].live && allocs[i].base == dptr) {
      allocs[i].live = 0;
      free(allocs[i].host);
      allocs[i].host = NULL;
      return leave("cuMemFree_v2", CUDA_SUCCESS);
    }
  return leave("cuMemFree_v2", CUDA_ERROR_INVALID_VALUE);
}

EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (!r) r = synchronising(c);
  if (r) return leave("cuMemcpyHtoD_v2", r);
  unsigned char *p = resolve(NULL, dst, n);
  if (!p || !src) return leave("cuMemcpyHtoD_v2", CUDA_ERROR_INVALID_VALUE);
  memcpy(p, src, n);
  return leave("cuMemcpyHtoD_v2", CUDA_SUCCESS);
}

EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (!r) r = synchronising(c);
  if (r) return leave("cuMemcpyDtoH_v2", r);
  unsigned char *p = resolve(NULL, src, n);
  if (!p || !dst) return leave("cuMemcpyDtoH_v2", CUDA_ERROR_INVALID_VALUE);
  memcpy(dst, p, n);
  return leave("cuMemcpyDtoH_v2", CUDA_SUCCESS);
}

EXPORT CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char uc, size_t n) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r) return leave("cuMemsetD8_v2", r);
  unsigned char *p = resolve(NULL, dst, n);
  if (!p) return leave("cuMemsetD8_v2", CUDA_ERROR_INVALID_VALUE);
  memset(p, uc, n);
  return leave("cuMemsetD8_v2", CUDA_SUCCESS);
}

EXPORT CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned int ui, size_t n) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r) return leave("cuMemsetD32_v2", r);
  unsigned char *p = resolve(NULL, dst, 4 * n);
  if (!p || (dst & 3)) return leave("cuMemsetD32_v2", CUDA_ERROR_INVALID_VALUE);
  for (size_t i = 0; i < n; i++) memcpy(p + 4 * i, &ui, 4);
  return leave("cuMemsetD32_v2", CUDA_SUCCESS);
}

/* ---- modules and functions ------------------------------------------------------------- */

EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r) return leave("cuModuleLoadData", r);
  if (!image || n_modules >= MAX_OBJECTS) return leave("cuModuleLoadData", CUDA_ERROR_INVALID_VALUE);
  const unsigned char *img = image;
  struct stub_module *m = calloc(1, sizeof *m);
  if (memcmp(img, "\x7f" "ELF", 4) == 0) {
    m->kind = 1;
    r = read_cubin(m, img);
  } else if (img[0] == 0x50 && img[1] == 0xed && img[2] == 0x55 && img[3] == 0xba) {
    r = CUDA_ERROR_INVALID_IMAGE; /* a fatbin: pappus loads the entry it validated, not a bundle */
  } else if (strstr((const char *)img, ".version") && strstr((const char *)img, ".target")) {
    m->kind = 2;
    r = read_ptx(m, (const char *)img);
  } else {
    r = CUDA_ERROR_INVALID_IMAGE;
  }
  if (r) {
    free(m);
    return leave("cuModuleLoadData", r);
  }
  m->ctx = c;
  m->live = 1;
  modules[n_modules++] = m;
  *module = m;
  return leave("cuModuleLoadData", CUDA_SUCCESS);
}

EXPORT CUresult cuModuleUnload(CUmodule hmod) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r) return leave("cuModuleUnload", r);
  if (!known_module(hmod) || !hmod->live) return leave("cuModuleUnload", CUDA_ERROR_INVALID_HANDLE);
  hmod->live = 0;
  return leave("cuModuleUnload", CUDA_SUCCESS);
}

static int static_shared_of(const char *name, int fallback) {
  for (int i = 0; i < static_shared_override_n; i++)
    if (strcmp(static_shared_override[i].name, name) == 0) return static_shared_override[i].bytes;
  return fallback;
}

EXPORT CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (r) return leave("cuModuleGetFunction", r);
  if (!known_module(hmod) || !hmod->live || !name) return leave("cuModuleGetFunction", CUDA_ERROR_INVALID_HANDLE);
  for (int i = 0; i < hmod->nkernels; i++) {
    if (strcmp(hmod->names[i], name) != 0) continue;
    if (!hmod->funcs[i]) { /* one handle per kernel of a loaded module */
      if (n_funcs >= MAX_OBJECTS) return leave("cuModuleGetFunction", CUDA_ERROR_OUT_OF_MEMORY);
      struct stub_func *f = calloc(1, sizeof *f);
      f->module = hmod;
      snprintf(f->name, sizeof f->name, "%s", name);
      f->def = kernel_def(name);
      f->static_shared = static_shared_of(name, f->def ? f->def->static_shared : 0);
      f->local_bytes = f->def ? f->def->local_bytes : 0;
      f->num_regs = f->def ? f->def->num_regs : 32;
      f->max_dynamic_shared = DEFAULT_SHARED - f->static_shared;
      funcs[n_funcs++] = f;
      hmod->funcs[i] = f;
    }
    *hfunc = hmod->funcs[i];
    return leave("cuModuleGetFunction", CUDA_SUCCESS);
  }
  return leave("cuModuleGetFunction", CUDA_ERROR_NOT_FOUND);
}

/* A function usable in the current context c: of a live module loaded there. */
static CUresult usable_func(struct stub_ctx *c, struct stub_func *f) {
  if (!known_func(f) || !f->module->live) return CUDA_ERROR_INVALID_HANDLE;
  if (f->module->ctx != c) return CUDA_ERROR_INVALID_HANDLE; /* a function of another context */
  return CUDA_SUCCESS;
}

EXPORT CUresult cuFuncGetAttribute(int *pi, int attrib, CUfunction hfunc) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (!r) r = usable_func(c, hfunc);
  if (r) return leave("cuFuncGetAttribute", r);
  switch (attrib) {
    case FUNC_MAX_THREADS_PER_BLOCK: *pi = 1024; break;
    case FUNC_SHARED_SIZE_BYTES: *pi = hfunc->static_shared; break;
    case FUNC_CONST_SIZE_BYTES: *pi = 0; break;
    case FUNC_LOCAL_SIZE_BYTES: *pi = hfunc->local_bytes; break;
    case FUNC_NUM_REGS: *pi = hfunc->num_regs; break;
    case FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES: *pi = hfunc->max_dynamic_shared; break;
    default: return leave("cuFuncGetAttribute", CUDA_ERROR_INVALID_VALUE);
  }
  return leave("cuFuncGetAttribute", CUDA_SUCCESS);
}

EXPORT CUresult cuFuncSetAttribute(CUfunction hfunc, int attrib, int value) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (!r) r = usable_func(c, hfunc);
  if (r) return leave("cuFuncSetAttribute", r);
  if (attrib != FUNC_MAX_DYNAMIC_SHARED_SIZE_BYTES) return leave("cuFuncSetAttribute", CUDA_ERROR_NOT_SUPPORTED);
  /* "The sum of this value and CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES cannot exceed the device
   * attribute CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN." */
  if (value < 0 || value + hfunc->static_shared > device_attr(ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN))
    return leave("cuFuncSetAttribute", CUDA_ERROR_INVALID_VALUE);
  hfunc->max_dynamic_shared = value;
  return leave("cuFuncSetAttribute", CUDA_SUCCESS);
}

EXPORT CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *numBlocks, CUfunction func, int blockSize,
                                                           size_t dynamicSMemSize) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (!r) r = usable_func(c, func);
  if (r) return leave("cuOccupancyMaxActiveBlocksPerMultiprocessor", r);
  if (blockSize <= 0 || blockSize > 1024) return leave("cuOccupancyMaxActiveBlocksPerMultiprocessor", CUDA_ERROR_INVALID_VALUE);
  int regs = func->num_regs > 255 ? 256 : ((func->num_regs + 7) & ~7);
  int n = 2048 / blockSize;
  if (65536 / (blockSize * regs) < n) n = 65536 / (blockSize * regs);
  size_t shared = (size_t)func->static_shared + dynamicSMemSize;
  if (shared > (size_t)func->static_shared + (size_t)func->max_dynamic_shared) n = 0;
  else if (shared && (int)(233472 / shared) < n) n = (int)(233472 / shared);
  if (n > 32) n = 32;
  *numBlocks = n;
  return leave("cuOccupancyMaxActiveBlocksPerMultiprocessor", CUDA_SUCCESS);
}

/* ---- launches -------------------------------------------------------------------------- */

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                               unsigned int by, unsigned int bz, unsigned int shared, CUstream stream,
                               void **kernelParams, void **extra) {
  enter();
  struct stub_ctx *c;
  CUresult r = live_current(&c);
  if (!r) r = usable_func(c, f);
  if (r) return leave("cuLaunchKernel", r);
  if (stream != NULL) return leave("cuLaunchKernel", CUDA_ERROR_NOT_SUPPORTED); /* the legacy stream only */
  if (!gx || !gy || !gz || !bx || !by || !bz || (uint64_t)bx * by * bz > 1024 || bz > 64 || gy > 65535 ||
      gz > 65535)
    return leave("cuLaunchKernel", CUDA_ERROR_INVALID_VALUE);
  if ((int)shared > f->max_dynamic_shared) return leave("cuLaunchKernel", CUDA_ERROR_INVALID_VALUE);
  if (kernelParams && extra) return leave("cuLaunchKernel", CUDA_ERROR_INVALID_VALUE);
  const struct kernel_def *k = f->def;
  if (!k) return leave("cuLaunchKernel", CUDA_ERROR_NOT_SUPPORTED);
  unsigned span = k->nparams ? k->offsets[k->nparams - 1] + k->sizes[k->nparams - 1] : 0;
  unsigned char bank[PARAM_BANK];
  memset(bank, 0, sizeof bank);
  int mode = 0;
  unsigned long long buffer_size = 0;
  if (kernelParams) {
    mode = 1;
    for (int i = 0; i < k->nparams; i++) {
      if (!kernelParams[i]) return leave("cuLaunchKernel", CUDA_ERROR_INVALID_VALUE);
      memcpy(bank + k->offsets[i], kernelParams[i], k->sizes[i]);
    }
  } else if (extra) {
    mode = 2;
    void *buf = NULL;
    size_t *size = NULL;
    for (int i = 0; extra[i] != NULL; i += 2) { /* CU_LAUNCH_PARAM_END (0) ends the list */
      if (i >= 16) return leave("cuLaunchKernel", CUDA_ERROR_INVALID_VALUE);
      if (extra[i] == (void *)1) buf = extra[i + 1];
      else if (extra[i] == (void *)2) size = extra[i + 1];
      else return leave("cuLaunchKernel", CUDA_ERROR_INVALID_VALUE);
    }
    if (!buf || !size || *size > PARAM_BANK) return leave("cuLaunchKernel", CUDA_ERROR_INVALID_VALUE);
    /* As the H100's driver (580) answers: a block past the last parameter is refused; a shorter
     * one is taken, the kernel reading what the caller left after it. */
    if (*size > span) return leave("cuLaunchKernel", CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
    buffer_size = *size;
    memcpy(bank, buf, *size);
  } else if (k->nparams) {
    return leave("cuLaunchKernel", CUDA_ERROR_INVALID_VALUE);
  }
  if (n_launches < MAX_LAUNCHES) {
    struct stub_launch *l = &launches[n_launches++];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", f->name);
    l->grid[0] = gx, l->grid[1] = gy, l->grid[2] = gz;
    l->block[0] = bx, l->block[1] = by, l->block[2] = bz;
    l->shared = shared;
    l->mode = mode;
    l->ctx = c->id;
    l->device = c->device;
    l->buffer_size = buffer_size;
    l->param_bytes = span;
    memcpy(l->params, bank, span < sizeof l->params ? span : sizeof l->params);
  }
  unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
  CUresult err = run_kernel(c, k, grid, block, bank);
  if (err) c->pending = err; /* reported by the next synchronising call, as a GPU does */
  return leave("cuLaunchKernel", CUDA_SUCCESS);
}

/* ---- errors and entry points ----------------------------------------------------------- */

static const char *error_name(CUresult e) {
  switch (e) {
    case CUDA_SUCCESS: return "CUDA_SUCCESS";
    case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
    case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    case CUDA_ERROR_ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
    case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
    default: return NULL;
  }
}

EXPORT CUresult cuGetErrorName(CUresult error, const char **pstr) {
  enter();
  *pstr = error_name(error);
  return leave("cuGetErrorName", *pstr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE);
}

EXPORT CUresult cuGetErrorString(CUresult error, const char **pstr) {
  enter();
  *pstr = error_name(error);
  return leave("cuGetErrorString", *pstr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE);
}

EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, uint64_t flags,
                                    int *symbolStatus);

/* name, the CUDA version that introduced this variant, the version that replaced it (0: none) */
static const struct {
  const char *name;
  int since, until;
  void *fn;
} PROCS[] = {
  {"cuGetProcAddress", 12000, 0, (void *)cuGetProcAddress_v2},
  {"cuGetErrorName", 6000, 0, (void *)cuGetErrorName},
  {"cuGetErrorString", 6000, 0, (void *)cuGetErrorString},
  {"cuDriverGetVersion", 2020, 0, (void *)cuDriverGetVersion},
  {"cuInit", 2000, 0, (void *)cuInit},
  {"cuDeviceGetCount", 2000, 0, (void *)cuDeviceGetCount},
  {"cuDeviceGet", 2000, 0, (void *)cuDeviceGet},
  {"cuDeviceGetName", 2000, 0, (void *)cuDeviceGetName},
  {"cuDeviceGetAttribute", 2000, 0, (void *)cuDeviceGetAttribute},
  {"cuDevicePrimaryCtxRetain", 7000, 0, (void *)cuDevicePrimaryCtxRetain},
  {"cuDevicePrimaryCtxRelease", 11000, 0, (void *)cuDevicePrimaryCtxRelease_v2},
  {"cuDevicePrimaryCtxReset", 11000, 0, (void *)cuDevicePrimaryCtxReset_v2},
  {"cuCtxCreate", 12050, 0, (void *)cuCtxCreate_v4},
  {"cuCtxDestroy", 4000, 0, (void *)cuCtxDestroy_v2},
  {"cuCtxSetCurrent", 4000, 0, (void *)cuCtxSetCurrent},
  {"cuCtxGetCurrent", 4000, 0, (void *)cuCtxGetCurrent},
  {"cuCtxSynchronize", 2000, 13000, (void *)cuCtxSynchronize},
  {"cuCtxSetLimit", 3010, 0, (void *)cuCtxSetLimit},
  {"cuCtxGetLimit", 3010, 0, (void *)cuCtxGetLimit},
  {"cuMemGetInfo", 3020, 0, (void *)cuMemGetInfo_v2},
  {"cuMemAlloc", 3020, 0, (void *)cuMemAlloc_v2},
  {"cuMemFree", 3020, 0, (void *)cuMemFree_v2},
  {"cuMemcpyHtoD", 3020, 0, (void *)cuMemcpyHtoD_v2},
  {"cuMemcpyDtoH", 3020, 0, (void *)cuMemcpyDtoH_v2},
  {"cuMemsetD8", 3020, 0, (void *)cuMemsetD8_v2},
  {"cuMemsetD32", 3020, 0, (void *)cuMemsetD32_v2},
  {"cuModuleLoadData", 2000, 0, (void *)cuModuleLoadData},
  {"cuModuleUnload", 2000, 0, (void *)cuModuleUnload},
  {"cuModuleGetFunction", 2000, 0, (void *)cuModuleGetFunction},
  {"cuFuncGetAttribute", 2020, 0, (void *)cuFuncGetAttribute},
  {"cuFuncSetAttribute", 9000, 0, (void *)cuFuncSetAttribute},
  {"cuOccupancyMaxActiveBlocksPerMultiprocessor", 6050, 0, (void *)cuOccupancyMaxActiveBlocksPerMultiprocessor},
  {"cuLaunchKernel", 4000, 0, (void *)cuLaunchKernel},
};

/* CUdriverProcAddressQueryResult: 0 success, 1 symbol not found, 2 version not sufficient */
EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, uint64_t flags,
                                    int *symbolStatus) {
  (void)flags;
  if (!symbol || !pfn) return CUDA_ERROR_INVALID_VALUE;
  int status = 1;
  *pfn = NULL;
  for (size_t i = 0; i < sizeof PROCS / sizeof PROCS[0]; i++) {
    if (strcmp(PROCS[i].name, symbol) != 0) continue;
    if (cudaVersion < PROCS[i].since) {
      status = 2;
    } else if (PROCS[i].until == 0 || cudaVersion < PROCS[i].until) {
      *pfn = PROCS[i].fn;
      status = 0;
      break;
    }
  }
  if (symbolStatus) *symbolStatus = status;
  return status == 0 ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

/* ---- test controls (ctypes) ------------------------------------------------------------ */

EXPORT void stub_set_driver_version(int version) { driver_version = version; }
EXPORT void stub_set_device_count(int n) { device_count = n < MAX_DEVICES ? n : MAX_DEVICES; }
EXPORT void stub_set_attribute(int attrib, int value) {
  if (attrib >= 0 && attrib < N_ATTRS) attrs[attrib] = value, attr_set[attrib] = 1;
}
EXPORT void stub_set_memory(size_t free_bytes, size_t total_bytes) {
  enter();
  mem_free = free_bytes, mem_total = total_bytes;
  pthread_mutex_unlock(&lock);
}
/* The smallest malloc heap: smaller requests are rounded up to it, or refused. */
EXPORT void stub_set_min_heap(size_t bytes, int refuse_below) { min_heap = bytes, refuse_below_min_heap = refuse_below; }
/* The next cuCtxSynchronize (in any context) fails with `error`, which stays (sticky). */
EXPORT void stub_fail_next_sync(int error) { fail_next_sync = error; }
/* CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES of kernel `name` for function handles made from now on. */
EXPORT void stub_set_static_shared(const char *name, int bytes) {
  enter();
  if (static_shared_override_n < 32) {
    snprintf(static_shared_override[static_shared_override_n].name, 64, "%s", name);
    static_shared_override[static_shared_override_n++].bytes = bytes;
  }
  pthread_mutex_unlock(&lock);
}
EXPORT int stub_launch_count(void) { return n_launches; }
EXPORT int stub_launch(int i, struct stub_launch *out) {
  if (i < 0 || i >= n_launches) return -1;
  *out = launches[i];
  return 0;
}
EXPORT size_t stub_launch_size(void) { return sizeof(struct stub_launch); }
/* The calls so far, one "name=CUresult" a line. */
EXPORT size_t stub_log(char *out, size_t cap) {
  enter();
  size_t n = log_len < cap ? log_len : cap;
  memcpy(out, call_log, n);
  pthread_mutex_unlock(&lock);
  return n;
}
/* The calling thread's current context id (0: none). */
EXPORT int stub_current_context(void) {
  struct stub_ctx *c = current();
  return c ? c->id : 0;
}
/* Live contexts, allocations and modules, and the sticky error of the process (0: none). */
EXPORT void stub_counts(int *live_contexts, int *live_allocations, int *live_modules, int *sticky) {
  enter();
  *live_contexts = *live_allocations = *live_modules = 0;
  for (int i = 0; i < n_contexts; i++) *live_contexts += !contexts[i]->destroyed;
  for (int i = 0; i < n_allocs; i++) *live_allocations += allocs[i].live;
  for (int i = 0; i < n_modules; i++) *live_modules += modules[i]->live;
  *sticky = poisoned;
  pthread_mutex_unlock(&lock);
}
/* Kind of the module loaded last: 1 cubin, 2 PTX (0: none). */
EXPORT int stub_last_module_kind(void) { return n_modules ? modules[n_modules - 1]->kind : 0; }
