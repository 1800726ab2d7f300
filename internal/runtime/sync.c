/*
 * sync.c — rt_mutex, rt_rwmutex, rt_waitgroup, rt_once and rt_cond: Go's
 * sync package (mutex.go, rwmutex.go, waitgroup.go, once.go, cond.go as of
 * Go 1.19+) over the goroutine semaphores of sema.c.
 *
 * Every type works at its zero value and blocks only goroutines: contended
 * paths park on a semaphore embedded in the type (sema_acquire), never on
 * an OS primitive.  Uncontended paths are one atomic read-modify-write.
 *
 * rt_mutex
 * --------
 * state packs four things (Go's layout, which the tests also rely on):
 *
 *   bit 0  MUTEX_LOCKED    someone holds the mutex
 *   bit 1  MUTEX_WOKEN     a waiter is awake and competing (spinning or just
 *                          woken), so unlock need not wake another one
 *   bit 2  MUTEX_STARVING  starvation mode (below)
 *   3..31  waiters         goroutines parked (or about to park) on m->sema
 *
 * Lock: CAS 0 -> LOCKED.  Unlock: atomic add -LOCKED; if the result is not
 * 0 there are waiters or flags and the slow path decides whom to wake.
 *
 * Normal mode: a woken waiter does not own the mutex; it competes with
 * newly arriving goroutines, which usually win (they are already running).
 * That is fast — the lock stays on one P — but unfair.  A woken waiter that
 * loses queues again at the front (lifo).  A waiter that has waited more
 * than 1 ms in total (STARVATION_NS, measured from its first park) switches
 * the mutex to starvation mode the next time it fails.
 *
 * Starvation mode: unlock hands the mutex directly to the waiter at the front
 * of the queue (sema_release with handoff): LOCKED stays clear in state, the
 * woken waiter owns the mutex and sets LOCKED itself while removing itself
 * from the waiter count.  New arrivals do not try to acquire or spin; they
 * queue at the tail.  The last waiter, or one that waited less than 1 ms,
 * switches back to normal mode.
 *
 * Invariants: LOCKED is set by exactly one owner at a time (a successful
 * CAS from a state without LOCKED|STARVING, or the handoff path); WOKEN is
 * set by at most one goroutine, which clears it in its next successful CAS;
 * in starvation mode the waiter count is >= 1 whenever the mutex is unlocked
 * and waiting to be handed off (the throw below checks it).
 *
 * Giving up (rt_mutex_lock_ctx, rt_mutex_lock_timeout; Go has no such API).
 * The slow path is lockSlow's loop with sema_acquire_ctx in place of
 * sema_acquire.  When that returns an error the goroutine holds no
 * semaphore count but is still counted in the waiter field, and must
 * leave it without breaking the two accounts unlock relies on:
 *
 *   normal mode     every goroutine parked on (or heading for) m->sema is
 *                   either counted in waiters or has a count on its way in
 *                   m->sema (unlock converts one waiter into one count and
 *                   sets WOKEN).  So: if waiters > 0, decrement it (CAS)
 *                   and return the error; the mutex is as if we had never
 *                   queued.  If waiters == 0, an unlock has already turned
 *                   our place into a count: wait for it (plain
 *                   sema_acquire — the unlock is between its CAS and its
 *                   release, so this is short), then carry on as a woken
 *                   waiter (WOKEN is ours): the loop takes the mutex if it
 *                   is free, or queues again, and sema_acquire_ctx then
 *                   fails at once and we leave through this path again.
 *   starvation      waiters counts every waiter; an unlock hands the mutex
 *                   to one of them with the count (LOCKED clear until the
 *                   receiver sets it).  If we are the last waiter and the
 *                   mutex is unlocked, that handoff is ours: take it
 *                   (sema_acquire, then the usual handoff path) and return
 *                   success — the mutex was handed to us.  Otherwise
 *                   decrement waiters, and if we were the last one (the
 *                   mutex is then locked) clear STARVING too, since unlock
 *                   in starvation mode expects a waiter to hand off to.
 *
 * A goroutine woken with a count (normal mode) whose context is done by
 * then still takes the mutex if it is free; otherwise it queues, fails at
 * once and leaves as above.  So success means the mutex is held, and an
 * error means it is not and the state word is as if we had never come.
 *
 * Spinning: only while the mutex is locked in normal mode, at most
 * ACTIVE_SPIN rounds of proc_yield(ACTIVE_SPIN_CNT), and only if another P
 * is running (so the holder may release soon) and this P has nothing else
 * to run (spinning would delay it) — Go's runtime_canSpin.
 *
 * Memory order: whatever takes the mutex does so with an acquire RMW (the
 * CAS setting LOCKED, or the handoff's add), and unlock's add is a release;
 * RMWs extend release sequences, so the owner always synchronises with the
 * previous owner's unlock.  Slow-path CASes are acq_rel for simplicity (the
 * cost on x86 is the same).  The semaphore itself is sequentially consistent.
 *
 * rt_rwmutex
 * ----------
 * Go's algorithm.  reader_count counts readers holding or waiting for the
 * lock; a writer subtracts RWMUTEX_MAX_READERS (after taking w, which
 * serialises writers), so a negative count tells new readers to park on
 * reader_sem, and the readers already inside (r) are recorded in
 * reader_wait; each of them decrements reader_wait on RUnlock and the last
 * releases writer_sem.  Unlock adds RWMUTEX_MAX_READERS back and releases
 * reader_sem once per reader that arrived meanwhile.  A blocked writer
 * therefore keeps new readers out (writer preference, no writer starvation).
 *
 * rt_waitgroup
 * ------------
 * state: counter in the high 32 bits, number of waiters in the low 32.
 * Wait increments the waiter count with a CAS (only while counter > 0) and
 * parks on sema.  The Add that brings the counter to 0 with waiters present
 * resets state to 0 and releases sema once per waiter.  Add/Done are acq_rel
 * so that the final Add carries every earlier Done's writes to the waiters.
 *
 * rt_once
 * -------
 * done is read with acquire on the fast path; the slow path runs fn under
 * the mutex and stores done = 1 with release after fn returns, so every
 * caller that returns has seen fn's effects.  (If fn leaves with rt_goexit
 * the mutex stays locked and later callers block: C has no defer.)
 *
 * rt_cond
 * -------
 * Go's Cond over the notify list of sema.c: take a ticket, unlock the mutex,
 * wait for the ticket to be notified, lock the mutex again.  No spurious
 * wakeups are generated, but callers should still re-check their condition
 * in a loop (another goroutine may get the mutex first).
 */
