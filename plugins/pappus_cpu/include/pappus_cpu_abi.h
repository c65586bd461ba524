/* pappus CPU backend: the binary interface between a kernel library and the device template.
 *
 * Shared by the compatibility header (compiled into every kernel library) and the device
 * template (pappus_cpu_device.c). Plain C so both sides agree on the layout. Bump
 * PAPPUS_CPU_ABI whenever anything here changes: the manifest of every library records the
 * ABI it was built for and the static validator refuses a mismatch.
 */
#ifndef PAPPUS_CPU_ABI_H
#define PAPPUS_CPU_ABI_H

#include <stdint.h>

#define PAPPUS_CPU_ABI 1

/* One kernel launch as the child process hands it to a library entry point. */
typedef struct pappus_launch {
    uint32_t abi;            /* PAPPUS_CPU_ABI */
    uint32_t grid[3];        /* blocks per dimension */
    uint32_t block[3];       /* threads per block per dimension */
    uint32_t stack_count;    /* fiber stack slots available */
    uint64_t shared_bytes;   /* dynamic shared memory of this launch */
    void *dyn_shared;        /* shared_bytes of it, ending right below a guard page */
    char *stacks;            /* fiber stack slots: slot i is [stacks + i*stride, +stride) */
    uint64_t stack_stride;   /* bytes per slot; the lowest page of a slot may be a guard */
    char *heap_base;         /* device malloc arena (heap limit bytes; NULL when 0) */
    uint64_t heap_size;
    uint64_t *heap_used;     /* bytes of the arena handed out in this invocation */
} pappus_launch;

/* Every kernel ``k`` is exported as ``__pappus_entry_k`` with this type. */
typedef void (*pappus_entry_fn)(const pappus_launch *launch, void *const *args);

#define PAPPUS_ENTRY_PREFIX "__pappus_entry_"

/* Manifest records live in the ELF section ".pappus_manifest", back to back, each a multiple
 * of 8 bytes:
 *   u32 magic (PAPPUS_MANIFEST_MAGIC), u16 abi, u16 type, u32 record bytes, u32 nparams,
 *   u32 name length (without NUL), u32 reserved,
 *   (nparams + 1) x { u32 size, u32 kind }   -- the last pair is padding,
 *   name, NUL-terminated, padded with NULs to a multiple of 8.
 * type 1 describes a kernel. A library that calls device malloc also carries a type 2 record
 * in its own section, ".pappus_uses_heap" (emitted only where the allocator is used).
 */
#define PAPPUS_MANIFEST_SECTION ".pappus_manifest"
#define PAPPUS_HEAP_SECTION ".pappus_uses_heap"
#define PAPPUS_MANIFEST_MAGIC 0x4b4d5050u /* "PPMK" */
#define PAPPUS_RECORD_KERNEL 1
#define PAPPUS_RECORD_HEAP 2

#define PAPPUS_KIND_POINTER 1
#define PAPPUS_KIND_INT 2
#define PAPPUS_KIND_UINT 3
#define PAPPUS_KIND_FLOAT 4
#define PAPPUS_KIND_BYTES 5

#endif /* PAPPUS_CPU_ABI_H */
