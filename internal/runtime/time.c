/*
 * time.c — timers, sleep, rt_after, and timer/ticker channels.
 *
 * As in Go (runtime/time.go), each P owns a heap of the timers added by the
 * goroutines running on it, so adding a timer takes only that P's lock and
 * touches only that P's cache lines.  The heap is 4-ary (shallower than a
 * binary heap; a sift touches fewer cache lines) ordered by `when`.
 *
 * Who runs timers.  The scheduler (proc.c) checks its own P's earliest
 * deadline (timer0_when, an atomic readable without the lock) each time it
 * looks for work, and an M that is about to steal also runs the expired
 * timers of other Ps, so the timers of an idle P are not stranded.  When all
 * Ms are idle, one of them sleeps with a timeout equal to the earliest
 * deadline over all Ps; adding an earlier timer wakes it (timer_wake_sleeper).
 *
 * Timer functions run on the scheduler stack (g0), with no goroutine
 * current, and must not block: sleep's readies a goroutine, channel timers
 * do a non-blocking send of the fire time on a 1-element channel (a reader
 * that is late simply finds the value waiting; a ticker drops ticks for a
 * slow reader, as Go's does).
 *
 * Invariants.  A timer is in at most one heap; t->pp names it (NULL when in
 * none) and changes only under that heap's lock.  A periodic timer is
 * re-armed in the heap before its function runs, so a concurrent stop always
 * finds it.  `running` is set, under the lock, while the function runs, and
 * timer_del waits for it to clear, so after rt_timer_stop/rt_timer_free
 * returns the function is not running and never will again.  A timer with
 * fn_owns set (sleep, rt_after) belongs to its function once it fires: the
 * runtime does not touch it afterwards and nobody may delete it.
 *
 * Sleep parks with the timer on the sleeping goroutine's own stack, and adds
 * it in gopark's unlock function — i.e. after the goroutine is off its
 * stack — so the timer cannot fire and ready a goroutine still running.
 */
#include "rt_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------- the heap */

static inline void heap_set(p *pp, uint32_t i, struct timer_slot slot) {
    pp->timers[i] = slot;
    slot.t->heap_index = (int32_t)i;
}

static void sift_up(p *pp, uint32_t i) {
    struct timer_slot slot = pp->timers[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 4;
        if (pp->timers[parent].when <= slot.when) break;
        heap_set(pp, i, pp->timers[parent]);
        i = parent;
    }
    heap_set(pp, i, slot);
}

static void sift_down(p *pp, uint32_t i) {
    uint32_t n = pp->ntimers;
    struct timer_slot slot = pp->timers[i];
    for (;;) {
        uint32_t c = i * 4 + 1;
        if (c >= n) break;
        uint32_t best = c;
        uint32_t end = c + 4 < n ? c + 4 : n;
        for (uint32_t k = c + 1; k < end; k++)
            if (pp->timers[k].when < pp->timers[best].when) best = k;
        if (pp->timers[best].when >= slot.when) break;
        heap_set(pp, i, pp->timers[best]);
        i = best;
    }
    heap_set(pp, i, slot);
}

static void update_timer0(p *pp) {
    atomic_store_explicit(&pp->timer0_when, pp->ntimers ? pp->timers[0].when : 0,
                          memory_order_release);
}

/* Remove the entry at index i.  Under the lock. */
static void heap_remove(p *pp, uint32_t i) {
    uint32_t last = --pp->ntimers;
    if (i != last) {
        heap_set(pp, i, pp->timers[last]);
        sift_down(pp, i);
        sift_up(pp, (uint32_t)pp->timers[i].t->heap_index);
    }
    pp->timers[last] = (struct timer_slot){ 0, NULL };
}

static bool heap_push(p *pp, timer *t) {
    if (pp->ntimers == pp->timers_cap) {
        uint32_t cap = pp->timers_cap ? pp->timers_cap * 2 : 64;
        struct timer_slot *grown = realloc(pp->timers, cap * sizeof *grown);
        if (!grown) return false;
        pp->timers = grown;
        pp->timers_cap = cap;
    }
    heap_set(pp, pp->ntimers++, (struct timer_slot){ t->when, t });
    sift_up(pp, pp->ntimers - 1);
    return true;
}

/* ----------------------------------------------------------- operations */

void timer_add(timer *t, int64_t when) {
    /* The heap is protected by its lock, not by owning the P, so any P will
     * do: the current M's if it has one (read once: sysmon's signal may
     * clear it), else the first.  Never stops to take a P back — callers
     * may hold runtime locks. */
    m *mp = getm();
    p *pp = mp ? mp->p : NULL;
    if (!pp) pp = &sched.allp[0];
    if (when <= 0) when = 1;   /* 0 means "no timer" in timer0_when */
    lock_acquire(&pp->timers_lock);
    t->when = when;
    if (!heap_push(pp, t)) {
        lock_release(&pp->timers_lock);
        rt_throw("out of memory growing the timer heap");
    }
    atomic_store_explicit(&t->pp, pp, memory_order_release);
    update_timer0(pp);
    lock_release(&pp->timers_lock);
    timer_wake_sleeper(when);
}

/* Wait until t's function is not running (it never blocks, so this is short). */
static void wait_not_running(timer *t) {
    while (atomic_load_explicit(&t->running, memory_order_acquire)) {
        if (getg()) rt_yield();
        else os_yield();
    }
}

bool timer_del(timer *t) {
    for (;;) {
        p *pp = atomic_load_explicit(&t->pp, memory_order_acquire);
        if (!pp) {
            wait_not_running(t);
            return false;
        }
        lock_acquire(&pp->timers_lock);
        if (atomic_load_explicit(&t->pp, memory_order_relaxed) != pp) {
            lock_release(&pp->timers_lock);
            continue;   /* fired or moved meanwhile: look again */
        }
        heap_remove(pp, (uint32_t)t->heap_index);
        atomic_store_explicit(&t->pp, NULL, memory_order_relaxed);
        update_timer0(pp);
        lock_release(&pp->timers_lock);
        wait_not_running(t);
        return true;
    }
}

