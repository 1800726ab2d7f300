/*
 * sysmon.c — the monitor thread (Go's sysmon).
 *
 * One thread, outside the scheduler (it holds no P and runs no goroutine),
 * that watches the processors and fixes what cooperative scheduling cannot:
 *
 *   1. Blocking calls.  A P whose goroutine entered a blocking call
 *      (rt_blocking_enter) sits in P_SYSCALL.  If it is still there one
 *      sysmon tick later (its syscalltick did not move) and it has work, or
 *      nobody else is looking for work, or the call has lasted 10 ms,
 *      sysmon retakes it and hands it to another thread (handoffp).
 *
 *   2. CPU-bound goroutines.  A P whose schedtick has not moved for 10 ms
 *      is running one goroutine that is not calling the runtime.  If other
 *      work is waiting on that P (its run queue, an expired timer, or the
 *      global queue with no idle P to take it), sysmon sends the thread
 *      SIGURG; the handler releases the P as a blocking call would
 *      (preempt_release_p), and the next tick retakes and hands it off.
 *      The computing goroutine keeps its thread: C code cannot be
 *      preempted at an arbitrary instruction.
 *
 *   3. The stack scavenger: about once a second, return the RAM of cold
 *      free goroutine stacks (gfree_scavenge).
 *
 * Cost.  sysmon sleeps 20 µs between checks while things happen, doubling
 * up to 2 ms while any P runs (10 ms when only blocking calls are out)
 * when nothing needs it; when every P is idle it parks on a note
 * until startm()/rt_blocking_enter() wake it, so an idle process has no
 * periodic wakeups at all.
 */
#define _GNU_SOURCE
#include "rt_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    SYSMON_MIN_DELAY_US = 20,
    SYSMON_MAX_DELAY_US = 10000,
    /* While goroutines run, look at least this often, so a CPU-bound
     * goroutine is noticed within FORCE_PREEMPT_NS + 2 ms, not + 10 ms. */
    SYSMON_BUSY_MAX_DELAY_US = 2000,
    SYSMON_IDLE_BEFORE_BACKOFF = 50,
};
#define FORCE_PREEMPT_NS (10 * RT_MILLISECOND)
#define SYSCALL_HANDOFF_NS (10 * RT_MILLISECOND)
#define SCAVENGE_PERIOD_NS (1 * RT_SECOND)

/* What sysmon saw of each P last time (sysmon's own memory). */
typedef struct p_record {
    uint32_t schedtick;
    int64_t schedwhen;
    uint32_t syscalltick;
    int64_t syscallwhen;
} p_record;

static void on_preempt_signal(int sig) {
    (void)sig;
    int saved = errno;
    preempt_release_p();
    errno = saved;
}

static bool p_has_waiting_work(p *pp, int64_t now) {
    if (!runq_is_empty(pp)) return true;
    int64_t w = atomic_load_explicit(&pp->timer0_when, memory_order_acquire);
    if (w != 0 && w <= now) return true;
    return atomic_load(&sched.runq_size) > 0 && atomic_load(&sched.npidle) == 0;
}

/* One pass over the Ps; returns how many it had to act on. */
static int retake(p_record *rec, int64_t now) {
    int acted = 0;
    for (int i = 0; i < sched.gomaxprocs; i++) {
        p *pp = &sched.allp[i];
        p_record *r = &rec[i];
        uint32_t status = atomic_load_explicit(&pp->status, memory_order_acquire);
        if (status == P_SYSCALL) {
            uint32_t t = atomic_load_explicit(&pp->syscalltick, memory_order_relaxed);
            if (r->syscalltick != t) {
                r->syscalltick = t;
                r->syscallwhen = now;
                continue;
            }
            /* Leave it if nothing waits for it and others are around to
             * pick up new work — the call will likely return soon. */
            if (runq_is_empty(pp) &&
                atomic_load_explicit(&pp->timer0_when, memory_order_relaxed) == 0 &&
                atomic_load(&sched.nmspinning) + atomic_load(&sched.npidle) > 0 &&
                now - r->syscallwhen < SYSCALL_HANDOFF_NS)
                continue;
            uint32_t expected = P_SYSCALL;
            if (atomic_compare_exchange_strong(&pp->status, &expected, P_IDLE)) {
                acted++;
                handoffp(pp);
            }
        } else if (status == P_RUNNING) {
            uint32_t t = atomic_load_explicit(&pp->schedtick, memory_order_relaxed);
            if (r->schedtick != t) {
                r->schedtick = t;
                r->schedwhen = now;
                continue;
            }
            if (now - r->schedwhen < FORCE_PREEMPT_NS || !p_has_waiting_work(pp, now)) continue;
            m *mp = atomic_load_explicit(&pp->m, memory_order_acquire);
            if (mp) {
                pthread_kill(mp->thread, SIGURG);
                r->schedwhen = now;   /* give the handler a tick to act */
                acted++;
            }
        }
    }
    return acted;
}

static bool all_ps_idle(void) { return atomic_load(&sched.npidle) == sched.gomaxprocs; }

void sysmon_wake(void) {
    if (atomic_load_explicit(&sched.sysmon_sleeping, memory_order_relaxed) &&
        atomic_exchange(&sched.sysmon_sleeping, false))
        note_wakeup(&sched.sysmon_note);
}

static void *sysmon_main(void *arg) {
    (void)arg;
    p_record *rec = calloc((size_t)sched.gomaxprocs, sizeof *rec);
    if (!rec) return NULL;
    int64_t delay_us = SYSMON_MIN_DELAY_US;
    int idle_rounds = 0;
    int64_t last_scavenge = rt_nanotime();
    for (;;) {
        if (idle_rounds > SYSMON_IDLE_BEFORE_BACKOFF) delay_us *= 2;
        int64_t cap = atomic_load(&sched.npidle) < sched.gomaxprocs ? SYSMON_BUSY_MAX_DELAY_US
                                                                    : SYSMON_MAX_DELAY_US;
        if (delay_us > cap) delay_us = cap;
        struct timespec ts = { 0, (long)(delay_us * 1000) };
        nanosleep(&ts, NULL);

        if (all_ps_idle()) {
            /* Nothing runs: sleep until someone starts an M. */
            note_clear(&sched.sysmon_note);
            atomic_store(&sched.sysmon_sleeping, true);
            if (all_ps_idle()) {
                note_sleep(&sched.sysmon_note);
            } else if (!atomic_exchange(&sched.sysmon_sleeping, false)) {
                note_sleep(&sched.sysmon_note);   /* a waker is on its way */
            }
            delay_us = SYSMON_MIN_DELAY_US;
            idle_rounds = 0;
            continue;
        }

        int64_t now = rt_nanotime();
        if (retake(rec, now) > 0) {
            idle_rounds = 0;
            delay_us = SYSMON_MIN_DELAY_US;
        } else {
            idle_rounds++;
        }
        if (now - last_scavenge >= SCAVENGE_PERIOD_NS) {
            last_scavenge = now;
            gfree_scavenge();
        }
    }
    return NULL;
}

void sysmon_start(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_preempt_signal;
    sa.sa_flags = SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGURG, &sa, NULL);

    if (os_thread_start(NULL, sysmon_main, NULL, 256 * 1024) != 0)
        rt_throw("runtime: cannot start the monitor thread");
}
