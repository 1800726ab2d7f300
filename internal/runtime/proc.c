/*
 * proc.c — the scheduler: goroutines (G), threads (M) and processors (P).
 *
 * This follows the design of the Go runtime's proc.go.
 *
 *   G  a goroutine: a descriptor and a stack (stack.c).
 *   M  an OS thread.  Each M has a scheduler context, g0, on the thread's
 *      own stack; the scheduler code always runs on g0, never on a
 *      goroutine's stack.
 *   P  a processor: the right to run goroutines.  There are exactly
 *      GOMAXPROCS Ps.  Each has a bounded local run queue (RUNQ_SIZE) plus a
 *      one-slot `runnext`, a cache of free Gs and a timer heap (time.c).
 *
 * An M runs goroutines only while it holds a P.  The global run queue takes
 * the overflow of local queues and goroutines spawned by threads that hold
 * no P.  An M that runs out of work looks in this order: expired timers,
 * (every 61st tick) the global queue, its local queue, the global queue, and
 * then steals half of another P's queue (and runs other Ps' expired timers).
 * If that finds nothing it puts its P on the idle list and sleeps on its note.
 *
 * Spinning.  Waking a sleeping thread costs a system call on both sides, so
 * wakeups are rationed as in Go: when a goroutine becomes runnable and there
 * is an idle P, wakep() starts one M in "spinning" state (looking for work)
 * only if no M is spinning already.  A spinning M that finds work stops
 * spinning and, if it was the last spinner, wakes another one — so new work
 * is always noticed by someone, and bursts fan out one thread at a time.  An
 * M that stops spinning without finding work re-checks every run queue after
 * decrementing nmspinning, which closes the race with a concurrent wakep()
 * that saw nmspinning > 0 and did not wake anyone.
 *
 * Switching.  A goroutine enters the scheduler through mcall(fn), which saves
 * its registers on its own stack and calls fn on a fresh g0 stack.  Parking
 * (gopark) uses this: the goroutine's state is fully saved before its unlock
 * function runs, so once that function releases the channel lock, another M
 * may resume the goroutine immediately and safely.  execute() switches from
 * g0 into a goroutine and never returns; g0's frames are simply discarded
 * and the next mcall starts at the top of the g0 stack again.
 *
 * Idle threads sleep.  An idle M sleeps on a futex; one idle M at most sleeps
 * with a timeout (the earliest timer over all Ps); an idle process uses no
 * CPU.  When every M is idle, no goroutine is runnable and no timer is
 * pending, nothing can ever wake a goroutine again: that is a deadlock, and
 * the last M to go idle reports it (checkdead), as Go does.
 *
 * Global state: `sched` (declared in rt_internal.h) is the runtime's only
 * global mutable state besides stack.c's allocator and diag.c's signal
 * plumbing; each is documented where defined.  The current M is the one
 * thread-local variable, read only through getm().
 */
#define _GNU_SOURCE
#include "rt_internal.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(RT_TSAN)
#include <sanitizer/tsan_interface.h>
#endif
#if defined(RT_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

/* asm_*.S */
void rt_ctx_mcall(void **save_sp, void *g0_sp, void (*fn)(void *), void *arg);
_Noreturn void rt_ctx_resume(void *sp);
void rt_ctx_start(void);
/* Called from rt_ctx_start; not static because assembly calls it. */
_Noreturn void rt_goroutine_entry(void);

sched_state sched = {
    .lock = RT_LOCK_INIT,
    .gfree_lock = RT_LOCK_INIT,
    .allg_lock = RT_LOCK_INIT,
    .next_goid = 2,   /* 1 is reserved for main */
};

static __thread m *current_m;

enum {
    GFREE_LOCAL_MAX = 64,        /* per-P free Gs before spilling half */
    GFREE_WARM_MAX = 4096,       /* global free Gs kept with warm stacks */
    STEAL_ROUNDS = 4,
    M_STACK_SIZE = 1 << 20,      /* g0 stack of Ms the runtime creates */
};

static _Noreturn void schedule(void);
static void mstart_common(m *mp);

/* ----------------------------------------------------------- current G, M */

/* Out of line (and opaque to interprocedural analysis) so that the compiler
 * re-reads the thread pointer after every call: a goroutine may resume on a
 * different thread after any park. */
__attribute__((noinline, noipa)) m *getm(void) { return current_m; }

__attribute__((noinline, noipa)) g *getg(void) {
    m *mp = current_m;
    return mp ? mp->curg : NULL;
}

uint64_t rt_goid(void) {
    g *gp = getg();
    return gp ? gp->goid : 0;
}

int rt_gomaxprocs(void) { return sched.gomaxprocs; }

int64_t rt_num_goroutine(void) { return atomic_load(&sched.ngoroutines); }

/* ------------------------------------------------------------------ random */

static inline uint64_t wyrand(uint64_t *state) {
    *state += 0xa0761d6478bd642fULL;
    __uint128_t t = (__uint128_t)*state * (*state ^ 0xe7037ed1a0b428dbULL);
    return (uint64_t)(t >> 64) ^ (uint64_t)t;
}

uint32_t fastrand(void) {
    m *mp = getm();
    if (mp) return (uint32_t)wyrand(&mp->rand_state);
    static _Atomic uint64_t foreign_state = 0x9e3779b97f4a7c15ULL;
    uint64_t s = atomic_fetch_add(&foreign_state, 0xa0761d6478bd642fULL);
    return (uint32_t)wyrand(&s);
}

/* Lemire's multiply-shift: uniform enough for n far below 2^32. */
uint32_t fastrandn(uint32_t n) { return (uint32_t)(((uint64_t)fastrand() * n) >> 32); }

/* ------------------------------------------------------- sanitizer fibers
 * Every stack switch is announced to the sanitizers, so that TSan tracks each
 * goroutine as a fiber and ASan knows which stack is live. */

static inline void san_before_switch(m *mp, void **fake_stack_save, g *to) {
#if defined(RT_ASAN)
    if (to)
        __sanitizer_start_switch_fiber(fake_stack_save, (const void *)to->stack_lo,
                                       to->stack_hi - to->stack_lo);
    else
        __sanitizer_start_switch_fiber(fake_stack_save, mp->asan_g0_bottom, mp->asan_g0_size);
#endif
#if defined(RT_TSAN)
    __tsan_switch_to_fiber(to ? to->tsan_fiber : mp->tsan_fiber, 0);
#endif
    (void)mp;
    (void)fake_stack_save;
    (void)to;
}

static inline void san_after_switch(void *fake_stack) {
#if defined(RT_ASAN)
    __sanitizer_finish_switch_fiber(fake_stack, NULL, NULL);
#endif
    (void)fake_stack;
}

/* ------------------------------------------------------------- switching */

typedef void (*mcall_fn)(g *gp, void *arg);

#if defined(RT_TSAN)
/*
 * g0 never returns from the frames it abandons (every mcall starts over at
 * the top of its stack), so ThreadSanitizer's shadow call stack for the g0
 * fiber grows by a few frames per switch and would overflow after some
 * thousands of switches.  Every TSAN_FIBER_ROTATE switches g0 moves to a
 * fresh fiber and the old one (if the runtime created it) is destroyed.
 * Goroutines that exit leave their entry frames behind the same way; their
 * fibers are rotated on reuse (galloc).
 */
