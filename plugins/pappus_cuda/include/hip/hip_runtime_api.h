/* pappus_cuda: HIP's runtime-API header maps to the device-side shim (kernels need nothing more). */
#include "hip_runtime.h"
