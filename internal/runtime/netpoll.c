/*
 * netpoll.c — the network poller and the goroutine-blocking TCP API.
 *
 * Design (NETPOLL.md has the reasoning and the measurements):
 *
 *   One poller thread owns one libuv loop.  It is not an M: it holds no P and
 *   runs no goroutine.  Every libuv call happens on it.  It is started on the
 *   first network call and then lives as long as the process.
 *
 *   Goroutines reach it through commands: a lock-free MPSC list (a Treiber
 *   stack the poller takes whole with one exchange and reverses) plus
 *   uv_async_send, sent only by the push that found the list empty.  Command
 *   nodes are embedded in the connection or listener they act on, so
 *   submitting one allocates nothing.  The poller wakes goroutines with
 *   goready() (from a foreign thread: the global run queue and wakep()).
 *
 *   What goes through the poller and what does not:
 *     - reads: uv_read_start stays on while the connection's receive buffer
 *       holds less than NP_RBUF_MAX bytes.  read_cb copies data straight into
 *       a parked reader's buffer (under the conn lock, so the reader cannot
 *       leave meanwhile) and queues the rest in a per-connection ring,
 *       allocated on demand and freed when drained, so an idle connection
 *       owns no buffer.  A reader that finds buffered data never hops.
 *     - writes: the writer first send()s directly from its own thread
 *       (MSG_DONTWAIT | MSG_NOSIGNAL); only when the socket buffer is full
 *       does it copy a chunk (at most NP_WCHUNK) into memory the connection
 *       owns, hand it to the poller (uv_write) and park until write_cb.  The
 *       copy is what lets a deadline or a context end the wait at once: libuv
 *       may keep the chunk after the writer has returned.
 *     - shutdown(2), getsockname/getpeername: direct, from the goroutine.
 *     - listen, dial, close: on the poller.
 *
 *   Three counts govern a connection's (and a listener's) life:
 *     urefs  the user's references (rt_conn_retain/release; close drops one).
 *            The last one closes the connection.
 *     ops    the fd's users: 1 while open, plus one per API call in
 *            progress.  A call enters only while ops > 0 (else RT_ECLOSED),
 *            so direct system calls never meet a closed or reused fd; the
 *            close command (uv_close, on the poller) is submitted when ops
 *            drops to 0: closed, and no call inside.
 *     mrefs  the memory: one for all user references, one for the poller's
 *            handle (dropped by close_cb).  Freed at 0.
 *
 * Waiting.  A goroutine that must wait publishes an np_waiter (on its own
 * stack) in its object's slot under the object's rt_lock, and parks with
 * gopark, whose unlock function releases that lock.  Every waker — the
 * poller (data, EOF, error, write done, connect done), rt_conn_close, a
 * deadline timer, a context, a deadline change — takes the same lock and
 * wakes the waiter only if it is still in the slot, clearing the slot: so
 * exactly one of them wakes it.  Apart from a data delivery (result = bytes
 * copied) a wakeup means "re-examine the state", so the waiter loops.
 *
 * Lock order.  An object lock (conn or listener) sits above the P timer
 * lock and sched.lock: timer_add and goready are called while holding it.
 * Neither a context's lock nor any channel/sema lock is ever taken while
 * holding it (ctx_watch/ctx_unwatch are called without it).
 *
 * Deadlock detection.  The poller is not an M, so when every goroutine is
 * parked on the network, every M is idle; proc.c's checkdead asks
 * netpoll_waiters() and does not call that a deadlock (as Go's checkdead
 * does not while the netpoller has waiters).
 *
 * Signals.  libuv writes with write(2), which raises SIGPIPE on a reset
 * connection; the poller thread blocks SIGPIPE, so the write fails with EPIPE
 * instead, as in Go.  Direct sends use MSG_NOSIGNAL.
 */
#define _GNU_SOURCE
#include "context_internal.h"
#include "rt_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#if defined(RT_TSAN)
#include <sys/syscall.h>
/*
 * ThreadSanitizer tracks file descriptors through its libc interceptors, but
 * libuv closes them with a raw close system call, which it cannot see; a
 * descriptor number reused afterwards then looks like a race with the old
 * socket's last use.  So TSan is told to ignore libuv's libc calls, and our
 * own calls on libuv-owned descriptors bypass the interceptors too.  (Memory
 * is still checked: the handoffs between goroutines and the poller go
 * through our own atomics and rt_locks, which TSan sees.)
 */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void) { return "called_from_lib:libuv.so.1\n"; }
#define fd_send(fd, b, n, fl) syscall(SYS_sendto, (fd), (b), (n), (fl), NULL, 0)
#define fd_shutdown(fd, how) syscall(SYS_shutdown, (fd), (how))
#define fd_getsockname(fd, a, l) syscall(SYS_getsockname, (fd), (a), (l))
#define fd_getpeername(fd, a, l) syscall(SYS_getpeername, (fd), (a), (l))
#else
#define fd_send send
#define fd_shutdown shutdown
#define fd_getsockname getsockname
#define fd_getpeername getpeername
#endif

/* Buffered unread bytes above which the poller stops reading a connection. */
#define NP_RBUF_MAX ((size_t)64 * 1024)
/* The poller's read buffer (one for all connections: it runs one at a time). */
#define NP_READ_SIZE ((size_t)64 * 1024)
/* Largest chunk a blocked writer hands to the poller at a time. */
#define NP_WCHUNK ((size_t)256 * 1024)
/* Accepted connections a listener queues before it stops accepting. */
#define NP_ACCEPTQ 128u

