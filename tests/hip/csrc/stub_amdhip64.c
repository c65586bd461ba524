/* A stand-in for libamdhip64.so, compiled by tests/hip/test_real_bindings.py with `cc`.
 *
 * It exports, with the C ABI the real ROCm headers give them (as hip-python's cyhip.pxd, which
 * is generated from those headers, declares them), exactly the HIP calls pappus_hip makes, so
 * that the REAL hip-python bindings (rocm.bindings.hip) can be driven end to end without an AMD
 * GPU: hip-python dlopens this file instead of the runtime (ROCM_PATH=<dir>, <dir>/lib/
 * libamdhip64.so; see rocm/bindings/util/paths.py).
 *
 * "Device" memory is host memory. Handles are checked the way the runtime checks them (a freed
 * pointer, a module or function of a context that hipDeviceReset destroyed, are errors), the
 * current device is per thread, a fault is sticky until hipDeviceReset, and hipModuleLaunchKernel
 * takes its arguments the ROCm way: kernelParams or extra (HIP_LAUNCH_PARAM_BUFFER_POINTER, the
 * kernarg block; HIP_LAUNCH_PARAM_BUFFER_SIZE, a pointer to its size; HIP_LAUNCH_PARAM_END).
 * No GPU code runs: two kernels of tests/hip/kernels/clean.hip are emulated on the host from
 * their kernarg block at the offsets the AMDGPU ABI gives them, so the test sees whether
 * pointers and values reached the "device" where the kernel reads them:
 *   bounded_fill(int *out, int value)   out[i] = value for every work-item i (x only); an address
 *                                       outside every allocation faults (hipErrorIllegalAddress)
 *   scalars(int *out, int i, float f, Pair p, char c, double d)  at 0, 8, 12, 16, 32, 40:
 *                                       out[0] = i + (int)f + p.a + (int)p.b + (int)p.c + c + (int)d
 * Every other kernel launches and does nothing.
 *
 * stub_* functions are the test's controls and probes (called through ctypes).
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- the ABI (values and layouts of the ROCm >= 6 headers) -------------------------------- */

typedef int hipError_t; /* enum hipError_t */
enum {
  hipSuccess = 0,
  hipErrorInvalidValue = 1,
  hipErrorOutOfMemory = 2,
  hipErrorNoDevice = 100,
  hipErrorInvalidDevice = 101,
  hipErrorInvalidImage = 200,
  hipErrorUnsupportedLimit = 215,
  hipErrorInvalidHandle = 400,
  hipErrorNotFound = 500,
  hipErrorIllegalAddress = 700,
  hipErrorLaunchFailure = 719,
};

typedef int hipLimit_t; /* enum hipLimit_t */
enum { hipLimitStackSize = 0, hipLimitPrintfFifoSize = 1, hipLimitMallocHeapSize = 2 };

typedef int hipDeviceAttribute_t; /* enum hipDeviceAttribute_t (the ones pappus asks) */
enum {
  hipDeviceAttributeMaxBlockDimX = 26,
  hipDeviceAttributeMaxBlockDimY = 27,
  hipDeviceAttributeMaxBlockDimZ = 28,
  hipDeviceAttributeMaxGridDimX = 29,
  hipDeviceAttributeMaxGridDimY = 30,
  hipDeviceAttributeMaxGridDimZ = 31,
  hipDeviceAttributeMaxThreadsPerBlock = 56,
  hipDeviceAttributePageableMemoryAccess = 65,
  hipDeviceAttributeMaxSharedMemoryPerBlock = 74,
};

#define HIP_LAUNCH_PARAM_BUFFER_POINTER ((void *)0x01)
#define HIP_LAUNCH_PARAM_BUFFER_SIZE ((void *)0x02)
#define HIP_LAUNCH_PARAM_END ((void *)0x03)

typedef struct hipUUID_t { char bytes[16]; } hipUUID_t;

