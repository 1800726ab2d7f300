/*
 * select.c — select over several channel operations: Go's
 * runtime/select.go, in C.
 *
 * rt_select(cases, n, has_default) performs exactly one of the cases that
 * can proceed, chosen uniformly at random when several can, or returns -1
 * at once when none can and has_default is set; otherwise it waits.
 *
 * Two orders
 *
 *   pollorder — the non-nil cases in a random permutation (inside-out
 *     Fisher-Yates with fastrandn).  Ready cases are looked for in this
 *     order, which is what makes the choice among ready cases uniform.
 *   lockorder — the non-nil cases sorted by channel address (heap sort:
 *     n log n time, constant stack, like Go).  Every select locks its
 *     channels in this one global order, so two selects (or a select and
 *     a plain operation, which holds one lock) can never deadlock.  A
 *     channel that appears in several cases sits in adjacent lockorder
 *     slots and is locked and unlocked once (sellock / selunlock skip
 *     repeats).
 *
 * The three passes (all with every channel locked)
 *
 *   Pass 1: walk pollorder looking for a case that can proceed now: a
 *   receive finds a waiting sender, a buffered element, or a closed
 *   channel; a send finds a waiting receiver or buffer room (a send on a
 *   closed channel is fatal).  The case is performed with chan.c's
 *   handoff helpers, which drop all the locks before readying a partner.
 *   With a default and nothing ready, unlock and return -1.
 *
 *   Pass 2: enqueue one sudog per case on its channel's sendq or recvq.
 *   The sudogs are flagged is_select and chained through waitlink in lock
 *   order, starting at g.waiting.  Park with select_park_commit as the
 *   unlock function: it runs on the scheduler stack once our context is
 *   saved and releases the channels in lock order.
 *
 *   Pass 3: woken, lock everything again, learn the winning sudog from
 *   g.param, and unlink every other sudog from its queue.
 *
 * Only one case may win
 *
 *   Once parked, the goroutine is in several queues and several partners
 *   may find it at once.  Each partner, while dequeuing under its own
 *   channel's lock, must win a compare-and-swap of g.select_done from 0 to
 *   1 (waitq_dequeue in chan_internal.h); a loser discards that sudog and
 *   looks at the next waiter.  select_done is reset to 0 in pass 3, when
 *   all our locks are held again and so no partner can be looking.
 *
 * Why the waiting goroutine's memory stays valid
 *
 *   The sudogs live on the selecting goroutine's stack (or in its heap
 *   block for large selects).  A partner may ready the goroutine as soon as
 *   select_park_commit has released the partner's channel, while the
 *   commit is still unlocking the rest.  That is safe because the woken
 *   goroutine must take every lock again before it touches its sudogs or
 *   returns, and the commit reads a sudog only while that sudog's channel
 *   is still locked (hence "unlock a channel only after its last sudog").
 *
 * References
 *
 *   Unlike a single blocking send or receive, a select touches all its
 *   channels after waking (pass 3 locks them), so it holds a reference to
 *   each distinct channel while it is parked.  A channel may therefore be
 *   closed and released by another goroutine while a select waits on it.
 *
 * Memory
 *
 *   Up to SELECT_STACK_CASES cases, the orders and sudogs are arrays on the
 *   stack: no malloc on the common path.  Larger selects (up to
 *   RT_SELECT_MAX_CASES) malloc one block for the orders and, if they must
 *   park, another for the sudogs; failure to allocate is a fatal error
 *   ("out of memory"), since select has no way to report it.
 *
 * Only the chosen case's recv_ok is written.  Nil-channel cases never
 * proceed; zero cases (or only nil ones) without a default block forever.
 */
#include "chan_internal.h"

#include <stdlib.h>
#include <string.h>

#define SELECT_STACK_CASES 8

typedef struct selstate {
    rt_select_case *cases;
    uint16_t *pollorder;   /* norder case indexes, random order */
    uint16_t *lockorder;   /* norder case indexes, by channel address */
    size_t norder;         /* cases with a non-NULL channel */
} selstate;

/* ------------------------------------------------------------- arguments */

static void select_check_cases(const rt_select_case *cases, size_t ncases) {
    if (ncases > RT_SELECT_MAX_CASES) rt_throw("select: too many cases");
    if (ncases > 0 && cases == NULL) rt_throw("select: NULL cases");
    for (size_t i = 0; i < ncases; i++) {
        if (cases[i].chan != NULL && cases[i].dir != RT_SELECT_SEND &&
            cases[i].dir != RT_SELECT_RECV)
            rt_throw("select: invalid case direction");
    }
}

static void *select_alloc(size_t size) {
    void *block = malloc(size);
    if (block == NULL) rt_throw("out of memory");
    return block;
}

/* ---------------------------------------------------------------- orders */

/* Random permutation of the non-nil cases (inside-out Fisher-Yates). */
static void select_build_pollorder(selstate *s, size_t ncases) {
    size_t n = 0;
    for (size_t i = 0; i < ncases; i++) {
        if (s->cases[i].chan == NULL) continue;
        size_t j = n == 0 ? 0 : fastrandn((uint32_t)n + 1);
        s->pollorder[n] = s->pollorder[j];
        s->pollorder[j] = (uint16_t)i;
        n++;
    }
    s->norder = n;
}