#define NP_RETRY (-1000)   /* waiter result: re-examine the state */
#define NP_EOF 1           /* rt_conn.rerr: end of stream */

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* ---------------------------------------------------------------- types */

typedef enum np_op {
    OP_CONN_READ_START = 1,
    OP_CONN_WRITE,
    OP_CONN_CLOSE,
    OP_CONN_CONNECT,
    OP_LISTEN,
    OP_LISTEN_RESUME,
    OP_LISTEN_CLOSE,
} np_op;

typedef struct np_cmd {
    struct np_cmd *next;
    void *obj;
    np_op op;
} np_cmd;

typedef struct np_waiter np_waiter;
struct np_waiter {
    g *gp;
    rt_lock *lock;            /* the object's lock */
    np_waiter **slot;         /* where it is published while parked */
    char *buf;                /* reader: destination */
    size_t len;
    int64_t result;           /* set by the waker */
    int ctx_err;              /* set (under *lock) when the context is done */
    bool timer_armed;
    bool ctx_watched;
    rt_context *ctx;
    timer t;
    ctx_waiter cw;
};

/* A chunk of a blocked write, owned by the connection while in flight. */
typedef struct np_wchunk {
    uv_write_t req;
    rt_conn *c;
    size_t len;
    char data[];
} np_wchunk;

typedef struct np_dial {
    uv_connect_t req;
    rt_conn *c;
} np_dial;

typedef union np_addr {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} np_addr;

struct rt_conn {
    uv_tcp_t h;                   /* first: the poller casts handles back */
    np_cmd cmd_read, cmd_write, cmd_close, cmd_connect;
    _Atomic int32_t urefs;        /* user references */
    _Atomic int32_t ops;          /* open (1) + calls in progress */
    _Atomic int32_t mrefs;        /* users (as one) + the poller's handle */
    int fd;                       /* valid once open; closed only at ops 0 */
    bool h_open;                  /* poller: h initialised (uv_close needed) */
    bool reading;                 /* poller: uv_read_start is on */

    rt_lock lock;                 /* everything below */
    bool closed;                  /* rt_conn_close was called */
    bool rstopped;                /* flow control stopped reading */
    bool rrestart;                /* a read-start command is queued */
    bool wflight;                 /* a chunk is in the poller's hands */
    bool wshut;                   /* shutdown_write done */
    bool dial_done;
    int rerr;                     /* 0, NP_EOF or an rt_error: reads end */
    int werr;                     /* sticky write error */
    int dial_err;
    int oserr;                    /* errno behind the last RT_ESYS */
    char *rbuf;                   /* receive ring: data at [roff, roff+rlen) */
    size_t roff, rlen, rcap;
    np_wchunk *wpend;
    np_waiter *rwait;
    np_waiter *wwait;             /* writer, shutdown, or dialer */
    int64_t rdeadline, wdeadline;

    rt_mutex rmu;                 /* one reader at a time */
    rt_mutex wmu;                 /* one writer at a time */
    np_addr addr;                 /* dial target */
};

struct rt_listener {
    uv_tcp_t h;
    np_cmd cmd_listen, cmd_resume, cmd_close;
    _Atomic int32_t urefs, ops, mrefs;   /* as rt_conn's */
    bool h_open;
    int backlog;
    np_addr addr;

    rt_lock lock;                 /* everything below */
    bool closed;
    bool listen_done;
    bool paused;                  /* stopped accepting: queue full */
    bool resume_queued;
    int listen_err;
    int aerr;                     /* accept error for the next rt_accept */
    int oserr;
    int port;
    rt_conn *q[NP_ACCEPTQ];       /* accepted, not yet taken by rt_accept */
    uint32_t qhead, qlen;
    np_waiter *await;
    rt_mutex amu;                 /* one acceptor at a time */
};

static struct {
    pthread_once_t once;
    int init_err;
    uv_loop_t loop;
    uv_async_t async;
    _Atomic(np_cmd *) cmdq;
    char rbuf[NP_READ_SIZE];      /* poller thread only */
} np = { .once = PTHREAD_ONCE_INIT };

/* Goroutines parked here (checkdead). */
static _Atomic int64_t np_nwaiters;

int64_t netpoll_waiters(void) { return atomic_load(&np_nwaiters); }

/* ---------------------------------------------------------------- errors */

static int map_errno(int e, int *oserr) {
    switch (e) {
    case ECONNREFUSED: return RT_ECONNREFUSED;
    case ECONNRESET:
    case EPIPE: return RT_ECONNRESET;
    case EADDRINUSE: return RT_EADDRINUSE;
    case ENOMEM:
    case ENOBUFS: return RT_ENOMEM;
    default:
        if (oserr) *oserr = e;
        return RT_ESYS;
    }
}

/* libuv codes are negated errnos on Unix. */
static int map_uv(int uverr, int *oserr) {
    if (uverr == UV_EOF) return RT_ECONNRESET;
    if (uverr == UV_ECANCELED) return RT_ECLOSED;
    return map_errno(-uverr, oserr);
}

/* -------------------------------------------------------------- waiting */

static void waiter_init(np_waiter *w, rt_lock *lock, np_waiter **slot) {
    memset(w, 0, sizeof *w);
    w->lock = lock;
    w->slot = slot;
}

/* Under *w->lock, w published: take it out and make it runnable. */
static void wake_locked(np_waiter *w, int64_t result) {
    *w->slot = NULL;
    w->result = result;
    goready(w->gp);
}

