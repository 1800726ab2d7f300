/*
 * context.c — cancellation and deadlines: Go's context package
 * (context.go) in C.  This file also holds the ctx_waiter hook that other
 * runtime code uses to wait on a context (context_internal.h), and the
 * context-bounded channel, select and sleep operations of rt.h.  The
 * context-bounded mutex is in sync.c, over sema_acquire_ctx in sema.c.
 *
 * The node
 *
 *   Every rt_context but the background is one calloc'd node:
 *
 *     lock      an rt_lock guarding err's transition, children, waiters,
 *               timer_armed and the publication of the done channel;
 *     refs      the reference count (atomic);
 *     err       0 while live, then RT_ECANCELED or RT_ETIMEDOUT.  Written
 *               once, under lock; read without it (rt_context_err);
 *     deadline  absolute, 0 for none.  Immutable: min(parent's, own);
 *     parent    NULL when the parent is the background; otherwise the node
 *               holds a reference on it for its whole life;
 *     done      the done channel (rt_chan, elem size 0), created lazily;
 *     children  the live children, a doubly-linked list through the
 *               children's sib_next/sib_prev.  Those links and a child's
 *               `linked` flag belong to the PARENT's lock while the child is
 *               linked, and to the canceller that detached it afterwards;
 *     waiters   registered ctx_waiters (doubly linked);
 *     tm        the deadline timer (time.c), when this node's own deadline
 *               is earlier than its parent's.
 *
 *   The background is a static node that is never done, never freed and
 *   never locked; NULL means the background everywhere.  Its children have
 *   parent == NULL and are linked nowhere: nothing can cancel them but
 *   themselves.
 *
 * Cancellation
 *
 *   cancel(node, err) takes node->lock, and if the node is live: stores err,
 *   detaches the whole waiter list (each waiter becomes FIRING), detaches
 *   the whole children list (retaining each child and clearing its
 *   `linked`), notes the done channel and whether the timer is armed, and
 *   drops the lock.  Everything with side effects then happens with NO
 *   context lock held: close the done channel, call the waiters' fns,
 *   stop the timer, unlink the node from its parent, and cancel the
 *   detached children with the same err (Go gives descendants the
 *   ancestor's error: a parent's deadline times its whole subtree out).
 *   The descendants are walked iteratively with an explicit work list
 *   threaded through the detached children's sib_next (which the
 *   canceller now owns), so a deep tree cannot overflow a 64 KiB
 *   goroutine stack or g0.  Nothing in cancel blocks or parks, so it may
 *   run on a goroutine, on a plain thread, or on g0 inside a timer fn.
 *
 *   Exactly one canceller wins the live -> done transition of a node (it
 *   is decided under node->lock), and only the winner fires the node's
 *   waiters and cancels its children; a child is detached by exactly one
 *   canceller (under the parent's lock), so a node is on at most one work
 *   list.  A node cancelled by itself (rt_context_cancel, release, its own
 *   timer) removes itself from its parent's list, under the parent's lock,
 *   as Go's removeChild; one cancelled by its parent was already detached.
 *
 *   Creation: a child of a live parent is linked under the parent's lock;
 *   a child of a done parent is born done with the parent's error.  The
 *   link is skipped if the child is already done (its timer fired in the
 *   meantime), so a done node is never (re)linked: the child's err store
 *   and the creator's check are ordered by the parent's lock, exactly as
 *   the timer's unlink and the creator's link are.
 *
 * Deadlines and the timer
 *
 *   A node's deadline is min(parent's, own).  If the parent's is not
 *   later, the node gets no timer at all (as Go's WithDeadline returns a
 *   WithCancel then): the ancestor whose timer fires cancels the whole
 *   subtree with RT_ETIMEDOUT.  A deadline already past gives a node born
 *   done with RT_ETIMEDOUT.  Otherwise the node's timer is a time.c timer
 *   with fn_owns set, armed before the node becomes visible, and the armed
 *   timer holds one reference on the node:
 *
 *     - the timer fires: its fn (on g0) cancels the node with
 *       RT_ETIMEDOUT, then drops the timer's reference (possibly the last:
 *       fn_owns means time.c never touches the timer after calling fn, so
 *       the node, which contains the timer, may be freed by its fn);
 *     - the node is cancelled otherwise: the winning canceller calls
 *       timer_del; if that returns true the timer was still in its heap and
 *       the canceller drops the timer's reference; if false, the fn has run
 *       or is about to, and will drop it.
 *
 *   Either way, once a node is done no timer of it stays armed, and since
 *   rt_context_release always cancels, releasing leaves no timer behind.
 *
 * The done channel: lazy
 *
 *   Most contexts are never asked for a channel (the netpoller and the
 *   mutex wait through ctx_waiters), and one calloc per context would make
 *   every with_* pay for it.  So rt_context_done creates it on first use,
 *   outside the lock, and publishes it under the lock; a loser of the
 *   race frees its copy.  It is closed by exactly one party: by the
 *   canceller if it was published when the node went done (both decided
 *   under the lock), else by its creator, which found the node already
 *   done when publishing.  The close always happens after the lock is
 *   dropped (so the context lock is never held over a channel lock).  The
 *   channel is freed with the node; a select that waits on it holds its
 *   own reference (select.c).  rt_context_done cannot report failure, so
 *   running out of memory there is fatal, as it is in rt_select.  The
 *   background's done channel is NULL: a nil channel, never ready in a
 *   select, as Go's Background().Done() is nil.
 *
 * Waiters (context_internal.h)
 *
 *   state: IDLE (not registered) -> REGISTERED (ctx_watch, under lock) ->
 *   either IDLE again (ctx_unwatch removed it, under lock) or FIRING (a
 *   canceller detached it, under lock) -> FIRED (the canceller has called
 *   fn; release store, after which the canceller never touches w).  The
 *   lock decides between unwatch and fire, so fn runs at most once, and
 *   exactly once if the context is cancelled while w is registered.
 *   ctx_unwatch that finds FIRING spins (yielding) until FIRED, so its
 *   caller may free w when it returns.  fn is called with no context lock
 *   held, so it may take its operation's locks and goready.
 *
 * References and freeing
 *
 *   rt_context_release cancels (RT_ECANCELED if still live), then drops a
 *   reference; every release cancels, whichever reference it drops: a
 *   reference taken with rt_context_retain keeps the node valid (its err,
 *   deadline and done channel), it does not keep it live.  Internal
 *   references: each child holds one on its parent, an armed timer one on
 *   its node, and a canceller one on each detached child it has yet to
 *   process.  Every path that drops a reference to zero has cancelled the
 *   node first, so a freed node is always done, and a done node is never
 *   in its parent's list once its cancel has returned; the free path
 *   unlinks anyway, defensively, and the parent's detach throws if it ever
 *   meets a child at zero references.  Freeing releases the done channel
 *   and drops the reference on the parent, iteratively up the chain.
 *   Releasing a parent before its children is therefore safe: the parent
 *   is cancelled (and so are they), and its memory lives until the last
 *   child is released.
 *
 * Lock order
 *
 *   A context lock is a leaf, below everything in rt_internal.h's list
 *   (position 8, after sched.allg_lock): no other lock — channel, sema
 *   root, timer, scheduler, or another context's — is ever acquired while
 *   one is held, and parent and child are never locked together.  It may
 *   therefore be taken while holding any runtime lock (ctx_watch from
 *   inside an operation's critical section is fine).  Conversely the
 *   operations that fire waiters — rt_context_cancel, rt_context_release,
 *   the deadline timer — take channel locks (close), the waiters' locks
 *   (sema roots, netpoll) and sched.lock (goready), so they are called
 *   holding no runtime lock; and ctx_unwatch must not be called holding a
 *   lock that a waiter's fn takes (it may wait for that fn).
 *
 * The bounded operations
 *
 *   rt_chan_send_ctx / rt_chan_recv_ctx / rt_select_ctx are an rt_select
 *   with one more case: a receive on the context's done channel.  The
 *   context is checked first, so an already-done context returns its error
 *   without attempting the operation, even if the operation could proceed;
 *   once they are both in the select, a ready operation and a done context
 *   are chosen between at random, as in Go.  With the background (or NULL)
 *   they are the plain operations.  rt_sleep_ctx parks with its own timer
 *   and a ctx_waiter, whichever fires first wakes it.
 */
