// A library whose constructor would create a file (and could do anything else) the moment any
// process loads it. It must be refused at registration; its code must never run anywhere.
#include <hip/hip_runtime.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void pwn() {
    const char* path = getenv("PAPPUS_CTOR_MARKER");
    int fd = open(path ? path : "/tmp/pappus-ctor-ran", O_CREAT | O_WRONLY, 0644);
    if (fd >= 0) close(fd);
}

__global__ void k(int* out) { out[0] = 1; }