#include "sema_internal.h"

/* ------------------------------------------------------------------- mutex */

enum {
    MUTEX_LOCKED = 1,
    MUTEX_WOKEN = 2,
    MUTEX_STARVING = 4,
    MUTEX_WAITER_SHIFT = 3,
    MUTEX_WAITER_ONE = 1 << MUTEX_WAITER_SHIFT,
};

#define STARVATION_NS RT_MILLISECOND
#define ACTIVE_SPIN 4
#define ACTIVE_SPIN_CNT 30

static int32_t mutex_waiters(int32_t state) { return state >> MUTEX_WAITER_SHIFT; }

static int32_t mutex_load(rt_mutex *mu) {
    return atomic_load_explicit(&mu->state, memory_order_relaxed);
}

static bool mutex_cas(rt_mutex *mu, int32_t *old, int32_t new_state) {
    return atomic_compare_exchange_strong_explicit(&mu->state, old, new_state,
                                                   memory_order_acq_rel,
                                                   memory_order_relaxed);
}

static bool run_queue_empty(p *pp) {
    return atomic_load_explicit(&pp->runq_head, memory_order_relaxed) ==
               atomic_load_explicit(&pp->runq_tail, memory_order_relaxed) &&
           atomic_load_explicit(&pp->runnext, memory_order_relaxed) == NULL;
}

