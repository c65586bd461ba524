// Host-escape attempts for backends whose kernels run on the host (capability "sandbox").
// Each kernel tries one forbidden thing; the sandbox must stop it and say what it was.
#include <hip/hip_runtime.h>
#include <stdint.h>
#if defined(__HIP_PLATFORM_PAPPUS_CPU__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

extern "C" __global__ void try_open(uint8_t* out) {
    long fd = syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY);
    out[0] = fd >= 0 ? 1 : 2;
}

extern "C" __global__ void try_socket(uint8_t* out) {
    long fd = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    out[0] = fd >= 0 ? 1 : 2;
}

extern "C" __global__ void try_fork(uint8_t* out) {
    long pid = syscall(SYS_clone, 17 /* SIGCHLD */, 0, 0, 0, 0);
    out[0] = pid >= 0 ? 1 : 2;
}

extern "C" __global__ void try_exec(uint8_t* out) {
    const char* argv[] = {"/bin/true", 0};
    long rc = syscall(SYS_execve, "/bin/true", argv, 0);
    out[0] = rc >= 0 ? 1 : 2;
}

extern "C" __global__ void try_mprotect_exec(uint8_t* out) {
    long rc = syscall(SYS_mprotect, (uintptr_t)out & ~(uintptr_t)4095, 4096, PROT_READ | PROT_WRITE | PROT_EXEC);
    out[0] = rc == 0 ? 1 : 2;
}

// A tenant's library data: another tenant's kernels must not reach it (they learn its address
// from this tenant's output and read there with read_address, in the suite's library).
__device__ const uint64_t library_secret[2] = {0x5EC2E7A55EC2E7A5ull, 0xA55EC2E75EC2E7A5ull};

extern "C" __global__ void where_is_secret(uint64_t* out) {
    out[0] = (uint64_t)(uintptr_t)&library_secret[0];
    out[1] = ((volatile const uint64_t*)library_secret)[0];
}
#endif