#include "context_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct rt_context {
    rt_lock lock;
    _Atomic int64_t refs;
    _Atomic int err;
    int64_t deadline;
    rt_context *parent;
    _Atomic(rt_chan *) done;
    rt_context *children;
    rt_context *sib_next;
    rt_context *sib_prev;
    bool linked;
    bool timer_armed;
    ctx_waiter *waiters;
    timer tm;
};

static rt_context ctx_background_node;
static _Atomic int64_t ctx_live;

enum {
    W_IDLE = 0,
    W_REGISTERED = 1,
    W_FIRING = 2,
    W_FIRED = 3,
};

static inline bool ctx_is_background(const rt_context *c) {
    return c == NULL || c == &ctx_background_node;
}

int64_t ctx_live_count(void) {
    return atomic_load_explicit(&ctx_live, memory_order_acquire);
}

/* ---------------------------------------------------------- references */

static void ctx_ref(rt_context *c) {
    int64_t old = atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    if (old <= 0) rt_throw("context: retain of a released context");
}

/* Free c (its references are gone); returns its parent, whose reference
 * the caller must drop. */
static rt_context *ctx_free(rt_context *c) {
    if (atomic_load_explicit(&c->err, memory_order_acquire) == 0)
        rt_throw("context: freed while live");
    rt_context *par = c->parent;
    if (par != NULL) {
        lock_acquire(&par->lock);
        if (c->linked) {   /* not expected (see the top); stay correct anyway */
            if (c->sib_prev != NULL) c->sib_prev->sib_next = c->sib_next;
            else par->children = c->sib_next;
            if (c->sib_next != NULL) c->sib_next->sib_prev = c->sib_prev;
            c->linked = false;
        }
        lock_release(&par->lock);
    }
    if (c->waiters != NULL) rt_throw("context: freed with waiters");
    rt_chan *ch = atomic_load_explicit(&c->done, memory_order_acquire);
    if (ch != NULL) rt_chan_release(ch);
    free(c);
    atomic_fetch_sub_explicit(&ctx_live, 1, memory_order_release);
    return par;
}