/* Go's runtime_canSpin: spinning can only help if the holder is running on
 * another P, and must not delay goroutines queued on ours. */
static bool mutex_can_spin(int iter) {
    if (iter >= ACTIVE_SPIN) return false;
    int32_t idle = atomic_load_explicit(&sched.npidle, memory_order_relaxed) +
                   atomic_load_explicit(&sched.nmspinning, memory_order_relaxed);
    if (sched.gomaxprocs <= idle + 1) return false;
    m *mp = getm();
    if (mp == NULL) return false;
    /* One read: sysmon's preemption signal may clear mp->p on this thread
     * at any moment (a stale P is harmless here: Ps are never freed). */
    p *pp = *(p *volatile *)&mp->p;
    return pp != NULL && run_queue_empty(pp);
}

/* The state to CAS in for one attempt of lock_slow (Go's lockSlow body). */
static int32_t mutex_next_state(int32_t old, bool starving, bool awoke) {
    int32_t new_state = old;
    if (!(old & MUTEX_STARVING)) new_state |= MUTEX_LOCKED;   /* try to take it */
    if (old & (MUTEX_LOCKED | MUTEX_STARVING)) new_state += MUTEX_WAITER_ONE;
    /* Switch to starvation only while locked: unlock expects a starving
     * mutex to have waiters, which would not hold if we took it now. */
    if (starving && (old & MUTEX_LOCKED)) new_state |= MUTEX_STARVING;
    if (awoke) {
        if (!(new_state & MUTEX_WOKEN)) rt_throw("sync: inconsistent mutex state");
        new_state &= ~MUTEX_WOKEN;
    }
    return new_state;
}

/* Woken in starvation mode: the mutex was handed to us.  Take it, leave the
 * waiter count, and end starvation mode if we are the last waiter or did
 * not wait long. */
static void mutex_take_handoff(rt_mutex *mu, int32_t old, bool starving) {
    if ((old & (MUTEX_LOCKED | MUTEX_WOKEN)) || mutex_waiters(old) == 0)
        rt_throw("sync: inconsistent mutex state");
    int32_t delta = MUTEX_LOCKED - MUTEX_WAITER_ONE;
    if (!starving || mutex_waiters(old) == 1) delta -= MUTEX_STARVING;
    atomic_fetch_add_explicit(&mu->state, delta, memory_order_acq_rel);
}

/* How mutex_leave_waiters left the waiter count. */
typedef enum mutex_leave {
    MUTEX_LEFT,          /* decremented: we are gone */
    MUTEX_WAKEUP_OURS,   /* a wakeup (count on m->sema) is on its way to us */
} mutex_leave;

/* Leave the waiter count after sema_acquire_ctx gave up (see the top). */
static mutex_leave mutex_leave_waiters(rt_mutex *mu) {
    int32_t old = mutex_load(mu);
    for (;;) {
        int32_t waiters = mutex_waiters(old);
        int32_t new_state;
        if (old & MUTEX_STARVING) {
            if (waiters == 0) rt_throw("sync: inconsistent mutex state");
            if (!(old & MUTEX_LOCKED) && waiters == 1) return MUTEX_WAKEUP_OURS;
            new_state = old - MUTEX_WAITER_ONE;
            if (waiters == 1) new_state &= ~MUTEX_STARVING;
        } else {
            if (waiters == 0) return MUTEX_WAKEUP_OURS;
            new_state = old - MUTEX_WAITER_ONE;
        }
        if (mutex_cas(mu, &old, new_state)) return MUTEX_LEFT;
    }
}

/* mutex_lock_slow that gives up when ctx is done or at deadline (0: none).
 * Returns RT_OK with the mutex held, or the error with it not held. */
