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

/* ------------------------------------------------------------ diagnostics */

/* Write a dump of every goroutine (id, state, wait time, spawn site) to fd.
 * SIGQUIT does the same to stderr and the process keeps running. */
int rt_dump_goroutines(int fd);

#ifdef __cplusplus
}
#endif
#endif /* LEDGERD_RT_H */
