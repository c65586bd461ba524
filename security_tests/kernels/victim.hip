// An honest tenant's library that carries data worth stealing in its read-only segment (model
// weights, keys): the marker below. Only its own kernel may ever read it.
#include <hip/hip_runtime.h>
#include <stdint.h>

__attribute__((used)) static const char secret[] = "PAPPUS-VICTIM-SECRET:4f1c9a77e2b35d08";

__global__ void victim(char* out) {
    for (int i = 0; i < 8; i++) out[i] = ((volatile const char*)secret)[i];
}