__attribute__((noinline)) static int mutex_lock_slow_ctx(rt_mutex *mu, rt_context *ctx,
                                                         int64_t deadline) {
    int64_t wait_start = 0;
    bool starving = false;
    bool awoke = false;
    int iter = 0;
    int32_t old = mutex_load(mu);
    for (;;) {
        if ((old & (MUTEX_LOCKED | MUTEX_STARVING)) == MUTEX_LOCKED && mutex_can_spin(iter)) {
            if (!awoke && !(old & MUTEX_WOKEN) && mutex_waiters(old) != 0 &&
                mutex_cas(mu, &old, old | MUTEX_WOKEN))
                awoke = true;
            proc_yield(ACTIVE_SPIN_CNT);
            iter++;
            old = mutex_load(mu);
            continue;
        }
        int32_t new_state = mutex_next_state(old, starving, awoke);
        if (!mutex_cas(mu, &old, new_state)) continue;   /* old reloaded */
        if (!(old & (MUTEX_LOCKED | MUTEX_STARVING))) return RT_OK;   /* got it */

        bool requeue = wait_start != 0;
        if (wait_start == 0) wait_start = rt_nanotime();
        int rc = sema_acquire_ctx(&mu->sema, requeue, WAIT_MUTEX, ctx, deadline);
        if (rc != RT_OK) {
            if (mutex_leave_waiters(mu) == MUTEX_LEFT) return rc;
            sema_acquire(&mu->sema, false, WAIT_MUTEX);   /* ours, and imminent */
        }
        starving = starving || rt_nanotime() - wait_start > STARVATION_NS;
        old = mutex_load(mu);
        if (old & MUTEX_STARVING) {
            mutex_take_handoff(mu, old, starving);
            return RT_OK;
        }
        awoke = true;
        iter = 0;
    }
}

int rt_mutex_lock_ctx(rt_context *ctx, rt_mutex *mu) {
    if (ctx == NULL || ctx == rt_context_background()) {
        rt_mutex_lock(mu);
        return RT_OK;
    }
    /* A done context wins when it is checked first: no attempt at all. */
    int err = rt_context_err(ctx);
    if (err != 0) return err;
    int32_t unlocked = 0;
    if (rt_likely(atomic_compare_exchange_strong_explicit(
            &mu->state, &unlocked, MUTEX_LOCKED, memory_order_acquire, memory_order_relaxed)))
        return RT_OK;
    return mutex_lock_slow_ctx(mu, ctx, 0);
}

int rt_mutex_lock_timeout(rt_mutex *mu, int64_t timeout) {
    /* Try first, so that a timeout <= 0 is a trylock. */
    if (rt_mutex_trylock(mu)) return RT_OK;
    if (timeout <= 0) return RT_ETIMEDOUT;
    int64_t deadline;
    if (__builtin_add_overflow(rt_nanotime(), timeout, &deadline)) deadline = INT64_MAX;
    return mutex_lock_slow_ctx(mu, NULL, deadline);
}

void rt_mutex_lock(rt_mutex *mu) {
    int32_t unlocked = 0;
    if (rt_likely(atomic_compare_exchange_strong_explicit(
            &mu->state, &unlocked, MUTEX_LOCKED, memory_order_acquire, memory_order_relaxed)))
        return;
    /* With no context and no deadline the cancellable slow path never gives
     * up (sema_acquire_ctx is then plain sema_acquire): one loop serves both. */
    (void)mutex_lock_slow_ctx(mu, NULL, 0);
}

bool rt_mutex_trylock(rt_mutex *mu) {
    int32_t old = mutex_load(mu);
    if (old & (MUTEX_LOCKED | MUTEX_STARVING)) return false;
    /* There may be a goroutine in starvation mode waiting to be handed the
     * mutex; taking it only when not starving keeps that promise. */
    return atomic_compare_exchange_strong_explicit(&mu->state, &old, old | MUTEX_LOCKED,
                                                   memory_order_acquire,
                                                   memory_order_relaxed);
}