/* Drop a reference; at the last one free the node, and so on up the chain
 * of parents (iteratively: trees may be deep). */
static void ctx_unref(rt_context *c) {
    while (c != NULL) {
        int64_t old = atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel);
        if (old > 1) return;
        if (old < 1) rt_throw("context: release of a released context");
        c = ctx_free(c);
    }
}

/* ---------------------------------------------------------------- cancel */

/*
 * Move c from live to done with err, if it is live.  Returns false if it
 * was already done.  On true, c's detached children (each retained) have
 * been pushed on *work.  Called holding a reference to c and no locks.
 * from_own_timer: the caller is c's timer fn (its timer is already out of
 * the heap, and the fn drops the timer's reference itself).
 */
static bool ctx_cancel_one(rt_context *c, int err, bool from_own_timer, rt_context **work) {
    lock_acquire(&c->lock);
    if (atomic_load_explicit(&c->err, memory_order_relaxed) != 0) {
        lock_release(&c->lock);
        return false;
    }
    atomic_store_explicit(&c->err, err, memory_order_release);

    ctx_waiter *ws = c->waiters;
    c->waiters = NULL;
    for (ctx_waiter *w = ws; w != NULL; w = w->next)
        atomic_store_explicit(&w->state, W_FIRING, memory_order_relaxed);

    /* Detach the children onto the work list; their links are ours now. */
    rt_context *kid = c->children;
    c->children = NULL;
    while (kid != NULL) {
        rt_context *next = kid->sib_next;
        ctx_ref(kid);   /* a linked child is never at zero references */
        kid->linked = false;
        kid->sib_prev = NULL;
        kid->sib_next = *work;
        *work = kid;
        kid = next;
    }

    rt_chan *ch = atomic_load_explicit(&c->done, memory_order_relaxed);
    bool armed = c->timer_armed;
    c->timer_armed = false;
    lock_release(&c->lock);

    if (ch != NULL) rt_chan_close(ch);
    for (ctx_waiter *w = ws; w != NULL;) {
        ctx_waiter *next = w->next;     /* w may be freed once FIRED */
        w->next = w->prev = NULL;
        w->fn(w, err);
        atomic_store_explicit(&w->state, W_FIRED, memory_order_release);
        w = next;
    }
    if (armed && !from_own_timer && timer_del(&c->tm))
        ctx_unref(c);   /* the timer's reference; ours keeps c alive */
    return true;
}

