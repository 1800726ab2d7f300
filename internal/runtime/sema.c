/*
 * sema.c — goroutine semaphores keyed by address, and notify lists (the
 * wait queue behind rt_cond).  A port of the ideas in Go's runtime/sema.go.
 *
 * What a semaphore is
 * -------------------
 * Any _Atomic uint32_t is a semaphore: its value is the count.  sema_acquire
 * waits for the count to be positive and decrements it; sema_release
 * increments it and wakes one waiter.  It is a sleep/wakeup primitive for the
 * contended paths of the sync types (sync.c), where every sleep is paired
 * with exactly one wakeup even when the wakeup comes first (then the count is
 * already positive and the sleep does not happen).  The uncontended paths of
 * the sync types never get here.
 *
 * Where the waiters are
 * ---------------------
 * Not in the semaphore (4 bytes, zero-initialised, embedded in user structs)
 * but in a global table of SEMTAB_SIZE (251, a prime so that it does not
 * correlate with allocation patterns) roots, chosen by hashing the address.
 * Each root is on its own cache line and holds
 *
 *   lock   an rt_lock (futex; blocks the thread for a few instructions,
 *          never a goroutine) protecting the waiter structure;
 *   head   the list of waiting addresses: one "head" sudog per distinct
 *          address, linked through next/prev.  Each head starts that
 *          address's FIFO of waiters, linked through waitlink; the head's
 *          elem field points to the last sudog of its FIFO (NULL when the
 *          head is alone).  Go keeps the heads in a treap (O(log n) over
 *          distinct addresses); we keep a plain list, so finding an address
 *          costs O(distinct addresses waited on in this bucket).  With 251
 *          buckets that number is tiny in practice, and every operation on
 *          the waiters of one address is O(1), which is what matters for
 *          thousands of goroutines blocked on one mutex or WaitGroup;
 *   nwait  the number of waiters in the root, readable without the lock so
 *          that sema_release can skip the lock when nobody waits.
 *
 * The sudogs live on the waiting goroutines' stacks; a parked goroutine's
 * stack does not move or go away, and only the waker that dequeued a sudog
 * touches it until it calls goready.  After goready the waker must not touch
 * the sudog again: the waiter may already be running (and returning from
 * sema_acquire, which ends the sudog's lifetime).
 *
 * The lost-wakeup argument (why nwait may be read without the lock)
 * ------------------------------------------------------------------
 * A waiter increments nwait and then re-tests the count, both under the
 * root lock; a releaser increments the count and then reads nwait, without
 * the lock.  All four accesses are sequentially consistent, so (the store
 * buffering / Dekker pattern) at least one side sees the other's write:
 * either the waiter sees the count and does not sleep, or the releaser sees
 * nwait > 0 and takes the lock — which the waiter holds until it is queued
 * and parked (gopark releases the lock only after the goroutine's state is
 * saved), so the releaser finds it in the queue.
 *
 * Wakeups are not transfers.  A woken waiter re-tests the count and may find
 * that a goroutine that was never queued took it first ("barging"); it then
 * queues again.  Two modes avoid unbounded unfairness for sync.Mutex:
 *
 *   lifo     the waiter goes to the front of its address's FIFO (a waiter
 *            that already waited once should not be sent to the back);
 *   handoff  the releaser takes the count on the woken waiter's behalf and
 *            marks its sudog (ticket = 1), so the waiter returns without
 *            re-testing, then the releaser yields so the waiter runs now.
 *
 * The starvation clock is kept by the caller (sync.c's mutex records when
 * it first began to wait, across re-queues), not per queueing here, so
 * sudog.acquire_time is left 0 by this file.
 *
 * Notify lists (rt_cond)
 * ----------------------
 * rt_cond is Go's notifyList: two ticket counters and a list of waiters.
 * A waiter takes ticket t = wait_ticket++ while holding the condition's
 * mutex, releases the mutex, then waits until notify_ticket passes t.
 * Signal notifies the lowest unnotified ticket, broadcast all tickets issued
 * so far.  Because tickets are issued before the mutex is released, a
 * signal sent between the unlock and the sleep is never lost, and waiters
 * are woken in ticket (arrival) order.  Ticket comparisons are modulo 2^32.
 * The list is protected by the rt_cond's lock word, which is used as an
 * rt_lock (same representation: one _Atomic uint32_t; asserted below).
 *
 * Goroutine-less callers
 * ----------------------
 * A plain thread (getg() == NULL) cannot park.  sema_acquire and
 * notify_list_wait then poll with backoff; the count / ticket protocol makes
 * that correct (a release that wakes nobody leaves its count for the
 * poller).  Waking goroutines from such a thread relies on goready working
 * there, as rt_go does.  Such a thread, once seen on a slow path, turns the
 * deadlock detector off (note_plain_thread), as a spawning one does: the
 * runtime cannot tell whether it will wake a goroutine later.
 *
 * Abandoning a wait (sema_acquire_ctx)
 * -------------------------------------
 * A waiter bounded by a context and/or a deadline registers a ctx_waiter
 * and arms a timer (both before it first queues) and parks like any other.
 * Whichever of the three comes first wakes it, and the root lock decides:
 *
 *   sema_release  dequeues the sudog under the root lock, as always (and
 *                 with handoff takes the count for it: ticket = 1);
 *   cancel/timer  take the root lock, record the error (the first one
 *                 wins), and if the sudog is still queued remove it
 *                 (root_remove), fix nwait and goready it.  If it is not
 *                 queued they only record the error: either the waiter is
 *                 running (it checks the error under the root lock before
 *                 queueing again) or a release has dequeued it and will
 *                 ready it.
 *
 * So exactly one party readies the goroutine.  Woken, the waiter keeps a
 * count it was handed (ticket) or can take (try_acquire) and returns
 * success even if the context is done by then — a count, once consumed,
 * is never given back — otherwise it returns the recorded error, or queues
 * again.  It returns RT_OK if and only if it decremented *addr.  Finally
 * ctx_unwatch and timer_del wait for a losing fn still running, so the
 * wait record on its stack may go.  root_remove walks the address's FIFO
 * (singly linked), O(position); timeouts are the slow path.
 *
 * Lock order: a root lock (or a notify-list lock) is level 2 in
 * rt_internal.h.  It is never held while calling goready, and no other
 * runtime lock is taken under it.
 *
 * Preemption: sysmon may take the P away from a goroutine running outside
 * the runtime (in_runtime == 0); the goroutine keeps running and takes a P
 * back at its next g_enter, which may park it in the global run queue if no
 * P is free.  gopark does g_enter, so a waiter that took the root lock
 * without being in the runtime could be parked *holding the lock* while
 * other threads spin or sleep on it.  The waiting paths therefore g_enter
 * before taking the lock (the nested g_enter in gopark is then the cheap
 * path) and g_leave after waking.  Release paths never call g_enter with a
 * lock held (goready runs after the unlock), so they need nothing.
 */