__attribute__((noinline)) static void mutex_unlock_slow(rt_mutex *mu, int32_t new_state) {
    if (!((new_state + MUTEX_LOCKED) & MUTEX_LOCKED)) rt_throw("sync: unlock of unlocked mutex");
    if (new_state & MUTEX_STARVING) {
        /* Hand the mutex to the first waiter and give it our time slice.
         * LOCKED stays clear; the waiter sets it. */
        sema_release(&mu->sema, true);
        return;
    }
    int32_t old = new_state;
    for (;;) {
        /* Nobody to wake, or someone already took the mutex, or a waiter
         * is already awake, or it went into starvation: done. */
        if (mutex_waiters(old) == 0 ||
            (old & (MUTEX_LOCKED | MUTEX_WOKEN | MUTEX_STARVING)))
            return;
        if (mutex_cas(mu, &old, (old - MUTEX_WAITER_ONE) | MUTEX_WOKEN)) {
            sema_release(&mu->sema, false);
            return;
        }
    }
}

void rt_mutex_unlock(rt_mutex *mu) {
    int32_t new_state =
        atomic_fetch_sub_explicit(&mu->state, MUTEX_LOCKED, memory_order_release) - MUTEX_LOCKED;
    if (rt_unlikely(new_state != 0)) mutex_unlock_slow(mu, new_state);
}

/* ----------------------------------------------------------------- rwmutex */

#define RWMUTEX_MAX_READERS (1 << 30)

void rt_rwmutex_rlock(rt_rwmutex *rw) {
    if (atomic_fetch_add_explicit(&rw->reader_count, 1, memory_order_acq_rel) + 1 < 0)
        sema_acquire(&rw->reader_sem, false, WAIT_RWMUTEX_R);   /* a writer is pending */
}

bool rt_rwmutex_tryrlock(rt_rwmutex *rw) {
    int32_t c = atomic_load_explicit(&rw->reader_count, memory_order_relaxed);
    while (c >= 0) {
        if (atomic_compare_exchange_weak_explicit(&rw->reader_count, &c, c + 1,
                                                  memory_order_acq_rel, memory_order_relaxed))
            return true;
    }
    return false;
}

/* A writer is waiting for the readers that were inside when it arrived;
 * the last of them lets it in. */
__attribute__((noinline)) static void rwmutex_runlock_slow(rt_rwmutex *rw, int32_t r) {
    if (r + 1 == 0 || r + 1 == -RWMUTEX_MAX_READERS) rt_throw("sync: RUnlock of unlocked RWMutex");
    if (atomic_fetch_sub_explicit(&rw->reader_wait, 1, memory_order_acq_rel) - 1 == 0)
        sema_release(&rw->writer_sem, false);
}

void rt_rwmutex_runlock(rt_rwmutex *rw) {
    int32_t r = atomic_fetch_sub_explicit(&rw->reader_count, 1, memory_order_acq_rel) - 1;
    if (rt_unlikely(r < 0)) rwmutex_runlock_slow(rw, r);
}

void rt_rwmutex_lock(rt_rwmutex *rw) {
    rt_mutex_lock(&rw->w);   /* first, exclude other writers */
    /* Announce the writer; r readers are still inside. */
    int32_t r = atomic_fetch_sub_explicit(&rw->reader_count, RWMUTEX_MAX_READERS,
                                          memory_order_acq_rel);
    if (r != 0 &&
        atomic_fetch_add_explicit(&rw->reader_wait, r, memory_order_acq_rel) + r != 0)
        sema_acquire(&rw->writer_sem, false, WAIT_RWMUTEX_W);
}

bool rt_rwmutex_trylock(rt_rwmutex *rw) {
    if (!rt_mutex_trylock(&rw->w)) return false;
    int32_t zero = 0;
    if (!atomic_compare_exchange_strong_explicit(&rw->reader_count, &zero, -RWMUTEX_MAX_READERS,
                                                 memory_order_acq_rel, memory_order_relaxed)) {
        rt_mutex_unlock(&rw->w);
        return false;
    }
    return true;
}

