/*
 * rt_internal.h — what the runtime's files share with each other, and
 * nothing outside internal/runtime may include.
 *
 * The model is the Go runtime's: G (a goroutine), M (an OS thread that runs
 * goroutines) and P (a processor: the right to run Go code, with a local run
 * queue, a free-G cache and a timer heap).  There are exactly GOMAXPROCS Ps.
 * An M must hold a P to run goroutines; Ms without work release their P and
 * sleep.  See DESIGN.md for the full picture and proc.c for the scheduler.
 *
 * Lock order (a lock may only be taken while holding locks above it):
 *
 *   1. channel lock (rt_chan.lock)     — select takes several, in address order
 *   2. sema root lock (semtable), rt_cond list lock — sema.c;
 *      netpoll object lock (conn / listener) — netpoll.c
 *   3. P timer lock (p.timers_lock)
 *   4. sched.lock                      — global run queue, idle P and M lists
 *   5. sched.gfree_lock                — global free-G list
 *   6. stack slab lock (stack.c)
 *   7. sched.allg_lock                 — list of all goroutines
 *   8. context lock (context.c)        — a leaf: nothing is locked under it
 *
 * goready() may take sched.lock (global queue overflow, wakep), so it may be
 * called while holding locks 1–3 but not 4–7.  No runtime lock is ever held
 * across a context switch except through gopark's unlock function, which
 * runs on the scheduler stack after the goroutine's state is saved.
 *
 * Thread-local state: the only thread-local variable is the current M
 * (proc.c).  Because a goroutine can resume on a different thread after any
 * park, code must never keep a pointer to the M or P across a call that can
 * park; getg()/getm() are out-of-line so the compiler cannot cache them.
 * For the same reason errno must not be read across a park.
 */
#ifndef LEDGERD_RT_INTERNAL_H
#define LEDGERD_RT_INTERNAL_H

#include "rt.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#define RT_CACHE_LINE 64
#define rt_likely(x)   __builtin_expect(!!(x), 1)
#define rt_unlikely(x) __builtin_expect(!!(x), 0)

typedef struct g g;
typedef struct m m;
typedef struct p p;
typedef struct sudog sudog;
typedef struct rt_timer_internal timer;

/* ------------------------------------------------------------ low-level locks
 * lock.c.  rt_lock is a futex mutex for short critical sections inside the
 * runtime (it blocks the OS thread, never a goroutine).  A note is a one-shot
 * event an M sleeps on.
 */
typedef struct rt_lock {
    _Atomic uint32_t key;
} rt_lock;
#define RT_LOCK_INIT { 0 }
void lock_acquire(rt_lock *l);
void lock_release(rt_lock *l);

typedef struct note {
    _Atomic uint32_t key;
} note;
void note_clear(note *n);
void note_wakeup(note *n);
void note_sleep(note *n);
/* Sleep until woken or ns elapse (ns <= 0: just check); true if woken. */
bool note_timed_sleep(note *n, int64_t ns);

void os_yield(void);
/* Start a detached thread (the runtime's Ms, sysmon, the dump thread);
 * returns pthread_create's result. */
int os_thread_start(pthread_t *out, void *(*fn)(void *), void *arg, size_t stack_size);
void proc_yield(uint32_t cycles);   /* spin-wait hint (pause / yield) */
int os_futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t ns);
void os_futex_wake(_Atomic uint32_t *addr, int count);

/* ------------------------------------------------------------------ goroutines */

typedef enum gstatus {
    G_IDLE = 0,      /* just allocated, not yet initialised */
    G_RUNNABLE,      /* on a run queue */
    G_RUNNING,       /* executing on an M with a P */
    G_WAITING,       /* parked: blocked in the runtime */
    G_SYSCALL,       /* in a blocking call that gave up its P (issue: netpoll) */
    G_DEAD,          /* exited; on a free list */
} gstatus;

typedef enum wait_reason {
    WAIT_NONE = 0,
    WAIT_CHAN_SEND,
    WAIT_CHAN_RECV,
    WAIT_CHAN_SEND_NIL,
    WAIT_CHAN_RECV_NIL,
    WAIT_SELECT,
    WAIT_SELECT_NO_CASES,
    WAIT_MUTEX,
    WAIT_RWMUTEX_R,
    WAIT_RWMUTEX_W,
    WAIT_WAITGROUP,
    WAIT_COND,
    WAIT_SEMA,
    WAIT_SLEEP,
    WAIT_IO,
    WAIT_TIMER_STOP,
    WAIT_REASON_COUNT
} wait_reason;