static void wake_slot_locked(np_waiter **slot) {
    if (*slot) wake_locked(*slot, NP_RETRY);
}

static void waiter_timer_fire(void *arg, int64_t now) {
    (void)now;
    np_waiter *w = arg;
    lock_acquire(w->lock);
    if (*w->slot == w) wake_locked(w, NP_RETRY);
    lock_release(w->lock);
}

static void waiter_ctx_fire(ctx_waiter *cw, int err) {
    np_waiter *w = container_of(cw, np_waiter, cw);
    lock_acquire(w->lock);
    w->ctx_err = err ? err : RT_ECANCELED;
    if (*w->slot == w) wake_locked(w, NP_RETRY);
    lock_release(w->lock);
}

/* Watch ctx for w (before taking w->lock).  Returns the context's error if
 * it is done already. */
static int waiter_watch(np_waiter *w, rt_context *ctx) {
    if (!ctx || ctx == rt_context_background()) return RT_OK;
    w->ctx = ctx;
    w->cw.fn = waiter_ctx_fire;
    w->cw.arg = w;
    int err = ctx_watch(ctx, &w->cw);
    if (err) return err;
    w->ctx_watched = true;
    return RT_OK;
}

static void waiter_unwatch(np_waiter *w) {
    if (w->ctx_watched) ctx_unwatch(w->ctx, &w->cw);
    w->ctx_watched = false;
}

/* gopark's unlock function, on g0 once the goroutine is off its stack: arm
 * the timers (so a timer that fires at once cannot ready a goroutine still
 * running), then release the object lock, which lets wakers see w. */
static bool waiter_unlock(g *gp, void *arg) {
    (void)gp;
    np_waiter *w = arg;
    atomic_fetch_add(&np_nwaiters, 1);
    if (w->timer_armed) timer_add(&w->t, w->t.when);
    lock_release(w->lock);
    return true;
}

/*
 * Called holding *w->lock: publish w, arm a timer for deadline (> 0), park.
 * Returns without the lock; w->result says why it was woken.
 */
static void waiter_park(np_waiter *w, int64_t deadline) {
    w->gp = getg();
    w->result = NP_RETRY;
    *w->slot = w;
    if (deadline > 0) {
        memset(&w->t, 0, sizeof w->t);
        w->t.fn = waiter_timer_fire;
        w->t.arg = w;
        w->t.when = deadline;
        w->timer_armed = true;
    }
    gopark(waiter_unlock, w, WAIT_IO);
    atomic_fetch_sub(&np_nwaiters, 1);
    if (w->timer_armed) {
        timer_del(&w->t);   /* waits if it is firing now */
        w->timer_armed = false;
    }
}

static int mutex_lock_ctx(rt_context *ctx, rt_mutex *mu) {
    if (!ctx || ctx == rt_context_background()) {
        rt_mutex_lock(mu);
        return RT_OK;
    }
    return rt_mutex_lock_ctx(ctx, mu);
}

static bool deadline_passed(int64_t d) { return d != 0 && rt_nanotime() >= d; }

/* -------------------------------------------------------- poller thread */

static void np_submit(np_cmd *cmd) {
    np_cmd *old = atomic_load_explicit(&np.cmdq, memory_order_relaxed);
    do {
        cmd->next = old;
    } while (!atomic_compare_exchange_weak_explicit(&np.cmdq, &old, cmd, memory_order_release,
                                                    memory_order_relaxed));
    /* Whoever pushes onto an empty list signals; the poller empties the list
     * with one exchange, so no command is left unsignalled. */
    if (!old) uv_async_send(&np.async);
}

static void np_dispatch(np_cmd *cmd);

static void np_async_cb(uv_async_t *h) {
    (void)h;
    np_cmd *list = atomic_exchange_explicit(&np.cmdq, NULL, memory_order_acquire);
    np_cmd *fifo = NULL;
    while (list) {   /* the stack is newest first: reverse it */
        np_cmd *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        np_cmd *next = fifo->next;
        np_dispatch(fifo);   /* may free the object the command is in */
        fifo = next;
    }
}

static void *np_thread(void *arg) {
    (void)arg;
    uv_run(&np.loop, UV_RUN_DEFAULT);   /* never returns: async is referenced */
    rt_throw("netpoll: poller loop exited");
}

static void np_init_once(void) {
    int r = uv_loop_init(&np.loop);
    if (r == 0) r = uv_async_init(&np.loop, &np.async, np_async_cb);
    if (r != 0) {
        np.init_err = map_uv(r, NULL);
        return;
    }
    /* The thread inherits the mask: SIGPIPE blocked (see the top). */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, np_thread, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) np.init_err = RT_ELIMIT;
}

static int np_start(void) {
    pthread_once(&np.once, np_init_once);
    return np.init_err;
}

/* ------------------------------------------------- connections (poller) */

static rt_conn *conn_alloc(void) {
    rt_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fd = -1;
    c->cmd_read = (np_cmd){ NULL, c, OP_CONN_READ_START };
    c->cmd_write = (np_cmd){ NULL, c, OP_CONN_WRITE };
    c->cmd_close = (np_cmd){ NULL, c, OP_CONN_CLOSE };
    c->cmd_connect = (np_cmd){ NULL, c, OP_CONN_CONNECT };
    atomic_init(&c->urefs, 1);
    atomic_init(&c->ops, 1);
    atomic_init(&c->mrefs, 2);
    return c;
}