void rt_rwmutex_unlock(rt_rwmutex *rw) {
    /* Announce to readers that there is no active writer. */
    int32_t r = atomic_fetch_add_explicit(&rw->reader_count, RWMUTEX_MAX_READERS,
                                          memory_order_acq_rel) + RWMUTEX_MAX_READERS;
    if (r >= RWMUTEX_MAX_READERS) rt_throw("sync: Unlock of unlocked RWMutex");
    for (int32_t i = 0; i < r; i++)      /* unblock the readers that queued */
        sema_release(&rw->reader_sem, false);
    rt_mutex_unlock(&rw->w);
}

/* --------------------------------------------------------------- waitgroup */

static int32_t wg_counter(uint64_t state) { return (int32_t)(state >> 32); }
static uint32_t wg_waiters(uint64_t state) { return (uint32_t)state; }

void rt_waitgroup_add(rt_waitgroup *wg, int delta) {
    uint64_t d = (uint64_t)(int64_t)delta << 32;
    uint64_t state = atomic_fetch_add_explicit(&wg->state, d, memory_order_acq_rel) + d;
    int32_t v = wg_counter(state);
    uint32_t w = wg_waiters(state);
    if (v < 0) rt_throw("sync: negative WaitGroup counter");
    /* Adds that start a new round must happen before Wait; an Add from 0
     * while goroutines wait means it raced with a Wait. */
    if (w != 0 && delta > 0 && v == delta)
        rt_throw("sync: WaitGroup misuse: Add called concurrently with Wait");
    if (v > 0 || w == 0) return;
    /* Counter hit 0 with waiters.  Nobody may change state now: Adds must
     * not race with Wait, and new Waits return at once on counter 0. */
    if (atomic_load_explicit(&wg->state, memory_order_relaxed) != state)
        rt_throw("sync: WaitGroup misuse: Add called concurrently with Wait");
    atomic_store_explicit(&wg->state, 0, memory_order_release);
    for (; w != 0; w--) sema_release(&wg->sema, false);
}

void rt_waitgroup_done(rt_waitgroup *wg) { rt_waitgroup_add(wg, -1); }

void rt_waitgroup_wait(rt_waitgroup *wg) {
    uint64_t state = atomic_load_explicit(&wg->state, memory_order_acquire);
    for (;;) {
        if (wg_counter(state) == 0) return;
        if (atomic_compare_exchange_weak_explicit(&wg->state, &state, state + 1,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            sema_acquire(&wg->sema, false, WAIT_WAITGROUP);
            if (atomic_load_explicit(&wg->state, memory_order_acquire) != 0)
                rt_throw("sync: WaitGroup is reused before previous Wait has returned");
            return;
        }
    }
}

/* -------------------------------------------------------------------- once */

__attribute__((noinline)) static void once_do_slow(rt_once *once, rt_func fn, void *arg) {
    rt_mutex_lock(&once->m);
    if (atomic_load_explicit(&once->done, memory_order_relaxed) == 0) {
        fn(arg);
        atomic_store_explicit(&once->done, 1, memory_order_release);
    }
    rt_mutex_unlock(&once->m);
}

void rt_once_do(rt_once *once, rt_func fn, void *arg) {
    if (rt_likely(atomic_load_explicit(&once->done, memory_order_acquire) != 0)) return;
    once_do_slow(once, fn, arg);
}

/* -------------------------------------------------------------------- cond */

void rt_cond_wait(rt_cond *c, rt_mutex *mu) {
    uint32_t ticket = notify_list_add(c);
    rt_mutex_unlock(mu);
    notify_list_wait(c, ticket);
    rt_mutex_lock(mu);
}

void rt_cond_signal(rt_cond *c) { notify_list_notify_one(c); }

void rt_cond_broadcast(rt_cond *c) { notify_list_notify_all(c); }