enum { TSAN_FIBER_ROTATE = 512 };

static void tsan_rotate_g0_fiber(m *mp) {
    if (++mp->tsan_switches % TSAN_FIBER_ROTATE != 0) return;
    void *old = mp->tsan_fiber;
    mp->tsan_fiber = __tsan_create_fiber(0);
    __tsan_switch_to_fiber(mp->tsan_fiber, 0);
    if (mp->tsan_fiber_owned) __tsan_destroy_fiber(old);
    mp->tsan_fiber_owned = true;
}
#endif

static void mcall_on_g0(void *arg) {
    m *mp = arg;
    san_after_switch(mp->asan_fake_stack);
#if defined(RT_TSAN)
    tsan_rotate_g0_fiber(mp);
#endif
    g *gp = mp->curg;
    mp->curg = NULL;
    mp->mcall_fn(gp, mp->mcall_arg);
    rt_throw("runtime: mcall function returned");
}

/* Save the current goroutine and run fn(gp, arg) on the scheduler stack.
 * Returns when the goroutine is next resumed (maybe on another M). */
static void mcall(g *gp, mcall_fn fn, void *arg) {
    g_enter(gp);      /* g0 code needs the P; sysmon must not take it now */
    m *mp = gp->m;
    mp->mcall_fn = fn;
    mp->mcall_arg = arg;
    san_before_switch(mp, &gp->asan_fake_stack, NULL);
    rt_ctx_mcall(&gp->sp, mp->g0_sp_top, mcall_on_g0, mp);
    san_after_switch(gp->asan_fake_stack);
    g_leave(gp);
}