static void conn_mput(rt_conn *c) {
    if (atomic_fetch_sub_explicit(&c->mrefs, 1, memory_order_acq_rel) == 1) {
        free(c->rbuf);
        free(c);
    }
}

static void conn_close_cb(uv_handle_t *h) { conn_mput((rt_conn *)h); }

/* Poller, OP_CONN_CLOSE: closed, and no call is inside. */
static void conn_close_now(rt_conn *c) {
    if (!c->h_open) {
        conn_mput(c);
        return;
    }
    uv_close((uv_handle_t *)&c->h, conn_close_cb);   /* cancels a write in flight */
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)h;
    (void)suggested;
    buf->base = np.rbuf;
    buf->len = NP_READ_SIZE;
}

/* Append to the ring, growing it.  Under c->lock. */
static bool ring_put(rt_conn *c, const char *src, size_t n) {
    if (c->rcap - c->roff - c->rlen < n) {
        if (c->rcap - c->rlen >= n && c->rcap - c->rlen >= c->rcap / 2) {
            memmove(c->rbuf, c->rbuf + c->roff, c->rlen);
        } else {
            size_t cap = c->rcap ? c->rcap : 4096;
            while (cap < c->rlen + n) cap *= 2;
            char *nb = malloc(cap);
            if (!nb) return false;
            if (c->rlen) memcpy(nb, c->rbuf + c->roff, c->rlen);
            free(c->rbuf);
            c->rbuf = nb;
            c->rcap = cap;
        }
        c->roff = 0;
    }
    memcpy(c->rbuf + c->roff + c->rlen, src, n);
    c->rlen += n;
    return true;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    rt_conn *c = (rt_conn *)s;
    if (nread == 0) return;
    lock_acquire(&c->lock);
    if (c->closed) {
        lock_release(&c->lock);
        return;
    }
    if (nread < 0) {
        c->rerr = nread == UV_EOF ? NP_EOF : map_uv((int)nread, &c->oserr);
        uv_read_stop(s);
        c->reading = false;
        wake_slot_locked(&c->rwait);
        lock_release(&c->lock);
        return;
    }
    size_t n = (size_t)nread, off = 0;
    np_waiter *w = c->rwait;
    if (w) {
        off = n < w->len ? n : w->len;
        memcpy(w->buf, buf->base, off);
        wake_locked(w, (int64_t)off);
    }
    if (off < n && !ring_put(c, buf->base + off, n - off)) {
        c->rerr = RT_ENOMEM;
        uv_read_stop(s);
        c->reading = false;
    } else if (c->rlen >= NP_RBUF_MAX) {
        uv_read_stop(s);
        c->reading = false;
        c->rstopped = true;
    }
    lock_release(&c->lock);
}

/* Poller: c's handle is connected; make it a live connection. */
static void conn_opened(rt_conn *c) {
    uv_os_fd_t fd = -1;
    uv_fileno((uv_handle_t *)&c->h, &fd);
    c->fd = fd;
    uv_tcp_nodelay(&c->h, 1);
    if (uv_read_start((uv_stream_t *)&c->h, alloc_cb, read_cb) == 0) c->reading = true;
}

static void op_read_start(rt_conn *c) {
    lock_acquire(&c->lock);
    c->rrestart = false;
    bool start = !c->closed && c->rstopped && !c->rerr && c->rlen < NP_RBUF_MAX;
    if (start) c->rstopped = false;
    lock_release(&c->lock);
    if (start && !c->reading &&
        uv_read_start((uv_stream_t *)&c->h, alloc_cb, read_cb) == 0)
        c->reading = true;
}

static void write_cb(uv_write_t *req, int status) {
    np_wchunk *wc = (np_wchunk *)req;
    rt_conn *c = wc->c;
    lock_acquire(&c->lock);
    c->wflight = false;
    c->wpend = NULL;
    if (status < 0 && !c->werr) c->werr = map_uv(status, &c->oserr);
    wake_slot_locked(&c->wwait);
    lock_release(&c->lock);
    free(wc);
}

static void op_write(rt_conn *c) {
    lock_acquire(&c->lock);
    np_wchunk *wc = c->wpend;
    lock_release(&c->lock);
    uv_buf_t b = uv_buf_init(wc->data, (unsigned)wc->len);
    int r = uv_write(&wc->req, (uv_stream_t *)&c->h, &b, 1, write_cb);
    if (r != 0) write_cb(&wc->req, r);
}

static void connect_cb(uv_connect_t *req, int status) {
    np_dial *d = (np_dial *)req;
    rt_conn *c = d->c;
    free(d);
    lock_acquire(&c->lock);
    bool ok = status == 0 && !c->closed;
    lock_release(&c->lock);
    if (ok) conn_opened(c);
    lock_acquire(&c->lock);
    c->dial_done = true;
    c->dial_err = status == 0 ? RT_OK : map_uv(status, &c->oserr);
    wake_slot_locked(&c->wwait);
    lock_release(&c->lock);
}

static void op_connect(rt_conn *c) {
    int r = uv_tcp_init_ex(&np.loop, &c->h, c->addr.sa.sa_family);
    if (r == 0) {
        c->h_open = true;
        np_dial *d = calloc(1, sizeof *d);
        if (!d) r = UV_ENOMEM;
        else {
            d->c = c;
            r = uv_tcp_connect(&d->req, &c->h, &c->addr.sa, connect_cb);
            if (r != 0) free(d);
        }
    }
    if (r != 0) {
        lock_acquire(&c->lock);
        c->dial_done = true;
        c->dial_err = map_uv(r, &c->oserr);
        wake_slot_locked(&c->wwait);
        lock_release(&c->lock);
    }
}