/* Cancel c and its whole subtree.  The caller holds a reference to c. */
static void ctx_cancel(rt_context *c, int err, bool from_own_timer) {
    rt_context *work = NULL;
    if (!ctx_cancel_one(c, err, from_own_timer, &work)) return;

    /* Leave the parent's list (Go's removeChild). */
    rt_context *par = c->parent;
    if (par != NULL) {
        lock_acquire(&par->lock);
        if (c->linked) {
            if (c->sib_prev != NULL) c->sib_prev->sib_next = c->sib_next;
            else par->children = c->sib_next;
            if (c->sib_next != NULL) c->sib_next->sib_prev = c->sib_prev;
            c->sib_next = c->sib_prev = NULL;
            c->linked = false;
        }
        lock_release(&par->lock);
    }

    while (work != NULL) {
        rt_context *n = work;
        work = n->sib_next;
        n->sib_next = NULL;
        (void)ctx_cancel_one(n, err, false, &work);
        ctx_unref(n);
    }
}

static void ctx_timer_fire(void *arg, int64_t now) {
    (void)now;
    rt_context *c = arg;
    ctx_cancel(c, RT_ETIMEDOUT, true);
    ctx_unref(c);   /* the timer's reference: may free c, timer included */
}

/* ------------------------------------------------------------ creation */

static bool ctx_on_processor(void) {
    if (getg() != NULL) return true;
    m *mp = getm();
    return mp != NULL && mp->p != NULL;
}

/* A child of parent with its own deadline (0: none). */
static int ctx_new(rt_context *parent, int64_t deadline, rt_context **out) {
    if (out == NULL) return RT_EINVAL;
    *out = NULL;
    rt_context *par = ctx_is_background(parent) ? NULL : parent;

    int64_t eff = deadline;
    bool own_timer = deadline != 0;
    if (par != NULL && par->deadline != 0 && (deadline == 0 || par->deadline <= deadline)) {
        eff = par->deadline;   /* the ancestor's timer covers it */
        own_timer = false;
    }
    /* A done parent makes a child born done with the parent's error (as
     * Go's propagateCancel runs before WithDeadline looks at the clock);
     * it needs no timer.  A parent cancelled after this check is caught
     * under its lock below. */
    int born_err = par != NULL ? rt_context_err(par) : 0;
    if (born_err != 0) own_timer = false;
    bool expired = own_timer && eff <= rt_nanotime();
    if (expired) born_err = RT_ETIMEDOUT;
    if (own_timer && !expired && !ctx_on_processor())
        return RT_ESTATE;      /* a timer needs a P: a goroutine, or rt_main started */

    rt_context *c = calloc(1, sizeof *c);
    if (c == NULL) return RT_ENOMEM;
    atomic_init(&c->refs, 1);
    c->deadline = eff;
    c->parent = par;
    if (par != NULL) ctx_ref(par);
    atomic_fetch_add_explicit(&ctx_live, 1, memory_order_relaxed);

    if (born_err != 0) {
        atomic_init(&c->err, born_err);       /* born done; not visible yet */
    } else if (own_timer) {
        /* Armed before c is visible: a canceller that sees timer_armed
         * always finds the timer in a heap or already fired. */
        c->timer_armed = true;
        atomic_init(&c->refs, 2);             /* + the timer's */
        c->tm.fn = ctx_timer_fire;
        c->tm.arg = c;
        c->tm.fn_owns = true;
        timer_add(&c->tm, eff);
    }

    if (par != NULL) {
        lock_acquire(&par->lock);
        int perr = atomic_load_explicit(&par->err, memory_order_relaxed);
        if (perr == 0 && atomic_load_explicit(&c->err, memory_order_acquire) == 0) {
            c->sib_prev = NULL;
            c->sib_next = par->children;
            if (par->children != NULL) par->children->sib_prev = c;
            par->children = c;
            c->linked = true;
        }
        lock_release(&par->lock);
        if (perr != 0) ctx_cancel(c, perr, false);   /* born done, like its parent */
    }
    *out = c;
    return RT_OK;
}