/* Run gp on the current M (which holds a P).  Never returns. */
static _Noreturn void execute(g *gp) {
    m *mp = getm();
    p *pp = mp->p;
    atomic_store_explicit(&pp->schedtick,
                          atomic_load_explicit(&pp->schedtick, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    gp->m = mp;
    atomic_store_explicit(&gp->status, G_RUNNING, memory_order_relaxed);
    mp->curg = gp;   /* gp->in_runtime > 0 here: see g_enter */
    san_before_switch(mp, &mp->asan_fake_stack, gp);
    rt_ctx_resume(gp->sp);
}

static void goexit1(void);

_Noreturn void rt_goroutine_entry(void) {
    san_after_switch(NULL);
    g *gp = getg();
    g_leave(gp);      /* newproc started it at in_runtime = 1 */
    gp->fn(gp->arg);
    goexit1();
    __builtin_unreachable();
}

/* Build the frame rt_ctx_resume pops for a goroutine that has never run. */
static void ctx_make_initial(g *gp) {
    uintptr_t top = gp->stack_hi & ~(uintptr_t)15;
#if defined(__x86_64__)
    uint64_t *sp = (uint64_t *)(top - 64);
    memset(sp, 0, 64);
    sp[0] = 0x1F80u | ((uint64_t)0x037Fu << 32); /* default MXCSR, x87 CW */
    sp[7] = (uint64_t)(uintptr_t)rt_ctx_start;
#elif defined(__aarch64__)
    uint64_t *sp = (uint64_t *)(top - 176);
    memset(sp, 0, 176);
    sp[11] = (uint64_t)(uintptr_t)rt_ctx_start;    /* x30 */
#else
#error "no context switch for this architecture"
#endif
    gp->sp = sp;
}

/* --------------------------------------------------------- run queues */

static inline bool runq_empty(p *pp) {
    /* runnext is checked last: see Go's runqempty for why the order matters
     * (a G moving from runnext to the queue must not be missed). */
    for (;;) {
        uint32_t head = atomic_load_explicit(&pp->runq_head, memory_order_acquire);
        uint32_t tail = atomic_load_explicit(&pp->runq_tail, memory_order_acquire);
        g *next = atomic_load_explicit(&pp->runnext, memory_order_acquire);
        if (tail == atomic_load_explicit(&pp->runq_tail, memory_order_acquire))
            return head == tail && next == NULL;
    }
}

/* Global queue, under sched.lock. */
static void globrunq_put(g *gp) {
    gp->schedlink = NULL;
    if (sched.runq_tail) sched.runq_tail->schedlink = gp;
    else sched.runq_head = gp;
    sched.runq_tail = gp;
    atomic_fetch_add(&sched.runq_size, 1);
}

static void globrunq_put_batch(g *head, g *tail, int32_t n) {
    tail->schedlink = NULL;
    if (sched.runq_tail) sched.runq_tail->schedlink = head;
    else sched.runq_head = head;
    sched.runq_tail = tail;
    atomic_fetch_add(&sched.runq_size, n);
}

static g *globrunq_pop(void) {
    g *gp = sched.runq_head;
    if (!gp) return NULL;
    sched.runq_head = gp->schedlink;
    if (!sched.runq_head) sched.runq_tail = NULL;
    atomic_fetch_sub(&sched.runq_size, 1);
    return gp;
}

static bool runq_put_slow(p *pp, g *gp, uint32_t head, uint32_t tail);

/* Put gp on pp's local queue (runnext if `next`).  Owner only.  Returns
 * true if the queue was full and half of it moved to the global queue. */
static bool runq_put(p *pp, g *gp, bool next) {
    if (next) {
        g *old = atomic_exchange_explicit(&pp->runnext, gp, memory_order_acq_rel);
        if (!old) return false;
        gp = old;   /* kick the old runnext to the tail of the queue */
    }
    for (;;) {
        uint32_t head = atomic_load_explicit(&pp->runq_head, memory_order_acquire);
        uint32_t tail = atomic_load_explicit(&pp->runq_tail, memory_order_relaxed);
        if (tail - head < RUNQ_SIZE) {
            atomic_store_explicit(&pp->runq[tail % RUNQ_SIZE], gp, memory_order_relaxed);
            atomic_store_explicit(&pp->runq_tail, tail + 1, memory_order_release);
            return false;
        }
        if (runq_put_slow(pp, gp, head, tail)) return true;
    }
}

/* The local queue is full: move half of it, plus gp, to the global queue. */
static bool runq_put_slow(p *pp, g *gp, uint32_t head, uint32_t tail) {
    enum { HALF = RUNQ_SIZE / 2 };
    g *batch[HALF + 1];
    uint32_t n = (tail - head) / 2;
    if (n != HALF) rt_throw("runtime: runq_put_slow: queue is not full");
    for (uint32_t i = 0; i < n; i++)
        batch[i] = atomic_load_explicit(&pp->runq[(head + i) % RUNQ_SIZE], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&pp->runq_head, &head, head + n,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return false;
    batch[n] = gp;
    for (uint32_t i = 0; i < n; i++) batch[i]->schedlink = batch[i + 1];
    lock_acquire(&sched.lock);
    globrunq_put_batch(batch[0], batch[n], (int32_t)n + 1);
    lock_release(&sched.lock);
    return true;
}

/* Take a G from pp's local queue.  Owner only (stealers use runq_grab). */
static g *runq_get(p *pp) {
    g *next = atomic_load_explicit(&pp->runnext, memory_order_relaxed);
    if (next && atomic_compare_exchange_strong_explicit(&pp->runnext, &next, NULL,
                                                        memory_order_acq_rel,
                                                        memory_order_relaxed))
        return next;
    for (;;) {
        uint32_t head = atomic_load_explicit(&pp->runq_head, memory_order_acquire);
        uint32_t tail = atomic_load_explicit(&pp->runq_tail, memory_order_relaxed);
        if (tail == head) return NULL;
        g *gp = atomic_load_explicit(&pp->runq[head % RUNQ_SIZE], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&pp->runq_head, &head, head + 1,
                                                  memory_order_acq_rel, memory_order_relaxed))
            return gp;
    }
}

/*
 * Grab half of pp's queue into batch[batch_head..] (a ring of RUNQ_SIZE).
 * Returns how many.  With steal_runnext, also take pp's runnext — but only
 * after giving its owner a moment: runnext is usually a goroutine its
 * owner is about to run (a ping-pong partner), and stealing it would bounce
 * a communicating pair across threads.
 */
static uint32_t runq_grab(p *pp, _Atomic(g *) *batch, uint32_t batch_head, bool steal_runnext) {
    for (;;) {
        uint32_t head = atomic_load_explicit(&pp->runq_head, memory_order_acquire);
        uint32_t tail = atomic_load_explicit(&pp->runq_tail, memory_order_acquire);
        uint32_t n = tail - head;
        n = n - n / 2;
        if (n == 0) {
            if (steal_runnext) {
                g *next = atomic_load_explicit(&pp->runnext, memory_order_acquire);
                if (next) {
                    if (atomic_load_explicit(&pp->status, memory_order_relaxed) == P_RUNNING) {
                        struct timespec ts = { 0, 3000 };
                        nanosleep(&ts, NULL);
                    }
                    if (!atomic_compare_exchange_strong_explicit(&pp->runnext, &next, NULL,
                                                                 memory_order_acq_rel,
                                                                 memory_order_relaxed))
                        continue;
                    atomic_store_explicit(&batch[batch_head % RUNQ_SIZE], next,
                                          memory_order_relaxed);
                    return 1;
                }
            }
            return 0;
        }
        if (n > RUNQ_SIZE / 2) continue;   /* read an inconsistent head/tail */
        for (uint32_t i = 0; i < n; i++) {
            g *gp = atomic_load_explicit(&pp->runq[(head + i) % RUNQ_SIZE], memory_order_relaxed);
            atomic_store_explicit(&batch[(batch_head + i) % RUNQ_SIZE], gp, memory_order_relaxed);
        }
        if (atomic_compare_exchange_strong_explicit(&pp->runq_head, &head, head + n,
                                                    memory_order_acq_rel, memory_order_relaxed))
            return n;
    }
}

/* Steal half of victim's queue into pp's; return one G to run now. */
static g *runq_steal(p *pp, p *victim, bool steal_runnext) {
    uint32_t tail = atomic_load_explicit(&pp->runq_tail, memory_order_relaxed);
    uint32_t n = runq_grab(victim, pp->runq, tail, steal_runnext);
    if (n == 0) return NULL;
    n--;
    g *gp = atomic_load_explicit(&pp->runq[(tail + n) % RUNQ_SIZE], memory_order_relaxed);
    if (n > 0) atomic_store_explicit(&pp->runq_tail, tail + n, memory_order_release);
    return gp;
}

/* Move up to a fair share of the global queue to pp; return one to run.
 * Caller holds sched.lock, and pp's local queue is empty unless max == 1:
 * runq_put must not overflow into the global queue (it takes sched.lock). */
static g *globrunq_get(p *pp, int32_t max) {
    int32_t size = atomic_load(&sched.runq_size);
    if (size == 0) return NULL;
    int32_t n = size / sched.gomaxprocs + 1;
    if (n > size) n = size;
    if (max > 0 && n > max) n = max;
    if (n > (int32_t)RUNQ_SIZE / 2) n = RUNQ_SIZE / 2;
    g *gp = globrunq_pop();
    for (int32_t i = 1; i < n; i++) runq_put(pp, globrunq_pop(), false);
    return gp;
}

/* ------------------------------------------------------------ idle lists */

/* Under sched.lock. */
static void pidle_put(p *pp) {
    atomic_store_explicit(&pp->status, P_IDLE, memory_order_relaxed);
    atomic_store_explicit(&pp->m, NULL, memory_order_relaxed);
    pp->link = sched.pidle;
    sched.pidle = pp;
    atomic_fetch_add(&sched.npidle, 1);
}

static p *pidle_get(void) {
    p *pp = sched.pidle;
    if (pp) {
        sched.pidle = pp->link;
        atomic_fetch_sub(&sched.npidle, 1);
    }
    return pp;
}

static void mput(m *mp) {
    mp->schedlink = sched.midle;
    sched.midle = mp;
    sched.nmidle++;
}

static m *mget(void) {
    m *mp = sched.midle;
    if (mp) {
        sched.midle = mp->schedlink;
        sched.nmidle--;
    }
    return mp;
}

/* Remove a specific M from the idle list; false if it is not there. */
static bool mget_specific(m *target) {
    for (m **pm = &sched.midle; *pm; pm = &(*pm)->schedlink) {
        if (*pm == target) {
            *pm = target->schedlink;
            sched.nmidle--;
            return true;
        }
    }
    return false;
}

static void acquirep(m *mp, p *pp) {
    if (atomic_load_explicit(&pp->m, memory_order_relaxed))
        rt_throw("runtime: acquirep: P already in use");
    mp->p = pp;
    atomic_store_explicit(&pp->m, mp, memory_order_relaxed);
    atomic_store_explicit(&pp->status, P_RUNNING, memory_order_release);
    sysmon_wake();   /* it parks while every P is idle; now one is not */
}

/* --------------------------------------------------------- free Gs */

static void gfput(p *pp, g *gp) {
    gp->schedlink = pp->gfree;
    pp->gfree = gp;
    if (++pp->gfree_count < GFREE_LOCAL_MAX) return;
    /* Spill half to the global list. */
    lock_acquire(&sched.gfree_lock);
    while (pp->gfree_count > GFREE_LOCAL_MAX / 2) {
        g *x = pp->gfree;
        pp->gfree = x->schedlink;
        pp->gfree_count--;
        x->schedlink = sched.gfree;
        sched.gfree = x;
        sched.gfree_count++;
    }
    lock_release(&sched.gfree_lock);
}

static g *gfget(p *pp) {
    if (pp && pp->gfree) goto local;
    if (atomic_load_explicit(&sched.gfree_count, memory_order_relaxed) == 0)
        return NULL;
    lock_acquire(&sched.gfree_lock);
    if (!pp) {
        g *gp = sched.gfree;
        if (gp) {
            sched.gfree = gp->schedlink;
            sched.gfree_count--;
        }
        lock_release(&sched.gfree_lock);
        return gp;
    }
    while (sched.gfree && pp->gfree_count < GFREE_LOCAL_MAX / 2) {
        g *x = sched.gfree;
        sched.gfree = x->schedlink;
        sched.gfree_count--;
        x->schedlink = pp->gfree;
        pp->gfree = x;
        pp->gfree_count++;
    }
    lock_release(&sched.gfree_lock);
    if (!pp->gfree) return NULL;
local:;
    g *gp = pp->gfree;
    pp->gfree = gp->schedlink;
    pp->gfree_count--;
    return gp;
}

static void allg_add(g *gp) {
    lock_acquire(&sched.allg_lock);
    gp->all_prev = NULL;
    gp->all_next = sched.allg;
    if (sched.allg) sched.allg->all_prev = gp;
    sched.allg = gp;
    lock_release(&sched.allg_lock);
}

static void allg_remove(g *gp) {
    lock_acquire(&sched.allg_lock);
    if (gp->all_prev) gp->all_prev->all_next = gp->all_next;
    else sched.allg = gp->all_next;
    if (gp->all_next) gp->all_next->all_prev = gp->all_prev;
    lock_release(&sched.allg_lock);
}

/* ---------------------------------------------------------------- spawn */

static g *galloc(size_t stack_size, bool is_default, p *pp) {
    g *gp = is_default ? gfget(pp) : NULL;
    if (gp) {
        stack_reuse(gp);
#if defined(RT_TSAN)
        /* See tsan_rotate_g0_fiber: exited goroutines leave frames behind. */
        if (++gp->tsan_reuses % TSAN_FIBER_ROTATE == 0) {
            __tsan_destroy_fiber(gp->tsan_fiber);
            gp->tsan_fiber = __tsan_create_fiber(0);
        }
#endif
        return gp;
    }
    gp = stack_alloc_g(stack_size, is_default);
    if (!gp) return NULL;
#if defined(RT_TSAN)
    gp->tsan_fiber = __tsan_create_fiber(0);
#endif
    atomic_store(&gp->status, G_DEAD);
    allg_add(gp);
    return gp;
}

static void gfree_custom(g *gp) {
    allg_remove(gp);
#if defined(RT_TSAN)
    __tsan_destroy_fiber(gp->tsan_fiber);
#endif
    stack_free_g(gp);
}

static g *newproc(rt_func fn, void *arg, size_t stack_size, bool is_default, uint64_t goid,
                  const char *file, int line, p *pp) {
    g *gp = galloc(stack_size, is_default, pp);
    if (!gp) return NULL;
    gp->fn = fn;
    gp->arg = arg;
    gp->spawn_file = file;
    gp->spawn_line = line;
    gp->goid = goid ? goid : atomic_fetch_add_explicit(&sched.next_goid, 1, memory_order_relaxed);
    gp->param = NULL;
    gp->waiting = NULL;
    gp->m = NULL;
    gp->stack_trimmed = false;
    atomic_store_explicit(&gp->in_runtime, 1, memory_order_relaxed);
    atomic_store_explicit(&gp->wait_reason, WAIT_NONE, memory_order_relaxed);
    ctx_make_initial(gp);
    atomic_fetch_add_explicit(&sched.ngoroutines, 1, memory_order_relaxed);
    atomic_store_explicit(&gp->status, G_RUNNABLE, memory_order_release);
    return gp;
}

int rt_go_at(rt_func fn, void *arg, const rt_spawn_opts *opts, const char *file, int line) {
    if (!fn) return RT_EINVAL;
    size_t size = opts && opts->stack_size ? opts->stack_size : RT_DEFAULT_STACK_SIZE;
    if (size < RT_MIN_STACK_SIZE || size > RT_MAX_STACK_SIZE) return RT_EINVAL;
    bool is_default = size == RT_DEFAULT_STACK_SIZE;
    stack_init();   /* once per process: may be spawned before rt_main */

    g *self = getg();
    p *pp = NULL;
    if (self) pp = g_enter(self);
    else if (getm()) pp = getm()->p;   /* g0: a timer function spawning */
    g *gp = newproc(fn, arg, size, is_default, 0, file, line, pp);
    if (!gp) {
        if (self) g_leave(self);
        return RT_ENOMEM;
    }
    bool spilled = false;
    if (pp) {
        spilled = runq_put(pp, gp, true);
    } else {
        if (!getm() && atomic_load_explicit(&sched.started, memory_order_acquire))
            atomic_store(&sched.foreign_spawner, true);
        lock_acquire(&sched.lock);
        globrunq_put(gp);
        lock_release(&sched.lock);
    }
    if (atomic_load_explicit(&sched.started, memory_order_acquire)) wakep();
    /*
     * Spawn back-pressure.  A goroutine that has filled its P's run queue by
     * spawning steps behind the goroutines it made (yield puts it at the tail
     * of the global queue, behind the half just spilled there).  Otherwise a
     * loop spawning a million short goroutines holds a million stacks at
     * once before any runs; with this, they run and their stacks are reused
     * while the loop continues.  Go gets the same effect from time-slice
     * preemption of the spawning goroutine.
     */
    if (self) g_leave(self);
    if (spilled && self) rt_yield();
    return RT_OK;
}

/* ------------------------------------------------------------ threads */

static void *mstart_thread(void *arg) {
    m *mp = arg;
    current_m = mp;
    mstart_common(mp);
    return NULL;
}

/* Create an M that starts by running pp (spinning or not). */
static void newm(p *pp, bool spinning) {
    m *mp = calloc(1, sizeof *mp);
    if (!mp) rt_throw("runtime: cannot allocate an M");
    lock_acquire(&sched.lock);
    mp->id = sched.mcount++;
    lock_release(&sched.lock);
    mp->nextp = pp;
    mp->spinning = spinning;
    mp->rand_state = (uint64_t)rt_nanotime() ^ ((uint64_t)mp->id << 32) ^ (uintptr_t)mp;
    int rc = os_thread_start(&mp->thread, mstart_thread, mp, M_STACK_SIZE);
    if (rc != 0) rt_throwf("runtime: failed to create new OS thread (%s)", strerror(rc));
}

/* Run some M on pp (an idle P if NULL).  If none is idle, start a thread. */
static void startm(p *pp, bool spinning) {
    lock_acquire(&sched.lock);
    if (!pp) {
        pp = pidle_get();
        if (!pp) {
            lock_release(&sched.lock);
            if (spinning) atomic_fetch_sub(&sched.nmspinning, 1);
            return;
        }
    }
    m *mp = mget();
    if (mp && mp == sched.timer_sleeper) {
        /* It will run with a P now; the next M to go idle sleeps for timers. */
        sched.timer_sleeper = NULL;
        atomic_store(&sched.timer_sleep_until, 0);
    }
    if (!mp && sched.mcount >= sched.max_threads) {
        /* At the thread cap: the P waits for an M to come free. */
        pidle_put(pp);
        lock_release(&sched.lock);
        if (spinning) atomic_fetch_sub(&sched.nmspinning, 1);
        return;
    }
    lock_release(&sched.lock);
    sysmon_wake();
    if (!mp) {
        newm(pp, spinning);
        return;
    }
    if (mp->nextp) rt_throw("runtime: startm: M has a P");
    mp->spinning = spinning;
    mp->nextp = pp;
    note_wakeup(&mp->park);
}

void wakep(void) {
    if (atomic_load_explicit(&sched.npidle, memory_order_acquire) == 0) return;
    int32_t zero = 0;
    if (atomic_load_explicit(&sched.nmspinning, memory_order_relaxed) != 0 ||
        !atomic_compare_exchange_strong(&sched.nmspinning, &zero, 1))
        return;
    startm(NULL, true);
}

/* A spinning M found work: stop spinning, and make sure someone else is. */
static void reset_spinning(m *mp) {
    mp->spinning = false;
    int32_t n = atomic_fetch_sub(&sched.nmspinning, 1) - 1;
    if (n < 0) rt_throw("runtime: negative nmspinning");
    if (n == 0) wakep();
}

/* ------------------------------------------------------- finding work */

/* Try every other P's queue and expired timers, in random order. */
static g *steal_work(m *mp, int64_t *now) {
    p *pp = mp->p;
    int n = sched.gomaxprocs;
    for (int round = 0; round < STEAL_ROUNDS; round++) {
        bool last = round == STEAL_ROUNDS - 1;
        uint32_t start = fastrandn((uint32_t)n);
        for (int i = 0; i < n; i++) {
            p *victim = &sched.allp[(start + (uint32_t)i) % (uint32_t)n];
            if (victim == pp) continue;
            if (last) {
                int64_t w = atomic_load_explicit(&victim->timer0_when, memory_order_relaxed);
                if (w != 0) {
                    if (!*now) *now = rt_nanotime();
                    if (w <= *now) {
                        timers_run(victim, *now);
                        g *gp = runq_get(pp);
                        if (gp) return gp;
                    }
                }
            }
            if (atomic_load_explicit(&victim->status, memory_order_relaxed) == P_IDLE &&
                runq_empty(victim))
                continue;
            g *gp = runq_steal(pp, victim, last);
            if (gp) return gp;
        }
    }
    return NULL;
}

bool runq_is_empty(p *pp) { return runq_empty(pp); }

static bool any_runq_nonempty(void) {
    for (int i = 0; i < sched.gomaxprocs; i++)
        if (!runq_empty(&sched.allp[i])) return true;
    return false;
}

/*
 * Deadlock check, under sched.lock, by an M that has just put itself on the
 * idle list: if no M is running and nothing (timer, queue) can make a
 * goroutine runnable again, every goroutine is blocked forever — unless a
 * thread that is not an M spawns one.  Such a thread may not have spawned
 * yet (a program that starts worker threads feeding goroutines), so the
 * verdict is only a suspicion here: stopm sleeps DEADLOCK_GRACE_NS and
 * reports the deadlock only if it still holds and nothing was spawned
 * meanwhile (next_goid unchanged).
 */
#define DEADLOCK_GRACE_NS (100 * RT_MILLISECOND)

static bool checkdead(void) {
    int32_t running = sched.mcount - sched.nmidle;
    if (running > 0) return false;
    if (atomic_load(&sched.runq_size) > 0 || any_runq_nonempty()) return false;
    if (timers_earliest() != 0) return false;
    if (atomic_load(&sched.ngoroutines) == 0) return false;
    if (atomic_load(&sched.foreign_spawner)) return false;
    if (netpoll_waiters() > 0) return false;   /* the poller can wake them */
    return true;
}

/*
 * Put mp on the idle list and sleep until another M hands it a P (through
 * startm or timer_wake_sleeper) or, if `until` is set and mp is the timer
 * sleeper, until that time, when it takes an idle P itself to run the
 * timers.  Returns the P to run with; mp is spinning if it took the P for
 * timers.  Runs checkdead before sleeping.
 */
static p *stopm(m *mp, int64_t until) {
    for (;;) {
        lock_acquire(&sched.lock);
        bool timed = false;
        int64_t cur = atomic_load(&sched.timer_sleep_until);
        if (until != 0 && (sched.timer_sleeper == NULL || until < cur)) {
            sched.timer_sleeper = mp;
            atomic_store(&sched.timer_sleep_until, until);
            timed = true;
        }
        mput(mp);
        bool suspect = checkdead();
        uint64_t spawned = atomic_load(&sched.next_goid);
        lock_release(&sched.lock);

        bool woken = true;
        if (suspect) {
            woken = note_timed_sleep(&mp->park, DEADLOCK_GRACE_NS);
        } else if (timed) {
            int64_t left = until - rt_nanotime();
            woken = note_timed_sleep(&mp->park, left > 0 ? left : 0);
        } else {
            note_sleep(&mp->park);
        }

        lock_acquire(&sched.lock);
        if (suspect && !woken && checkdead() && atomic_load(&sched.next_goid) == spawned)
            diag_deadlock();   /* still idle, nothing changed: report */
        if (sched.timer_sleeper == mp) {
            sched.timer_sleeper = NULL;
            atomic_store(&sched.timer_sleep_until, 0);
        }
        if (suspect && !woken && mget_specific(mp)) {
            /* The suspicion passed: sleep again, re-checking. */
            lock_release(&sched.lock);
            note_clear(&mp->park);
            until = timers_earliest();
            continue;
        }
        if (!woken && mget_specific(mp)) {
            /* Timed out while still idle: take an idle P to run the timers. */
            p *pp = pidle_get();
            lock_release(&sched.lock);
            note_clear(&mp->park);
            if (pp) {
                mp->spinning = true;
                atomic_fetch_add(&sched.nmspinning, 1);
                return pp;
            }
            /* Every P is busy, and busy Ps run timers themselves: sleep
             * until handed work. */
            until = 0;
            continue;
        }
        lock_release(&sched.lock);
        /* Someone took us off the idle list: they will (or did) hand us a P. */
        note_sleep(&mp->park);
        note_clear(&mp->park);
        p *pp = mp->nextp;
        mp->nextp = NULL;
        if (pp) return pp;
        rt_throw("runtime: stopm: woken without a P");
    }
}

/*
 * Called by timer_add after adding a timer due at `when`: if the M that
 * sleeps for timers would oversleep it, wake that M with an idle P so it
 * runs (and steals) expired timers.  If no P is idle, every P is running
 * and checks timers at its next scheduling point.
 */
void timer_wake_sleeper(int64_t when) {
    int64_t until = atomic_load_explicit(&sched.timer_sleep_until, memory_order_relaxed);
    if (until == 0 || when >= until) return;   /* nobody sleeping, or in time */
    lock_acquire(&sched.lock);
    m *sleeper = sched.timer_sleeper;
    if (!sleeper || when >= atomic_load(&sched.timer_sleep_until) || sched.pidle == NULL ||
        !mget_specific(sleeper)) {
        lock_release(&sched.lock);
        return;
    }
    sched.timer_sleeper = NULL;
    atomic_store(&sched.timer_sleep_until, 0);
    p *pp = pidle_get();
    lock_release(&sched.lock);
    sleeper->spinning = true;
    atomic_fetch_add(&sched.nmspinning, 1);
    sleeper->nextp = pp;
    note_wakeup(&sleeper->park);
}

/* Find a goroutine to run; blocks until there is one.  mp holds a P on
 * return. */
static g *findrunnable(m *mp) {
top:;
    p *pp = mp->p;
    int64_t now = 0;
    int64_t w = atomic_load_explicit(&pp->timer0_when, memory_order_relaxed);
    if (w != 0) {
        now = rt_nanotime();
        if (w <= now) timers_run(pp, now);
    }

    g *gp = NULL;
    if (atomic_load_explicit(&pp->schedtick, memory_order_relaxed) % 61 == 0 &&
        atomic_load_explicit(&sched.runq_size, memory_order_relaxed) > 0) {
        lock_acquire(&sched.lock);
        gp = globrunq_get(pp, 1);
        lock_release(&sched.lock);
        if (gp) goto found;
    }
    gp = runq_get(pp);
    if (gp) goto found;
    if (atomic_load_explicit(&sched.runq_size, memory_order_relaxed) > 0) {
        lock_acquire(&sched.lock);
        gp = globrunq_get(pp, 0);
        lock_release(&sched.lock);
        if (gp) goto found;
    }

    /* Steal, unless half the busy Ps already have a spinning M. */
    int32_t busy = sched.gomaxprocs - atomic_load(&sched.npidle);
    if (mp->spinning || 2 * atomic_load(&sched.nmspinning) < busy) {
        if (!mp->spinning) {
            mp->spinning = true;
            atomic_fetch_add(&sched.nmspinning, 1);
        }
        gp = steal_work(mp, &now);
        if (gp) goto found;
    }

    /* Nothing: give up the P. */
    lock_acquire(&sched.lock);
    if (atomic_load(&sched.runq_size) > 0) {
        gp = globrunq_get(pp, 0);
        lock_release(&sched.lock);
        goto found;
    }
    mp->p = NULL;
    pidle_put(pp);
    lock_release(&sched.lock);

    if (mp->spinning) {
        mp->spinning = false;
        if (atomic_fetch_sub(&sched.nmspinning, 1) - 1 < 0)
            rt_throw("runtime: findrunnable: negative nmspinning");
        /* Re-check after no longer counting as spinning: a wakep() that saw
         * us spinning relied on us to find its work. */
        if (atomic_load(&sched.runq_size) > 0 || any_runq_nonempty()) {
            lock_acquire(&sched.lock);
            p *again = pidle_get();
            lock_release(&sched.lock);
            if (again) {
                acquirep(mp, again);
                mp->spinning = true;
                atomic_fetch_add(&sched.nmspinning, 1);
                goto top;
            }
        }
    }

    acquirep(mp, stopm(mp, timers_earliest()));
    goto top;

found:
    if (mp->spinning) reset_spinning(mp);
    return gp;
}

static _Noreturn void schedule(void) {
    m *mp = getm();
    if (!mp->p) rt_throw("runtime: schedule without a P");
    g *gp = findrunnable(mp);
    execute(gp);
}

/* ---------------------------------------------------------- park / ready */

typedef struct park_args {
    park_unlock_fn unlockf;
    void *arg;
} park_args;

/*
 * On g0, with no P: run gp (runnable, or NULL) on an idle P if one exists,
 * else queue it globally and let this M go idle.  The check for an idle P
 * and the queueing are one critical section: a P that went idle before it
 * has been taken here, and one that goes idle after it sees gp in the
 * global queue — split in two, a P idling in between would sleep with gp
 * queued and nobody awake to run it.
 */
static _Noreturn void run_or_queue_without_p(m *mp, g *gp) {
    lock_acquire(&sched.lock);
    p *pp = pidle_get();
    if (!pp && gp) globrunq_put(gp);
    lock_release(&sched.lock);
    if (pp) {
        acquirep(mp, pp);
        if (gp) execute(gp);
        schedule();
    }
    acquirep(mp, stopm(mp, 0));
    schedule();
}

/* On g0 with no P (gopark after sysmon took it): get a P back without
 * blocking if possible — the old one, or an idle one.  NULL if none. */
static p *reacquire_p_nonblocking(m *mp) {
    p *oldp = mp->oldp;
    mp->oldp = NULL;
    if (oldp) {
        uint32_t expected = P_SYSCALL;
        if (atomic_compare_exchange_strong_explicit(&oldp->status, &expected, P_RUNNING,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed)) {
            mp->p = oldp;
            atomic_store_explicit(&oldp->m, mp, memory_order_relaxed);
            return oldp;
        }
    }
    lock_acquire(&sched.lock);
    p *pp = pidle_get();
    lock_release(&sched.lock);
    if (pp) acquirep(mp, pp);
    return pp;
}

static void park_m(g *gp, void *argp) {
    park_args *pa = argp;
    m *mp = getm();
    atomic_store_explicit(&gp->status, G_WAITING, memory_order_release);
    gp->m = NULL;
    /* The unlock functions only release locks (or arm a timer, which needs
     * no P of ours): they run even if sysmon took the P meanwhile. */
    bool park = !pa->unlockf || pa->unlockf(gp, pa->arg);
    if (!mp->p && !reacquire_p_nonblocking(mp)) {
        /* No P: run or queue gp if it must not park, else just go idle. */
        if (!park) {
            atomic_store_explicit(&gp->wait_reason, WAIT_NONE, memory_order_relaxed);
            atomic_store_explicit(&gp->status, G_RUNNABLE, memory_order_release);
        }
        run_or_queue_without_p(mp, park ? NULL : gp);
    }
    if (!park) {
        atomic_store_explicit(&gp->wait_reason, WAIT_NONE, memory_order_relaxed);
        execute(gp);   /* changed its mind: resume at once */
    }
    schedule();
}

static int64_t coarse_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * RT_SECOND + ts.tv_nsec;
}

void gopark(park_unlock_fn unlockf, void *arg, wait_reason reason) {
    g *gp = getg();
    if (rt_unlikely(!gp)) rt_throw("blocking runtime call outside a goroutine");
    atomic_store_explicit(&gp->wait_reason, reason, memory_order_relaxed);
    atomic_store_explicit(&gp->wait_since, coarse_now(), memory_order_relaxed);
    park_args pa = { unlockf, arg };
    /* Not mcall(): the caller may hold the lock unlockf releases, so this
     * must not stop to take a P back first (that could queue the goroutine
     * with the lock held).  Raising in_runtime keeps sysmon off the P from
     * here on; park_m copes if it was taken before. */
    atomic_store_explicit(&gp->in_runtime,
                          atomic_load_explicit(&gp->in_runtime, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    m *mp = gp->m;
    mp->mcall_fn = park_m;
    mp->mcall_arg = &pa;
    san_before_switch(mp, &gp->asan_fake_stack, NULL);
    rt_ctx_mcall(&gp->sp, mp->g0_sp_top, mcall_on_g0, mp);
    san_after_switch(gp->asan_fake_stack);
    g_leave(gp);
}

static bool unlock_rt_lock(g *gp, void *l) {
    (void)gp;
    lock_release((rt_lock *)l);
    return true;
}

void goparkunlock(rt_lock *l, wait_reason reason) { gopark(unlock_rt_lock, l, reason); }

void goready(g *gp) {
    uint32_t expected = G_WAITING;
    if (!atomic_compare_exchange_strong_explicit(&gp->status, &expected, G_RUNNABLE,
                                                 memory_order_acq_rel, memory_order_relaxed))
        rt_throwf("runtime: goready of goroutine %llu in state %u",
                  (unsigned long long)gp->goid, expected);
    atomic_store_explicit(&gp->wait_reason, WAIT_NONE, memory_order_relaxed);
    /* Callers may hold runtime locks, so never stop here to take a P back
     * (g_enter's slow path): without a P, use the global queue. */
    g *self = getg();
    if (self) {
        atomic_store_explicit(&self->in_runtime,
                              atomic_load_explicit(&self->in_runtime, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst);
    }
    m *cur = self ? self->m : getm();
    p *pp = cur ? cur->p : NULL;
    if (pp) {
        runq_put(pp, gp, true);
    } else {
        lock_acquire(&sched.lock);
        globrunq_put(gp);
        lock_release(&sched.lock);
    }
    if (self) g_leave(self);
    wakep();
}

/* --------------------------------------------------------- yield / exit */

/* Yield: the goroutine goes to the tail of the global queue, as Go's
 * Gosched does, so it runs after everything already waiting, including the
 * overflow of local queues. */
static void gosched_m(g *gp, void *arg) {
    (void)arg;
    gp->m = NULL;
    atomic_store_explicit(&gp->status, G_RUNNABLE, memory_order_release);
    lock_acquire(&sched.lock);
    globrunq_put(gp);
    lock_release(&sched.lock);
    schedule();
}

void rt_yield(void) {
    g *gp = getg();
    if (!gp) {
        os_yield();
        return;
    }
    mcall(gp, gosched_m, NULL);
}

static void goexit0(g *gp, void *arg) {
    (void)arg;
    m *mp = getm();
    atomic_store_explicit(&gp->status, G_DEAD, memory_order_release);
    gp->m = NULL;
    gp->fn = NULL;
    gp->arg = NULL;
    atomic_fetch_sub_explicit(&sched.ngoroutines, 1, memory_order_relaxed);
    if (gp->custom_stack) gfree_custom(gp);
    else gfput(mp->p, gp);
    schedule();
}

static void goexit1(void) {
    g *gp = getg();
    g_enter(gp);
    m *mp = getm();
    mp->mcall_fn = goexit0;
    mp->mcall_arg = NULL;
    /* The goroutine will never run again: let ASan free its fake stack. */
    san_before_switch(mp, NULL, NULL);
    rt_ctx_mcall(&gp->sp, mp->g0_sp_top, mcall_on_g0, mp);
    __builtin_unreachable();
}

_Noreturn void rt_goexit(void) {
    if (!getg()) rt_throw("rt_goexit outside a goroutine");
    goexit1();
    __builtin_unreachable();
}

/* ------------------------------------------------------- blocking calls
 *
 * As Go's entersyscall/exitsyscall.  Entering a blocking call, the M gives
 * up its P without handing it to anyone: the P goes to P_SYSCALL and stays
 * remembered in m->oldp.  If the call is short, the M takes the same P back
 * with one CAS and nothing else happened.  If it is long, sysmon notices
 * (the P's syscalltick has not moved for a sysmon tick, ~20 µs) and, if the
 * P has work or nobody else is looking for work, retakes it (CAS to P_IDLE)
 * and hands it to another M.  The blocked M then comes back to find its P
 * gone, takes an idle one if there is one, or queues its goroutine on the
 * global queue and goes idle itself.
 *
 * A goroutine computing without calling the runtime is handled the same
 * way: sysmon sends its thread SIGURG, and the handler performs the
 * "enter blocking call" step on the goroutine's behalf, unless the goroutine
 * is inside runtime code (gp->in_runtime), where the P must not move.  The
 * goroutine keeps its thread and keeps computing; its P's other goroutines
 * run on another thread.  When it next needs its P (g_enter) it takes one
 * back exactly as a returning blocking call does.  C code cannot be safely
 * preempted at an arbitrary instruction (it may hold a malloc lock), so the
 * goroutine itself is never switched out; only its P moves.
 */

static void exitsyscall_park(g *gp, void *arg) {
    (void)arg;
    m *mp = getm();
    gp->m = NULL;
    atomic_store_explicit(&gp->status, G_RUNNABLE, memory_order_release);
    run_or_queue_without_p(mp, gp);
}

/* The M has no P; get one (the same if still free).  Goroutine side. */
static void exitsyscall(g *gp) {
    m *mp = getm();
    if (reacquire_p_nonblocking(mp)) {
        atomic_store_explicit(&gp->status, G_RUNNING, memory_order_relaxed);
        gp->m = mp;
        return;
    }
    /* No P anywhere: wait in the global queue; this M goes idle.  A raw
     * switch, not mcall(), which would come back here for a P. */
    mp->mcall_fn = exitsyscall_park;
    mp->mcall_arg = NULL;
    san_before_switch(mp, &gp->asan_fake_stack, NULL);
    rt_ctx_mcall(&gp->sp, mp->g0_sp_top, mcall_on_g0, mp);
    san_after_switch(gp->asan_fake_stack);
}

p *g_enter_slow(g *gp) {
    exitsyscall(gp);
    return gp->m->p;
}

/* Give up the P as a blocking call does.  On the goroutine's own thread,
 * with the P's owner state quiescent (in_runtime == 0 or inside enter). */
static void release_p_for_syscall(m *mp, g *gp, gstatus status) {
    p *pp = mp->p;
    atomic_store_explicit(&pp->syscalltick,
                          atomic_load_explicit(&pp->syscalltick, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    mp->oldp = pp;
    mp->p = NULL;
    atomic_store_explicit(&pp->m, NULL, memory_order_relaxed);
    atomic_store_explicit(&gp->status, status, memory_order_relaxed);
    atomic_store_explicit(&pp->status, P_SYSCALL, memory_order_release);
}

void rt_blocking_enter(void) {
    g *gp = getg();
    if (!gp) return;
    g_enter(gp);
    release_p_for_syscall(getm(), gp, G_SYSCALL);
    g_leave(gp);
    sysmon_wake();
}

void rt_blocking_exit(void) {
    g *gp = getg();
    if (!gp) return;
    g_enter(gp);   /* takes a P back */
    atomic_store_explicit(&gp->status, G_RUNNING, memory_order_relaxed);
    g_leave(gp);
}

void *rt_blocking(void *(*fn)(void *arg), void *arg) {
    rt_blocking_enter();
    void *r = fn(arg);
    rt_blocking_exit();
    return r;
}

void preempt_release_p(void) {
    m *mp = current_m;
    g *gp = mp ? mp->curg : NULL;
    if (!gp || !mp->p) return;
    atomic_signal_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&gp->in_runtime, memory_order_relaxed) != 0) return;
    release_p_for_syscall(mp, gp, G_RUNNING);
}

void handoffp(p *pp) {
    /* pp was retaken by a CAS from P_SYSCALL: no M owns it. */
    if (!runq_empty(pp) || atomic_load(&sched.runq_size) > 0 ||
        atomic_load_explicit(&pp->timer0_when, memory_order_acquire) != 0) {
        startm(pp, false);
        return;
    }
    int32_t zero = 0;
    if (atomic_load(&sched.nmspinning) + atomic_load(&sched.npidle) == 0 &&
        atomic_compare_exchange_strong(&sched.nmspinning, &zero, 1)) {
        startm(pp, true);   /* nobody is looking for work: be that M */
        return;
    }
    lock_acquire(&sched.lock);
    pidle_put(pp);
    lock_release(&sched.lock);
}

/*
 * Return the RAM of cold free stacks.  Free Gs beyond the first
 * GFREE_WARM_MAX on the global list keep only their descriptor page; a
 * spike of 100,000 goroutines then costs 100,000 pages, not 100,000 stacks'
 * worth of touched pages, once it is over.  They are taken off the list
 * while trimmed, so nobody can reuse a stack as it is being trimmed.
 */
void gfree_scavenge(void) {
    enum { BATCH = 1024 };
    g *batch[BATCH];
    int n = 0;
    lock_acquire(&sched.gfree_lock);
    int32_t keep = GFREE_WARM_MAX;
    g **link = &sched.gfree;
    while (*link && keep > 0) {
        link = &(*link)->schedlink;
        keep--;
    }
    while (*link && n < BATCH) {
        g *x = *link;
        if (!x->stack_trimmed) {
            *link = x->schedlink;
            sched.gfree_count--;
            batch[n++] = x;
        } else {
            link = &x->schedlink;
        }
    }
    lock_release(&sched.gfree_lock);
    if (n == 0) return;
    for (int i = 0; i < n; i++) {
        stack_trim(batch[i]);
        batch[i]->stack_trimmed = true;
    }
    lock_acquire(&sched.gfree_lock);
    for (int i = 0; i < n; i++) {
        batch[i]->schedlink = sched.gfree;
        sched.gfree = batch[i];
        sched.gfree_count++;
    }
    lock_release(&sched.gfree_lock);
}

/* ---------------------------------------------------------------- start */

static int gomaxprocs_from_env(void) {
    const char *s = getenv("GOMAXPROCS");
    if (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end == 0 && v > 0 && v <= 1024) return (int)v;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Everything an M does before it first schedules: record where g0's stack
 * starts over on each mcall, set up signal and sanitizer state. */
static void mstart_common(m *mp) {
    char here;
    uintptr_t top = ((uintptr_t)&here - 512) & ~(uintptr_t)15;
    mp->g0_sp_top = (void *)top;
    mp->g0.goid = 0;
#if defined(RT_TSAN)
    mp->tsan_fiber = __tsan_get_current_fiber();
#endif
#if defined(RT_ASAN)
    pthread_attr_t attr;
    void *lo;
    size_t size;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &lo, &size);
        pthread_attr_destroy(&attr);
        mp->asan_g0_bottom = lo;
        mp->asan_g0_size = size;
    }
#endif
    diag_thread_init(mp);
    p *pp = mp->nextp;
    mp->nextp = NULL;
    acquirep(mp, pp);
    schedule();
}

typedef struct main_args {
    int (*fn)(void *);
    void *arg;
} main_args;

static void main_goroutine(void *argp) {
    main_args *ma = argp;
    int rc = ma->fn(ma->arg);
    fflush(NULL);
    exit(rc);
}

int rt_main(int (*main_fn)(void *arg), void *arg) {
    if (!main_fn) return RT_EINVAL;
    if (sched.started || getm()) return RT_ESTATE;
    stack_init();

    sched.gomaxprocs = gomaxprocs_from_env();
    /* p has cache-line aligned members: calloc would not honour that. */
    sched.allp = aligned_alloc(RT_CACHE_LINE, sizeof(p) * (size_t)sched.gomaxprocs);
    m *m0 = calloc(1, sizeof(m));
    static main_args ma;
    ma.fn = main_fn;
    ma.arg = arg;
    if (!sched.allp || !m0) return RT_ENOMEM;
    memset(sched.allp, 0, sizeof(p) * (size_t)sched.gomaxprocs);
    lock_acquire(&sched.lock);
    for (int i = sched.gomaxprocs - 1; i >= 0; i--) {
        p *pp = &sched.allp[i];
        pp->id = i;
        pp->timers_lock = (rt_lock)RT_LOCK_INIT;
        if (i != 0) pidle_put(pp);
    }
    m0->id = sched.mcount++;
    lock_release(&sched.lock);
    m0->rand_state = (uint64_t)rt_nanotime() ^ (uintptr_t)m0;
    m0->thread = pthread_self();
    m0->nextp = &sched.allp[0];
    current_m = m0;

    const char *mt = getenv("RT_MAX_THREADS");
    long max_threads = mt ? strtol(mt, NULL, 10) : 0;
    if (max_threads < sched.gomaxprocs + 1) max_threads = max_threads > 0 ? sched.gomaxprocs + 1 : 256;
    if (max_threads < sched.gomaxprocs + 1) max_threads = sched.gomaxprocs + 1;
    sched.max_threads = (int32_t)max_threads;

    diag_init();
    sysmon_start();
    g *mg = newproc(main_goroutine, &ma, RT_DEFAULT_STACK_SIZE, true, 1, __FILE__, __LINE__, NULL);
    if (!mg) return RT_ENOMEM;
    /* Main runs first; goroutines spawned before rt_main wait in the global
     * queue, where the other Ps (and main's P, after main blocks) find them. */
    p *p0 = &sched.allp[0];
    runq_put(p0, mg, true);
    atomic_store(&sched.started, true);
    /* Goroutines spawned before rt_main wait in the global queue: let an
     * idle P pick them up while main runs. */
    if (atomic_load(&sched.runq_size) > 0) wakep();
    mstart_common(m0);
    return RT_ESTATE; /* unreachable */
}

/* ------------------------------------------------------------------ fatal */

_Noreturn void rt_throw(const char *msg) { rt_throwf("%s", msg); }

_Noreturn void rt_throwf(const char *fmt, ...) {
    static _Atomic int throwing;
    static _Atomic(pthread_t) thrower;
    if (atomic_fetch_add(&throwing, 1) > 0) {
        if (pthread_equal(atomic_load(&thrower), pthread_self())) {
            /* A second fatal error while reporting the first: stop now. */
            static const char again[] = "fatal error: (while reporting a fatal error)\n";
            (void)!write(2, again, sizeof again - 1);
            _exit(2);
        }
        /* Another thread is reporting and will exit the process (as Go's
         * paniclk): wait for it rather than cut its report short. */
        for (;;) pause();
    }
    atomic_store(&thrower, pthread_self());
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fflush(stdout);
    dprintf(2, "fatal error: %s\n\n", buf);
    g *gp = getg();
    if (gp) dprintf(2, "goroutine %llu [running]:\n\tcreated at %s:%d\n\n",
                    (unsigned long long)gp->goid, gp->spawn_file ? gp->spawn_file : "?",
                    gp->spawn_line);
    diag_dump_all(2);
    _exit(2);
}
