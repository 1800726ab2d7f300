/*
 * stack.c — goroutine stacks.
 *
 * A C goroutine cannot grow its stack the way a Go goroutine does (C frames
 * hold raw pointers into the stack, so it can never move).  Instead every
 * stack is a fixed range of virtual memory that is committed lazily: the
 * kernel backs a page only when the goroutine first touches it, so a 64 KiB
 * stack of which a parked goroutine uses 3 KiB costs one page of RAM.
 *
 * Layout of one stack (addresses grow upward):
 *
 *     lo ─ guard page ─┬─ usable stack ─────────────────┬─ struct g ─ hi
 *                      stack_lo                stack_hi ┘
 *
 * The goroutine descriptor lives at the very top of its own stack mapping,
 * in the same page as the goroutine's first frames.  A parked goroutine
 * therefore costs one page (descriptor + the frames down to gopark) plus
 * whatever deeper pages it touched earlier.
 *
 * Guard pages.  An overflow must fault, not corrupt the neighbour.  The
 * classic guard is mprotect(PROT_NONE) on the lowest page; but that splits
 * the mapping in two, and Linux caps a process at vm.max_map_count (65530)
 * mappings, so guarded stacks top out near 32,000 — the ceiling libdill and
 * state-threads users hit.  Linux 6.13 added MADV_GUARD_INSTALL: a guard
 * region is a page-table marker that faults on access and does not split the
 * mapping.  So default-size stacks are carved from slabs of SLAB_STACKS
 * stacks each, one mapping per slab, guards installed by madvise — one
 * million stacks need ~4,000 mappings.  Installing 256 guards is batched
 * into one process_madvise() call where the kernel allows it.
 *
 * Fallback (kernels before 6.13, or emulators that ignore the advice): each
 * stack is its own mapping with an mprotect guard; the runtime then holds at
 * most ~30,000 goroutines at once (it reports RT_ENOMEM beyond that, never
 * corrupts memory).  The mode is probed once at start-up: the guard must
 * really fault (a write(2) from the page must fail with EFAULT), since some
 * emulators accept unknown madvise advice and do nothing.
 *
 * Transparent huge pages are disabled on stack memory: one touched byte
 * would otherwise commit 2 MiB shared by 32 stacks.
 *
 * Custom-size stacks (rt_spawn_opts.stack_size) get a mapping of their own
 * and are unmapped when the goroutine exits.  Default-size stacks are never
 * unmapped: proc.c keeps dead goroutines on free lists for reuse (cheap
 * spawns, warm pages) and trims the memory of the ones it keeps cold.
 */
#define _GNU_SOURCE
#include "rt_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#if defined(RT_ASAN)
#include <sanitizer/asan_interface.h>
#endif

enum { SLAB_STACKS = 256, IOV_BATCH = 256 };

typedef enum guard_mode {
    GUARD_MADVISE,      /* slabs + MADV_GUARD_INSTALL */
    GUARD_MPROTECT,     /* one mapping per stack, mprotect guard */
} guard_mode;

/* Stack allocator state (part of the runtime's documented global state). */
static struct {
    rt_lock lock;                /* lock order 6 */
    size_t page;
    guard_mode mode;
    bool batch_ok;               /* process_madvise accepts our advice */
    int pidfd;
    size_t default_stride;       /* guard + default stack, page aligned */
    char *slab_next;             /* next unused stack in the current slab */
    size_t slab_left;            /* stacks left in the current slab */
} stacks = { .lock = RT_LOCK_INIT, .pidfd = -1 };

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* Does a write(2) from this page fail with EFAULT (i.e. is it really guarded)? */
static bool page_faults_on_access(void *page) {
    int fds[2];
    if (pipe(fds) != 0) return false;
    ssize_t r = write(fds[1], page, 1);
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    return r < 0 && err == EFAULT;
}

static guard_mode probe_guard_mode(void) {
    size_t len = 2 * stacks.page;
    char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) return GUARD_MPROTECT;
    guard_mode mode = GUARD_MPROTECT;
    if (madvise(mem, stacks.page, MADV_GUARD_INSTALL) == 0 && page_faults_on_access(mem))
        mode = GUARD_MADVISE;
    munmap(mem, len);
    return mode;
}

/* Apply `advice` to `n` ranges, batched through process_madvise if possible. */
static int madvise_ranges(struct iovec *iov, size_t n, int advice) {
    if (stacks.batch_ok) {
        size_t done = 0;
        while (done < n) {
            size_t chunk = n - done < IOV_BATCH ? n - done : IOV_BATCH;
            long r = syscall(SYS_process_madvise, stacks.pidfd, iov + done, chunk, advice, 0);
            if (r < 0) break;
            done += chunk;
        }
        if (done == n) return 0;
        iov += done;
        n -= done;
    }
    for (size_t i = 0; i < n; i++)
        if (madvise(iov[i].iov_base, iov[i].iov_len, advice) != 0) return -errno;
    return 0;
}

/*
 * Runs once per process, whichever comes first: rt_main, or an rt_go from
 * any thread before it (a daemon's signal thread may spawn while the main
 * thread is still starting the runtime).  pthread_once orders these writes
 * before every caller's reads of `stacks` and sched.page_size.
 */
