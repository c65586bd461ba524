/* pappus-cpu-device: the device template of the pappus CPU backend.
 *
 * One template serves one CpuDevice (pappus_cpu/device.py) over a SOCK_SEQPACKET socket. It
 * never runs tenant code itself: it maps the pool (a memfd shared with the supervisor) between
 * guard pages, loads kernel libraries that the static validator accepted (from sealed memfds),
 * and keeps forked children waiting: one for the next invocation and one for the invocation
 * after it, so forking is never on the path of a request. For invocation `seq` the supervisor
 * writes a command block into command region `seq & 1` (one per parity, so that a child still
 * exiting never sees the next invocation's command), sets `go = seq` there and writes the byte
 * `seq & 0xff` to go pipe `seq & 1`. The child forked for `seq` has already installed its
 * seccomp allow-list while it waited; once it has read its byte it takes away what the tenant
 * must not touch (and hides it from the loader's list), runs the whole launch program, writes
 * `seq & 0xff` to done pipe `seq & 1` and exits. The supervisor may hand the outputs over as
 * soon as that byte arrives, but it touches the child's window of the pool again (zeroing, new
 * inputs) only once the template has reaped the child and reported its status: the byte only
 * saves waiting for the process teardown, and a kernel that forges it gains nothing but wrong
 * outputs of its own. The next invocation may start meanwhile when its window of the pool is
 * disjoint from this one's (the child fences itself to its window, below and above). The
 * template forks the child for the invocation after the next once this one is reaped.
 *
 * A child is forked per invocation, so library globals, statics, fiber stacks, dynamic shared
 * memory and the device-malloc arena start from their load-time (zero) images every time.
 *
 * Sandbox layers, from the outside in:
 *   template: no_new_privs, non-dumpable, no core files, Landlock read-only access to the system
 *             library directories (where the kernel has Landlock), a seccomp deny-list that ends
 *             the process on exec, sockets, ptrace, namespaces, mounts, bpf, io_uring, ...
 *   child:    all of the above plus an allow-list: exit, exit_group, rt_sigreturn, read() on its
 *             own wake pipe, write() on its own done pipe and mprotect() to PROT_NONE; any
 *             other system call raises SIGSYS, whose handler records the call and exits.
 *
 * Single-threaded; compiled by pappus_cpu/native.py with the system C compiler.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "pappus_cpu_abi.h"

/* --- protocol (keep in step with pappus_cpu/protocol.py) ----------------------------------- */

enum {
    OP_HELLO = 1,
    OP_POOL = 2,
    OP_CMD = 3,
    OP_HEAP = 4,
    OP_LOAD = 5,
    OP_SYM = 6,
    OP_UNLOAD = 7,
    OP_ABORT = 8,
    OP_QUIT = 9,
    OP_DONE = 10,
    OP_PING = 11,
};

struct msg {
    uint32_t op;
    int32_t err; /* replies: 0 or an errno-like code; the payload then says why */
    uint64_t a, b, c, d;
};

#define MSG_MAX 4096
#define CMD_MAGIC 0x444d4350u /* "PCMD" */
#define EXTENT_UNKNOWN UINT64_MAX
#define MAX_MODULES 1024
#define KEEP_WORDS (MAX_MODULES / 32)

/* The command region (a memfd from the supervisor) starts with this header; prog_off counts
 * from the region's start. The supervisor sets `go` to 0, writes every other field, sets `go`
 * to the invocation's number and then writes the wake-up byte; a child trusts `go` only once
 * it has read that byte. */
struct cmd_header {
    uint32_t go;       /* invocation sequence number (0: being written); see seq_after() */
    uint32_t magic;
    uint64_t prog_off; /* the launch program, from the start of the command region */
    uint64_t prog_len;
    uint64_t extent;   /* end of the pool window the invocation may touch; EXTENT_UNKNOWN: all */
    uint64_t start;    /* its start (offsets from the pool base) */
    uint32_t nkeep;    /* bits set in keep */
    uint32_t reserved;
    uint32_t keep[KEEP_WORDS]; /* one bit per module slot: the modules the program uses; the
                                  child hides every other module (there is no "hide nothing") */
};

enum { NODE_LAUNCH = 1, NODE_LOOP = 2 };

struct node_launch {
    uint32_t tag, size;
    uint64_t entry;
    uint32_t grid[3], block[3];
    uint64_t shared;
    uint32_t launch_id, nargs;
    /* nargs x { u32 offset from the node, u32 size }, then the argument bytes */
};

struct node_loop {
    uint32_t tag, size;
    uint64_t times;
    uint64_t body_len;
};

enum { ST_IDLE = 0, ST_RUNNING = 1, ST_DONE = 2, ST_FAULT = 3, ST_BAD_COMMAND = 4 };

struct child_status {
    uint32_t state;
    int32_t sig;
    int32_t code;
    int32_t syscall_nr;
    uint32_t arch;
    uint32_t launch_id;
    uint32_t trap; /* 1: the faulting instruction is a trap instruction (ud2 / brk) */
    uint32_t seq;  /* the invocation this status belongs to */
    uint64_t addr;
    uint64_t pc;
};

#define EXIT_FAULT 3
#define EXIT_BAD_COMMAND 4
#define EXIT_BROKEN 5 /* the template: children keep dying before they run */
#define MAX_ARGS 256
#define MAX_DEPTH 64
#define SHARED_MAX (64 * 1024)
#define POOL_GUARD ((size_t)1 << 30) /* no-access address space on each side of the pool */
#define ALTSTACK_SIZE (64 * 1024)

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef SECCOMP_FILTER_FLAG_SPEC_ALLOW
#define SECCOMP_FILTER_FLAG_SPEC_ALLOW (1UL << 2)
#endif
#ifndef SECCOMP_RET_KILL_PROCESS
#define SECCOMP_RET_KILL_PROCESS 0x80000000U
#endif

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "pappus-cpu-device supports x86-64 and aarch64"
#endif

/* --- state ---------------------------------------------------------------------------------- */

struct module {
    void *handle;
    int fd;
    uintptr_t start, end; /* the library's mapped span */
    struct link_map *lm;  /* its entry in the loader's list of loaded objects */
};