/* --------------------------------------------------------------- public */

rt_context *rt_context_background(void) { return &ctx_background_node; }

int rt_context_with_cancel(rt_context *parent, rt_context **out) {
    return ctx_new(parent, 0, out);
}

int rt_context_with_deadline(rt_context *parent, int64_t deadline, rt_context **out) {
    /* 0 would mean "no deadline" inside; any deadline <= 0 is long past. */
    return ctx_new(parent, deadline > 0 ? deadline : 1, out);
}

int rt_context_with_timeout(rt_context *parent, int64_t timeout, rt_context **out) {
    int64_t now = rt_nanotime();
    int64_t deadline;
    if (timeout <= 0) deadline = now;
    else if (__builtin_add_overflow(now, timeout, &deadline)) deadline = INT64_MAX;
    return rt_context_with_deadline(parent, deadline, out);
}

void rt_context_cancel(rt_context *ctx) {
    if (ctx_is_background(ctx)) return;
    ctx_cancel(ctx, RT_ECANCELED, false);
}

void rt_context_retain(rt_context *ctx) {
    if (ctx_is_background(ctx)) return;
    ctx_ref(ctx);
}

void rt_context_release(rt_context *ctx) {
    if (ctx_is_background(ctx)) return;
    ctx_cancel(ctx, RT_ECANCELED, false);
    ctx_unref(ctx);
}

rt_chan *rt_context_done(rt_context *ctx) {
    if (ctx_is_background(ctx)) return NULL;
    rt_chan *ch = atomic_load_explicit(&ctx->done, memory_order_acquire);
    if (ch != NULL) return ch;

    rt_chan *fresh;
    if (rt_chan_make(&fresh, 0, 0) != RT_OK) rt_throw("out of memory");
    lock_acquire(&ctx->lock);
    ch = atomic_load_explicit(&ctx->done, memory_order_relaxed);
    if (ch != NULL) {                     /* lost the race */
        lock_release(&ctx->lock);
        rt_chan_release(fresh);
        return ch;
    }
    atomic_store_explicit(&ctx->done, fresh, memory_order_release);
    bool close_it = atomic_load_explicit(&ctx->err, memory_order_relaxed) != 0;
    lock_release(&ctx->lock);
    if (close_it) rt_chan_close(fresh);   /* done before it existed: ours to close */
    return fresh;
}

int rt_context_err(rt_context *ctx) {
    if (ctx_is_background(ctx)) return 0;
    return atomic_load_explicit(&ctx->err, memory_order_acquire);
}

int64_t rt_context_deadline(rt_context *ctx) {
    if (ctx_is_background(ctx)) return 0;
    return ctx->deadline;
}

/* -------------------------------------------------------------- waiters */

int ctx_watch(rt_context *ctx, ctx_waiter *w) {
    w->next = w->prev = NULL;
    if (ctx_is_background(ctx)) {
        atomic_store_explicit(&w->state, W_IDLE, memory_order_relaxed);
        return 0;
    }
    lock_acquire(&ctx->lock);
    int err = atomic_load_explicit(&ctx->err, memory_order_relaxed);
    if (err != 0) {
        lock_release(&ctx->lock);
        atomic_store_explicit(&w->state, W_IDLE, memory_order_relaxed);
        return err;
    }
    w->next = ctx->waiters;
    if (ctx->waiters != NULL) ctx->waiters->prev = w;
    ctx->waiters = w;
    atomic_store_explicit(&w->state, W_REGISTERED, memory_order_relaxed);
    lock_release(&ctx->lock);
    return 0;
}