typedef struct {
  unsigned hasGlobalInt32Atomics : 1;
  unsigned hasGlobalFloatAtomicExch : 1;
  unsigned hasSharedInt32Atomics : 1;
  unsigned hasSharedFloatAtomicExch : 1;
  unsigned hasFloatAtomicAdd : 1;
  unsigned hasGlobalInt64Atomics : 1;
  unsigned hasSharedInt64Atomics : 1;
  unsigned hasDoubles : 1;
  unsigned hasWarpVote : 1;
  unsigned hasWarpBallot : 1;
  unsigned hasWarpShuffle : 1;
  unsigned hasFunnelShift : 1;
  unsigned hasThreadFenceSystem : 1;
  unsigned hasSyncThreadsExt : 1;
  unsigned hasSurfaceFuncs : 1;
  unsigned has3dGrid : 1;
  unsigned hasDynamicParallelism : 1;
} hipDeviceArch_t;

/* hipDeviceProp_tR0600: what hip-python's hipGetDeviceProperties fills (it binds the symbol
 * hipGetDevicePropertiesR0600). Field for field as in cyhip.pxd. */
typedef struct hipDeviceProp_tR0600 {
  char name[256];
  hipUUID_t uuid;
  char luid[8];
  unsigned int luidDeviceNodeMask;
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int regsPerBlock;
  int warpSize;
  size_t memPitch;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int clockRate;
  size_t totalConstMem;
  int major;
  int minor;
  size_t textureAlignment;
  size_t texturePitchAlignment;
  int deviceOverlap;
  int multiProcessorCount;
  int kernelExecTimeoutEnabled;
  int integrated;
  int canMapHostMemory;
  int computeMode;
  int maxTexture1D;
  int maxTexture1DMipmap;
  int maxTexture1DLinear;
  int maxTexture2D[2];
  int maxTexture2DMipmap[2];
  int maxTexture2DLinear[3];
  int maxTexture2DGather[2];
  int maxTexture3D[3];
  int maxTexture3DAlt[3];
  int maxTextureCubemap;
  int maxTexture1DLayered[2];
  int maxTexture2DLayered[3];
  int maxTextureCubemapLayered[2];
  int maxSurface1D;
  int maxSurface2D[2];
  int maxSurface3D[3];
  int maxSurface1DLayered[2];
  int maxSurface2DLayered[3];
  int maxSurfaceCubemap;
  int maxSurfaceCubemapLayered[2];
  size_t surfaceAlignment;
  int concurrentKernels;
  int ECCEnabled;
  int pciBusID;
  int pciDeviceID;
  int pciDomainID;
  int tccDriver;
  int asyncEngineCount;
  int unifiedAddressing;
  int memoryClockRate;
  int memoryBusWidth;
  int l2CacheSize;
  int persistingL2CacheMaxSize;
  int maxThreadsPerMultiProcessor;
  int streamPrioritiesSupported;
  int globalL1CacheSupported;
  int localL1CacheSupported;
  size_t sharedMemPerMultiprocessor;
  int regsPerMultiprocessor;
  int managedMemory;
  int isMultiGpuBoard;
  int multiGpuBoardGroupID;
  int hostNativeAtomicSupported;
  int singleToDoublePrecisionPerfRatio;
  int pageableMemoryAccess;
  int concurrentManagedAccess;
  int computePreemptionSupported;
  int canUseHostPointerForRegisteredMem;
  int cooperativeLaunch;
  int cooperativeMultiDeviceLaunch;
  size_t sharedMemPerBlockOptin;
  int pageableMemoryAccessUsesHostPageTables;
  int directManagedMemAccessFromHost;
  int maxBlocksPerMultiProcessor;
  int accessPolicyMaxWindowSize;
  size_t reservedSharedMemPerBlock;
  int hostRegisterSupported;
  int sparseHipArraySupported;
  int hostRegisterReadOnlySupported;
  int timelineSemaphoreInteropSupported;
  int memoryPoolsSupported;
  int gpuDirectRDMASupported;
  unsigned int gpuDirectRDMAFlushWritesOptions;
  int gpuDirectRDMAWritesOrdering;
  unsigned int memoryPoolSupportedHandleTypes;
  int deferredMappingHipArraySupported;
  int ipcEventSupported;
  int clusterLaunch;
  int unifiedFunctionPointers;
  int reserved[63];
  int hipReserved[32];
  char gcnArchName[256];
  size_t maxSharedMemoryPerMultiProcessor;
  int clockInstructionRate;
  hipDeviceArch_t arch;
  unsigned int *hdpMemFlushCntl;
  unsigned int *hdpRegFlushCntl;
  int cooperativeMultiDeviceUnmatchedFunc;
  int cooperativeMultiDeviceUnmatchedGridDim;
  int cooperativeMultiDeviceUnmatchedBlockDim;
  int cooperativeMultiDeviceUnmatchedSharedMem;
  int isLargeBar;
  int asicRevision;
} hipDeviceProp_tR0600;