#include "sema_internal.h"

#include "context_internal.h"

#include <string.h>
#include <time.h>

#define SEMTAB_SIZE 251u

typedef struct sema_root {
    rt_lock lock;
    sudog *head;               /* one sudog per waited-on address */
    _Atomic uint32_t nwait;    /* waiters in this root; read without lock */
} sema_root;

/* _Alignas on the member pads each root to its own cache line(s). */
static struct {
    _Alignas(RT_CACHE_LINE) sema_root root;
} semtable[SEMTAB_SIZE];

_Static_assert(sizeof(semtable[0]) % RT_CACHE_LINE == 0, "sema roots must be padded");

static sema_root *root_for(const void *addr) {
    return &semtable[((uintptr_t)addr >> 3) % SEMTAB_SIZE].root;
}

/* ------------------------------------------------------------ the count */

bool sema_try_acquire(_Atomic uint32_t *addr) {
    /* seq_cst: this load and CAS take part in the nwait handshake. */
    uint32_t v = atomic_load(addr);
    while (v > 0) {
        if (atomic_compare_exchange_weak(addr, &v, v - 1)) return true;
    }
    return false;
}

/* Backoff for a thread that cannot park: spin, then yield, then sleep. */
static void backoff(unsigned *iter) {
    unsigned i = (*iter)++;
    if (i < 10) {
        proc_yield(30);
    } else if (i < 20) {
        os_yield();
    } else {
        long us = i < 40 ? 50 : 1000;
        struct timespec ts = { .tv_sec = 0, .tv_nsec = us * 1000 };
        nanosleep(&ts, NULL);
    }
}

/*
 * A thread that is not an M takes part in goroutine synchronisation: it may
 * wake goroutines at any time, so "every M idle" no longer proves a
 * deadlock.  Same policy (and flag) as for plain threads that spawn.  Only
 * the slow paths can notice; a plain thread that only ever holds a mutex
 * uncontended while goroutines wait for it is not seen.
 */
