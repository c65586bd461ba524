/* pappus_cuda: HIP's half-precision types are CUDA's (__half, half2, __float2half, ...). */
#include "hip_runtime.h"
#include <cuda_fp16.h>