const char *wait_reason_string(wait_reason r);

/*
 * A sudog is a goroutine in a wait list: a channel's send or receive queue,
 * or a semaphore's.  One G can be on many wait lists (select), so the lists
 * hold sudogs, not Gs.  Sudogs live on the waiting goroutine's stack, which
 * stays put while it is parked (C stacks never move).
 */
struct sudog {
    g *g;
    sudog *next;
    sudog *prev;
    void *elem;            /* channel: where to copy from / to */
    sudog *waitlink;       /* select: the G's list of sudogs */
    struct rt_chan *c;     /* channel it waits on */
    const void *addr;      /* sema: the address waited on */
    int64_t acquire_time;  /* sema: when the wait began (starvation) */
    uint32_t ticket;       /* sema: handoff flag / cond ticket */
    uint16_t case_index;   /* select: which case */
    bool is_select;
    bool success;          /* channel: completed by a value (false: closed) */
};

/*
 * The descriptor of a goroutine.  For default-size stacks it sits at the top
 * of its own stack mapping, so a parked goroutine costs one page of stack plus
 * this struct in that same page (see stack.c).
 */
struct g {
    void *sp;                    /* saved stack pointer while switched out */
    uintptr_t stack_lo;          /* lowest usable address (guard below) */
    uintptr_t stack_hi;          /* one past the highest usable address */
    size_t stack_size;           /* the mapping's usable size */
    _Atomic uint32_t status;     /* gstatus */
    _Atomic uint32_t wait_reason;
    _Atomic int64_t wait_since;  /* nanotime when it parked */
    uint64_t goid;
    rt_func fn;
    void *arg;
    const char *spawn_file;
    int spawn_line;
    bool custom_stack;           /* not the default size: unmapped at exit */
    g *schedlink;                /* run queue / free list link */
    g *all_next;                 /* sched.allg list (all goroutines ever made) */
    g *all_prev;
    m *m;                        /* the M running it, when running */
    void *param;                 /* passed by the waker to the parked G */
    sudog *waiting;              /* select: sudogs this G is queued on */
    _Atomic uint32_t select_done;/* select: a case has won the race */
    bool park_on_chan;           /* parked on a channel (select wakeup hint) */
    bool stack_trimmed;          /* free G whose stack RAM was returned */
    /* >0 while the goroutine runs runtime code that uses its M's P.  Only the
     * thread running the goroutine writes it; sysmon's preemption signal
     * handler (same thread) reads it and leaves the P alone when set. */
    _Atomic uint32_t in_runtime;
    void *tsan_fiber;            /* ThreadSanitizer fiber (sanitizer builds) */
    uint32_t tsan_reuses;        /* see tsan_rotate_g0_fiber (proc.c) */
    void *asan_fake_stack;       /* AddressSanitizer fake stack handle */
};

/* --------------------------------------------------------------- processors */

#define RUNQ_SIZE 256u

typedef enum pstatus {
    P_IDLE = 0,
    P_RUNNING,
    P_SYSCALL,     /* its M runs a goroutine without it: a blocking call, or a
                      CPU-bound goroutine sysmon preempted; sysmon may retake it */
} pstatus;

struct p {
    int id;
    _Atomic uint32_t status;
    _Atomic(m *) m;                /* the M holding it (NULL when idle or in a
                                      blocking call); read by sysmon */
    p *link;                       /* idle P list */
    _Atomic uint32_t schedtick;    /* +1 per goroutine switch (sysmon reads) */
    _Atomic uint32_t syscalltick;  /* +1 per blocking call (sysmon reads) */

    /* Local run queue: lock-free, single producer (the owner), many
     * consumers (the owner and stealers).  runnext holds the goroutine just
     * readied by the running one, run next to keep communicating pairs hot. */
    _Alignas(RT_CACHE_LINE) _Atomic uint32_t runq_head;
    _Atomic uint32_t runq_tail;
    _Atomic(g *) runnext;
    _Atomic(g *) runq[RUNQ_SIZE];

    /* Free dead Gs with default stacks, reused by spawn. */
    g *gfree;
    int32_t gfree_count;