static int sock = -1, sigfd = -1, go_rd[2] = {-1, -1}, done_wr[2] = {-1, -1};
static pid_t self_pid;
static long page;

static char *pool_region;
static size_t pool_region_len;
static char *pool;
static size_t pool_size;

static char *cmd_region[2]; /* the command region of each parity (template) */
static size_t cmd_region_size[2];
static char *cmd;            /* in a child: its own command region (the one of its parity) */
static size_t cmd_size;

static struct child_status *status_pages; /* one page per child slot, shared with the children */
static struct cmd_header *cmd_hdr;        /* in a child: the start of its command region */
static struct child_status *status;       /* in a child: its own page */

static char *stacks;
static size_t stack_stride, stacks_len;
static uint32_t stack_count;
static uint32_t stack_guarded; /* stacks with a guard page below them */

static char *altstack;
static char *dyn_region, *dyn_end;
static char *heap_region, *heap;
static size_t heap_size, heap_region_len;

static struct module modules[MAX_MODULES];
static struct link_map *startup_tail;

/* Child slot i serves the invocations whose sequence number has parity i. */
struct child_slot {
    pid_t pid;
    uint32_t seq; /* the `go` value it runs at */
    int aborted;
};
static struct child_slot slots[2];
static uint32_t completed_seq; /* the latest invocation reported */
static unsigned early_deaths;   /* children in a row that died before their invocation */
static unsigned long forks, runs;

static int landlock_abi;
static int landlock_active;
static char landlock_note[256] = "not attempted";
static int seccomp_mode; /* 1: filters with SPEC_ALLOW, 2: plain filters */

/* --- small helpers -------------------------------------------------------------------------- */

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

static int send_msg(const struct msg *m, const void *payload, size_t len, const int *fds, int nfds) {
    struct iovec iov[2] = {{(void *)m, sizeof *m}, {(void *)payload, len}};
    struct msghdr h = {0};
    char cbuf[CMSG_SPACE(4 * sizeof(int))];
    if (nfds > 4) return -1;
    h.msg_iov = iov;
    h.msg_iovlen = len ? 2 : 1;
    if (nfds > 0) {
        memset(cbuf, 0, sizeof cbuf);
        h.msg_control = cbuf;
        h.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    for (;;) {
        ssize_t r = sendmsg(sock, &h, MSG_NOSIGNAL);
        if (r >= 0) return 0;
        if (errno != EINTR) return -1;
    }
}

static void reply(uint32_t op, int err, uint64_t a, uint64_t b, const char *text) {
    struct msg m = {op, err, a, b, 0, 0};
    if (send_msg(&m, text, text ? strlen(text) : 0, NULL, 0) < 0) _exit(0); /* supervisor gone */
}

static void reply_errno(uint32_t op, int err, const char *what) {
    char text[512];
    snprintf(text, sizeof text, "%s: %s", what, strerror(err));
    reply(op, err ? err : EINVAL, 0, 0, text);
}

/* --- seccomp ---------------------------------------------------------------------------------- */

#define INSN(c, k, t, f) ((struct sock_filter){(unsigned short)(c), (unsigned char)(t), (unsigned char)(f), (uint32_t)(k)})
#define LD_NR INSN(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), 0, 0)
#define LD_ARCH INSN(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), 0, 0)
#define LD_ARG0_LO INSN(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]), 0, 0)
#define RET(v) INSN(BPF_RET | BPF_K, (v), 0, 0)
#define JEQ(v, t, f) INSN(BPF_JMP | BPF_JEQ | BPF_K, (v), (t), (f))
#define JGE(v, t, f) INSN(BPF_JMP | BPF_JGE | BPF_K, (v), (t), (f))
#define JSET(v, t, f) INSN(BPF_JMP | BPF_JSET | BPF_K, (v), (t), (f))

/* System calls the template and its children never need and that widen the attack surface. */
static const int denied[] = {
    SYS_execve, SYS_execveat, SYS_socket, SYS_socketpair, SYS_connect, SYS_bind, SYS_listen,
    SYS_accept, SYS_accept4, SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp,
    SYS_mount, SYS_umount2, SYS_pivot_root, SYS_chroot, SYS_unshare, SYS_setns, SYS_bpf,
    SYS_perf_event_open, SYS_userfaultfd, SYS_keyctl, SYS_add_key, SYS_request_key,
    SYS_open_by_handle_at, SYS_name_to_handle_at, SYS_kexec_load, SYS_init_module,
    SYS_finit_module, SYS_delete_module, SYS_reboot, SYS_swapon, SYS_swapoff, SYS_acct,
    SYS_quotactl, SYS_fanotify_init, SYS_personality, SYS_vhangup, SYS_syslog, SYS_settimeofday,
    SYS_clock_settime, SYS_adjtimex, SYS_sethostname, SYS_setdomainname, SYS_mbind,
    SYS_migrate_pages, SYS_move_pages, SYS_setuid, SYS_setgid, SYS_setreuid, SYS_setregid,
    SYS_setresuid, SYS_setresgid, SYS_setgroups, SYS_setfsuid, SYS_setfsgid,
#ifdef SYS_kexec_file_load
    SYS_kexec_file_load,
#endif
#ifdef SYS_pidfd_getfd
    SYS_pidfd_getfd,
#endif
#ifdef SYS_io_uring_setup
    SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register,
#endif
#ifdef SYS_fsopen
    SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_move_mount, SYS_open_tree,
#endif
#ifdef SYS_mount_setattr
    SYS_mount_setattr,
#endif
#ifdef SYS_iopl
    SYS_iopl, SYS_ioperm,
#endif
#ifdef SYS_uselib
    SYS_uselib,
#endif
#ifdef SYS_lookup_dcookie
    SYS_lookup_dcookie,
#endif
};

#define NS_FLAGS (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP)

static struct sock_filter deny_prog[256];
static unsigned short deny_len;
static struct sock_filter child_prog[24];
static unsigned short child_len;

static void build_deny_filter(uint32_t deny_action) {
    unsigned n = 0;
    struct sock_filter *f = deny_prog;
    f[n++] = LD_ARCH;
    f[n++] = JEQ(NATIVE_ARCH, 1, 0);
    f[n++] = RET(deny_action);
    f[n++] = LD_NR;
#if defined(__x86_64__)
    f[n++] = JGE(0x40000000u, 0, 1); /* x32 system calls */
    f[n++] = RET(deny_action);
#endif
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) {
        f[n++] = JEQ((uint32_t)denied[i], 0, 1);
        f[n++] = RET(deny_action);
    }
#ifdef SYS_clone3
    f[n++] = JEQ(SYS_clone3, 0, 1); /* glibc falls back to clone, whose flags we can check */
    f[n++] = RET(SECCOMP_RET_ERRNO | ENOSYS);
#endif
    f[n++] = JEQ(SYS_clone, 0, 4);
    f[n++] = LD_ARG0_LO;
    f[n++] = JSET(NS_FLAGS, 0, 1);
    f[n++] = RET(deny_action);
    f[n++] = RET(SECCOMP_RET_ALLOW);
    f[n++] = RET(SECCOMP_RET_ALLOW);
    deny_len = (unsigned short)n;

}