bool ctx_unwatch(rt_context *ctx, ctx_waiter *w) {
    if (ctx_is_background(ctx)) return true;
    lock_acquire(&ctx->lock);
    uint32_t st = atomic_load_explicit(&w->state, memory_order_relaxed);
    if (st == W_REGISTERED) {
        if (w->prev != NULL) w->prev->next = w->next;
        else ctx->waiters = w->next;
        if (w->next != NULL) w->next->prev = w->prev;
        w->next = w->prev = NULL;
        atomic_store_explicit(&w->state, W_IDLE, memory_order_relaxed);
        lock_release(&ctx->lock);
        return true;
    }
    lock_release(&ctx->lock);
    if (st == W_IDLE) return true;        /* never registered */
    /* FIRING: a canceller is calling fn now (it never blocks); wait. */
    while (atomic_load_explicit(&w->state, memory_order_acquire) != W_FIRED) {
        if (getg() != NULL) rt_yield();
        else os_yield();
    }
    return false;
}

/* ------------------------------------------------- bounded channel ops */

/* The error of a context whose done channel was seen closed.  The error is
 * stored before the channel is closed, and the close and our receive are
 * ordered by the channel's lock, so it is never 0 here. */
static int ctx_done_err(rt_context *ctx) {
    int err = rt_context_err(ctx);
    if (err == 0) rt_throw("context: done channel closed while live");
    return err;
}

int rt_chan_send_ctx(rt_context *ctx, rt_chan *c, const void *elem) {
    if (ctx_is_background(ctx)) {
        rt_chan_send(c, elem);
        return RT_OK;
    }
    int err = rt_context_err(ctx);
    if (err != 0) return err;
    rt_select_case cases[2] = {
        RT_SEND_CASE(c, elem),
        RT_RECV_CASE(rt_context_done(ctx), NULL),
    };
    return rt_select(cases, 2, false) == 0 ? RT_OK : ctx_done_err(ctx);
}

int rt_chan_recv_ctx(rt_context *ctx, rt_chan *c, void *elem, bool *ok) {
    if (ctx_is_background(ctx)) {
        bool got = rt_chan_recv(c, elem);
        if (ok != NULL) *ok = got;
        return RT_OK;
    }
    int err = rt_context_err(ctx);
    if (err != 0) return err;
    rt_select_case cases[2] = {
        RT_RECV_CASE(c, elem),
        RT_RECV_CASE(rt_context_done(ctx), NULL),
    };
    if (rt_select(cases, 2, false) != 0) return ctx_done_err(ctx);
    if (ok != NULL) *ok = cases[0].recv_ok;
    return RT_OK;
}

#define SELECT_CTX_STACK_CASES 16

int rt_select_ctx(rt_context *ctx, rt_select_case *cases, size_t ncases) {
    if (ctx_is_background(ctx)) return rt_select(cases, ncases, false);
    if (ncases >= RT_SELECT_MAX_CASES) return RT_EINVAL;   /* no room for done */
    if (ncases > 0 && cases == NULL) return RT_EINVAL;
    int err = rt_context_err(ctx);
    if (err != 0) return err;

    rt_select_case small[SELECT_CTX_STACK_CASES];
    rt_select_case *all = small;
    if (ncases + 1 > SELECT_CTX_STACK_CASES) {
        all = malloc((ncases + 1) * sizeof *all);
        if (all == NULL) return RT_ENOMEM;
    }
    if (ncases > 0) memcpy(all, cases, ncases * sizeof *all);
    all[ncases] = RT_RECV_CASE(rt_context_done(ctx), NULL);
    int i = rt_select(all, ncases + 1, false);
    if ((size_t)i < ncases && all[i].dir == RT_SELECT_RECV) cases[i].recv_ok = all[i].recv_ok;
    if (all != small) free(all);
    return (size_t)i == ncases ? ctx_done_err(ctx) : i;
}