/* ---- state ---------------------------------------------------------------------------------- */

#define MAX_DEVICES 8
#define MAX_ARGS 1024
#define LOG_CAP 65536
#define DEFAULT_HEAP (8u << 20)

struct alloc {
  struct alloc *next;
  unsigned char *ptr;
  size_t size;
  int device;
  int live;
};

struct module {
  struct module *next;
  unsigned char *image;
  size_t size;
  int device;
  int live;
};

struct function {
  struct function *next;
  struct module *module;
  char name[256];
  int live;
};

struct launch {
  char name[256];
  unsigned dims[6];
  unsigned shared;
  size_t nargs;
  unsigned char args[MAX_ARGS];
  int device;
  int has_extra; /* whether the arguments came through `extra` (or there were none) */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int version = 71526333; /* HIP 7.15.26333: what hip-python 10.0.0 was generated for */
static int n_devices = 1;
static int pageable = 0;
static size_t total_memory = 64u << 20;
static size_t heap[MAX_DEVICES];
static int heap_set[MAX_DEVICES];
static hipError_t sticky[MAX_DEVICES];
static hipError_t next_sync = hipSuccess;
static struct alloc *allocs;
static struct module *modules;
static struct function *functions;
static struct launch *launches;
static size_t n_launches, cap_launches;
static size_t n_loads, n_resets, wrong_device;
static char call_log[LOG_CAP];
static size_t log_len;
static __thread int current; /* HIP's current device is per thread, 0 until hipSetDevice */

static void note(const char *api) {
  size_t n = strlen(api);
  if (log_len + n + 2 < LOG_CAP) {
    memcpy(call_log + log_len, api, n);
    log_len += n;
    call_log[log_len++] = ',';
    call_log[log_len] = 0;
  }
}

#define ENTER(api) pthread_mutex_lock(&lock); note(api)
#define RETURN(value) do { hipError_t _v = (value); pthread_mutex_unlock(&lock); return _v; } while (0)

static void same_device(int device) {
  if (device != current) wrong_device++;
}

/* The live allocation holding [p, p + n), or NULL. */
static struct alloc *find(const void *p, size_t n) {
  const unsigned char *a = p;
  for (struct alloc *al = allocs; al; al = al->next)
    if (al->live && a >= al->ptr && n <= al->size && a - al->ptr <= (ptrdiff_t)(al->size - n)) return al;
  return NULL;
}

static size_t used(int device) {
  size_t sum = 0;
  for (struct alloc *al = allocs; al; al = al->next)
    if (al->live && al->device == device) sum += al->size;
  return sum;
}

/* ---- HIP ------------------------------------------------------------------------------------ */

EXPORT hipError_t hipRuntimeGetVersion(int *runtimeVersion) {
  ENTER("hipRuntimeGetVersion");
  if (!runtimeVersion) RETURN(hipErrorInvalidValue);
  *runtimeVersion = version;
  RETURN(hipSuccess);
}

EXPORT hipError_t hipGetDeviceCount(int *count) {
  ENTER("hipGetDeviceCount");
  if (!count) RETURN(hipErrorInvalidValue);
  *count = n_devices;
  RETURN(n_devices ? hipSuccess : hipErrorNoDevice);
}

EXPORT hipError_t hipSetDevice(int deviceId) {
  ENTER("hipSetDevice");
  if (!n_devices) RETURN(hipErrorNoDevice);
  if (deviceId < 0 || deviceId >= n_devices) RETURN(hipErrorInvalidDevice);
  current = deviceId;
  RETURN(hipSuccess);
}

EXPORT hipError_t hipDeviceSetLimit(hipLimit_t limit, size_t value) {
  ENTER("hipDeviceSetLimit");
  if (limit == hipLimitMallocHeapSize) {
    heap[current] = value;
    heap_set[current] = 1;
    RETURN(hipSuccess);
  }
  RETURN(limit == hipLimitStackSize || limit == hipLimitPrintfFifoSize ? hipSuccess : hipErrorUnsupportedLimit);
}

EXPORT hipError_t hipDeviceGetLimit(size_t *pValue, hipLimit_t limit) {
  ENTER("hipDeviceGetLimit");
  if (!pValue) RETURN(hipErrorInvalidValue);
  if (limit != hipLimitMallocHeapSize) RETURN(hipErrorUnsupportedLimit);
  *pValue = heap_set[current] ? heap[current] : DEFAULT_HEAP;
  RETURN(hipSuccess);
}

EXPORT hipError_t hipMemGetInfo(size_t *free_, size_t *total) {
  ENTER("hipMemGetInfo");
  if (!free_ || !total) RETURN(hipErrorInvalidValue);
  *total = total_memory;
  *free_ = total_memory - used(current);
  RETURN(hipSuccess);
}

EXPORT hipError_t hipGetDevicePropertiesR0600(hipDeviceProp_tR0600 *prop, int deviceId) {
  ENTER("hipGetDevicePropertiesR0600");
  if (!prop) RETURN(hipErrorInvalidValue);
  if (deviceId < 0 || deviceId >= n_devices) RETURN(hipErrorInvalidDevice);
  memset(prop, 0, sizeof *prop);
  snprintf(prop->name, sizeof prop->name, "AMD Instinct MI210 (stub %d)", deviceId);
  snprintf(prop->gcnArchName, sizeof prop->gcnArchName, "gfx90a:sramecc+:xnack-");
  prop->totalGlobalMem = total_memory;
  prop->warpSize = 64;
  prop->pageableMemoryAccess = pageable;
  prop->maxSharedMemoryPerMultiProcessor = 65536;
  prop->asicRevision = 1;
  RETURN(hipSuccess);
}

/* The plain symbol exists too (ABI R0000 in the real runtime): a binding that called it would
 * get a struct of another layout, so it answers an error that the test can see. */
EXPORT hipError_t hipGetDeviceProperties(void *prop, int deviceId) {
  (void)prop; (void)deviceId;
  ENTER("hipGetDeviceProperties(R0000)");
  RETURN(hipErrorInvalidValue);
}

EXPORT hipError_t hipDeviceGetAttribute(int *pi, hipDeviceAttribute_t attr, int deviceId) {
  ENTER("hipDeviceGetAttribute");
  if (!pi) RETURN(hipErrorInvalidValue);
  if (deviceId < 0 || deviceId >= n_devices) RETURN(hipErrorInvalidDevice);
  switch (attr) { /* values unlike pappus' defaults and each other, so that a mix-up shows */
    case hipDeviceAttributeMaxThreadsPerBlock: *pi = 768; break;
    case hipDeviceAttributeMaxBlockDimX: *pi = 1021; break;
    case hipDeviceAttributeMaxBlockDimY: *pi = 1022; break;
    case hipDeviceAttributeMaxBlockDimZ: *pi = 1023; break;
    case hipDeviceAttributeMaxGridDimX: *pi = 2147483646; break;
    case hipDeviceAttributeMaxGridDimY: *pi = 65534; break;
    case hipDeviceAttributeMaxGridDimZ: *pi = 65533; break;
    case hipDeviceAttributeMaxSharedMemoryPerBlock: *pi = 65532; break;
    case hipDeviceAttributePageableMemoryAccess: *pi = pageable; break;
    default: RETURN(hipErrorInvalidValue);
  }
  RETURN(hipSuccess);
}

EXPORT hipError_t hipMalloc(void **ptr, size_t size) {
  ENTER("hipMalloc");
  if (!ptr) RETURN(hipErrorInvalidValue);
  *ptr = NULL;
  if (sticky[current]) RETURN(sticky[current]);
  if (size == 0) RETURN(hipSuccess);
  if (size > total_memory - used(current)) RETURN(hipErrorOutOfMemory);
  struct alloc *al = calloc(1, sizeof *al);
  if (!al || posix_memalign((void **)&al->ptr, 4096, size) != 0) { free(al); RETURN(hipErrorOutOfMemory); }
  memset(al->ptr, 0xAB, size); /* what an earlier tenant left */
  al->size = size;
  al->device = current;
  al->live = 1;
  al->next = allocs;
  allocs = al;
  *ptr = al->ptr;
  RETURN(hipSuccess);
}

EXPORT hipError_t hipFree(void *ptr) {
  ENTER("hipFree");
  if (!ptr) RETURN(hipSuccess);
  for (struct alloc *al = allocs; al; al = al->next) {
    if (al->live && al->ptr == ptr) {
      same_device(al->device);
      al->live = 0;
      free(al->ptr);
      al->ptr = NULL;
      RETURN(hipSuccess);
    }
  }
  RETURN(hipErrorInvalidValue);
}

EXPORT hipError_t hipMemsetD8(void *dest, unsigned char value, size_t count) {
  ENTER("hipMemsetD8");
  if (sticky[current]) RETURN(sticky[current]);
  struct alloc *al = find(dest, count);
  if (!al) RETURN(hipErrorInvalidValue);
  same_device(al->device);
  memset(dest, value, count);
  RETURN(hipSuccess);
}

EXPORT hipError_t hipMemcpyHtoD(void *dst, const void *src, size_t sizeBytes) {
  ENTER("hipMemcpyHtoD");
  if (sticky[current]) RETURN(sticky[current]);
  struct alloc *al = find(dst, sizeBytes);
  if (!al || !src || find(src, 1)) RETURN(hipErrorInvalidValue);
  same_device(al->device);
  memcpy(dst, src, sizeBytes);
  RETURN(hipSuccess);
}

EXPORT hipError_t hipMemcpyDtoH(void *dst, void *src, size_t sizeBytes) {
  ENTER("hipMemcpyDtoH");
  if (sticky[current]) RETURN(sticky[current]);
  struct alloc *al = find(src, sizeBytes);
  if (!al || !dst || find(dst, 1)) RETURN(hipErrorInvalidValue);
  same_device(al->device);
  memcpy(dst, src, sizeBytes);
  RETURN(hipSuccess);
}

/* ---- modules: raw AMDGPU ELF only (the real runtime also takes offload bundles; pappus hands
 * it the ELF it validated, which is what the test checks) --------------------------------------- */

typedef struct {
  unsigned char e_ident[16];
  uint16_t e_type, e_machine;
  uint32_t e_version;
  uint64_t e_entry, e_phoff, e_shoff;
  uint32_t e_flags;
  uint16_t e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx;
} Elf64_Ehdr_;

typedef struct {
  uint32_t sh_name, sh_type;
  uint64_t sh_flags, sh_addr, sh_offset, sh_size;
  uint32_t sh_link, sh_info;
  uint64_t sh_addralign, sh_entsize;
} Elf64_Shdr_;

typedef struct {
  uint32_t st_name;
  unsigned char st_info, st_other;
  uint16_t st_shndx;
  uint64_t st_value, st_size;
} Elf64_Sym_;

#define EM_AMDGPU_ 224

/* The image's size from its header (hipModuleLoadData is given no size), or 0 if it is not an
 * AMDGPU ELF64. */
static size_t elf_size(const unsigned char *image) {
  Elf64_Ehdr_ eh;
  memcpy(&eh, image, sizeof eh);
  if (memcmp(eh.e_ident, "\177ELF", 4) != 0 || eh.e_ident[4] != 2 || eh.e_machine != EM_AMDGPU_) return 0;
  if (eh.e_shentsize != sizeof(Elf64_Shdr_)) return 0;
  size_t end = eh.e_shoff + (size_t)eh.e_shnum * eh.e_shentsize;
  const Elf64_Shdr_ *sh = (const Elf64_Shdr_ *)(image + eh.e_shoff);
  for (unsigned i = 0; i < eh.e_shnum; i++) {
    Elf64_Shdr_ s;
    memcpy(&s, &sh[i], sizeof s);
    if (s.sh_type != 8 /* NOBITS */ && s.sh_offset + s.sh_size > end) end = s.sh_offset + s.sh_size;
  }
  return end;
}

/* Whether the module's symbol table defines a function (a kernel) called `name`. */
static int has_kernel(const struct module *m, const char *name) {
  Elf64_Ehdr_ eh;
  memcpy(&eh, m->image, sizeof eh);
  for (unsigned i = 0; i < eh.e_shnum; i++) {
    Elf64_Shdr_ s, str;
    memcpy(&s, m->image + eh.e_shoff + (size_t)i * sizeof s, sizeof s);
    if ((s.sh_type != 2 && s.sh_type != 11) || s.sh_link >= eh.e_shnum) continue; /* SYMTAB, DYNSYM */
    memcpy(&str, m->image + eh.e_shoff + (size_t)s.sh_link * sizeof str, sizeof str);
    for (size_t off = 0; off + sizeof(Elf64_Sym_) <= s.sh_size; off += sizeof(Elf64_Sym_)) {
      Elf64_Sym_ sym;
      memcpy(&sym, m->image + s.sh_offset + off, sizeof sym);
      if ((sym.st_info & 0xf) != 2 /* STT_FUNC */ || sym.st_shndx == 0 || sym.st_name >= str.sh_size) continue;
      const char *sname = (const char *)m->image + str.sh_offset + sym.st_name;
      if (strncmp(sname, name, str.sh_size - sym.st_name) == 0) return 1;
    }
  }
  return 0;
}

typedef struct module *hipModule_t;
typedef struct function *hipFunction_t;

EXPORT hipError_t hipModuleLoadData(hipModule_t *module, const void *image) {
  ENTER("hipModuleLoadData");
  if (!module || !image) RETURN(hipErrorInvalidValue);
  *module = NULL;
  size_t size = elf_size(image);
  if (!size) RETURN(hipErrorInvalidImage);
  struct module *m = calloc(1, sizeof *m);
  if (!m || !(m->image = malloc(size))) { free(m); RETURN(hipErrorOutOfMemory); }
  memcpy(m->image, image, size);
  m->size = size;
  m->device = current;
  m->live = 1;
  m->next = modules;
  modules = m;
  n_loads++;
  *module = m;
  RETURN(hipSuccess);
}

static struct module *live_module(hipModule_t handle) {
  for (struct module *m = modules; m; m = m->next)
    if (m == handle) return m->live ? m : NULL;
  return NULL;
}

EXPORT hipError_t hipModuleGetFunction(hipFunction_t *function, hipModule_t module, const char *kname) {
  ENTER("hipModuleGetFunction");
  if (!function || !kname) RETURN(hipErrorInvalidValue);
  *function = NULL;
  struct module *m = live_module(module);
  if (!m) RETURN(hipErrorInvalidHandle);
  same_device(m->device);
  if (strlen(kname) >= sizeof functions->name || !has_kernel(m, kname)) RETURN(hipErrorNotFound);
  struct function *f = calloc(1, sizeof *f);
  if (!f) RETURN(hipErrorOutOfMemory);
  f->module = m;
  strcpy(f->name, kname);
  f->live = 1;
  f->next = functions;
  functions = f;
  *function = f;
  RETURN(hipSuccess);
}

static void drop_functions(struct module *m) {
  for (struct function *f = functions; f; f = f->next)
    if (f->module == m) f->live = 0;
}

EXPORT hipError_t hipModuleUnload(hipModule_t module) {
  ENTER("hipModuleUnload");
  struct module *m = live_module(module);
  if (!m) RETURN(hipErrorInvalidHandle);
  same_device(m->device);
  m->live = 0;
  drop_functions(m);
  free(m->image);
  m->image = NULL;
  RETURN(hipSuccess);
}

/* ---- launches ------------------------------------------------------------------------------- */

static int32_t get_i32(const unsigned char *a, size_t off) { int32_t v; memcpy(&v, a + off, 4); return v; }
static float get_f32(const unsigned char *a, size_t off) { float v; memcpy(&v, a + off, 4); return v; }
static double get_f64(const unsigned char *a, size_t off) { double v; memcpy(&v, a + off, 8); return v; }
static unsigned char *get_ptr(const unsigned char *a, size_t off) { void *v; memcpy(&v, a + off, 8); return v; }

/* Runs the kernel's host emulation; a status other than hipSuccess is the kernel's fault. */
static hipError_t emulate(const char *name, const unsigned *dims, const unsigned char *args, size_t nargs) {
  if (strcmp(name, "bounded_fill") == 0) {
    if (nargs < 12) return hipErrorInvalidValue;
    unsigned char *out = get_ptr(args, 0);
    int32_t value = get_i32(args, 8);
    size_t n = (size_t)dims[0] * dims[3];
    struct alloc *al = find(out, n * 4);
    if (!al) return hipErrorIllegalAddress;
    same_device(al->device);
    for (size_t i = 0; i < n; i++) memcpy(out + 4 * i, &value, 4);
  } else if (strcmp(name, "scalars") == 0) {
    if (nargs < 48) return hipErrorInvalidValue;
    unsigned char *out = get_ptr(args, 0);
    int32_t r = get_i32(args, 8) + (int)get_f32(args, 12) + get_i32(args, 16) + (int)get_f32(args, 20) +
                (int)get_f64(args, 24) + (signed char)args[32] + (int)get_f64(args, 40);
    struct alloc *al = find(out, 4);
    if (!al) return hipErrorIllegalAddress;
    same_device(al->device);
    memcpy(out, &r, 4);
  }
  return hipSuccess;
}

typedef void *hipStream_t;

EXPORT hipError_t hipModuleLaunchKernel(hipFunction_t f, unsigned int gridDimX, unsigned int gridDimY,
                                        unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                                        unsigned int blockDimZ, unsigned int sharedMemBytes, hipStream_t stream,
                                        void **kernelParams, void **extra) {
  ENTER("hipModuleLaunchKernel");
  if (sticky[current]) RETURN(sticky[current]);
  struct function *fn = NULL;
  for (struct function *g = functions; g; g = g->next)
    if (g == f) fn = g;
  if (!fn || !fn->live) RETURN(hipErrorInvalidHandle);
  if (stream != NULL) RETURN(hipErrorInvalidHandle); /* no streams are ever made here */
  if (kernelParams && extra) RETURN(hipErrorInvalidValue);
  const unsigned char *args = NULL;
  size_t nargs = 0;
  if (extra) {
    if (extra[0] != HIP_LAUNCH_PARAM_BUFFER_POINTER || extra[2] != HIP_LAUNCH_PARAM_BUFFER_SIZE ||
        extra[4] != HIP_LAUNCH_PARAM_END || !extra[3])
      RETURN(hipErrorInvalidValue);
    args = extra[1];
    nargs = *(size_t *)extra[3];
    if (nargs > MAX_ARGS || (nargs && !args)) RETURN(hipErrorInvalidValue);
  } else if (kernelParams) {
    RETURN(hipErrorInvalidValue); /* pappus always passes a kernarg block; the stub knows no layouts */
  }
  if (!gridDimX || !gridDimY || !gridDimZ || !blockDimX || !blockDimY || !blockDimZ) RETURN(hipErrorInvalidValue);
  same_device(fn->module->device);
  if (n_launches == cap_launches) {
    size_t cap = cap_launches ? 2 * cap_launches : 16;
    struct launch *grown = realloc(launches, cap * sizeof *grown);
    if (!grown) RETURN(hipErrorOutOfMemory);
    launches = grown;
    cap_launches = cap;
  }
  struct launch *l = &launches[n_launches++];
  memset(l, 0, sizeof *l);
  strcpy(l->name, fn->name);
  unsigned dims[6] = {gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ};
  memcpy(l->dims, dims, sizeof dims);
  l->shared = sharedMemBytes;
  l->nargs = nargs;
  if (nargs) memcpy(l->args, args, nargs);
  l->device = current;
  l->has_extra = extra != NULL;
  hipError_t fault = emulate(fn->name, dims, l->args, nargs);
  if (fault == hipErrorInvalidValue) RETURN(fault);
  if (fault) sticky[current] = fault; /* reported by the next synchronizing call, like a GPU fault */
  RETURN(hipSuccess);
}

EXPORT hipError_t hipDeviceSynchronize(void) {
  ENTER("hipDeviceSynchronize");
  if (next_sync) {
    sticky[current] = next_sync;
    next_sync = hipSuccess;
  }
  RETURN(sticky[current]);
}

/* Destroys the current device's primary context: its allocations, modules and functions, its
 * sticky error and its limits. */
EXPORT hipError_t hipDeviceReset(void) {
  ENTER("hipDeviceReset");
  for (struct alloc *al = allocs; al; al = al->next) {
    if (al->live && al->device == current) {
      al->live = 0;
      free(al->ptr);
      al->ptr = NULL;
    }
  }
  for (struct module *m = modules; m; m = m->next) {
    if (m->live && m->device == current) {
      m->live = 0;
      drop_functions(m);
      free(m->image);
      m->image = NULL;
    }
  }
  sticky[current] = hipSuccess;
  heap_set[current] = 0;
  n_resets++;
  RETURN(hipSuccess);
}

/* ---- the test's controls and probes ------------------------------------------------------ */

EXPORT void stub_configure(int runtime_version, int devices, int pageable_memory_access, size_t total) {
  pthread_mutex_lock(&lock);
  version = runtime_version;
  n_devices = devices < 0 ? 0 : devices > MAX_DEVICES ? MAX_DEVICES : devices;
  pageable = pageable_memory_access;
  total_memory = total;
  pthread_mutex_unlock(&lock);
}

EXPORT void stub_fail_next_sync(int status) {
  pthread_mutex_lock(&lock);
  next_sync = status;
  pthread_mutex_unlock(&lock);
}

EXPORT const char *stub_calls(void) { return call_log; }

EXPORT void stub_clear_calls(void) {
  pthread_mutex_lock(&lock);
  log_len = 0;
  call_log[0] = 0;
  pthread_mutex_unlock(&lock);
}

EXPORT size_t stub_sizeof_props(void) { return sizeof(hipDeviceProp_tR0600); }

/* Counters: "allocations" and "modules" live now, "loads", "resets", "launches", and
 * "wrong_device" (operations on a resource of a device other than the calling thread's current
 * one). -1 for an unknown name. */
EXPORT long stub_count(const char *what) {
  long n = 0;
  pthread_mutex_lock(&lock);
  if (strcmp(what, "allocations") == 0) {
    for (struct alloc *al = allocs; al; al = al->next) n += al->live;
  } else if (strcmp(what, "modules") == 0) {
    for (struct module *m = modules; m; m = m->next) n += m->live;
  } else if (strcmp(what, "loads") == 0) {
    n = (long)n_loads;
  } else if (strcmp(what, "resets") == 0) {
    n = (long)n_resets;
  } else if (strcmp(what, "launches") == 0) {
    n = (long)n_launches;
  } else if (strcmp(what, "wrong_device") == 0) {
    n = (long)wrong_device;
  } else {
    n = -1;
  }
  pthread_mutex_unlock(&lock);
  return n;
}

/* The malloc heap limit of a device as the runtime holds it (the default until one is set). */
EXPORT size_t stub_heap_limit(int device) {
  if (device < 0 || device >= MAX_DEVICES) return 0;
  return heap_set[device] ? heap[device] : DEFAULT_HEAP;
}

/* Launch i: its kernel's name, dims (grid x, y, z, block x, y, z), dynamic shared bytes, the
 * device it ran on, whether `extra` was given, and its kernarg block (returns its size; -1 if
 * there is no launch i). */
EXPORT long stub_launch(size_t i, char *name, size_t name_cap, unsigned *dims, unsigned *shared, int *device,
                        int *has_extra, unsigned char *args, size_t args_cap) {
  long n = -1;
  pthread_mutex_lock(&lock);
  if (i < n_launches) {
    const struct launch *l = &launches[i];
    snprintf(name, name_cap, "%s", l->name);
    memcpy(dims, l->dims, sizeof l->dims);
    *shared = l->shared;
    *device = l->device;
    *has_extra = l->has_extra;
    memcpy(args, l->args, l->nargs < args_cap ? l->nargs : args_cap);
    n = (long)l->nargs;
  }
  pthread_mutex_unlock(&lock);
  return n;
}

/* The image of the most recently loaded module (its size; its bytes into out, up to cap). */
EXPORT size_t stub_last_image(unsigned char *out, size_t cap) {
  size_t n = 0;
  pthread_mutex_lock(&lock);
  if (modules && modules->image) {
    n = modules->size;
    memcpy(out, modules->image, n < cap ? n : cap);
  }
  pthread_mutex_unlock(&lock);
  return n;
}
