/*
 * rt.h — the public interface of ledgerd's goroutine runtime.
 *
 * The runtime multiplexes goroutines onto GOMAXPROCS OS threads, the way the
 * Go runtime does: a goroutine is cheap (a descriptor and a lazily committed
 * stack), blocking in a runtime call parks only that goroutine, and channels,
 * select and the sync types coordinate them.  Everything a program needs is
 * declared here; the mechanisms live in one file each (see DESIGN.md).
 *
 * Conventions
 *   - Functions that can fail return an int: 0 (RT_OK) or a negative rt_error
 *     code; rt_strerror() names it.  Nothing fails silently.
 *   - Programming errors that Go treats as fatal (sending on a closed
 *     channel, closing a channel twice, unlocking an unlocked mutex, a
 *     negative WaitGroup counter) print "fatal error: ..." with a goroutine
 *     dump and abort the process, as Go does.
 *   - Durations and times are int64 nanoseconds (RT_MILLISECOND etc.).
 *   - The sync types are usable at their zero value (static or memset 0):
 *     no init and no destroy call, as in Go.
 *   - Channels are reference counted: rt_chan_make returns one reference,
 *     rt_chan_release drops one.  The runtime holds its own references where
 *     it needs them (timer channels), so releasing early is always safe.
 */
#ifndef LEDGERD_RT_H
#define LEDGERD_RT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */

typedef enum rt_error {
    RT_OK = 0,
    RT_ENOMEM = -1,      /* out of memory or address space */
    RT_EINVAL = -2,      /* invalid argument */
    RT_ECLOSED = -3,     /* channel or connection closed */
    RT_ETIMEDOUT = -4,   /* deadline exceeded */
    RT_ECANCELED = -5,   /* context cancelled */
    RT_EAGAIN = -6,      /* operation would block (non-blocking variants) */
    RT_ESTATE = -7,      /* called in a state that does not allow it */
    RT_ELIMIT = -8,      /* a configured limit (threads, stacks) reached */
    RT_ESYS = -9,        /* an OS call failed; errno-style detail in logs */
    RT_ECONNREFUSED = -10,
    RT_ECONNRESET = -11, /* reset by peer, or broken pipe */
    RT_EADDRINUSE = -12,
} rt_error;

/* A static string naming an rt_error code ("channel closed", ...). */
const char *rt_strerror(int code);

/* ------------------------------------------------------------ durations */

#define RT_NANOSECOND  ((int64_t)1)
#define RT_MICROSECOND ((int64_t)1000)
#define RT_MILLISECOND ((int64_t)1000000)
#define RT_SECOND      ((int64_t)1000000000)

/* Monotonic clock, nanoseconds. */
int64_t rt_nanotime(void);

/* ------------------------------------------------------------ goroutines */

typedef void (*rt_func)(void *arg);

typedef struct rt_spawn_opts {
    size_t stack_size;   /* 0: the default (RT_DEFAULT_STACK_SIZE) */
} rt_spawn_opts;

/* The default goroutine stack: virtual size, committed only as touched. */
#define RT_DEFAULT_STACK_SIZE ((size_t)64 * 1024)
#define RT_MIN_STACK_SIZE     ((size_t)16 * 1024)
#define RT_MAX_STACK_SIZE     ((size_t)64 * 1024 * 1024)

/*
 * Run main_fn(arg) as the first goroutine, on a runtime with GOMAXPROCS
 * processors (the GOMAXPROCS environment variable, else the CPUs this process
 * may run on).  When main_fn returns, the process exits with its return value
 * without waiting for other goroutines, as a Go program does.  Goroutines
 * spawned before rt_main (from the same or other threads) start with it.
 * Returns only on failure to start, with an rt_error code.
 */
int rt_main(int (*main_fn)(void *arg), void *arg);

/*
 * Spawn a goroutine running fn(arg).  Callable from a goroutine or from any
 * plain thread, before or after rt_main starts.  Returns RT_OK, RT_EINVAL
 * (bad stack size) or RT_ENOMEM.  Use the rt_go / rt_go_opts macros: they
 * record the spawning file and line for goroutine dumps.
 */
int rt_go_at(rt_func fn, void *arg, const rt_spawn_opts *opts,
             const char *file, int line);
#define rt_go(fn, arg) rt_go_at((fn), (arg), NULL, __FILE__, __LINE__)
#define rt_go_opts(fn, arg, opts) rt_go_at((fn), (arg), (opts), __FILE__, __LINE__)

/* The current goroutine's id (goroutine 1 is main); 0 outside a goroutine. */
uint64_t rt_goid(void);

/* Let other goroutines run; the caller stays runnable (Go's Gosched). */
void rt_yield(void);

