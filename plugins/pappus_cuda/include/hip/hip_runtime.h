/*
 * pappus_cuda: the device side of HIP, spelled in CUDA.
 *
 * Lets the same kernel source (`#include <hip/hip_runtime.h>`) compile for NVIDIA GPUs with nvcc
 * (`nvcc -x cu -cubin -arch=sm_90 -I<this include dir>`) or NVRTC (this file passed as the named
 * header "hip/hip_runtime.h"). Only what kernels use is mapped: thread/block indices, dynamic
 * shared memory, warp intrinsics, a few HIP-only spellings. Everything HIP and CUDA share
 * (__global__, __device__, __shared__, __constant__, __syncthreads, threadIdx, blockIdx,
 * blockDim, gridDim, warpSize, atomicAdd/atomicCAS/..., __threadfence, malloc/free, printf,
 * the math library) needs no mapping and is left to the CUDA compiler.
 *
 * Not mapped (fails to compile, on purpose): __builtin_amdgcn_* intrinsics, __hip_atomic_*,
 * HIP host-side API (kernel libraries have no host code), 64-lane wavefront assumptions.
 */
#ifndef PAPPUS_CUDA_HIP_RUNTIME_H
#define PAPPUS_CUDA_HIP_RUNTIME_H

#define PAPPUS_CUDA_HIP_SHIM 1

/* What hipcc defines when it targets NVIDIA. */
#ifndef __HIP_PLATFORM_NVIDIA__
#define __HIP_PLATFORM_NVIDIA__ 1
#endif
#ifndef __HIP_PLATFORM_NVCC__
#define __HIP_PLATFORM_NVCC__ 1 /* the pre-ROCm-5 spelling */
#endif
#ifndef __HIPCC__
#define __HIPCC__ 1
#endif
#if defined(__CUDA_ARCH__) && !defined(__HIP_DEVICE_COMPILE__)
#define __HIP_DEVICE_COMPILE__ 1
#endif

/* nvcc includes cuda_runtime.h by itself; NVRTC has the built-ins without any header. */
#if defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#include <cuda_runtime.h>
#endif

/* --- thread and block indices (HIP's hipThreadIdx_x family) ----------------------------- */
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

/* --- dynamic shared memory -------------------------------------------------------------- */
#define HIP_DYNAMIC_SHARED_ATTRIBUTE
#define HIP_DYNAMIC_SHARED(type, var) extern __shared__ type var[];

/* --- names and attributes --------------------------------------------------------------- */
#define HIP_KERNEL_NAME(...) __VA_ARGS__
#define HIP_SYMBOL(x) x
#ifndef __forceinline__
#define __forceinline__ inline __attribute__((always_inline))
#endif

/* --- warp intrinsics: HIP's unmasked forms act on the whole (32-lane) warp -------------- */
#define PAPPUS_FULL_WARP 0xffffffffu
#define __shfl(var, ...) __shfl_sync(PAPPUS_FULL_WARP, var, __VA_ARGS__)
#define __shfl_up(var, ...) __shfl_up_sync(PAPPUS_FULL_WARP, var, __VA_ARGS__)
#define __shfl_down(var, ...) __shfl_down_sync(PAPPUS_FULL_WARP, var, __VA_ARGS__)
#define __shfl_xor(var, ...) __shfl_xor_sync(PAPPUS_FULL_WARP, var, __VA_ARGS__)
#define __ballot(pred) ((unsigned long long)__ballot_sync(PAPPUS_FULL_WARP, (pred)))
#define __any(pred) __any_sync(PAPPUS_FULL_WARP, (pred))
#define __all(pred) __all_sync(PAPPUS_FULL_WARP, (pred))

#if defined(__CUDACC__)
/* The lane of the calling thread in its warp (HIP: __lane_id()). */
static __device__ __forceinline__ unsigned int __lane_id(void) {
  unsigned int lane;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
  return lane;
}

/* HIP's unsafeAtomicAdd / safeAtomicAdd are plain atomicAdd on NVIDIA. */
template <typename T>
static __device__ __forceinline__ T unsafeAtomicAdd(T* address, T value) { return atomicAdd(address, value); }
template <typename T>
static __device__ __forceinline__ T safeAtomicAdd(T* address, T value) { return atomicAdd(address, value); }

/* __builtin_trap() in device code (clang/HIP accept it, nvcc calls it a host function): __trap().
   Host code keeps the compiler's builtin. Defined before the macro, so not expanded here. */
static __host__ __device__ __forceinline__ void pappus_trap(void) {
#if defined(__CUDA_ARCH__)
  __trap();
#else
  __builtin_trap();
#endif
}
#define __builtin_trap() pappus_trap()
#endif

/* --- host-side launch macro, for sources that carry a host test harness (nvcc only) ------ */
#if defined(__CUDACC__) && !defined(__CUDACC_RTC__)
#define hipLaunchKernelGGL(kernel, grid, block, shared, stream, ...) \
  kernel<<<(grid), (block), (shared), (stream)>>>(__VA_ARGS__)
#endif

#endif /* PAPPUS_CUDA_HIP_RUNTIME_H */