#define LD_ARG(i, hi) INSN(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[i]) + ((hi) ? 4 : 0), 0, 0)

/* The child's allow-list, installed before it waits for its invocation: exit, exit_group and
 * rt_sigreturn; read() on its own wake pipe (to wait); write() on its own done pipe (to say it
 * finished); mprotect() to PROT_NONE (to take away the pool past the invocation's buffers and
 * the modules it does not use). The done pipe reaches only the supervisor, which trusts it for
 * nothing but this child's own outputs; mprotect can only take something away from the child
 * itself. Everything else raises SIGSYS. */
static void build_child_filter(int wake_fd, int done_fd) {
    struct sock_filter *f = child_prog;
    unsigned n = 0;
    f[n++] = LD_ARCH;                           /* 0 */
    f[n++] = JEQ(NATIVE_ARCH, 1, 0);            /* 1 */
    f[n++] = RET(SECCOMP_RET_TRAP);             /* 2: a foreign system call ABI */
    f[n++] = LD_NR;                             /* 3 */
    f[n++] = JEQ(SYS_exit_group, 18, 0);        /* 4 -> 23 */
    f[n++] = JEQ(SYS_exit, 17, 0);              /* 5 -> 23 */
    f[n++] = JEQ(SYS_rt_sigreturn, 16, 0);      /* 6 -> 23 */
    f[n++] = JEQ(SYS_read, 0, 4);               /* 7 -> 8 | 12 */
    f[n++] = LD_ARG(0, 0);                      /* 8 */
    f[n++] = JEQ((uint32_t)wake_fd, 0, 12);     /* 9 -> 10 | 22 */
    f[n++] = LD_ARG(0, 1);                      /* 10 */
    f[n++] = JEQ(0, 11, 10);                    /* 11 -> 23 | 22 */
    f[n++] = JEQ(SYS_write, 0, 4);              /* 12 -> 13 | 17 */
    f[n++] = LD_ARG(0, 0);                      /* 13 */
    f[n++] = JEQ((uint32_t)done_fd, 0, 7);      /* 14 -> 15 | 22 */
    f[n++] = LD_ARG(0, 1);                      /* 15 */
    f[n++] = JEQ(0, 6, 5);                      /* 16 -> 23 | 22 */
    f[n++] = JEQ(SYS_mprotect, 0, 4);           /* 17 -> 18 | 22 */
    f[n++] = LD_ARG(2, 0);                      /* 18 */
    f[n++] = JEQ(PROT_NONE, 0, 2);              /* 19 -> 20 | 22 */
    f[n++] = LD_ARG(2, 1);                      /* 20 */
    f[n++] = JEQ(0, 1, 0);                      /* 21 -> 23 | 22 */
    f[n++] = RET(SECCOMP_RET_TRAP);             /* 22 */
    f[n++] = RET(SECCOMP_RET_ALLOW);            /* 23 */
    child_len = (unsigned short)n;
}

static int load_filter(struct sock_filter *prog, unsigned short len) {
    struct sock_fprog fp = {len, prog};
    if (seccomp_mode == 1) return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW, &fp);
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp, 0, 0);
}

/* Both filters trap rather than kill: in the template SIGSYS has its default action, which ends
 * the process just like a kill; in a child the handler records which call it was, so the
 * supervisor can name it. A trapped call is never executed either way. */
static int install_template_filter(void) {
    build_deny_filter(SECCOMP_RET_TRAP);
    seccomp_mode = 1;
    if (load_filter(deny_prog, deny_len) == 0) return 0;
    seccomp_mode = 2; /* kernels before 4.17: no SECCOMP_FILTER_FLAG_SPEC_ALLOW */
    return load_filter(deny_prog, deny_len);
}

/* --- Landlock ------------------------------------------------------------------------------- */

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

struct ll_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};