/* End the calling goroutine now (Go's runtime.Goexit). */
_Noreturn void rt_goexit(void);

/*
 * Blocking calls.  A goroutine about to block its OS thread in a call the
 * runtime cannot see into (a file read, fsync, getaddrinfo, a long
 * computation in a library) brackets it with enter/exit, or runs it through
 * rt_blocking().  While it blocks, its processor can be handed to another
 * thread (after ~20 µs, by the monitor thread), so the other goroutines keep
 * running.  Threads created for this are reused and capped (RT_MAX_THREADS
 * environment variable, default 256).  Outside a goroutine these are no-ops.
 * A goroutine that computes for more than 10 ms without calling the runtime
 * is treated the same way automatically when other work is waiting.
 */
void rt_blocking_enter(void);
void rt_blocking_exit(void);
void *rt_blocking(void *(*fn)(void *arg), void *arg);

/* Processors the runtime schedules onto, and goroutines alive now. */
int rt_gomaxprocs(void);
int64_t rt_num_goroutine(void);

/* -------------------------------------------------------------- channels */

typedef struct rt_chan rt_chan;

/*
 * Make a channel of elements of elem_size bytes (0 allowed: a signal
 * channel) with a buffer of cap elements (0: unbuffered, a rendezvous).
 */
int rt_chan_make(rt_chan **out, size_t elem_size, size_t cap);
void rt_chan_retain(rt_chan *c);
void rt_chan_release(rt_chan *c);   /* frees at the last reference */

/*
 * Blocking operations.  A NULL channel blocks forever, as a nil channel does
 * in Go.  Sending on a closed channel is a fatal error.  rt_chan_recv copies
 * the element into *elem (elem may be NULL to discard it) and returns true,
 * or returns false with *elem zeroed once the channel is closed and drained.
 */
void rt_chan_send(rt_chan *c, const void *elem);
bool rt_chan_recv(rt_chan *c, void *elem);

/*
 * Non-blocking variants (a select with a default).  try_send returns false
 * when the send would block.  try_recv returns false when the receive would
 * block; otherwise true, with *ok (may be NULL) false for closed-and-drained.
 */
bool rt_chan_try_send(rt_chan *c, const void *elem);
bool rt_chan_try_recv(rt_chan *c, void *elem, bool *ok);

/* Close: receivers drain the buffer, then get ok == false.  Closing twice
 * (or a NULL channel) is a fatal error; every waiter is woken. */
void rt_chan_close(rt_chan *c);

size_t rt_chan_len(rt_chan *c);
size_t rt_chan_cap(rt_chan *c);

/* ---------------------------------------------------------------- select */

typedef enum rt_select_dir {
    RT_SELECT_SEND = 1,
    RT_SELECT_RECV = 2,
} rt_select_dir;

typedef struct rt_select_case {
    rt_chan *chan;       /* NULL: the case is never ready (Go's nil channel) */
    rt_select_dir dir;
    void *elem;          /* send: value to send; recv: where to store (or NULL) */
    bool recv_ok;        /* out, recv cases: false if the channel was closed */
} rt_select_case;

#define RT_SEND_CASE(c, p) ((rt_select_case){ .chan = (c), .dir = RT_SELECT_SEND, .elem = (void *)(p) })
#define RT_RECV_CASE(c, p) ((rt_select_case){ .chan = (c), .dir = RT_SELECT_RECV, .elem = (p) })

/*
 * Wait until one case can proceed and perform it; return its index.  When
 * several are ready, one is chosen uniformly at random.  With has_default,
 * return -1 at once if none is ready.  No cases and no default blocks
 * forever.  At most RT_SELECT_MAX_CASES cases.
 */
#define RT_SELECT_MAX_CASES 1024
int rt_select(rt_select_case *cases, size_t ncases, bool has_default);

/* ------------------------------------------------------------------ sync */

/* Mutual exclusion that parks goroutines: spins briefly, then parks, with a
 * starvation mode (waiters older than 1 ms get the lock handed directly). */
typedef struct rt_mutex {
    _Atomic int32_t state;
    _Atomic uint32_t sema;
} rt_mutex;
void rt_mutex_lock(rt_mutex *m);
bool rt_mutex_trylock(rt_mutex *m);
void rt_mutex_unlock(rt_mutex *m);

/* Readers-writer lock; a blocked writer keeps new readers out (Go's rules). */
typedef struct rt_rwmutex {
    rt_mutex w;
    _Atomic uint32_t writer_sem;
    _Atomic uint32_t reader_sem;
    _Atomic int32_t reader_count;
    _Atomic int32_t reader_wait;
} rt_rwmutex;
void rt_rwmutex_rlock(rt_rwmutex *rw);
bool rt_rwmutex_tryrlock(rt_rwmutex *rw);
void rt_rwmutex_runlock(rt_rwmutex *rw);
void rt_rwmutex_lock(rt_rwmutex *rw);
bool rt_rwmutex_trylock(rt_rwmutex *rw);
void rt_rwmutex_unlock(rt_rwmutex *rw);

