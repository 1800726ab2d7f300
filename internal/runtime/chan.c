/*
 * chan.c — channels: Go's runtime/chan.go, in C.
 *
 * Representation
 *
 *   A channel (struct rt_chan, chan_internal.h) is one calloc'd block: the
 *   header followed by a ring buffer of dataqsiz elements of elem_size
 *   bytes.  The header holds the ring's cursors (sendx, recvx, qcount), a
 *   closed flag, two FIFO wait queues of sudogs (recvq: goroutines blocked
 *   receiving, sendq: blocked sending), a reference count and a lock.
 *
 *   An unbuffered channel (dataqsiz == 0) has no ring: every transfer is a
 *   rendezvous, the value copied straight from the sender's memory to the
 *   receiver's.  elem_size may be 0 (a signal channel); no bytes are ever
 *   copied then.
 *
 * Locking
 *
 *   c->lock (an rt_lock: a futex mutex that blocks the thread, held only for
 *   short stretches that never park) protects every field but refs, and the
 *   queue links and elem of each sudog queued on c.  select takes the locks
 *   of all its channels in address order (select.c), which is why the
 *   channel lock is first in the runtime's lock order (rt_internal.h).
 *
 *   A few fields are also read without the lock, by the non-blocking fast
 *   paths and rt_chan_len: closed, qcount and the queues' first pointers.
 *   They are atomics, written only under the lock.  The fast paths draw a
 *   conclusion only from observations that cannot be invalidated by what
 *   happened between them (see chan_send / chan_recv).
 *
 * Invariants (as in Go)
 *
 *   - At least one of recvq and sendq is empty, except when one goroutine
 *     is both sending and receiving on an unbuffered channel inside a
 *     select: its sudogs may sit in both queues.
 *   - Buffered channels: qcount > 0 implies recvq is empty (a receiver
 *     would have taken the element), and qcount < dataqsiz implies sendq is
 *     empty (a sender would have used the room).
 *   - closed never returns to 0.  Once closed, both queues are empty and
 *     stay empty: close wakes every waiter, and nobody enqueues on a closed
 *     channel (senders die, receivers drain the buffer then get "closed").
 *
 * Blocking: sudogs and parking
 *
 *   A goroutine that must wait builds a sudog on its own stack (C stacks
 *   never move, so pointers into a parked goroutine's stack stay valid),
 *   points sudog.elem at its value (send) or destination (receive),
 *   enqueues it and parks with goparkunlock(&c->lock): the lock is released
 *   only after the goroutine's context is saved, so a waker that finds the
 *   sudog under the lock always finds a goroutine that is really parked.
 *   (gopark never stops to take back a P that sysmon took while the lock
 *   is held: proc.c runs the unlock function first.)
 *
 *   The waker (the partner operation, or close) dequeues the sudog under the
 *   lock and copies the element directly to or from the sleeper's memory —
 *   the buffer is bypassed when a receiver is already waiting.  It then
 *   releases the lock, sets sudog.success (true: a value moved; false: the
 *   channel was closed) and g.param = sudog, and only then calls goready:
 *   as in Go, no goroutine is readied while a channel lock is held.
 *
 *   A woken goroutine touches only its own sudog, never the channel, so a
 *   channel may be released (even freed) as soon as the operation that
 *   woke the sleeper has returned.
 *
 *   A buffered channel with a full buffer and a waiting sender is received
 *   from in one step: the receiver takes the head of the ring and the
 *   sender's value goes into the slot just freed, which keeps FIFO order
 *   across buffer and waiters.
 *
 * Close
 *
 *   close sets closed, then dequeues every waiter: receivers get a zeroed
 *   element and success == false; senders get success == false and die with
 *   "send on closed channel" when they run, as Go's panic would.  The
 *   woken goroutines are collected on a list linked through g.schedlink
 *   (free while a goroutine is parked) and readied, in queue order, after
 *   the lock is dropped.
 *
 * Nil channels and goroutine-less callers
 *
 *   A NULL channel blocks forever: the goroutine parks with no unlock
 *   function and no queue, so nothing can wake it.  The non-blocking
 *   operations never park and never need a current goroutine: they work on
 *   the scheduler stack (timer callbacks in time.c deliver to their cap-1
 *   channels with rt_chan_try_send) and on foreign threads.  A blocking
 *   operation without a goroutine is a fatal error.
 *
 * Reference counting
 *
 *   rt_chan_make returns one reference.  At the last rt_chan_release the
 *   channel is freed; if goroutines are still parked on it nobody could
 *   ever wake them, so that is a fatal error ("release of channel with
 *   waiters").  select holds its own references while it is parked,
 *   because it does touch its channels after waking (select.c).
 *
 * Elements are copied with memcpy.  A NULL source sends a zero value; a
 * NULL destination discards the value received.
 */