struct ll_path_beneath {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

#define LL_READ_FILE (1ULL << 2)
#define LL_READ_DIR (1ULL << 3)

static void apply_landlock(char **extra_dirs, int nextra) {
    landlock_abi = (int)syscall(SYS_landlock_create_ruleset, NULL, 0, 1U /* VERSION */);
    if (landlock_abi < 0) {
        snprintf(landlock_note, sizeof landlock_note, "unavailable: %s", strerror(errno));
        landlock_abi = 0;
        return;
    }
    struct ll_ruleset_attr attr = {0, 0, 0};
    size_t attr_size = 8;
    attr.handled_access_fs = (1ULL << 13) - 1;           /* ABI 1: execute .. make_sym */
    if (landlock_abi >= 2) attr.handled_access_fs |= 1ULL << 13; /* refer */
    if (landlock_abi >= 3) attr.handled_access_fs |= 1ULL << 14; /* truncate */
    if (landlock_abi >= 5) attr.handled_access_fs |= 1ULL << 15; /* ioctl_dev */
    if (landlock_abi >= 4) {
        attr.handled_access_net = 3; /* bind_tcp, connect_tcp */
        attr_size = 16;
    }
    if (landlock_abi >= 6) {
        attr.scoped = 3; /* abstract unix sockets, signals */
        attr_size = 24;
    }
    int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0U);
    if (rs < 0) {
        snprintf(landlock_note, sizeof landlock_note, "ruleset failed: %s", strerror(errno));
        return;
    }
    static const char *const lib_dirs[] = {"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache"};
    char allowed[200] = "";
    for (size_t i = 0; i < sizeof lib_dirs / sizeof lib_dirs[0] + (size_t)nextra; i++) {
        const char *path = i < sizeof lib_dirs / sizeof lib_dirs[0] ? lib_dirs[i] : extra_dirs[i - sizeof lib_dirs / sizeof lib_dirs[0]];
        int fd = open(path, O_PATH | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat st;
        int is_dir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
        struct ll_path_beneath pb = {LL_READ_FILE | (is_dir ? LL_READ_DIR : 0), fd};
        if (syscall(SYS_landlock_add_rule, rs, 1 /* PATH_BENEATH */, &pb, 0) == 0 && strlen(allowed) + strlen(path) + 2 < sizeof allowed) {
            if (allowed[0]) strcat(allowed, ",");
            strcat(allowed, path);
        }
        close(fd);
    }
    if (syscall(SYS_landlock_restrict_self, rs, 0U) != 0) {
        snprintf(landlock_note, sizeof landlock_note, "restrict_self failed: %s", strerror(errno));
        close(rs);
        return;
    }
    close(rs);
    landlock_active = 1;
    snprintf(landlock_note, sizeof landlock_note, "read-only: %s%s", allowed,
             landlock_abi >= 4 ? "; no TCP" : "");
}

/* --- memory regions --------------------------------------------------------------------------- */

static void *map_anon(size_t len, int prot) {
    void *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static int setup_regions(size_t stack_bytes, uint32_t count, uint32_t guarded) {
    status_pages = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (status_pages == MAP_FAILED) return -1;

    stack_stride = round_up(stack_bytes, (size_t)page);
    stack_count = count;
    stacks_len = stack_stride * count;
    stacks = map_anon(stacks_len, PROT_READ | PROT_WRITE);
    if (!stacks) return -1;
    /* A guard page below the first `guarded` fiber stacks. Guard markers cost no VMA (a VMA per
     * guard would make every fork and exit walk a thousand of them), but they do cost page
     * tables that every fork copies and every exit frees, so only the stacks that blocks of
     * moderate size use are guarded; without guard markers only the first stack is. A stack
     * that overflows an unguarded neighbour corrupts only its own invocation's memory. */
    if (guarded > count) guarded = count;
    stack_guarded = 0;
    for (uint32_t i = 0; i < guarded; i++) {
        if (madvise(stacks + (size_t)i * stack_stride, (size_t)page, MADV_GUARD_INSTALL) != 0) break;
        stack_guarded = i + 1;
    }
    if (stack_guarded == 0) {
        if (mprotect(stacks, (size_t)page, PROT_NONE) != 0) return -1;
        stack_guarded = 1;
    }

    altstack = map_anon(ALTSTACK_SIZE, PROT_READ | PROT_WRITE);
    if (!altstack) return -1;

    dyn_region = map_anon(SHARED_MAX + (size_t)page, PROT_READ | PROT_WRITE);
    if (!dyn_region) return -1;
    dyn_end = dyn_region + SHARED_MAX;
    if (mprotect(dyn_end, (size_t)page, PROT_NONE) != 0) return -1;
    return 0;
}

static int set_heap(size_t n) {
    if (heap_region) munmap(heap_region, heap_region_len);
    heap_region = heap = NULL;
    heap_size = heap_region_len = 0;
    if (n == 0) return 0;
    size_t len = round_up(n, (size_t)page) + (size_t)page;
    heap_region = map_anon(len, PROT_READ | PROT_WRITE);
    if (!heap_region) return -1;
    heap_region_len = len;
    heap = heap_region;
    heap_size = n;
    return mprotect(heap_region + len - page, (size_t)page, PROT_NONE);
}

/* --- the child ------------------------------------------------------------------------------ */

static void on_fault(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    status->sig = sig;
    status->code = si->si_code;
    status->addr = (uint64_t)(uintptr_t)si->si_addr;
#if defined(__x86_64__)
    status->pc = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
    if (sig == SIGILL && status->pc) {
        const unsigned char *ip = (const unsigned char *)(uintptr_t)status->pc;
        status->trap = ip[0] == 0x0f && ip[1] == 0x0b; /* ud2: __builtin_trap() */
    }
#elif defined(__aarch64__)
    status->pc = (uint64_t)uc->uc_mcontext.pc;
    if (sig == SIGTRAP || sig == SIGILL) {
        uint32_t insn = *(const uint32_t *)(uintptr_t)status->pc;
        status->trap = (insn & 0xffe0001fu) == 0xd4200000u; /* brk */
    }
#endif
    if (sig == SIGSYS) {
        status->syscall_nr = si->si_syscall;
        status->arch = si->si_arch;
    }
    status->state = ST_FAULT;
    syscall(SYS_exit_group, EXIT_FAULT);
    for (;;) syscall(SYS_exit, EXIT_FAULT);
}

static uint64_t heap_used;
static uint32_t depth;

static void bad_command(void) {
    status->state = ST_BAD_COMMAND;
    syscall(SYS_exit_group, EXIT_BAD_COMMAND);
}

static void run_nodes(const char *p, const char *end) {
    if (++depth > MAX_DEPTH) bad_command();
    while (p < end) {
        if ((size_t)(end - p) < 8) bad_command();
        const uint32_t *tag = (const uint32_t *)p;
        if (tag[0] == NODE_LAUNCH) {
            const struct node_launch *n = (const struct node_launch *)p;
            if (n->size < sizeof *n || n->size > (size_t)(end - p) || n->nargs > MAX_ARGS ||
                n->shared > SHARED_MAX || sizeof *n + (size_t)n->nargs * 8 > n->size)
                bad_command();
            const uint32_t *table = (const uint32_t *)(n + 1);
            void *args[MAX_ARGS];
            for (uint32_t i = 0; i < n->nargs; i++) {
                uint32_t off = table[2 * i], size = table[2 * i + 1];
                if (off > n->size || size > n->size - off) bad_command();
                args[i] = (void *)(p + off);
            }
            pappus_launch L = {
                .abi = PAPPUS_CPU_ABI,
                .grid = {n->grid[0], n->grid[1], n->grid[2]},
                .block = {n->block[0], n->block[1], n->block[2]},
                .stack_count = stack_count,
                .shared_bytes = n->shared,
                .dyn_shared = dyn_end - round_up(n->shared, 16),
                .stacks = stacks,
                .stack_stride = stack_stride,
                .heap_base = heap,
                .heap_size = heap_size,
                .heap_used = &heap_used,
            };
            status->launch_id = n->launch_id;
            ((pappus_entry_fn)(uintptr_t)n->entry)(&L, args);
            p += n->size;
        } else if (tag[0] == NODE_LOOP) {
            const struct node_loop *n = (const struct node_loop *)p;
            if ((size_t)(end - p) < sizeof *n || n->body_len > (size_t)(end - p) - sizeof *n) bad_command();
            const char *body = p + sizeof *n;
            for (uint64_t i = 0; i < n->times; i++) run_nodes(body, body + n->body_len);
            p = body + n->body_len;
        } else {
            bad_command();
        }
    }
    depth--;
}

static int module_kept(const struct cmd_header *h, uint32_t id) {
    return (h->keep[id / 32] >> (id % 32)) & 1;
}

static uint32_t kept_count(const struct cmd_header *h) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < KEEP_WORDS; i++) n += (uint32_t)__builtin_popcount(h->keep[i]);
    return n;
}