    /* Timers (time.c): a 4-ary min-heap under timers_lock.  timer0_when is
     * the earliest deadline (0: none), read without the lock by stealers
     * and idle Ms. */
    _Alignas(RT_CACHE_LINE) rt_lock timers_lock;
    struct timer_slot *timers;
    uint32_t ntimers;
    uint32_t timers_cap;
    _Atomic int64_t timer0_when;
};

/* --------------------------------------------------------------------- threads */

struct m {
    int id;
    pthread_t thread;
    g g0;                          /* the scheduler context (thread stack) */
    void *g0_sp_top;               /* where mcall resets the g0 stack to */
    g *curg;                       /* goroutine running now, or NULL */
    p *p;                          /* attached P, or NULL */
    p *nextp;                      /* P handed over by startm */
    p *oldp;                       /* P it gave up for a blocking call */
    bool spinning;                 /* looking for work without having any */
    m *schedlink;                  /* idle M list */
    note park;                     /* sleeps here when idle */
    uint64_t rand_state;
    void (*mcall_fn)(g *gp, void *arg);  /* set by mcall, run on g0 */
    void *mcall_arg;
    void *sigstack;                /* alternate signal stack (overflow report) */
    size_t sigstack_size;
    void *tsan_fiber;              /* g0's fiber (rotated, see proc.c) */
    bool tsan_fiber_owned;         /* created by the runtime, not the thread's */
    uint32_t tsan_switches;
    void *asan_fake_stack;
    const void *asan_g0_bottom;
    size_t asan_g0_size;
};

/* ---------------------------------------------------------------- the scheduler
 * The runtime's only global mutable state: one struct, defined in proc.c.
 */
typedef struct sched_state {
    rt_lock lock;
    _Atomic bool started;          /* rt_main has begun */
    /* A thread that is not an M spawned after start: it may spawn again at
     * any time, so "every M idle" no longer proves a deadlock (as Go with
     * cgo threads calling in). */
    _Atomic bool foreign_spawner;
    int gomaxprocs;
    p *allp;                       /* array of gomaxprocs Ps */

    g *runq_head;                  /* global run queue (under lock) */
    g *runq_tail;
    _Atomic int32_t runq_size;

    p *pidle;                      /* idle Ps (under lock) */
    _Atomic int32_t npidle;
    m *midle;                      /* idle Ms (under lock) */
    int32_t nmidle;
    int32_t mcount;                /* Ms created */
    _Atomic int32_t nmspinning;

    /* The idle M that sleeps with a timeout for the earliest timer. */
    m *timer_sleeper;
    _Atomic int64_t timer_sleep_until;  /* its deadline; 0: no sleeper */

    rt_lock gfree_lock;            /* global free Gs (default stack) */
    g *gfree;
    _Atomic int32_t gfree_count;

    rt_lock allg_lock;             /* every G, for dumps and deadlock checks */
    g *allg;
    _Atomic int64_t ngoroutines;   /* alive (not dead) goroutines */
    _Atomic uint64_t next_goid;

    size_t page_size;

    /* sysmon (sysmon.c) */
    _Atomic bool sysmon_sleeping;  /* parked on sysmon_note: nothing runs */
    note sysmon_note;
    int32_t max_threads;           /* cap on Ms (blocking calls add Ms) */
} sched_state;

extern sched_state sched;

/* ------------------------------------------------------------------ proc.c */

g *getg(void);                      /* current goroutine, NULL on g0 / foreign */
m *getm(void);                      /* current M, NULL on a foreign thread */

/*
 * Park the current goroutine.  After its state is saved, unlockf(gp, arg)
 * runs on the scheduler stack (no goroutine is current then): it typically
 * releases the lock that protected the decision to sleep.  If unlockf
 * returns false the goroutine is resumed at once instead of parking.
 * unlockf may be NULL.  Returns when someone calls goready(gp).
 */
typedef bool (*park_unlock_fn)(g *gp, void *arg);
void gopark(park_unlock_fn unlockf, void *arg, wait_reason reason);
/* gopark that releases an rt_lock. */
void goparkunlock(rt_lock *l, wait_reason reason);
/* Make a parked goroutine runnable; it runs next on this P. */
void goready(g *gp);
/* Fatal runtime error: message, goroutine dump, exit status 2. */
_Noreturn void rt_throw(const char *msg);
_Noreturn void rt_throwf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Per-M random numbers (wyrand); fastrandn is uniform in [0, n). */
uint32_t fastrand(void);
uint32_t fastrandn(uint32_t n);

/* Wake an idle M if there is an idle P and nobody is looking for work. */
void wakep(void);