/* ---------------------------------------------------- listeners (poller) */

static void listener_mput(rt_listener *l) {
    if (atomic_fetch_sub_explicit(&l->mrefs, 1, memory_order_acq_rel) == 1) free(l);
}

static void listener_close_cb(uv_handle_t *h) { listener_mput((rt_listener *)h); }

/* Accept one pending connection into l's queue. */
static void accept_one(rt_listener *l) {
    rt_conn *c = conn_alloc();
    int r = c ? uv_tcp_init(&np.loop, &c->h) : UV_ENOMEM;
    bool tried = false;   /* uv_accept consumed the pending fd (even failing) */
    if (r == 0) {
        c->h_open = true;
        tried = true;
        r = uv_accept((uv_stream_t *)&l->h, (uv_stream_t *)&c->h);
    }
    if (r != 0) {
        if (c) rt_conn_release(c);
        lock_acquire(&l->lock);
        if (!tried) l->paused = true;   /* retried by the next rt_accept */
        l->aerr = map_uv(r, &l->oserr);
        wake_slot_locked(&l->await);
        lock_release(&l->lock);
        return;
    }
    conn_opened(c);
    lock_acquire(&l->lock);
    l->q[(l->qhead + l->qlen) % NP_ACCEPTQ] = c;
    l->qlen++;
    wake_slot_locked(&l->await);
    lock_release(&l->lock);
}

static void connection_cb(uv_stream_t *server, int status) {
    rt_listener *l = (rt_listener *)server;
    lock_acquire(&l->lock);
    if (status < 0) {
        l->aerr = map_uv(status, &l->oserr);
        wake_slot_locked(&l->await);
        lock_release(&l->lock);
        return;
    }
    if (l->closed || l->qlen == NP_ACCEPTQ) {
        /* Not calling uv_accept makes libuv stop watching the socket; the
         * kernel's backlog holds further connections meanwhile. */
        l->paused = true;
        lock_release(&l->lock);
        return;
    }
    lock_release(&l->lock);
    accept_one(l);
}

static void op_listen(rt_listener *l) {
    int r = uv_tcp_init_ex(&np.loop, &l->h, l->addr.sa.sa_family);
    int port = 0;
    if (r == 0) {
        l->h_open = true;
        /* libuv sets SO_REUSEADDR on bind, and IPV6_V6ONLY off ("::" is
         * dual-stack, as in Go). */
        r = uv_tcp_bind(&l->h, &l->addr.sa, 0);
    }
    if (r == 0) r = uv_listen((uv_stream_t *)&l->h, l->backlog, connection_cb);
    if (r == 0) {
        np_addr a;
        int len = sizeof a;
        r = uv_tcp_getsockname(&l->h, &a.sa, &len);
        if (r == 0) port = ntohs(a.sa.sa_family == AF_INET6 ? a.in6.sin6_port : a.in4.sin_port);
    }
    lock_acquire(&l->lock);
    l->listen_done = true;
    l->listen_err = r == 0 ? RT_OK : map_uv(r, &l->oserr);
    l->port = port;
    wake_slot_locked(&l->await);
    lock_release(&l->lock);
}

static void op_listen_resume(rt_listener *l) {
    lock_acquire(&l->lock);
    l->resume_queued = false;
    bool go = l->paused && !l->closed && l->qlen < NP_ACCEPTQ;
    if (go) l->paused = false;
    lock_release(&l->lock);
    if (go) accept_one(l);   /* uv_accept re-arms the listening socket */
}

static void op_listen_close(rt_listener *l) {
    /* No goroutine holds l: close what it accepted but nobody took. */
    while (l->qlen) {
        rt_conn *c = l->q[l->qhead];
        l->qhead = (l->qhead + 1) % NP_ACCEPTQ;
        l->qlen--;
        rt_conn_release(c);
    }
    if (l->h_open) uv_close((uv_handle_t *)&l->h, listener_close_cb);
    else listener_mput(l);
}

static void np_dispatch(np_cmd *cmd) {
    switch (cmd->op) {
    case OP_CONN_READ_START: op_read_start(cmd->obj); break;
    case OP_CONN_WRITE: op_write(cmd->obj); break;
    case OP_CONN_CLOSE: conn_close_now(cmd->obj); break;
    case OP_CONN_CONNECT: op_connect(cmd->obj); break;
    case OP_LISTEN: op_listen(cmd->obj); break;
    case OP_LISTEN_RESUME: op_listen_resume(cmd->obj); break;
    case OP_LISTEN_CLOSE: op_listen_close(cmd->obj); break;
    }
}

/* ------------------------------------------------------ references */

/* An API call starts using c's fd: only while it is open. */
static bool conn_enter(rt_conn *c) {
    int32_t v = atomic_load_explicit(&c->ops, memory_order_relaxed);
    do {
        if (v == 0) return false;
    } while (!atomic_compare_exchange_weak_explicit(&c->ops, &v, v + 1, memory_order_acquire,
                                                    memory_order_relaxed));
    return true;
}

static void conn_exit(rt_conn *c) {
    if (atomic_fetch_sub_explicit(&c->ops, 1, memory_order_acq_rel) == 1) np_submit(&c->cmd_close);
}