/* ------------------------------------------------------------ sleep_ctx
 *
 * The goroutine parks with a timer (for ns) and a ctx_waiter.  Both are
 * registered before it parks, so either may fire before it is parked: the
 * state word decides.  A firing fn sets its WOKE bit if no WOKE bit is set;
 * it readies the goroutine only if PARKED was already set.  The park's
 * unlock function sets PARKED only if no WOKE bit is set yet, and otherwise
 * makes gopark return at once.  So the goroutine is readied at most once,
 * and only once it is parked.  Afterwards ctx_unwatch and timer_del wait
 * for a losing fn still running, so the stack frame may go.
 */

enum {
    SLEEP_PARKED = 1,
    SLEEP_BY_TIMER = 2,
    SLEEP_BY_CTX = 4,
};

typedef struct sleep_wait {
    g *gp;
    _Atomic uint32_t state;
    ctx_waiter w;
    timer t;
} sleep_wait;

static void sleep_wake(sleep_wait *sw, uint32_t why) {
    uint32_t s = atomic_load_explicit(&sw->state, memory_order_acquire);
    for (;;) {
        if (s & (SLEEP_BY_TIMER | SLEEP_BY_CTX)) return;   /* the other won */
        if (atomic_compare_exchange_weak_explicit(&sw->state, &s, s | why,
                                                  memory_order_acq_rel, memory_order_acquire)) {
            if (s & SLEEP_PARKED) goready(sw->gp);
            return;
        }
    }
}

static void sleep_ctx_fire(ctx_waiter *w, int err) {
    (void)err;
    sleep_wake(w->arg, SLEEP_BY_CTX);
}

static void sleep_timer_fire(void *arg, int64_t now) {
    (void)now;
    sleep_wake(arg, SLEEP_BY_TIMER);
}

static bool sleep_park_commit(g *gp, void *arg) {
    (void)gp;
    sleep_wait *sw = arg;
    uint32_t idle = 0;
    return atomic_compare_exchange_strong_explicit(&sw->state, &idle, SLEEP_PARKED,
                                                   memory_order_acq_rel, memory_order_acquire);
}

/* A plain thread cannot park: sleep in slices, watching the context. */
static int sleep_ctx_thread(rt_context *ctx, int64_t ns) {
    int64_t until = rt_nanotime() + ns;
    for (;;) {
        int err = rt_context_err(ctx);
        if (err != 0) return err;
        int64_t left = until - rt_nanotime();
        if (left <= 0) return RT_OK;
        if (left > RT_MILLISECOND) left = RT_MILLISECOND;
        struct timespec ts = { 0, (long)left };
        nanosleep(&ts, NULL);
    }
}

int rt_sleep_ctx(rt_context *ctx, int64_t ns) {
    if (ctx_is_background(ctx)) {
        rt_sleep(ns);
        return RT_OK;
    }
    int err = rt_context_err(ctx);
    if (err != 0) return err;
    if (ns <= 0) {
        rt_yield();
        return RT_OK;
    }
    g *gp = getg();
    if (gp == NULL) return sleep_ctx_thread(ctx, ns);

    int64_t when;
    if (__builtin_add_overflow(rt_nanotime(), ns, &when)) when = INT64_MAX;
    sleep_wait sw;
    memset(&sw, 0, sizeof sw);
    sw.gp = gp;
    sw.w.fn = sleep_ctx_fire;
    sw.w.arg = &sw;
    err = ctx_watch(ctx, &sw.w);
    if (err != 0) return err;
    sw.t.fn = sleep_timer_fire;
    sw.t.arg = &sw;
    timer_add(&sw.t, when);
    gopark(sleep_park_commit, &sw, WAIT_SLEEP);
    (void)ctx_unwatch(ctx, &sw.w);
    (void)timer_del(&sw.t);
    uint32_t s = atomic_load_explicit(&sw.state, memory_order_acquire);
    return (s & SLEEP_BY_CTX) ? ctx_done_err(ctx) : RT_OK;
}