/* In the child, before tenant code runs: module i becomes inaccessible, and the template's own
 * record of it (address range, handle) is wiped from the child's copy. */
static void hide_module(uint32_t i) {
    struct module *m = &modules[i];
    if (m->end > m->start && mprotect((void *)m->start, m->end - m->start, PROT_NONE) != 0) bad_command();
    memset(m, 0, sizeof *m);
    m->fd = -1;
}

/* The loader's list of loaded objects (what dl_iterate_phdr, dladdr and _r_debug walk) lives in
 * the template's memory, which the child reads. Before tenant code runs, the child relinks its
 * private copy of the list: the objects the template started with, then the modules the program
 * uses, and nothing else: no other module, and no library that only some module pulled in (a
 * dependency appearing or disappearing would tell that another module exists). The hidden
 * objects stay loaded and mapped (PROT_NONE for modules); nothing in the child loads, unloads or
 * looks up an object by walking the list afterwards. Pointers are written only where they change:
 * each write copies a page of the template's memory. With `dry`, nothing changes: the pages that
 * these writes would copy are copied now (written back as they are), off the request path,
 * guessing from the previous invocation's header (most often the same function runs again). */
static void store_link(struct link_map **at, struct link_map *value, int dry) {
    *(struct link_map *volatile *)at = dry ? *at : value;
}

static void relink_loader_list(const struct cmd_header *h, int dry) {
    if (h->nkeep >= MAX_MODULES) return; /* every slot kept: hiding is off */
    struct link_map *prev = startup_tail;
    for (uint32_t i = 0; i < MAX_MODULES; i++) {
        struct link_map *lm = modules[i].lm;
        if (!modules[i].handle || !lm || !module_kept(h, i)) continue;
        if (prev->l_next != lm) store_link(&prev->l_next, lm, dry);
        if (lm->l_prev != prev) store_link(&lm->l_prev, prev, dry);
        prev = lm;
    }
    if (prev->l_next) store_link(&prev->l_next, NULL, dry);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static void child_main(pid_t template_pid, uint32_t seq, uint64_t hint_start, uint64_t hint_end) {
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != template_pid) _exit(0);
    close(sock);
    close(sigfd);
    int wake = go_rd[seq & 1], done = done_wr[seq & 1];
    close(go_rd[(seq & 1) ^ 1]);
    close(done_wr[(seq & 1) ^ 1]);
    /* The other parity's command region belongs to the invocations around ours: gone. */
    cmd = cmd_region[seq & 1];
    cmd_size = cmd_region_size[seq & 1];
    cmd_hdr = (struct cmd_header *)cmd;
    if (munmap(cmd_region[(seq & 1) ^ 1], cmd_region_size[(seq & 1) ^ 1]) != 0) bad_command();
    cmd_region[0] = cmd_region[1] = NULL;
    status = (struct child_status *)((char *)status_pages + (size_t)(seq & 1) * (size_t)page);
    char *other_status = (char *)status_pages + (size_t)((seq & 1) ^ 1) * (size_t)page;
    for (int i = 0; i < MAX_MODULES; i++)
        if (modules[i].fd >= 0) {
            close(modules[i].fd);
            modules[i].fd = -1;
        }

    stack_t ss = {.ss_sp = altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigfillset(&sa.sa_mask);
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE, SIGSYS, SIGABRT, SIGXCPU, SIGXFSZ};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* Work done here is off the request path: the command region becomes read-only, the pages
     * the previous invocation used (likely the same function again) and the first fiber stack
     * are faulted in, and the allow-list goes on. */
    if (mprotect(cmd, cmd_size, PROT_READ) != 0 || mprotect(other_status, (size_t)page, PROT_READ) != 0)
        bad_command();
    if (hint_end && hint_end != EXTENT_UNKNOWN && hint_start < hint_end && hint_end <= pool_size) {
        size_t lo = hint_start / (size_t)page * (size_t)page;
        madvise(pool + lo, round_up(hint_end, (size_t)page) - lo, MADV_POPULATE_WRITE);
    }
    madvise(stacks + stack_stride - 4 * (size_t)page, 4 * (size_t)page, MADV_POPULATE_WRITE);
    relink_loader_list(cmd_hdr, 1);
    build_child_filter(wake, done);
    if (load_filter(child_prog, child_len) != 0) bad_command();

    volatile struct cmd_header *h = cmd_hdr;
    for (;;) { /* wait for our invocation: our byte (seq's low byte) on our go pipe, then `go` */
        unsigned char b;
        ssize_t r = read(wake, &b, 1);
        if (r == 0 || (r < 0 && errno != EINTR)) syscall(SYS_exit_group, 0); /* the supervisor is gone */
        /* Another byte was left by an earlier invocation whose child died before reading it.
         * Ours is written after the whole header, and the pipe orders the two. */
        if (r == 1 && b == (unsigned char)seq && __atomic_load_n(&h->go, __ATOMIC_ACQUIRE) == seq) break;
    }
    status->seq = seq;
    status->state = ST_RUNNING;
    const struct cmd_header *hdr = cmd_hdr;
    if (hdr->magic != CMD_MAGIC || hdr->prog_off < sizeof *hdr || hdr->prog_off > cmd_size ||
        hdr->prog_len > cmd_size - hdr->prog_off || hdr->nkeep != kept_count(hdr))
        bad_command();

    /* Out of the tenant's reach: the pool outside the invocation's window (the pages its
     * buffers are in), and every module the program does not use. */
    uint64_t extent = hdr->extent; /* 0 is a real extent: nothing of the pool is the tenant's */
    if (extent != EXTENT_UNKNOWN) {
        if (hdr->start > extent) bad_command();
        size_t below = hdr->start < pool_size ? hdr->start / (size_t)page * (size_t)page : pool_size;
        size_t above = extent < pool_size ? round_up(extent, (size_t)page) : pool_size;
        if (below && mprotect(pool, below, PROT_NONE) != 0) bad_command();
        if (above < pool_size && mprotect(pool + above, pool_size - above, PROT_NONE) != 0) bad_command();
    }
    if (hdr->nkeep < MAX_MODULES) { /* every slot kept: CpuDevice(hide_other_modules=False) */
        for (uint32_t i = 0; i < MAX_MODULES; i++)
            if (modules[i].handle && !module_kept(hdr, i)) hide_module(i);
        relink_loader_list(hdr, 0);
    }

    run_nodes(cmd + hdr->prog_off, cmd + hdr->prog_off + hdr->prog_len);
    status->state = ST_DONE;
    unsigned char done_byte = (unsigned char)seq;
    syscall(SYS_write, done, &done_byte, 1); /* the outputs are complete; the teardown is not */
    syscall(SYS_exit_group, 0);
}