/* Mark c closed and wake its waiters; true for the first call. */
static bool conn_mark_closed(rt_conn *c) {
    lock_acquire(&c->lock);
    bool first = !c->closed;
    c->closed = true;
    wake_slot_locked(&c->rwait);
    wake_slot_locked(&c->wwait);
    lock_release(&c->lock);
    if (first) conn_exit(c);   /* the "open" count */
    return first;
}

void rt_conn_retain(rt_conn *c) { atomic_fetch_add_explicit(&c->urefs, 1, memory_order_relaxed); }

void rt_conn_release(rt_conn *c) {
    if (!c) return;
    if (atomic_fetch_sub_explicit(&c->urefs, 1, memory_order_acq_rel) == 1) {
        conn_mark_closed(c);
        conn_mput(c);
    }
}

static bool listener_enter(rt_listener *l) {
    int32_t v = atomic_load_explicit(&l->ops, memory_order_relaxed);
    do {
        if (v == 0) return false;
    } while (!atomic_compare_exchange_weak_explicit(&l->ops, &v, v + 1, memory_order_acquire,
                                                    memory_order_relaxed));
    return true;
}

static void listener_exit(rt_listener *l) {
    if (atomic_fetch_sub_explicit(&l->ops, 1, memory_order_acq_rel) == 1) np_submit(&l->cmd_close);
}

static bool listener_mark_closed(rt_listener *l) {
    lock_acquire(&l->lock);
    bool first = !l->closed;
    l->closed = true;
    wake_slot_locked(&l->await);
    lock_release(&l->lock);
    if (first) listener_exit(l);
    return first;
}

void rt_listener_retain(rt_listener *l) { atomic_fetch_add_explicit(&l->urefs, 1, memory_order_relaxed); }

void rt_listener_release(rt_listener *l) {
    if (!l) return;
    if (atomic_fetch_sub_explicit(&l->urefs, 1, memory_order_acq_rel) == 1) {
        listener_mark_closed(l);
        listener_mput(l);
    }
}

/* ---------------------------------------------------------- addresses */

static int parse_addr(np_addr *a, const char *host, int port) {
    if (port < 0 || port > 65535) return RT_EINVAL;
    memset(a, 0, sizeof *a);
    char tmp[INET6_ADDRSTRLEN + 8];
    if (!host || !*host) host = "0.0.0.0";
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof tmp) {
        memcpy(tmp, host + 1, hl - 2);
        tmp[hl - 2] = 0;
        host = tmp;
    }
    if (inet_pton(AF_INET, host, &a->in4.sin_addr) == 1) {
        a->in4.sin_family = AF_INET;
        a->in4.sin_port = htons((uint16_t)port);
        return RT_OK;
    }
    if (inet_pton(AF_INET6, host, &a->in6.sin6_addr) == 1) {
        a->in6.sin6_family = AF_INET6;
        a->in6.sin6_port = htons((uint16_t)port);
        return RT_OK;
    }
    return RT_EINVAL;
}

static int format_addr(const np_addr *a, char *buf, size_t len) {
    char ip[INET6_ADDRSTRLEN];
    int n;
    if (a->sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &a->in4.sin_addr, ip, sizeof ip);
        n = snprintf(buf, len, "%s:%u", ip, ntohs(a->in4.sin_port));
    } else if (a->sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof ip);
        n = snprintf(buf, len, "[%s]:%u", ip, ntohs(a->in6.sin6_port));
    } else {
        return RT_EINVAL;
    }
    return n < 0 || (size_t)n >= len ? RT_EINVAL : RT_OK;
}

/* ---------------------------------------------------------- listeners */

int rt_listen(rt_listener **out, const char *host, int port, int backlog) {
    if (!out) return RT_EINVAL;
    *out = NULL;
    if (!getg()) return RT_ESTATE;
    np_addr a;
    int rc = parse_addr(&a, host, port);
    if (rc) return rc;
    rc = np_start();
    if (rc) return rc;
    rt_listener *l = calloc(1, sizeof *l);
    if (!l) return RT_ENOMEM;
    l->cmd_listen = (np_cmd){ NULL, l, OP_LISTEN };
    l->cmd_resume = (np_cmd){ NULL, l, OP_LISTEN_RESUME };
    l->cmd_close = (np_cmd){ NULL, l, OP_LISTEN_CLOSE };
    atomic_init(&l->urefs, 1);
    atomic_init(&l->ops, 2);     /* open, and this call */
    atomic_init(&l->mrefs, 2);
    l->addr = a;
    l->backlog = backlog > 0 ? backlog : SOMAXCONN;

    np_waiter w;
    waiter_init(&w, &l->lock, &l->await);
    lock_acquire(&l->lock);
    np_submit(&l->cmd_listen);
    while (!l->listen_done) {
        waiter_park(&w, 0);
        lock_acquire(&l->lock);
    }
    rc = l->listen_err;
    lock_release(&l->lock);
    if (rc) rt_listener_close(l);
    else *out = l;
    listener_exit(l);
    return rc;
}

int rt_listener_port(rt_listener *l) { return l ? l->port : RT_EINVAL; }