static void note_plain_thread(void) {
    if (getm() == NULL && atomic_load_explicit(&sched.started, memory_order_acquire) &&
        !atomic_load_explicit(&sched.foreign_spawner, memory_order_relaxed))
        atomic_store(&sched.foreign_spawner, true);
}

static void acquire_by_polling(_Atomic uint32_t *addr) {
    note_plain_thread();
    unsigned iter = 0;
    while (!sema_try_acquire(addr)) backoff(&iter);
}

/* --------------------------------------------- the per-root wait queues
 * All under root->lock.  A head's elem is its FIFO's tail (see above). */

static sudog *wait_tail(const sudog *s) { return (sudog *)s->elem; }
static void set_wait_tail(sudog *s, sudog *tail) { s->elem = tail; }

static sudog *find_head(sema_root *root, const void *addr) {
    for (sudog *s = root->head; s != NULL; s = s->next)
        if (s->addr == addr) return s;
    return NULL;
}

/* Put `repl` in `old`'s place in the root's list of heads. */
static void replace_head(sema_root *root, sudog *old, sudog *repl) {
    repl->prev = old->prev;
    repl->next = old->next;
    if (repl->prev != NULL) repl->prev->next = repl;
    else root->head = repl;
    if (repl->next != NULL) repl->next->prev = repl;
    old->next = old->prev = NULL;
}