/* Wait for a collection of goroutines to finish. */
typedef struct rt_waitgroup {
    _Atomic uint64_t state;   /* high 32: counter, low 32: waiters */
    _Atomic uint32_t sema;
} rt_waitgroup;
void rt_waitgroup_add(rt_waitgroup *wg, int delta);
void rt_waitgroup_done(rt_waitgroup *wg);
void rt_waitgroup_wait(rt_waitgroup *wg);

/* Run a function exactly once; concurrent callers wait for it to finish. */
typedef struct rt_once {
    _Atomic uint32_t done;
    rt_mutex m;
} rt_once;
void rt_once_do(rt_once *once, rt_func fn, void *arg);

/* Condition variable bound to a mutex at wait time (Go's sync.Cond). */
typedef struct rt_cond {
    _Atomic uint32_t wait_ticket;   /* next ticket handed to a waiter */
    _Atomic uint32_t notify_ticket; /* tickets below this were notified */
    _Atomic uint32_t lock;          /* runtime spin lock for the wait list */
    void *head;                     /* wait list (runtime-owned) */
    void *tail;
} rt_cond;
void rt_cond_wait(rt_cond *c, rt_mutex *m);
void rt_cond_signal(rt_cond *c);
void rt_cond_broadcast(rt_cond *c);

/* ------------------------------------------------------------------ time */

/* Park the calling goroutine for at least ns nanoseconds (<= 0: yield). */
void rt_sleep(int64_t ns);

/*
 * A channel (elem: int64_t, the monotonic fire time; capacity 1) that
 * receives once after ns.  The caller owns one reference and releases it
 * when done, whether or not the timer fired.  NULL when out of memory.
 */
rt_chan *rt_after(int64_t ns);

/* Timers and tickers with a channel (Go's time.Timer / time.Ticker). */
typedef struct rt_timer rt_timer;
int rt_timer_new(rt_timer **out, int64_t ns);        /* fires once */
int rt_ticker_new(rt_timer **out, int64_t period);   /* fires every period */
rt_chan *rt_timer_chan(rt_timer *t);                  /* borrowed */
bool rt_timer_stop(rt_timer *t);      /* true if it stopped a pending fire */
bool rt_timer_reset(rt_timer *t, int64_t ns);  /* re-arm; true if it was pending */
void rt_timer_free(rt_timer *t);      /* stops it and drops its channel */

/* --------------------------------------------------------------- context
 *
 * Cancellation and deadlines in the spirit of Go's context.Context.  A
 * context is cancelled explicitly, by its deadline, or when its parent is;
 * cancelling a parent cancels every descendant.  Contexts are reference
 * counted: the with_* constructors return one reference, which the caller
 * drops with rt_context_release (that also cancels it, like Go's
 * `defer cancel()`, so nothing stays armed).  Children hold a reference on
 * their parent.  rt_context_background() is a static root that is never
 * cancelled; NULL is accepted everywhere as "background".
 */
typedef struct rt_context rt_context;

rt_context *rt_context_background(void);
int rt_context_with_cancel(rt_context *parent, rt_context **out);
int rt_context_with_deadline(rt_context *parent, int64_t deadline, rt_context **out); /* absolute rt_nanotime() */
int rt_context_with_timeout(rt_context *parent, int64_t timeout, rt_context **out);
void rt_context_cancel(rt_context *ctx);                 /* RT_ECANCELED */
void rt_context_retain(rt_context *ctx);
void rt_context_release(rt_context *ctx);                /* cancels, drops a reference */
/* A channel closed when the context is done (borrowed; never closed for
 * background: use it in rt_select like any channel). */
rt_chan *rt_context_done(rt_context *ctx);
/* 0 while live, RT_ECANCELED or RT_ETIMEDOUT once done. */
int rt_context_err(rt_context *ctx);
/* Absolute deadline, or 0 if it has none. */
int64_t rt_context_deadline(rt_context *ctx);

/*
 * Blocking operations bounded by a context.  Each returns RT_OK when the
 * operation completed, or the context's error (RT_ECANCELED /
 * RT_ETIMEDOUT) — promptly, and with the operation not performed — when
 * the context is done first.  rt_chan_recv_ctx sets *ok (may be NULL) as
 * rt_chan_recv's return value; rt_select_ctx returns the chosen index or a
 * negative error.
 */
