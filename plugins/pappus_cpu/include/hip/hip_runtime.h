/* pappus CPU backend: <hip/hip_runtime.h> for kernels compiled for the host CPU. */
#include "../pappus_hip_cpu.h"