static void unlink_head(sema_root *root, sudog *s) {
    if (s->prev != NULL) s->prev->next = s->next;
    else root->head = s->next;
    if (s->next != NULL) s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

static void push_head(sema_root *root, sudog *s) {
    s->prev = NULL;
    s->next = root->head;
    if (root->head != NULL) root->head->prev = s;
    root->head = s;
}

static void root_enqueue(sema_root *root, sudog *s, bool lifo) {
    sudog *t = find_head(root, s->addr);
    if (t == NULL) {
        push_head(root, s);
    } else if (lifo) {
        /* s becomes the head and takes over t's FIFO. */
        replace_head(root, t, s);
        s->waitlink = t;
        set_wait_tail(s, wait_tail(t) != NULL ? wait_tail(t) : t);
        set_wait_tail(t, NULL);
    } else {
        sudog *tail = wait_tail(t) != NULL ? wait_tail(t) : t;
        tail->waitlink = s;
        set_wait_tail(t, s);
    }
}

/* Remove and return the first waiter on addr, or NULL. */
static sudog *root_dequeue(sema_root *root, const void *addr) {
    sudog *s = find_head(root, addr);
    if (s == NULL) return NULL;
    sudog *t = s->waitlink;
    if (t != NULL) {
        replace_head(root, s, t);
        set_wait_tail(t, wait_tail(s) != t ? wait_tail(s) : NULL);
    } else {
        unlink_head(root, s);
    }
    s->waitlink = NULL;
    set_wait_tail(s, NULL);
    return s;
}

/* Remove s from wherever it is queued on its address; false if it is not
 * queued (a release dequeued it, or it never was). */
static bool root_remove(sema_root *root, sudog *s) {
    sudog *h = find_head(root, s->addr);
    if (h == NULL) return false;
    if (h == s) {
        (void)root_dequeue(root, s->addr);
        return true;
    }
    sudog *prev = h;
    while (prev->waitlink != NULL && prev->waitlink != s) prev = prev->waitlink;
    if (prev->waitlink != s) return false;
    prev->waitlink = s->waitlink;
    if (wait_tail(h) == s) set_wait_tail(h, prev == h ? NULL : prev);
    s->waitlink = NULL;
    return true;
}

static void sudog_init(sudog *s, g *gp, const void *addr) {
    *s = (sudog){ .g = gp, .addr = addr };
}

/* -------------------------------------------------------- acquire/release */

void sema_acquire(_Atomic uint32_t *addr, bool lifo, wait_reason reason) {
    if (sema_try_acquire(addr)) return;
    g *gp = getg();
    if (gp == NULL) {
        acquire_by_polling(addr);
        return;
    }
    sema_root *root = root_for(addr);
    sudog s;
    g_enter(gp);   /* keep the P from here to the park: see the header */
    for (;;) {
        lock_acquire(&root->lock);
        atomic_fetch_add(&root->nwait, 1);     /* seq_cst: see the header */
        if (sema_try_acquire(addr)) {
            atomic_fetch_sub(&root->nwait, 1);
            lock_release(&root->lock);
            break;
        }
        sudog_init(&s, gp, addr);
        root_enqueue(root, &s, lifo);
        goparkunlock(&root->lock, reason);
        /* Woken by sema_release, which dequeued s.  ticket != 0: it took
         * the count for us (handoff).  Otherwise compete for it again. */
        if (s.ticket != 0 || sema_try_acquire(addr)) break;
    }
    g_leave(gp);
}

/* A wait that a context or a deadline can abandon (see the top). */
typedef struct sema_ctx_wait {
    sudog s;
    sema_root *root;
    _Atomic int err;           /* first abandon reason; set under root lock */
    ctx_waiter w;
    timer t;
} sema_ctx_wait;

static void sema_wait_abandon(sema_ctx_wait *sw, int err) {
    sema_root *root = sw->root;
    lock_acquire(&root->lock);
    int none = 0;
    atomic_compare_exchange_strong(&sw->err, &none, err);
    bool removed = root_remove(root, &sw->s);
    g *gp = sw->s.g;
    if (removed) atomic_fetch_sub(&root->nwait, 1);
    lock_release(&root->lock);
    if (removed) goready(gp);                  /* nobody else will */
}

static void sema_ctx_fire(ctx_waiter *w, int err) { sema_wait_abandon(w->arg, err); }

static void sema_timer_fire(void *arg, int64_t now) {
    (void)now;
    sema_wait_abandon(arg, RT_ETIMEDOUT);
}

static int acquire_by_polling_ctx(_Atomic uint32_t *addr, rt_context *ctx, int64_t deadline) {
    note_plain_thread();
    unsigned iter = 0;
    for (;;) {
        if (sema_try_acquire(addr)) return RT_OK;
        int err = rt_context_err(ctx);
        if (err != 0) return err;
        if (deadline != 0 && rt_nanotime() >= deadline) return RT_ETIMEDOUT;
        backoff(&iter);
    }
}

int sema_acquire_ctx(_Atomic uint32_t *addr, bool lifo, wait_reason reason,
                     rt_context *ctx, int64_t deadline) {
    if (sema_try_acquire(addr)) return RT_OK;
    if ((ctx == NULL || ctx == rt_context_background()) && deadline == 0) {
        sema_acquire(addr, lifo, reason);
        return RT_OK;
    }
    int err = rt_context_err(ctx);
    if (err != 0) return err;
    if (deadline != 0 && rt_nanotime() >= deadline) return RT_ETIMEDOUT;
    g *gp = getg();
    if (gp == NULL) return acquire_by_polling_ctx(addr, ctx, deadline);

    sema_ctx_wait sw;
    memset(&sw, 0, sizeof sw);
    sema_root *root = root_for(addr);
    sw.root = root;
    sw.s.g = gp;
    sw.s.addr = addr;
    sw.w.fn = sema_ctx_fire;
    sw.w.arg = &sw;
    err = ctx_watch(ctx, &sw.w);
    if (err != 0) return err;
    if (deadline != 0) {
        sw.t.fn = sema_timer_fire;
        sw.t.arg = &sw;
        timer_add(&sw.t, deadline);
    }

    int rc;
    g_enter(gp);   /* keep the P from here to the park: see the header */
    for (;;) {
        lock_acquire(&root->lock);
        atomic_fetch_add(&root->nwait, 1);     /* seq_cst: see the header */
        if (sema_try_acquire(addr)) {
            atomic_fetch_sub(&root->nwait, 1);
            lock_release(&root->lock);
            rc = RT_OK;
            break;
        }
        rc = atomic_load(&sw.err);
        if (rc != 0) {                         /* abandoned while running */
            atomic_fetch_sub(&root->nwait, 1);
            lock_release(&root->lock);
            break;
        }
        sudog_init(&sw.s, gp, addr);
        root_enqueue(root, &sw.s, lifo);
        goparkunlock(&root->lock, reason);
        /* Readied by a release (which dequeued us; ticket != 0: it took
         * the count for us) or by an abandon (which removed us).  A count
         * we can have is ours either way. */
        if (sw.s.ticket != 0 || sema_try_acquire(addr)) {
            rc = RT_OK;
            break;
        }
        rc = atomic_load(&sw.err);
        if (rc != 0) break;
    }
    g_leave(gp);
    (void)ctx_unwatch(ctx, &sw.w);             /* wait out a late fn */
    if (deadline != 0) (void)timer_del(&sw.t);
    return rc;
}

void sema_release(_Atomic uint32_t *addr, bool handoff) {
    sema_root *root = root_for(addr);
    atomic_fetch_add(addr, 1);                 /* seq_cst: see the header */
    if (atomic_load(&root->nwait) == 0) return;

    lock_acquire(&root->lock);
    if (atomic_load_explicit(&root->nwait, memory_order_relaxed) == 0) {
        lock_release(&root->lock);
        return;
    }
    sudog *s = root_dequeue(root, addr);
    if (s != NULL) atomic_fetch_sub(&root->nwait, 1);
    lock_release(&root->lock);
    if (s == NULL) return;

    if (s->ticket != 0) rt_throw("corrupted semaphore ticket");
    if (getg() == NULL) note_plain_thread();
    bool handed = handoff && sema_try_acquire(addr);
    if (handed) s->ticket = 1;
    goready(s->g);                             /* s is the waiter's from here */
    if (handed && getg() != NULL) rt_yield();  /* let it run now */
}

/* Waiters queued on exactly addr (for tests and diagnostics). */
uint32_t sema_waiters(const _Atomic uint32_t *addr) {
    sema_root *root = root_for(addr);
    uint32_t n = 0;
    lock_acquire(&root->lock);
    sudog *s = find_head(root, (const void *)addr);
    for (; s != NULL; s = s->waitlink) n++;
    lock_release(&root->lock);
    return n;
}

/* ------------------------------------------------------------ notify lists */

_Static_assert(sizeof(rt_lock) == sizeof(((rt_cond *)0)->lock) &&
               _Alignof(rt_lock) == _Alignof(_Atomic uint32_t),
               "rt_cond.lock must have rt_lock's representation");

static rt_lock *notify_lock(rt_cond *c) { return (rt_lock *)(void *)&c->lock; }

/* a < b in ticket order (modulo 2^32). */
static bool ticket_less(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }

uint32_t notify_list_add(rt_cond *c) {
    return atomic_fetch_add(&c->wait_ticket, 1);
}

static void wait_ticket_by_polling(rt_cond *c, uint32_t ticket) {
    note_plain_thread();
    unsigned iter = 0;
    while (!ticket_less(ticket, atomic_load(&c->notify_ticket))) backoff(&iter);
}

void notify_list_wait(rt_cond *c, uint32_t ticket) {
    g *gp = getg();
    if (gp == NULL) {
        wait_ticket_by_polling(c, ticket);
        return;
    }
    rt_lock *l = notify_lock(c);
    g_enter(gp);   /* keep the P from here to the park: see the header */
    lock_acquire(l);
    if (ticket_less(ticket, atomic_load_explicit(&c->notify_ticket, memory_order_relaxed))) {
        lock_release(l);                       /* already notified */
        g_leave(gp);
        return;
    }
    sudog s;
    sudog_init(&s, gp, c);
    s.ticket = ticket;
    if (c->tail != NULL) ((sudog *)c->tail)->next = &s;
    else c->head = &s;
    c->tail = &s;
    goparkunlock(l, WAIT_COND);
    g_leave(gp);
}

void notify_list_notify_all(rt_cond *c) {
    /* Fast path: no waiter has taken a ticket since the last notification. */
    if (atomic_load(&c->wait_ticket) == atomic_load(&c->notify_ticket)) return;
    rt_lock *l = notify_lock(c);
    lock_acquire(l);
    sudog *s = c->head;
    c->head = c->tail = NULL;
    atomic_store(&c->notify_ticket, atomic_load(&c->wait_ticket));
    lock_release(l);
    while (s != NULL) {
        sudog *next = s->next;                 /* read before s is released */
        s->next = NULL;
        goready(s->g);
        s = next;
    }
}

void notify_list_notify_one(rt_cond *c) {
    if (atomic_load(&c->wait_ticket) == atomic_load(&c->notify_ticket)) return;
    rt_lock *l = notify_lock(c);
    lock_acquire(l);
    uint32_t t = atomic_load_explicit(&c->notify_ticket, memory_order_relaxed);
    if (t == atomic_load(&c->wait_ticket)) {
        lock_release(l);
        return;
    }
    atomic_store(&c->notify_ticket, t + 1);
    /* The holder of ticket t may not have queued yet (it is between its
     * mutex unlock and notify_list_wait); then it will see the new
     * notify_ticket and not sleep, and there is nobody to wake. */
    for (sudog *prev = NULL, *s = c->head; s != NULL; prev = s, s = s->next) {
        if (s->ticket != t) continue;
        sudog *next = s->next;
        if (prev != NULL) prev->next = next;
        else c->head = next;
        if (next == NULL) c->tail = prev;
        lock_release(l);
        s->next = NULL;
        goready(s->g);
        return;
    }
    lock_release(l);
}