#include "chan_internal.h"

#include <stdlib.h>
#include <string.h>

/* Go rejects element types of 64 KiB and more; we allow exactly 64 KiB. */
#define CHAN_MAX_ELEM_SIZE ((size_t)64 * 1024)

/* The buffer starts after the header, aligned for any element type. */
#define CHAN_BUF_ALIGN ((size_t)16)
#define CHAN_HEADER_SIZE ((sizeof(rt_chan) + CHAN_BUF_ALIGN - 1) & ~(CHAN_BUF_ALIGN - 1))

/* ------------------------------------------------------------ make / free */

int rt_chan_make(rt_chan **out, size_t elem_size, size_t cap) {
    if (out == NULL) return RT_EINVAL;
    *out = NULL;
    if (elem_size > CHAN_MAX_ELEM_SIZE) return RT_EINVAL;
    size_t bufsize;
    if (__builtin_mul_overflow(elem_size, cap, &bufsize)) return RT_EINVAL;
    if (bufsize > (size_t)PTRDIFF_MAX - CHAN_HEADER_SIZE) return RT_EINVAL;

    rt_chan *c = calloc(1, CHAN_HEADER_SIZE + bufsize);
    if (c == NULL) return RT_ENOMEM;
    c->elem_size = elem_size;
    c->dataqsiz = cap;
    c->buf = (unsigned char *)c + CHAN_HEADER_SIZE;
    atomic_init(&c->refs, 1);
    *out = c;
    return RT_OK;
}

void rt_chan_retain(rt_chan *c) {
    if (c == NULL) return;
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

static bool chan_has_waiters(rt_chan *c) {
    lock_acquire(&c->lock);
    bool waiters = !waitq_is_empty(&c->recvq) || !waitq_is_empty(&c->sendq);
    lock_release(&c->lock);
    return waiters;
}

void rt_chan_release(rt_chan *c) {
    if (c == NULL) return;
    int64_t old = atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel);
    if (old > 1) return;
    if (old < 1) rt_throw("release of released channel");
    if (chan_has_waiters(c)) rt_throw("release of channel with waiters");
    free(c);
}

size_t rt_chan_len(rt_chan *c) {
    return c == NULL ? 0 : chan_qcount(c);
}

size_t rt_chan_cap(rt_chan *c) {
    return c == NULL ? 0 : c->dataqsiz;
}

/* ---------------------------------------------------------------- helpers */

g *chan_current_g(const char *what) {
    g *gp = getg();
    if (gp == NULL) rt_throwf("%s: blocking channel operation outside a goroutine", what);
    return gp;
}

static void chan_unlock(void *arg) {
    lock_release(&((rt_chan *)arg)->lock);
}

/*
 * Would a send block?  Unbuffered: no receiver waiting.  Buffered: the
 * buffer is full.  Read without the lock, by the fast path only.
 */
static bool chan_full(rt_chan *c) {
    if (c->dataqsiz == 0)
        return atomic_load_explicit(&c->recvq.first, memory_order_acquire) == NULL;
    return atomic_load_explicit(&c->qcount, memory_order_acquire) == c->dataqsiz;
}

/* Would a receive block (closed aside)?  Unbuffered: no sender waiting.
 * Buffered: nothing in the buffer.  Read without the lock. */
static bool chan_empty(rt_chan *c) {
    if (c->dataqsiz == 0)
        return atomic_load_explicit(&c->sendq.first, memory_order_acquire) == NULL;
    return atomic_load_explicit(&c->qcount, memory_order_acquire) == 0;
}

/* Park forever: the nil-channel operations and select{}. */
static _Noreturn void chan_block_forever(wait_reason reason) {
    (void)chan_current_g("nil channel");
    gopark(NULL, NULL, reason);
    rt_throw("unreachable: woke from a nil channel");
}