int64_t timers_run(p *pp, int64_t now) {
    lock_acquire(&pp->timers_lock);
    while (pp->ntimers > 0 && pp->timers[0].when <= now) {
        timer *t = pp->timers[0].t;
        void (*fn)(void *, int64_t) = t->fn;
        void *arg = t->arg;
        bool owned = t->fn_owns;
        if (t->period > 0) {
            /* Re-arm before running; skip ticks we are already late for. */
            int64_t next = t->when + t->period;
            if (next <= now) next = now + t->period - (now - t->when) % t->period;
            t->when = next;
            pp->timers[0].when = next;
            sift_down(pp, 0);
        } else {
            heap_remove(pp, 0);
            atomic_store_explicit(&t->pp, NULL, memory_order_relaxed);
        }
        if (!owned) atomic_store_explicit(&t->running, 1, memory_order_relaxed);
        update_timer0(pp);
        lock_release(&pp->timers_lock);
        fn(arg, now);
        if (!owned) atomic_store_explicit(&t->running, 0, memory_order_release);
        lock_acquire(&pp->timers_lock);
    }
    update_timer0(pp);
    int64_t next = pp->ntimers ? pp->timers[0].when : 0;
    lock_release(&pp->timers_lock);
    return next;
}

int64_t timers_earliest(void) {
    int64_t best = 0;
    for (int i = 0; i < sched.gomaxprocs; i++) {
        int64_t w = atomic_load_explicit(&sched.allp[i].timer0_when, memory_order_acquire);
        if (w != 0 && (best == 0 || w < best)) best = w;
    }
    return best;
}

/* ---------------------------------------------------------------- sleep */

static void sleep_fire(void *arg, int64_t now) {
    (void)now;
    goready((g *)arg);
}

static bool sleep_arm(g *gp, void *arg) {
    (void)gp;
    timer *t = arg;
    timer_add(t, t->when);
    return true;
}

void rt_sleep(int64_t ns) {
    g *gp = getg();
    if (!gp) {
        /* A plain thread: there is nothing to park, sleep the thread. */
        if (ns > 0) {
            struct timespec ts = { ns / RT_SECOND, ns % RT_SECOND };
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
        return;
    }
    if (ns <= 0) {
        rt_yield();
        return;
    }
    timer t;
    memset(&t, 0, sizeof t);
    t.fn = sleep_fire;
    t.arg = gp;
    t.fn_owns = true;
    t.when = rt_nanotime() + ns;
    gopark(sleep_arm, &t, WAIT_SLEEP);
}

/* ------------------------------------------------------- channel timers */

struct rt_timer {
    timer t;
    rt_chan *c;
};

static void chan_timer_fire(void *arg, int64_t now) {
    struct rt_timer *rt = arg;
    (void)rt_chan_try_send(rt->c, &now);
}

static int chan_timer_new(rt_timer **out, int64_t ns, int64_t period) {
    *out = NULL;
    if (!getg() && !(getm() && getm()->p)) return RT_ESTATE;
    struct rt_timer *t = calloc(1, sizeof *t);
    if (!t) return RT_ENOMEM;
    int rc = rt_chan_make(&t->c, sizeof(int64_t), 1);
    if (rc != RT_OK) {
        free(t);
        return rc;
    }
    t->t.fn = chan_timer_fire;
    t->t.arg = t;
    t->t.period = period;
    timer_add(&t->t, rt_nanotime() + ns);
    *out = t;
    return RT_OK;
}

int rt_timer_new(rt_timer **out, int64_t ns) { return chan_timer_new(out, ns, 0); }

int rt_ticker_new(rt_timer **out, int64_t period) {
    if (period <= 0) {
        *out = NULL;
        return RT_EINVAL;
    }
    return chan_timer_new(out, period, period);
}

rt_chan *rt_timer_chan(rt_timer *t) { return t->c; }

bool rt_timer_stop(rt_timer *t) { return timer_del(&t->t); }

bool rt_timer_reset(rt_timer *t, int64_t ns) {
    bool was_pending = timer_del(&t->t);
    if (t->t.period > 0) t->t.period = ns > 0 ? ns : t->t.period;
    timer_add(&t->t, rt_nanotime() + ns);
    return was_pending;
}

void rt_timer_free(rt_timer *t) {
    if (!t) return;
    timer_del(&t->t);
    rt_chan_release(t->c);
    free(t);
}

/* rt_after: a one-shot timer that owns itself and a reference to its
 * channel; it frees itself when it fires. */
typedef struct after_timer {
    timer t;
    rt_chan *c;
} after_timer;

static void after_fire(void *arg, int64_t now) {
    after_timer *a = arg;
    (void)rt_chan_try_send(a->c, &now);
    rt_chan_release(a->c);
    free(a);
}

rt_chan *rt_after(int64_t ns) {
    if (!getg() && !(getm() && getm()->p)) return NULL;
    after_timer *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    if (rt_chan_make(&a->c, sizeof(int64_t), 1) != RT_OK) {
        free(a);
        return NULL;
    }
    rt_chan *c = a->c;
    rt_chan_retain(c);      /* one for the caller, one for the timer */
    a->t.fn = after_fire;
    a->t.arg = a;
    a->t.fn_owns = true;
    /* Once added, the timer may fire on another M and free `a`. */
    timer_add(&a->t, rt_nanotime() + (ns > 0 ? ns : 0));
    return c;
}