int rt_chan_send_ctx(rt_context *ctx, rt_chan *c, const void *elem);
int rt_chan_recv_ctx(rt_context *ctx, rt_chan *c, void *elem, bool *ok);
int rt_select_ctx(rt_context *ctx, rt_select_case *cases, size_t ncases);
int rt_mutex_lock_ctx(rt_context *ctx, rt_mutex *m);
int rt_mutex_lock_timeout(rt_mutex *m, int64_t timeout);   /* RT_ETIMEDOUT */
int rt_sleep_ctx(rt_context *ctx, int64_t ns);

/* --------------------------------------------------------------- network
 *
 * Goroutine-blocking TCP over the runtime's netpoller (libuv underneath,
 * see DESIGN.md).  Every call looks synchronous and parks only the calling
 * goroutine.  Errors are negative rt_error codes: RT_ECONNREFUSED,
 * RT_ECONNRESET (also a write to a connection the peer closed),
 * RT_EADDRINUSE, RT_ETIMEDOUT, RT_ECLOSED, or RT_ESYS for anything else,
 * with the OS errno from rt_conn_oserror.  Deadlines are per connection and
 * per direction (absolute rt_nanotime(); 0 = none), as Go's
 * SetReadDeadline; an operation past its deadline returns RT_ETIMEDOUT.
 * Closing a connection or listener wakes every goroutine blocked on it with
 * RT_ECLOSED.  Must be called from goroutines (close, release and the
 * deadline setters may be called from any thread).
 *
 * Lifetime: a connection or listener is reference counted, like a channel.
 * rt_dial / rt_accept / rt_listen return one reference; rt_*_close closes
 * and drops the caller's reference; rt_*_release drops one (closing it if
 * it was the last).  A goroutine that may still call into a connection that
 * another goroutine closes — a reader loop stopped by a close elsewhere,
 * Go's usual shutdown pattern — holds its own reference (retain before
 * handing it over, release when done): calls on a closed connection then
 * return RT_ECLOSED.  The memory goes when the last reference is dropped and
 * no call is in progress.
 */
typedef struct rt_listener rt_listener;
typedef struct rt_conn rt_conn;

/* host: an IPv4 or IPv6 literal ("127.0.0.1", "::1", "0.0.0.0", "::");
 * port 0 picks a free port (see rt_listener_port).  SO_REUSEADDR is set. */
int rt_listen(rt_listener **out, const char *host, int port, int backlog);
int rt_listener_port(rt_listener *l);
int rt_accept(rt_listener *l, rt_conn **out);
int rt_accept_ctx(rt_context *ctx, rt_listener *l, rt_conn **out);
int rt_listener_close(rt_listener *l);       /* RT_ECLOSED if already closed */
void rt_listener_retain(rt_listener *l);
void rt_listener_release(rt_listener *l);

int rt_dial(rt_conn **out, const char *host, int port);
int rt_dial_ctx(rt_context *ctx, rt_conn **out, const char *host, int port);

/* Read up to len bytes: returns the count (> 0), 0 at end of stream, or a
 * negative rt_error. */
int64_t rt_conn_read(rt_conn *c, void *buf, size_t len);
int64_t rt_conn_read_ctx(rt_context *ctx, rt_conn *c, void *buf, size_t len);
/* Write all len bytes, or fail: returns RT_OK or a negative rt_error. */
int rt_conn_write(rt_conn *c, const void *buf, size_t len);
int rt_conn_write_ctx(rt_context *ctx, rt_conn *c, const void *buf, size_t len);
int rt_conn_set_read_deadline(rt_conn *c, int64_t deadline);
int rt_conn_set_write_deadline(rt_conn *c, int64_t deadline);
int rt_conn_shutdown_write(rt_conn *c);      /* half-close: peer reads EOF */
int rt_conn_close(rt_conn *c);               /* RT_ECLOSED if already closed */
void rt_conn_retain(rt_conn *c);
void rt_conn_release(rt_conn *c);
/* The OS errno behind the last RT_ESYS on this connection (0 if none). */
int rt_conn_oserror(rt_conn *c);
/* "ip:port" ("[ip6]:port", as Go) of the peer / local end into buf;
 * RT_EINVAL if it does not fit. */
int rt_conn_peer_addr(rt_conn *c, char *buf, size_t len);
int rt_conn_local_addr(rt_conn *c, char *buf, size_t len);

/* ------------------------------------------------------------ diagnostics */

/* Write a dump of every goroutine (id, state, wait time, spawn site) to fd.
 * SIGQUIT does the same to stderr and the process keeps running. */
int rt_dump_goroutines(int fd);

#ifdef __cplusplus
}
#endif
#endif /* LEDGERD_RT_H */