/* Invocations are numbered 1, 2, ..., SEQ_CYCLE, 1, ... (pappus_cpu/protocol.py next_seq):
 * never 0, and parities alternate across the wrap. */
#define SEQ_CYCLE 0xfffffffeu
static uint32_t seq_after(uint32_t seq, uint32_t k) { return (uint32_t)(((uint64_t)seq + k - 1) % SEQ_CYCLE) + 1; }

/* The last invocation of parity `p` that the supervisor started (0: none, or being written). */
static uint32_t current_go(uint32_t p) {
    return __atomic_load_n(&((volatile struct cmd_header *)cmd_region[p])->go, __ATOMIC_ACQUIRE);
}

static void fork_child(uint32_t seq) {
    struct child_slot *c = &slots[seq & 1];
    memset((char *)status_pages + (size_t)(seq & 1) * (size_t)page, 0, sizeof(struct child_status));
    /* The window the last invocation of this parity used: most often the same function again. */
    volatile struct cmd_header *last = (volatile struct cmd_header *)cmd_region[seq & 1];
    uint64_t hint_start = last->start, hint_end = last->extent;
    pid_t pid = fork();
    if (pid == 0) {
        child_main(self_pid, seq, hint_start, hint_end);
        _exit(0);
    }
    if (pid > 0) {
        c->pid = pid;
        c->seq = seq;
        c->aborted = 0;
        forks++;
    }
}

/* Children for the next two invocations, forked while nothing waits on them. */
static void ensure_children(void) {
    if (!pool || !cmd_region[0] || !cmd_region[1]) return;
    for (uint32_t k = 1; k <= 2; k++) {
        uint32_t seq = seq_after(completed_seq, k);
        if (slots[seq & 1].pid == 0) fork_child(seq);
    }
}

/* The supervisor numbers invocations 1, 2, 3, ... (wrapping) and starts one only after the
 * previous one was reported: a child has started once `go` reached its number. */
static int started(const struct child_slot *c) {
    uint32_t go = cmd_region[c->seq & 1] ? current_go(c->seq & 1) : 0;
    return go != 0 && (int32_t)(go - c->seq) >= 0;
}

/* Waiting children predate a change (module, heap, regions): replace them. */
static void retire_waiting_children(void) {
    for (int i = 0; i < 2; i++) {
        struct child_slot *c = &slots[i];
        if (c->pid > 0 && !started(c)) {
            kill(c->pid, SIGKILL);
            while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR) {
            }
            c->pid = 0;
        }
    }
}

static void reap(void) {
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);
        if (pid <= 0) return;
        struct child_slot *c = NULL;
        for (int i = 0; i < 2; i++)
            if (slots[i].pid == pid) c = &slots[i];
        if (!c) continue;
        c->pid = 0;
        if (!started(c)) { /* died while waiting: ensure_children forks another, but not forever */
            if (++early_deaths >= 16) _exit(EXIT_BROKEN);
            continue;
        }
        early_deaths = 0;
        /* Children of the two parities can end out of order (one still exiting while the next
         * faulted): the next children to fork follow the latest invocation reaped. */
        if (completed_seq == 0 || (int32_t)(c->seq - completed_seq) > 0) completed_seq = c->seq;
        runs++;
        struct child_status copy = *(struct child_status *)((char *)status_pages + (size_t)(c->seq & 1) * (size_t)page);
        struct msg m = {OP_DONE, 0, c->seq, (uint64_t)(uint32_t)st, (uint64_t)c->aborted, 0};
        if (send_msg(&m, &copy, sizeof copy, NULL, 0) < 0) _exit(0);
    }
}

/* --- requests ------------------------------------------------------------------------------- */

struct range_ctx {
    uintptr_t base;
    const char *name;
    uintptr_t start, end;
};

static int find_ranges(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct range_ctx *ctx = data;
    if (info->dlpi_addr != ctx->base || !info->dlpi_name || strcmp(info->dlpi_name, ctx->name) != 0) return 0;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uintptr_t s = (info->dlpi_addr + ph->p_vaddr) & ~(uintptr_t)(page - 1);
        uintptr_t e = round_up(info->dlpi_addr + ph->p_vaddr + ph->p_memsz, (size_t)page);
        if (s < lo) lo = s;
        if (e > hi) hi = e;
    }
    ctx->start = lo;
    ctx->end = hi;
    return 1;
}