int rt_accept_ctx(rt_context *ctx, rt_listener *l, rt_conn **out) {
    if (!l || !out) return RT_EINVAL;
    *out = NULL;
    if (!getg()) return RT_ESTATE;
    if (!listener_enter(l)) return RT_ECLOSED;
    np_waiter w;
    waiter_init(&w, &l->lock, &l->await);
    int rc = waiter_watch(&w, ctx);
    if (rc) goto out;
    rc = mutex_lock_ctx(ctx, &l->amu);
    if (rc) goto out;
    for (;;) {
        lock_acquire(&l->lock);
        if (l->closed) rc = RT_ECLOSED;
        else if (w.ctx_err) rc = w.ctx_err;
        else if (l->qlen) {
            *out = l->q[l->qhead];
            l->qhead = (l->qhead + 1) % NP_ACCEPTQ;
            l->qlen--;
            rc = RT_OK;
        } else if (l->aerr) {
            rc = l->aerr;
            l->aerr = 0;
        } else {
            waiter_park(&w, 0);
            continue;
        }
        if (l->paused && !l->resume_queued && !l->closed) {
            l->resume_queued = true;
            np_submit(&l->cmd_resume);
        }
        lock_release(&l->lock);
        break;
    }
    rt_mutex_unlock(&l->amu);
out:
    waiter_unwatch(&w);
    listener_exit(l);
    return rc;
}

int rt_accept(rt_listener *l, rt_conn **out) { return rt_accept_ctx(NULL, l, out); }

int rt_listener_close(rt_listener *l) {
    if (!l) return RT_EINVAL;
    bool first = listener_mark_closed(l);
    rt_listener_release(l);
    return first ? RT_OK : RT_ECLOSED;
}

/* ---------------------------------------------------------------- dial */

int rt_dial_ctx(rt_context *ctx, rt_conn **out, const char *host, int port) {
    if (!out) return RT_EINVAL;
    *out = NULL;
    if (!getg()) return RT_ESTATE;
    if (!host || !*host || port <= 0) return RT_EINVAL;
    np_addr a;
    int rc = parse_addr(&a, host, port);
    if (rc) return rc;
    rc = np_start();
    if (rc) return rc;
    rt_conn *c = conn_alloc();
    if (!c) return RT_ENOMEM;
    c->addr = a;
    conn_enter(c);   /* this call */
    np_waiter w;
    waiter_init(&w, &c->lock, &c->wwait);
    rc = waiter_watch(&w, ctx);
    if (rc == RT_OK) {
        lock_acquire(&c->lock);
        np_submit(&c->cmd_connect);
        for (;;) {
            if (c->dial_done) {
                rc = c->dial_err;
                break;
            }
            if (w.ctx_err) {
                rc = w.ctx_err;
                break;
            }
            waiter_park(&w, 0);
            lock_acquire(&c->lock);
        }
        lock_release(&c->lock);
        waiter_unwatch(&w);
    }
    if (rc) rt_conn_close(c);   /* nobody else has it: it goes away */
    else *out = c;
    conn_exit(c);
    return rc;
}

int rt_dial(rt_conn **out, const char *host, int port) { return rt_dial_ctx(NULL, out, host, port); }

/* ---------------------------------------------------------------- read */

static int64_t conn_read(rt_context *ctx, rt_conn *c, void *buf, size_t len) {
    if (!c || (!buf && len)) return RT_EINVAL;
    if (!getg()) return RT_ESTATE;
    if (!conn_enter(c)) return RT_ECLOSED;
    np_waiter w;
    waiter_init(&w, &c->lock, &c->rwait);
    int64_t rc = waiter_watch(&w, ctx);
    if (rc) goto out;
    rc = mutex_lock_ctx(ctx, &c->rmu);
    if (rc) goto out;
    for (;;) {
        lock_acquire(&c->lock);
        int64_t dl = c->rdeadline;
        if (c->closed) rc = RT_ECLOSED;
        else if (w.ctx_err) rc = w.ctx_err;
        else if (deadline_passed(dl)) rc = RT_ETIMEDOUT;
        else if (len == 0) rc = 0;
        else if (c->rlen) {
            size_t n = c->rlen < len ? c->rlen : len;
            memcpy(buf, c->rbuf + c->roff, n);
            c->roff += n;
            c->rlen -= n;
            if (c->rlen == 0) {   /* idle connections own no buffer */
                free(c->rbuf);
                c->rbuf = NULL;
                c->rcap = c->roff = 0;
            }
            if (c->rstopped && !c->rrestart && c->rlen <= NP_RBUF_MAX / 2) {
                c->rrestart = true;
                np_submit(&c->cmd_read);
            }
            rc = (int64_t)n;
        } else if (c->rerr) {
            rc = c->rerr == NP_EOF ? 0 : c->rerr;
        } else {
            w.buf = buf;
            w.len = len;
            waiter_park(&w, dl);
            if (w.result >= 0) {   /* the poller copied data into buf */
                rc = w.result;
                break;
            }
            continue;
        }
        lock_release(&c->lock);
        break;
    }
    rt_mutex_unlock(&c->rmu);
out:
    waiter_unwatch(&w);
    conn_exit(c);
    return rc;
}

int64_t rt_conn_read(rt_conn *c, void *buf, size_t len) { return conn_read(NULL, c, buf, len); }

int64_t rt_conn_read_ctx(rt_context *ctx, rt_conn *c, void *buf, size_t len) {
    return conn_read(ctx, c, buf, len);
}

/* --------------------------------------------------------------- write */

/* Under c->lock: why a write cannot proceed (0 if it can). */
static int write_blocked_err(rt_conn *c, np_waiter *w) {
    if (c->closed) return RT_ECLOSED;
    if (c->werr) return c->werr;
    if (c->wshut) return RT_ECLOSED;
    if (w->ctx_err) return w->ctx_err;
    if (deadline_passed(c->wdeadline)) return RT_ETIMEDOUT;
    return RT_OK;
}