/* The sudog of a goroutine about to wait on c for a single operation. */
static void chan_sudog_init(sudog *sg, g *gp, rt_chan *c, void *elem) {
    memset(sg, 0, sizeof *sg);
    sg->g = gp;
    sg->c = c;
    sg->elem = elem;
    sg->is_select = false;
}

/* After waking from a single-channel wait: check and clear the G's wait
 * state, return whether a value moved (false: woken by close). */
static bool chan_finish_wait(g *gp, sudog *sg) {
    gp->park_on_chan = false;
    if (gp->waiting != sg) rt_throw("G waiting list is corrupted");
    if (gp->param != sg) rt_throw("chan: spurious wakeup");
    gp->waiting = NULL;
    gp->param = NULL;
    sg->c = NULL;
    return sg->success;
}

/* ------------------------------------------------------------ handoffs */

void chan_send_to_waiter(rt_chan *c, sudog *sg, const void *src,
                         chan_unlock_fn unlockf, void *arg) {
    if (sg->elem != NULL) {
        chan_elem_copy(c, sg->elem, src);
        sg->elem = NULL;
    }
    g *gp = sg->g;
    unlockf(arg);
    gp->param = sg;
    sg->success = true;
    goready(gp);
}

void chan_recv_from_waiter(rt_chan *c, sudog *sg, void *dst,
                           chan_unlock_fn unlockf, void *arg) {
    if (c->dataqsiz == 0) {
        chan_elem_copy(c, dst, sg->elem);
    } else {
        /* The buffer is full (a sender is waiting).  Take its head and put
         * the sender's value in the slot freed: recvx advances and the ring
         * stays full, so sendx follows it. */
        unsigned char *slot = chan_slot(c, c->recvx);
        chan_elem_copy(c, dst, slot);
        chan_elem_copy(c, slot, sg->elem);
        if (++c->recvx == c->dataqsiz) c->recvx = 0;
        c->sendx = c->recvx;
    }
    sg->elem = NULL;
    g *gp = sg->g;
    unlockf(arg);
    gp->param = sg;
    sg->success = true;
    goready(gp);
}

/* ------------------------------------------------------------------ send */

/* Block until a receiver takes the value at src.  Lock held on entry;
 * released by the park. */
static void chan_send_wait(rt_chan *c, g *gp, const void *src) {
    sudog mysg;
    chan_sudog_init(&mysg, gp, c, (void *)src);
    gp->waiting = &mysg;
    gp->param = NULL;
    waitq_enqueue(&c->sendq, &mysg);
    gp->park_on_chan = true;
    goparkunlock(&c->lock, WAIT_CHAN_SEND);
    if (!chan_finish_wait(gp, &mysg)) rt_throw("send on closed channel");
}

/*
 * Send the element at src on c.  block == false: return false instead of
 * waiting.  Returns true once the value is delivered or buffered.
 */
static bool chan_send(rt_chan *c, const void *src, bool block) {
    if (c == NULL) {
        if (!block) return false;
        chan_block_forever(WAIT_CHAN_SEND_NIL);
    }

    /*
     * Fast path: a failing non-blocking send, decided without the lock.
     * We observe "not closed" and then "not ready for sending".  A closed
     * channel never becomes unready for sending again, so there was a
     * moment between the two observations when the channel was open and
     * not ready; we behave as if the send were attempted then.
     */
    if (!block && !chan_is_closed(c) && chan_full(c)) return false;

    lock_acquire(&c->lock);
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        lock_release(&c->lock);
        rt_throw("send on closed channel");
    }
    sudog *sg = waitq_dequeue(&c->recvq);
    if (sg != NULL) {
        chan_send_to_waiter(c, sg, src, chan_unlock, c);
        return true;
    }
    if (chan_qcount(c) < c->dataqsiz) {
        chan_buf_put(c, src);
        lock_release(&c->lock);
        return true;
    }
    if (!block) {
        lock_release(&c->lock);
        return false;
    }
    chan_send_wait(c, chan_current_g("chan send"), src);
    return true;
}

void rt_chan_send(rt_chan *c, const void *elem) {
    (void)chan_send(c, elem, true);
}

bool rt_chan_try_send(rt_chan *c, const void *elem) {
    return chan_send(c, elem, false);
}

/* --------------------------------------------------------------- receive */

/* Block until a sender or close arrives; returns whether a value was
 * received.  Lock held on entry; released by the park. */