static void do_load(int fd) {
    int slot = -1;
    for (int i = 0; i < MAX_MODULES; i++)
        if (!modules[i].handle) {
            slot = i;
            break;
        }
    if (fd < 0) {
        reply(OP_LOAD, EINVAL, 0, 0, "no library file descriptor received");
        return;
    }
    if (slot < 0) {
        close(fd);
        reply(OP_LOAD, ENOSPC, 0, 0, "too many modules loaded");
        return;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        char text[512];
        snprintf(text, sizeof text, "dlopen failed: %s", dlerror());
        close(fd);
        reply(OP_LOAD, ENOEXEC, 0, 0, text);
        return;
    }
    for (int i = 0; i < MAX_MODULES; i++) {
        if (modules[i].handle == h) { /* the loader matched an old object by name: refuse */
            dlclose(h);
            close(fd);
            reply(OP_LOAD, EEXIST, 0, 0, "the loader returned an already loaded module");
            return;
        }
    }
    struct link_map *lm = NULL;
    struct range_ctx ctx = {0, path, 0, 0};
    if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm) {
        ctx.base = lm->l_addr;
        ctx.name = lm->l_name;
        dl_iterate_phdr(find_ranges, &ctx);
    }
    modules[slot].handle = h;
    modules[slot].lm = lm;
    modules[slot].fd = fd;
    modules[slot].start = ctx.start;
    modules[slot].end = ctx.end > ctx.start ? ctx.end : ctx.start;
    retire_waiting_children();
    reply(OP_LOAD, 0, (uint64_t)slot, (uint64_t)ctx.start, NULL);
}

static void do_unload(uint64_t id) {
    if (id >= MAX_MODULES || !modules[id].handle) {
        reply(OP_UNLOAD, EINVAL, 0, 0, "no such module");
        return;
    }
    retire_waiting_children();
    dlclose(modules[id].handle);
    close(modules[id].fd);
    modules[id].handle = NULL;
    modules[id].lm = NULL;
    modules[id].fd = -1;
    reply(OP_UNLOAD, 0, 0, 0, NULL);
}

static void do_sym(uint64_t id, const char *name) {
    if (id >= MAX_MODULES || !modules[id].handle) {
        reply(OP_SYM, EINVAL, 0, 0, "no such module");
        return;
    }
    char sym[300];
    size_t len = strnlen(name, 257);
    if (len == 0 || len > 256) {
        reply(OP_SYM, EINVAL, 0, 0, "bad kernel name");
        return;
    }
    memcpy(sym, PAPPUS_ENTRY_PREFIX, sizeof PAPPUS_ENTRY_PREFIX - 1);
    memcpy(sym + sizeof PAPPUS_ENTRY_PREFIX - 1, name, len + 1);
    dlerror();
    void *p = dlsym(modules[id].handle, sym);
    if (!p) {
        char text[400];
        snprintf(text, sizeof text, "symbol %s not found", sym);
        reply(OP_SYM, ENOENT, 0, 0, text);
        return;
    }
    reply(OP_SYM, 0, (uint64_t)(uintptr_t)p, 0, NULL);
}

static void do_pool(int fd, uint64_t size) {
    if (fd < 0 || size == 0 || pool) {
        if (fd >= 0) close(fd);
        reply(OP_POOL, EINVAL, 0, 0, pool ? "the pool is already mapped" : "bad pool request");
        return;
    }
    size_t len = round_up(size, (size_t)page);
    pool_region_len = len + 2 * POOL_GUARD;
    pool_region = map_anon(pool_region_len, PROT_NONE);
    if (!pool_region) {
        close(fd);
        reply_errno(OP_POOL, errno, "reserving the pool");
        return;
    }
    void *p = mmap(pool_region + POOL_GUARD, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    int err = errno;
    close(fd);
    if (p == MAP_FAILED) {
        munmap(pool_region, pool_region_len);
        pool_region = NULL;
        reply_errno(OP_POOL, err, "mapping the pool");
        return;
    }
    pool = p;
    pool_size = len;
    retire_waiting_children();
    reply(OP_POOL, 0, (uint64_t)(uintptr_t)pool, (uint64_t)POOL_GUARD, NULL);
}

/* The command region of one parity; `last` is the supervisor's last invocation number (every
 * one of them has been reported: it sends this only when no child is running or exiting). */
static void do_cmd(int fd, uint64_t size, uint64_t parity, uint64_t last) {
    if (fd < 0 || size < sizeof(struct cmd_header) || size % (size_t)page || parity > 1) {
        if (fd >= 0) close(fd);
        reply(OP_CMD, EINVAL, 0, 0, "bad command region");
        return;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);
    if (p == MAP_FAILED) {
        reply_errno(OP_CMD, err, "mapping the command region");
        return;
    }
    retire_waiting_children();
    if (cmd_region[parity]) munmap(cmd_region[parity], cmd_region_size[parity]);
    cmd_region[parity] = p;
    cmd_region_size[parity] = size;
    completed_seq = (uint32_t)last;
    reply(OP_CMD, 0, (uint64_t)(uintptr_t)p, 0, NULL);
}

static void handle_request(void) {
    char buf[sizeof(struct msg) + MSG_MAX + 1];
    char cbuf[CMSG_SPACE(4 * sizeof(int))];
    struct iovec iov = {buf, sizeof buf - 1};
    struct msghdr h = {0};
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = cbuf;
    h.msg_controllen = sizeof cbuf;
    ssize_t r = recvmsg(sock, &h, MSG_CMSG_CLOEXEC);
    if (r == 0) _exit(0); /* supervisor closed the socket */
    if (r < 0) {
        if (errno == EINTR || errno == EAGAIN) return;
        _exit(0);
    }
    int fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int nfd = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < nfd; i++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (fd < 0) fd = got;
            else close(got);
        }
    }
    if ((size_t)r < sizeof(struct msg)) {
        if (fd >= 0) close(fd);
        return;
    }
    struct msg m;
    memcpy(&m, buf, sizeof m);
    buf[r] = '\0';
    const char *payload = buf + sizeof m;
    if (m.op != OP_POOL && m.op != OP_CMD && m.op != OP_LOAD && fd >= 0) {
        close(fd);
        fd = -1;
    }
    switch (m.op) {
    case OP_POOL:
        do_pool(fd, m.a);
        break;
    case OP_CMD:
        do_cmd(fd, m.a, m.b, m.c);
        break;
    case OP_HEAP:
        retire_waiting_children();
        if (set_heap((size_t)m.a) != 0) reply_errno(OP_HEAP, errno, "reserving the malloc arena");
        else reply(OP_HEAP, 0, heap_size, (uint64_t)(uintptr_t)heap, NULL);
        break;
    case OP_LOAD:
        do_load(fd);
        break;
    case OP_SYM:
        do_sym(m.a, payload);
        break;
    case OP_UNLOAD:
        do_unload(m.a);
        break;
    case OP_ABORT: { /* no reply: the DONE of the killed child answers */
        struct child_slot *c = &slots[(uint32_t)m.a & 1];
        if (c->pid > 0 && c->seq == (uint32_t)m.a && started(c)) {
            c->aborted = 1;
            kill(c->pid, SIGKILL);
        }
        break;
    }
    case OP_PING:
        reply(OP_PING, 0, forks, runs, NULL);
        break;
    case OP_QUIT:
        for (int i = 0; i < 2; i++) {
            if (slots[i].pid > 0) {
                kill(slots[i].pid, SIGKILL);
                while (waitpid(slots[i].pid, NULL, 0) < 0 && errno == EINTR) {
                }
            }
        }
        _exit(0);
    default:
        reply(m.op, EINVAL, 0, 0, "unknown request");
    }
}