static void stack_init_once(void) {
    long pg = sysconf(_SC_PAGESIZE);
    stacks.page = pg > 0 ? (size_t)pg : 4096;
    sched.page_size = stacks.page;
    stacks.default_stride = stacks.page + round_up(RT_DEFAULT_STACK_SIZE, stacks.page);
    stacks.mode = probe_guard_mode();
    if (stacks.mode == GUARD_MADVISE) {
        stacks.pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
        if (stacks.pidfd >= 0) {
            /* Probe the batch path with one harmless range. */
            char *mem = mmap(NULL, stacks.page, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (mem != MAP_FAILED) {
                struct iovec iov = { mem, stacks.page };
                stacks.batch_ok =
                    syscall(SYS_process_madvise, stacks.pidfd, &iov, 1, MADV_GUARD_INSTALL, 0) ==
                    (long)stacks.page;
                munmap(mem, stacks.page);
            }
        }
    }
}

void stack_init(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, stack_init_once);
}

const char *stack_guard_mode(void) {
    return stacks.mode == GUARD_MADVISE ? "madvise-guard (slabs)" : "mprotect (one mapping per stack)";
}

/* Place the descriptor at the top of [base, base+len) whose lowest page is
 * the guard, and describe the usable stack below it. */
static g *carve_g(char *base, size_t len, size_t usable) {
    uintptr_t hi = (uintptr_t)base + len;
    uintptr_t gaddr = (hi - sizeof(g)) & ~(uintptr_t)(RT_CACHE_LINE - 1);
    g *gp = (g *)gaddr;
    memset(gp, 0, sizeof *gp);
    gp->stack_lo = (uintptr_t)base + stacks.page;
    gp->stack_hi = gaddr & ~(uintptr_t)15;
    gp->stack_size = usable;
    return gp;
}

/* Map a new slab of default stacks and install their guards, batched. */
static bool slab_new(void) {
    size_t len = stacks.default_stride * SLAB_STACKS;
    char *base = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return false;
    madvise(base, len, MADV_NOHUGEPAGE);
    struct iovec iov[SLAB_STACKS];
    for (size_t i = 0; i < SLAB_STACKS; i++) {
        iov[i].iov_base = base + i * stacks.default_stride;
        iov[i].iov_len = stacks.page;
    }
    if (madvise_ranges(iov, SLAB_STACKS, MADV_GUARD_INSTALL) != 0) {
        munmap(base, len);
        return false;
    }
    stacks.slab_next = base;
    stacks.slab_left = SLAB_STACKS;
    return true;
}

static g *alloc_from_slab(void) {
    lock_acquire(&stacks.lock);
    if (stacks.slab_left == 0 && !slab_new()) {
        lock_release(&stacks.lock);
        return NULL;
    }
    char *base = stacks.slab_next;
    stacks.slab_next += stacks.default_stride;
    stacks.slab_left--;
    lock_release(&stacks.lock);
    return carve_g(base, stacks.default_stride, stacks.default_stride - stacks.page);
}

static g *alloc_mapping(size_t usable) {
    size_t len = stacks.page + usable;
    char *base = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return NULL;
    madvise(base, len, MADV_NOHUGEPAGE);
    int rc = stacks.mode == GUARD_MADVISE ? madvise(base, stacks.page, MADV_GUARD_INSTALL)
                                          : mprotect(base, stacks.page, PROT_NONE);
    if (rc != 0) {
        munmap(base, len);
        return NULL;
    }
    return carve_g(base, len, usable);
}

g *stack_alloc_g(size_t stack_size, bool is_default) {
    if (is_default && stacks.mode == GUARD_MADVISE) return alloc_from_slab();
    g *gp = alloc_mapping(round_up(stack_size, stacks.page));
    if (gp) gp->custom_stack = !is_default;
    return gp;
}

void stack_free_g(g *gp) {
    uintptr_t base = gp->stack_lo - stacks.page;
    size_t len = stacks.page + gp->stack_size;
    munmap((void *)base, len);
}

/* Give back the RAM of a cached stack except its top page (descriptor). */
void stack_trim(g *gp) {
    uintptr_t top_page = ((uintptr_t)gp) & ~(uintptr_t)(stacks.page - 1);
    if (top_page > gp->stack_lo)
        madvise((void *)gp->stack_lo, top_page - gp->stack_lo, MADV_DONTNEED);
}

void stack_reuse(g *gp) {
#if defined(RT_ASAN)
    /* Frames of the previous goroutine never returned (it ended by switching
     * away), so their redzones are still poisoned in the shadow. */
    __asan_unpoison_memory_region((void *)gp->stack_lo, gp->stack_hi - gp->stack_lo);
#else
    (void)gp;
#endif
}

bool stack_fault_is_guard(const g *gp, uintptr_t addr) {
    uintptr_t guard_lo = gp->stack_lo - stacks.page;
    /* Also treat a fault just below the guard as an overflow: a large frame
     * can jump over one page. */
    return addr >= guard_lo - 16 * stacks.page && addr < gp->stack_lo;
}