/*
 * Running runtime code on a goroutine that needs its M's P: raise
 * in_runtime (so sysmon cannot take the P), then get the P — taking one back
 * first if it was handed off while the goroutine ran without it, which may
 * move the goroutine to another M.  Returns the P.  Pair with g_leave.
 */
p *g_enter_slow(g *gp);
static inline p *g_enter(g *gp) {
    atomic_store_explicit(&gp->in_runtime,
                          atomic_load_explicit(&gp->in_runtime, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    /* gp->m is the M running gp (set by execute), so no thread-local read. */
    p *pp = gp->m->p;
    return rt_likely(pp != NULL) ? pp : g_enter_slow(gp);
}
static inline void g_leave(g *gp) {
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&gp->in_runtime,
                          atomic_load_explicit(&gp->in_runtime, memory_order_relaxed) - 1,
                          memory_order_relaxed);
}

/* sysmon.c / proc.c: the blocking-call machinery. */
bool runq_is_empty(p *pp);
/* Give away a P retaken from a blocking call: to an M if it has work. */
void handoffp(p *pp);
/* Called on the thread being preempted (signal handler): give up the P as
 * if the goroutine had entered a blocking call. */
void preempt_release_p(void);
/* The stack scavenger: trim cold free stacks (sysmon, once a second). */
void gfree_scavenge(void);
void sysmon_start(void);
void sysmon_wake(void);

/* ------------------------------------------------------------------ stack.c */

/* Allocate a G at the top of a fresh stack of stack_size usable bytes
 * (rounded up to pages), guard page below.  NULL when out of memory. */
g *stack_alloc_g(size_t stack_size, bool is_default);
/* Release the stack (and the G in it). Must not be running on it. */
void stack_free_g(g *gp);
/* Return a cached stack's memory to the OS, except its descriptor page. */
void stack_trim(g *gp);
/* Prepare a reused stack for a new goroutine (sanitizer bookkeeping). */
void stack_reuse(g *gp);
/* Which guard page a fault address falls in, if any (the SIGSEGV path). */
bool stack_fault_is_guard(const g *gp, uintptr_t addr);
/* Idempotent and thread-safe (pthread_once): rt_main and early rt_go calls. */
void stack_init(void);
const char *stack_guard_mode(void);

/* ------------------------------------------------------------------ time.c */

/* A heap entry keeps the deadline next to the pointer, so sifting compares
 * without touching the timers themselves (which live on goroutine stacks
 * scattered over memory). */
struct timer_slot {
    int64_t when;
    timer *t;
};

struct rt_timer_internal {
    int64_t when;                  /* monotonic deadline */
    int64_t period;                /* > 0: re-armed after each fire */
    void (*fn)(void *arg, int64_t now);  /* runs on the scheduler; must not block */
    void *arg;
    _Atomic(p *) pp;               /* heap it is in, or NULL */
    int32_t heap_index;
    _Atomic uint32_t running;      /* fn executing now */
    bool fn_owns;                  /* fn takes the timer over (may free it);
                                      the runtime never touches it after
                                      calling fn, and nobody may delete it */
};
void timer_add(timer *t, int64_t when);        /* on the current P's heap */
bool timer_del(timer *t);                      /* true if it was pending */
/* Run this P's expired timers; returns the next deadline (0 if none). */
int64_t timers_run(p *pp, int64_t now);
/* Earliest timer over all Ps (0 if none). */
int64_t timers_earliest(void);
/* Called when a timer with deadline `when` is added: wake a sleeping M if
 * it would oversleep it. */
void timer_wake_sleeper(int64_t when);

/* ------------------------------------------------------------------ diag.c */

void diag_init(void);                          /* signal handlers, SIGQUIT thread */
void diag_thread_init(m *mp);                  /* per-M alternate signal stack */
void diag_dump_all(int fd);                    /* the goroutine dump */
_Noreturn void diag_deadlock(void);

/* --------------------------------------------------------------- netpoll.c */

/* Goroutines parked on network I/O.  The poller thread (not an M) may still
 * make them runnable, so while this is > 0 no deadlock can be declared. */
int64_t netpoll_waiters(void);

/* --------------------------------------------------------------- sanitizers */

#if defined(__SANITIZE_THREAD__)
#define RT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RT_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define RT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RT_ASAN 1
#endif
#endif

#endif /* LEDGERD_RT_INTERNAL_H */