/* --- main ----------------------------------------------------------------------------------- */

/* The last entry of the loader's list before any library was loaded (the program, the vDSO,
 * libc, the loader): these are the objects a child lists ahead of its program's modules. */
static void note_startup_objects(void) {
    void *self = dlopen(NULL, RTLD_NOW);
    struct link_map *lm = NULL;
    if (self && dlinfo(self, RTLD_DI_LINKMAP, &lm) == 0 && lm) {
        while (lm->l_next) lm = lm->l_next;
        startup_tail = lm;
    }
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s SOCKET_FD PARENT_PID STACK_BYTES STACK_COUNT GUARDED_STACKS [READ_DIR...]\n",
                argv[0]);
        return 2;
    }
    sock = atoi(argv[1]);
    pid_t parent = (pid_t)atol(argv[2]);
    size_t stack_bytes = (size_t)strtoull(argv[3], NULL, 10);
    uint32_t count = (uint32_t)strtoul(argv[4], NULL, 10);
    uint32_t guarded = (uint32_t)strtoul(argv[5], NULL, 10);

    /* Die with the supervisor; keep tenant memory out of core files and away from ptrace. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != parent) return 0;
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    self_pid = getpid();
    page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < MAX_MODULES; i++) modules[i].fd = -1;

    if (stack_bytes < 16384 || stack_bytes > (64u << 20) || count == 0 || count > 4096) {
        fprintf(stderr, "pappus-cpu-device: bad stack configuration\n");
        return 2;
    }

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    int go0[2], go1[2], done0[2], done1[2];
    if (sigfd < 0 || pipe2(go0, O_CLOEXEC) != 0 || pipe2(go1, O_CLOEXEC) != 0 ||
        pipe2(done0, O_CLOEXEC) != 0 || pipe2(done1, O_CLOEXEC) != 0 ||
        fcntl(done0[1], F_SETFL, O_NONBLOCK) != 0 || fcntl(done1[1], F_SETFL, O_NONBLOCK) != 0 ||
        setup_regions(stack_bytes + (size_t)page, count, guarded) != 0) {
        struct msg m = {OP_HELLO, errno ? errno : ENOMEM, 0, 0, 0, 0};
        const char *why = "template setup failed";
        send_msg(&m, why, strlen(why), NULL, 0);
        return 1;
    }
    go_rd[0] = go0[0];
    go_rd[1] = go1[0];
    done_wr[0] = done0[1]; /* non-blocking: a child that filled its pipe still gets to exit */
    done_wr[1] = done1[1];

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        struct msg m = {OP_HELLO, errno, 0, 0, 0, 0};
        const char *why = "PR_SET_NO_NEW_PRIVS failed";
        send_msg(&m, why, strlen(why), NULL, 0);
        return 1;
    }
    apply_landlock(argv + 6, argc - 6);
    note_startup_objects();
    if (!startup_tail) { /* without it, children could not hide other modules from the list */
        struct msg m = {OP_HELLO, ENOENT, 0, 0, 0, 0};
        const char *why = "the loader's list of loaded objects was not found";
        send_msg(&m, why, strlen(why), NULL, 0);
        return 1;
    }
    if (install_template_filter() != 0) {
        struct msg m = {OP_HELLO, errno, 0, 0, 0, 0};
        char why[200];
        snprintf(why, sizeof why, "installing the seccomp filter failed: %s", strerror(errno));
        send_msg(&m, why, strlen(why), NULL, 0);
        return 1;
    }

    char info[1024];
    snprintf(info, sizeof info,
             "stacks=%#lx\nstack_stride=%zu\nstack_count=%u\nstack_guarded=%u\ndyn_shared_end=%#lx\n"
             "landlock_abi=%d\nlandlock=%s\nseccomp=%s\n",
             (unsigned long)(uintptr_t)stacks, stack_stride, stack_count, stack_guarded,
             (unsigned long)(uintptr_t)dyn_end, landlock_abi, landlock_note,
             seccomp_mode == 1 ? "deny-list in the template; allow-list in children: exit, exit_group, rt_sigreturn, read(wake pipe), write(done pipe), mprotect(PROT_NONE)"
                               : "deny-list in the template; allow-list in children: exit, exit_group, rt_sigreturn, read(wake pipe), write(done pipe), mprotect(PROT_NONE); no SPEC_ALLOW");
    struct msg hello = {OP_HELLO, 0, (uint64_t)self_pid, (uint64_t)page, (uint64_t)landlock_abi,
                        (uint64_t)landlock_active};
    int ends[4] = {go0[1], go1[1], done0[0], done1[0]};
    if (send_msg(&hello, info, strlen(info), ends, 4) < 0) return 0;
    for (int i = 0; i < 4; i++) close(ends[i]);

    for (;;) {
        ensure_children();
        struct pollfd fds[2] = {{sock, POLLIN, 0}, {sigfd, POLLIN, 0}};
        int r = poll(fds, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        if (fds[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sigfd, &si, sizeof si) == sizeof si) {
            }
            reap();
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) handle_request();
    }
}