static bool chan_recv_wait(rt_chan *c, g *gp, void *dst) {
    sudog mysg;
    chan_sudog_init(&mysg, gp, c, dst);
    gp->waiting = &mysg;
    gp->param = NULL;
    waitq_enqueue(&c->recvq, &mysg);
    gp->park_on_chan = true;
    goparkunlock(&c->lock, WAIT_CHAN_RECV);
    return chan_finish_wait(gp, &mysg);
}

/*
 * Receive from c into dst (NULL: discard).  Returns whether the receive
 * happened (`selected`; false only when !block and it would block) and sets
 * *received: true for a value, false for closed-and-drained (dst zeroed).
 */
static bool chan_recv(rt_chan *c, void *dst, bool block, bool *received) {
    *received = false;
    if (c == NULL) {
        if (!block) return false;
        chan_block_forever(WAIT_CHAN_RECV_NIL);
    }

    /*
     * Fast path: a non-blocking receive that would block, or that finds the
     * channel closed and drained, decided without the lock.  "Empty" then
     * "not closed": the channel was open when it was empty, so failing is
     * right.  "Empty", "closed", "still empty": a closed channel cannot be
     * refilled, so it was closed and drained at the second emptiness check.
     * (The acquire loads keep the three observations in order.)
     */
    if (!block && chan_empty(c)) {
        if (!chan_is_closed(c)) return false;
        if (chan_empty(c)) {
            chan_elem_zero(c, dst);
            return true;
        }
    }

    lock_acquire(&c->lock);
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        if (chan_qcount(c) == 0) {
            lock_release(&c->lock);
            chan_elem_zero(c, dst);
            return true;
        }
        /* closed but not drained: fall through to take from the buffer */
    } else {
        sudog *sg = waitq_dequeue(&c->sendq);
        if (sg != NULL) {
            chan_recv_from_waiter(c, sg, dst, chan_unlock, c);
            *received = true;
            return true;
        }
    }
    if (chan_qcount(c) > 0) {
        chan_buf_take(c, dst);
        lock_release(&c->lock);
        *received = true;
        return true;
    }
    if (!block) {
        lock_release(&c->lock);
        return false;
    }
    *received = chan_recv_wait(c, chan_current_g("chan receive"), dst);
    return true;
}

bool rt_chan_recv(rt_chan *c, void *elem) {
    bool received;
    (void)chan_recv(c, elem, true, &received);
    return received;
}

bool rt_chan_try_recv(rt_chan *c, void *elem, bool *ok) {
    bool received;
    bool selected = chan_recv(c, elem, false, &received);
    if (ok != NULL) *ok = received;
    return selected;
}

/* ----------------------------------------------------------------- close */

/* Goroutines to ready once the lock is dropped, in wake order, linked
 * through g.schedlink (unused while a goroutine is parked). */
typedef struct glist {
    g *head;
    g *tail;
} glist;

static void glist_push(glist *l, g *gp) {
    gp->schedlink = NULL;
    if (l->tail == NULL) l->head = gp;
    else l->tail->schedlink = gp;
    l->tail = gp;
}

static void glist_ready_all(glist *l) {
    g *gp = l->head;
    while (gp != NULL) {
        g *next = gp->schedlink;   /* read before goready hands gp away */
        gp->schedlink = NULL;
        goready(gp);
        gp = next;
    }
    l->head = l->tail = NULL;
}

/* Dequeue every waiter on q, marking it woken by close; receivers' elems
 * are zeroed.  Lock held. */
static void chan_wake_all_closed(rt_chan *c, waitq *q, bool receivers, glist *woken) {
    sudog *sg;
    while ((sg = waitq_dequeue(q)) != NULL) {
        if (receivers) chan_elem_zero(c, sg->elem);
        sg->elem = NULL;
        g *gp = sg->g;
        gp->param = sg;
        sg->success = false;
        glist_push(woken, gp);
    }
}

void rt_chan_close(rt_chan *c) {
    if (c == NULL) rt_throw("close of nil channel");
    lock_acquire(&c->lock);
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        lock_release(&c->lock);
        rt_throw("close of closed channel");
    }
    atomic_store_explicit(&c->closed, 1, memory_order_release);
    glist woken = { NULL, NULL };
    chan_wake_all_closed(c, &c->recvq, true, &woken);
    chan_wake_all_closed(c, &c->sendq, false, &woken);
    lock_release(&c->lock);
    glist_ready_all(&woken);
}