static uintptr_t select_key(const selstate *s, uint16_t casi) {
    return (uintptr_t)s->cases[casi].chan;
}

/* Heap sort the cases by channel address into lockorder.  Starting from
 * pollorder spreads cases that share a channel randomly. */
static void select_build_lockorder(selstate *s) {
    uint16_t *lo = s->lockorder;
    size_t n = s->norder;
    for (size_t i = 0; i < n; i++) {       /* build a max-heap, sifting up */
        uint16_t o = s->pollorder[i];
        uintptr_t key = select_key(s, o);
        size_t j = i;
        while (j > 0 && select_key(s, lo[(j - 1) / 2]) < key) {
            lo[j] = lo[(j - 1) / 2];
            j = (j - 1) / 2;
        }
        lo[j] = o;
    }
    for (size_t i = n; i-- > 0;) {         /* move the max to the end */
        uint16_t o = lo[i];
        uintptr_t key = select_key(s, o);
        lo[i] = lo[0];
        size_t j = 0;
        for (;;) {
            size_t k = 2 * j + 1;
            if (k >= i) break;
            if (k + 1 < i && select_key(s, lo[k]) < select_key(s, lo[k + 1])) k++;
            if (!(key < select_key(s, lo[k]))) break;
            lo[j] = lo[k];
            j = k;
        }
        lo[j] = o;
    }
}

/* --------------------------------------------------------------- locking */

static rt_chan *select_chan_at(const selstate *s, size_t k) {
    return s->cases[s->lockorder[k]].chan;
}

static void sellock(selstate *s) {
    rt_chan *last = NULL;
    for (size_t k = 0; k < s->norder; k++) {
        rt_chan *c = select_chan_at(s, k);
        if (c != last) {
            last = c;
            lock_acquire(&c->lock);
        }
    }
}

static void selunlock(selstate *s) {
    for (size_t k = s->norder; k-- > 0;) {
        rt_chan *c = select_chan_at(s, k);
        if (k > 0 && c == select_chan_at(s, k - 1)) continue;  /* unlocked at k-1 */
        lock_release(&c->lock);
    }
}

static void selunlock_cb(void *arg) {
    selunlock(arg);
}

static void select_retain_all(selstate *s) {
    for (size_t k = 0; k < s->norder; k++)
        if (k == 0 || select_chan_at(s, k) != select_chan_at(s, k - 1))
            rt_chan_retain(select_chan_at(s, k));
}

static void select_release_all(selstate *s) {
    for (size_t k = 0; k < s->norder; k++)
        if (k == 0 || select_chan_at(s, k) != select_chan_at(s, k - 1))
            rt_chan_release(select_chan_at(s, k));
}

/* ----------------------------------------------------------------- pass 1 */

/* Try receive case cas on c.  All locks held; on success they are dropped. */
static bool select_try_recv(selstate *s, rt_select_case *cas, bool *recv_ok) {
    rt_chan *c = cas->chan;
    sudog *sg = waitq_dequeue(&c->sendq);
    if (sg != NULL) {
        chan_recv_from_waiter(c, sg, cas->elem, selunlock_cb, s);
        *recv_ok = true;
        return true;
    }
    if (chan_qcount(c) > 0) {
        chan_buf_take(c, cas->elem);
        selunlock(s);
        *recv_ok = true;
        return true;
    }
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        selunlock(s);
        chan_elem_zero(c, cas->elem);
        *recv_ok = false;
        return true;
    }
    return false;
}

/* Try send case cas.  All locks held; on success they are dropped. */
static bool select_try_send(selstate *s, rt_select_case *cas) {
    rt_chan *c = cas->chan;
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        selunlock(s);
        rt_throw("send on closed channel");
    }
    sudog *sg = waitq_dequeue(&c->recvq);
    if (sg != NULL) {
        chan_send_to_waiter(c, sg, cas->elem, selunlock_cb, s);
        return true;
    }
    if (chan_qcount(c) < c->dataqsiz) {
        chan_buf_put(c, cas->elem);
        selunlock(s);
        return true;
    }
    return false;
}

/* Pass 1: perform the first ready case in poll order and return its index
 * (locks dropped), or -1 with the locks still held. */
static int select_poll(selstate *s, bool *recv_ok) {
    for (size_t i = 0; i < s->norder; i++) {
        uint16_t casi = s->pollorder[i];
        rt_select_case *cas = &s->cases[casi];
        bool done = cas->dir == RT_SELECT_RECV ? select_try_recv(s, cas, recv_ok)
                                               : select_try_send(s, cas);
        if (done) return casi;
    }
    return -1;
}

/* ------------------------------------------------------------ passes 2, 3 */

/* Unlock function of the park: release the channels in lock order, each
 * after its last sudog has been read (see the top of the file). */
