/*
 * chan_internal.h — the channel's representation, shared by chan.c (the
 * channel operations) and select.c (select over several channels) and by
 * nothing else.  See the comment at the top of chan.c for the design and
 * the invariants these fields keep.
 */
#ifndef LEDGERD_RT_CHAN_INTERNAL_H
#define LEDGERD_RT_CHAN_INTERNAL_H

#include "rt_internal.h"

#include <string.h>

/*
 * A FIFO of sudogs, doubly linked through sudog.next / sudog.prev.
 * `first` is written only under the channel lock but read without it by
 * the non-blocking fast paths (chan_full / chan_empty), hence atomic.
 */
typedef struct waitq {
    _Atomic(sudog *) first;
    sudog *last;
} waitq;

struct rt_chan {
    rt_lock lock;               /* protects everything below but refs, and
                                 * the queue fields of sudogs queued here */
    _Atomic uint32_t closed;    /* 0 or 1; never goes back to 0 */
    _Atomic size_t qcount;      /* elements in the buffer (racy reads: len) */
    size_t dataqsiz;            /* buffer capacity in elements (cap) */
    size_t elem_size;           /* bytes per element, may be 0 */
    size_t sendx;               /* next buffer slot a send fills */
    size_t recvx;               /* next buffer slot a receive takes */
    waitq recvq;                /* goroutines blocked receiving */
    waitq sendq;                /* goroutines blocked sending */
    unsigned char *buf;         /* dataqsiz * elem_size bytes, after this struct */
    _Atomic int64_t refs;       /* references (rt_chan_retain/release) */
};

/* ------------------------------------------------------------ wait queues */

static inline void waitq_enqueue(waitq *q, sudog *sg) {
    sg->next = NULL;
    sudog *last = q->last;
    if (last == NULL) {
        sg->prev = NULL;
        q->last = sg;
        atomic_store_explicit(&q->first, sg, memory_order_release);
        return;
    }
    sg->prev = last;
    last->next = sg;
    q->last = sg;
}

/*
 * Pop the first sudog that can still be completed.  A select's sudog whose
 * goroutine has already been won by another case (select_done was set by
 * someone else) is unlinked and skipped: the select will find it removed
 * when it cleans up (waitq_remove treats an unlinked sudog as a no-op).
 */
static inline sudog *waitq_dequeue(waitq *q) {
    for (;;) {
        sudog *sg = atomic_load_explicit(&q->first, memory_order_relaxed);
        if (sg == NULL) return NULL;
        sudog *next = sg->next;
        if (next == NULL) {
            q->last = NULL;
            atomic_store_explicit(&q->first, NULL, memory_order_release);
        } else {
            next->prev = NULL;
            atomic_store_explicit(&q->first, next, memory_order_release);
            sg->next = NULL;   /* mark as removed (see waitq_remove) */
        }
        if (sg->is_select) {
            uint32_t expect = 0;
            if (!atomic_compare_exchange_strong(&sg->g->select_done, &expect, 1))
                continue;      /* its select was won by another case */
        }
        return sg;
    }
}

/*
 * Unlink sg wherever it is in q.  A sudog that is not linked (prev and
 * next NULL and not the first) was already dequeued: nothing to do.
 */
static inline void waitq_remove(waitq *q, sudog *sg) {
    sudog *prev = sg->prev;
    sudog *next = sg->next;
    if (prev != NULL) {
        prev->next = next;
        if (next != NULL) next->prev = prev;
        else q->last = prev;
        sg->prev = NULL;
        sg->next = NULL;
        return;
    }
    if (next != NULL) {
        next->prev = NULL;
        atomic_store_explicit(&q->first, next, memory_order_release);
        sg->next = NULL;
        return;
    }
    if (atomic_load_explicit(&q->first, memory_order_relaxed) == sg) {
        q->last = NULL;
        atomic_store_explicit(&q->first, NULL, memory_order_release);
    }
}

static inline bool waitq_is_empty(waitq *q) {
    return atomic_load_explicit(&q->first, memory_order_relaxed) == NULL;
}

/* ---------------------------------------------------------------- buffer */

static inline unsigned char *chan_slot(rt_chan *c, size_t i) {
    return c->buf + i * c->elem_size;
}

/* Copy one element to dst (NULL: discard) from src (NULL: a zero value). */
static inline void chan_elem_copy(rt_chan *c, void *dst, const void *src) {
    if (dst == NULL || c->elem_size == 0) return;
    if (src == NULL) {
        memset(dst, 0, c->elem_size);
        return;
    }
    /* Word-sized elements (ints, pointers) are the common case: copy them
     * inline rather than through a call to memcpy. */
    switch (c->elem_size) {
    case 4: memcpy(dst, src, 4); return;
    case 8: memcpy(dst, src, 8); return;
    case 16: memcpy(dst, src, 16); return;
    default: memcpy(dst, src, c->elem_size); return;
    }
}

static inline void chan_elem_zero(rt_chan *c, void *dst) {
    if (dst != NULL && c->elem_size != 0) memset(dst, 0, c->elem_size);
}

static inline size_t chan_qcount(rt_chan *c) {
    return atomic_load_explicit(&c->qcount, memory_order_relaxed);
}

static inline void chan_set_qcount(rt_chan *c, size_t n) {
    atomic_store_explicit(&c->qcount, n, memory_order_release);
}

static inline bool chan_is_closed(rt_chan *c) {
    return atomic_load_explicit(&c->closed, memory_order_acquire) != 0;
}

/* Append the element at src to the buffer.  Lock held, buffer not full. */
static inline void chan_buf_put(rt_chan *c, const void *src) {
    chan_elem_copy(c, chan_slot(c, c->sendx), src);
    if (++c->sendx == c->dataqsiz) c->sendx = 0;
    chan_set_qcount(c, chan_qcount(c) + 1);
}

/* Take the oldest element into dst (NULL: discard).  Lock held, not empty. */
static inline void chan_buf_take(rt_chan *c, void *dst) {
    chan_elem_copy(c, dst, chan_slot(c, c->recvx));
    if (++c->recvx == c->dataqsiz) c->recvx = 0;
    chan_set_qcount(c, chan_qcount(c) - 1);
}

/* ------------------------------------------------------- handoff (chan.c) */

/* Releases the lock(s) held by the operation; called before goready. */
typedef void (*chan_unlock_fn)(void *arg);

/*
 * Complete a send to sg, a receiver dequeued from c->recvq: copy the value
 * straight into the receiver, run unlockf(arg) to drop the lock(s), then
 * make the receiver runnable.  (Go's send().)
 */
void chan_send_to_waiter(rt_chan *c, sudog *sg, const void *src,
                         chan_unlock_fn unlockf, void *arg);

/*
 * Complete a receive from sg, a sender dequeued from c->sendq: take the
 * value (from the sender if unbuffered, else from the head of the full
 * buffer, refilled from the sender), drop the lock(s), ready the sender.
 * (Go's recv().)
 */
void chan_recv_from_waiter(rt_chan *c, sudog *sg, void *dst,
                           chan_unlock_fn unlockf, void *arg);

/* The calling goroutine, or a fatal error naming `what` if there is none
 * (a blocking operation called from the scheduler or a foreign thread). */
g *chan_current_g(const char *what);

#endif /* LEDGERD_RT_CHAN_INTERNAL_H */