static int conn_write(rt_context *ctx, rt_conn *c, const char *buf, size_t len) {
    if (!c || (!buf && len)) return RT_EINVAL;
    if (!getg()) return RT_ESTATE;
    if (!conn_enter(c)) return RT_ECLOSED;
    np_waiter w;
    waiter_init(&w, &c->lock, &c->wwait);
    int rc = waiter_watch(&w, ctx);
    if (rc) goto out;
    rc = mutex_lock_ctx(ctx, &c->wmu);
    if (rc) goto out;
    size_t off = 0;
    for (;;) {
        lock_acquire(&c->lock);
        rc = write_blocked_err(c, &w);
        if (rc) {
            lock_release(&c->lock);
            break;
        }
        if (c->wflight) {   /* bytes ahead of ours are with the poller */
            waiter_park(&w, c->wdeadline);
            continue;
        }
        lock_release(&c->lock);
        if (off == len) break;
        ssize_t n = fd_send(c->fd, buf + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        int e = n < 0 ? errno : EAGAIN;
        if (e == EINTR) continue;
        if (e != EAGAIN && e != EWOULDBLOCK) {
            lock_acquire(&c->lock);
            if (!c->werr) c->werr = map_errno(e, &c->oserr);
            rc = c->werr;
            lock_release(&c->lock);
            break;
        }
        /* The socket buffer is full: the poller writes the next chunk when
         * it drains.  The chunk is copied so this goroutine may leave
         * (deadline, context, close) while libuv still holds it. */
        size_t chunk = len - off < NP_WCHUNK ? len - off : NP_WCHUNK;
        np_wchunk *wc = malloc(sizeof *wc + chunk);
        if (!wc) {
            rc = RT_ENOMEM;
            break;
        }
        memcpy(wc->data, buf + off, chunk);
        wc->c = c;
        wc->len = chunk;
        lock_acquire(&c->lock);
        rc = write_blocked_err(c, &w);
        if (rc) {
            lock_release(&c->lock);
            free(wc);
            break;
        }
        c->wflight = true;
        c->wpend = wc;
        off += chunk;
        np_submit(&c->cmd_write);
        lock_release(&c->lock);
    }
    rt_mutex_unlock(&c->wmu);
out:
    waiter_unwatch(&w);
    conn_exit(c);
    return rc;
}

int rt_conn_write(rt_conn *c, const void *buf, size_t len) { return conn_write(NULL, c, buf, len); }

int rt_conn_write_ctx(rt_context *ctx, rt_conn *c, const void *buf, size_t len) {
    return conn_write(ctx, c, buf, len);
}

int rt_conn_shutdown_write(rt_conn *c) {
    if (!c) return RT_EINVAL;
    if (!getg()) return RT_ESTATE;
    if (!conn_enter(c)) return RT_ECLOSED;
    rt_mutex_lock(&c->wmu);
    np_waiter w;
    waiter_init(&w, &c->lock, &c->wwait);
    int rc;
    for (;;) {
        lock_acquire(&c->lock);
        if (c->closed) rc = RT_ECLOSED;
        else if (c->wshut) rc = RT_OK;
        else if (c->wflight) {   /* let the bytes in flight go first */
            waiter_park(&w, 0);
            continue;
        } else {
            c->wshut = true;
            lock_release(&c->lock);
            rc = fd_shutdown(c->fd, SHUT_WR) == 0 ? RT_OK : map_errno(errno, &c->oserr);
            break;
        }
        lock_release(&c->lock);
        break;
    }
    rt_mutex_unlock(&c->wmu);
    conn_exit(c);
    return rc;
}

/* ------------------------------------------------- deadlines and close */

int rt_conn_set_read_deadline(rt_conn *c, int64_t deadline) {
    if (!c) return RT_EINVAL;
    lock_acquire(&c->lock);
    c->rdeadline = deadline;
    wake_slot_locked(&c->rwait);   /* re-arms for the new deadline */
    lock_release(&c->lock);
    return RT_OK;
}

int rt_conn_set_write_deadline(rt_conn *c, int64_t deadline) {
    if (!c) return RT_EINVAL;
    lock_acquire(&c->lock);
    c->wdeadline = deadline;
    wake_slot_locked(&c->wwait);
    lock_release(&c->lock);
    return RT_OK;
}

int rt_conn_close(rt_conn *c) {
    if (!c) return RT_EINVAL;
    bool first = conn_mark_closed(c);
    rt_conn_release(c);
    return first ? RT_OK : RT_ECLOSED;
}

int rt_conn_oserror(rt_conn *c) {
    if (!c) return 0;
    lock_acquire(&c->lock);
    int e = c->oserr;
    lock_release(&c->lock);
    return e;
}

static int conn_addr(rt_conn *c, char *buf, size_t len, bool peer) {
    if (!c || !buf) return RT_EINVAL;
    if (!conn_enter(c)) return RT_ECLOSED;
    np_addr a;
    socklen_t al = sizeof a;
    int r = peer ? (int)fd_getpeername(c->fd, &a.sa, &al) : (int)fd_getsockname(c->fd, &a.sa, &al);
    int rc = r == 0 ? format_addr(&a, buf, len) : map_errno(errno, NULL);
    conn_exit(c);
    return rc;
}

int rt_conn_peer_addr(rt_conn *c, char *buf, size_t len) { return conn_addr(c, buf, len, true); }

int rt_conn_local_addr(rt_conn *c, char *buf, size_t len) { return conn_addr(c, buf, len, false); }