static bool select_park_commit(g *gp, void *arg) {
    (void)arg;
    rt_chan *last = NULL;
    for (sudog *sg = gp->waiting; sg != NULL; sg = sg->waitlink) {
        if (sg->c != last && last != NULL) lock_release(&last->lock);
        last = sg->c;
    }
    if (last != NULL) lock_release(&last->lock);
    return true;
}

static waitq *select_queue(rt_select_case *cas) {
    return cas->dir == RT_SELECT_SEND ? &cas->chan->sendq : &cas->chan->recvq;
}

/* Pass 2: one sudog per case, chained from gp->waiting in lock order. */
static void select_enqueue_all(selstate *s, g *gp, sudog *sgs) {
    sudog **nextp = &gp->waiting;
    for (size_t k = 0; k < s->norder; k++) {
        uint16_t casi = s->lockorder[k];
        rt_select_case *cas = &s->cases[casi];
        sudog *sg = &sgs[k];
        memset(sg, 0, sizeof *sg);
        sg->g = gp;
        sg->is_select = true;
        sg->elem = cas->elem;
        sg->c = cas->chan;
        sg->case_index = casi;
        *nextp = sg;
        nextp = &sg->waitlink;
        waitq_enqueue(select_queue(cas), sg);
    }
    *nextp = NULL;
}

/* Pass 3: with all locks held, find the winner and unlink the losers.
 * Returns the winning case index (or -1: nobody won, a bug). */
static int select_dequeue_losers(selstate *s, g *gp, sudog *sgs, sudog *won, bool *success) {
    for (sudog *sg = gp->waiting; sg != NULL; sg = sg->waitlink) {
        sg->is_select = false;
        sg->elem = NULL;
        sg->c = NULL;
    }
    gp->waiting = NULL;
    int casi = -1;
    for (size_t k = 0; k < s->norder; k++) {
        sudog *sg = &sgs[k];
        if (sg == won) {
            casi = s->lockorder[k];
            *success = sg->success;
        } else {
            waitq_remove(select_queue(&s->cases[s->lockorder[k]]), sg);
        }
        sg->waitlink = NULL;
    }
    return casi;
}

/* Passes 2 and 3: wait for a partner or close.  All locks held on entry,
 * none on return. */
static int select_block(selstate *s, g *gp, sudog *sgs, bool *recv_ok) {
    if (gp->waiting != NULL) rt_throw("select: gp->waiting != NULL");
    select_retain_all(s);
    select_enqueue_all(s, gp, sgs);
    gp->param = NULL;
    gp->park_on_chan = true;
    gopark(select_park_commit, NULL, WAIT_SELECT);
    gp->park_on_chan = false;

    sellock(s);
    atomic_store_explicit(&gp->select_done, 0, memory_order_relaxed);
    sudog *won = gp->param;
    gp->param = NULL;
    bool success = false;
    int casi = select_dequeue_losers(s, gp, sgs, won, &success);
    selunlock(s);
    select_release_all(s);

    if (casi < 0) rt_throw("select: bad wakeup");
    if (s->cases[casi].dir == RT_SELECT_SEND) {
        if (!success) rt_throw("send on closed channel");
    } else {
        *recv_ok = success;
    }
    return casi;
}

/* No case can ever proceed and there is no default: park forever. */
static _Noreturn void select_block_forever(size_t ncases) {
    (void)chan_current_g("select");
    gopark(NULL, NULL, ncases == 0 ? WAIT_SELECT_NO_CASES : WAIT_SELECT);
    rt_throw("unreachable: woke from an empty select");
}

/* ------------------------------------------------------------------ entry */

int rt_select(rt_select_case *cases, size_t ncases, bool has_default) {
    select_check_cases(cases, ncases);

    uint16_t small_orders[2 * SELECT_STACK_CASES];
    void *orders_block = NULL;
    selstate s = { .cases = cases, .pollorder = small_orders,
                   .lockorder = small_orders + SELECT_STACK_CASES };
    if (ncases > SELECT_STACK_CASES) {
        orders_block = select_alloc(2 * ncases * sizeof(uint16_t));
        s.pollorder = orders_block;
        s.lockorder = s.pollorder + ncases;
    }

    select_build_pollorder(&s, ncases);
    if (s.norder == 0) {
        free(orders_block);
        if (has_default) return -1;
        select_block_forever(ncases);
    }
    select_build_lockorder(&s);

    /* A large blocking select allocates its sudogs before taking the
     * locks, so the critical section never calls malloc. */
    sudog small_sudogs[SELECT_STACK_CASES];
    sudog *sgs = small_sudogs;
    if (!has_default && s.norder > SELECT_STACK_CASES)
        sgs = select_alloc(s.norder * sizeof(sudog));

    sellock(&s);
    bool recv_ok = false;
    int casi = select_poll(&s, &recv_ok);
    if (casi < 0) {
        if (has_default) selunlock(&s);
        else casi = select_block(&s, chan_current_g("select"), sgs, &recv_ok);
    }
    if (sgs != small_sudogs) free(sgs);
    free(orders_block);
    if (casi >= 0 && cases[casi].dir == RT_SELECT_RECV) cases[casi].recv_ok = recv_ok;
    return casi;
}
