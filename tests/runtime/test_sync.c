/*
 * test_sync.c — rt_mutex, rt_rwmutex, rt_waitgroup, rt_once, rt_cond.
 *
 * What is checked: mutual exclusion (exact counters, at most one goroutine
 * inside), that contended paths park goroutines and wake them all, that
 * starvation mode hands a mutex to a waiter a barging goroutine would
 * otherwise starve, reader concurrency (proved by a barrier inside the read
 * lock, which would deadlock if readers were exclusive), writer exclusion
 * and writer preference, WaitGroup and Once semantics, Cond signal /
 * broadcast / re-locking, and the fatal errors for misuse (child processes).
 *
 * A few tests read the documented state layouts of the public structs
 * (mutex waiter count in state >> 3, rwmutex reader_count) to know when
 * goroutines have queued; that keeps them free of timing assumptions.
 */
#include "rt_test.h"

enum { MUTEX_LOCKED = 1, MUTEX_STARVING = 4, MUTEX_WAITER_SHIFT = 3 };
#define RWMUTEX_MAX_READERS (1 << 30)

/* Spawn fn(arg), checking that the runtime accepted it. */
static void go(rt_func fn, void *arg) { CHECK_EQ(rt_go(fn, arg), RT_OK); }

/* ================================================================== mutex */

static void test_mutex_zero_value_and_trylock(void) {
    rt_mutex mu;
    memset(&mu, 0, sizeof mu);
    CHECK(rt_mutex_trylock(&mu));
    CHECK(!rt_mutex_trylock(&mu));
    rt_mutex_unlock(&mu);
    CHECK_EQ(atomic_load(&mu.state), 0);
    rt_mutex_lock(&mu);
    CHECK(!rt_mutex_trylock(&mu));
    CHECK_EQ(atomic_load(&mu.state), MUTEX_LOCKED);
    rt_mutex_unlock(&mu);
    CHECK(rt_mutex_trylock(&mu));
    rt_mutex_unlock(&mu);
    CHECK_EQ(atomic_load(&mu.state), 0);
    CHECK_EQ(atomic_load(&mu.sema), 0);
}

static struct {
    rt_mutex mu;
    long counter;                 /* plain: only touched under mu */
    _Atomic int inside;
    _Atomic long violations;
    long iters;
    rt_waitgroup wg;
} mx;

static void mutex_worker(void *arg) {
    long id = (long)(intptr_t)arg;
    for (long i = 0; i < mx.iters; i++) {
        rt_mutex_lock(&mx.mu);
        if (atomic_fetch_add_explicit(&mx.inside, 1, memory_order_relaxed) != 0)
            atomic_fetch_add(&mx.violations, 1);
        mx.counter++;
        /* Now and then hold the mutex across a reschedule so that others
         * pile up and park (the slow paths), not just spin. */
        if ((i + id) % 1024 == 0) rt_yield();
        atomic_fetch_sub_explicit(&mx.inside, 1, memory_order_relaxed);
        rt_mutex_unlock(&mx.mu);
    }
    rt_waitgroup_done(&mx.wg);
}

static void test_mutex_contention(void) {
    enum { N = 8 };
    mx.iters = SCALED(200000);
    rt_waitgroup_add(&mx.wg, N);
    for (long i = 0; i < N; i++) go(mutex_worker, (void *)(intptr_t)i);
    rt_waitgroup_wait(&mx.wg);
    CHECK_EQ(atomic_load(&mx.violations), 0);
    rt_mutex_lock(&mx.mu);
    CHECK_EQ(mx.counter, N * mx.iters);
    rt_mutex_unlock(&mx.mu);
    CHECK_EQ(atomic_load(&mx.mu.state), 0);   /* no stale waiters or flags */
}

/* Many goroutines parked on one held mutex all get it, one at a time. */
static struct {
    rt_mutex mu;
    long order;                   /* under mu */
    _Atomic int32_t started;
    rt_waitgroup wg;
} pk;

static void parked_locker(void *arg) {
    (void)arg;
    atomic_fetch_add(&pk.started, 1);
    rt_mutex_lock(&pk.mu);
    pk.order++;
    rt_mutex_unlock(&pk.mu);
    rt_waitgroup_done(&pk.wg);
}

static void test_mutex_many_parked(void) {
    enum { N = 500 };
    rt_mutex_lock(&pk.mu);
    rt_waitgroup_add(&pk.wg, N);
    for (int i = 0; i < N; i++) go(parked_locker, NULL);
    /* Wait until every one is counted as a waiter: they are parked (or
     * about to) on the semaphore, not spinning. */
    while ((atomic_load(&pk.mu.state) >> MUTEX_WAITER_SHIFT) < N) rt_yield();
    CHECK_EQ(pk.order, 0);
    rt_mutex_unlock(&pk.mu);
    rt_waitgroup_wait(&pk.wg);
    rt_mutex_lock(&pk.mu);
    CHECK_EQ(pk.order, N);
    rt_mutex_unlock(&pk.mu);
    CHECK_EQ(atomic_load(&pk.mu.state), 0);
    CHECK_EQ(atomic_load(&pk.mu.sema), 0);
}

/*
 * Starvation: the holder keeps the mutex except between an unlock and an
 * immediate re-lock, and yields while holding it, so the waiter only ever
 * runs while the mutex is held.  In normal mode the holder always wins the
 * re-lock (barging); only starvation mode (after the waiter has waited
 * 1 ms) hands the mutex over.  With GOMAXPROCS=1 that is deterministic; on
 * more Ps the waiter might also win a race in normal mode, which is fine.
 */
static struct {
    rt_mutex mu;
    _Atomic int done;
    _Atomic int waiter_started;
} sv;

static void starved_waiter(void *arg) {
    (void)arg;
    atomic_store(&sv.waiter_started, 1);
    rt_mutex_lock(&sv.mu);
    atomic_store(&sv.done, 1);
    rt_mutex_unlock(&sv.mu);
}

static void run_starvation(bool require_starving_mode) {
    memset(&sv, 0, sizeof sv);
    const long cap = 5000000;     /* ~1 ms of iterations is a few thousand */
    bool saw_starving = false;
    rt_mutex_lock(&sv.mu);
    go(starved_waiter, NULL);
    long i;
    for (i = 0; i < cap && !atomic_load(&sv.done); i++) {
        rt_yield();
        if (atomic_load(&sv.mu.state) & MUTEX_STARVING) saw_starving = true;
        rt_mutex_unlock(&sv.mu);
        rt_mutex_lock(&sv.mu);
    }
    rt_mutex_unlock(&sv.mu);
    CHECK(atomic_load(&sv.waiter_started));
    if (!atomic_load(&sv.done))
        fprintf(stderr, "waiter starved for %ld iterations\n", i);
    CHECK(atomic_load(&sv.done));
    if (require_starving_mode) CHECK(saw_starving);
    /* Starvation mode ends with the last waiter. */
    for (int k = 0; k < 1000000 && atomic_load(&sv.mu.state) != 0; k++) rt_yield();
    CHECK_EQ(atomic_load(&sv.mu.state), 0);
}

static void test_mutex_starvation(void) { run_starvation(rt_gomaxprocs() == 1); }

static int child_starvation_one_p(void *arg) {
    (void)arg;
    CHECK_EQ(rt_gomaxprocs(), 1);
    run_starvation(true);
    fprintf(stderr, "starvation child ok\n");
    return 0;
}

/* Run the starvation test again in a child with GOMAXPROCS=1, where it is
 * deterministic.  (No other thread reads the environment meanwhile.) */
static void test_mutex_starvation_one_p(void) {
    static char out[65536];
    const char *old = getenv("GOMAXPROCS");
    char *saved = old ? strdup(old) : NULL;
    setenv("GOMAXPROCS", "1", 1);
    int st = rt_test_run_child("starvation_one_p", out, sizeof out);
    if (saved) setenv("GOMAXPROCS", saved, 1);
    else unsetenv("GOMAXPROCS");
    free(saved);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fprintf(stderr, "child: %d\n%s\n", st, out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(strstr(out, "starvation child ok") != NULL);
}

static int child_unlock_unlocked(void *arg) {
    (void)arg;
    static rt_mutex mu;
    rt_mutex_lock(&mu);
    rt_mutex_unlock(&mu);
    rt_mutex_unlock(&mu);
    fprintf(stderr, "unreachable\n");
    return 0;
}

static void test_mutex_unlock_unlocked_fatal(void) {
    CHECK_CHILD_FATAL("unlock_unlocked", "fatal error: sync: unlock of unlocked mutex");
}

static int child_self_deadlock(void *arg) {
    (void)arg;
    static rt_mutex mu;
    rt_mutex_lock(&mu);
    rt_mutex_lock(&mu);
    fprintf(stderr, "unreachable\n");
    return 0;
}

static void test_mutex_self_deadlock_fatal(void) {
    CHECK_CHILD_FATAL("self_deadlock", "fatal error: all goroutines are asleep - deadlock!");
}

/* ================================================================ rwmutex */

static void test_rwmutex_zero_value_and_try(void) {
    rt_rwmutex rw;
    memset(&rw, 0, sizeof rw);
    CHECK(rt_rwmutex_trylock(&rw));
    CHECK(!rt_rwmutex_tryrlock(&rw));
    CHECK(!rt_rwmutex_trylock(&rw));
    rt_rwmutex_unlock(&rw);
    CHECK(rt_rwmutex_tryrlock(&rw));
    CHECK(rt_rwmutex_tryrlock(&rw));
    CHECK(!rt_rwmutex_trylock(&rw));
    rt_rwmutex_runlock(&rw);
    rt_rwmutex_runlock(&rw);
    rt_rwmutex_rlock(&rw);
    rt_rwmutex_runlock(&rw);
    rt_rwmutex_lock(&rw);
    rt_rwmutex_unlock(&rw);
    CHECK_EQ(atomic_load(&rw.reader_count), 0);
    CHECK_EQ(atomic_load(&rw.reader_wait), 0);
    CHECK_EQ(atomic_load(&rw.w.state), 0);
}

/* Every reader waits inside the read lock until all readers are inside.
 * If readers excluded each other this would deadlock (and the runtime's
 * deadlock detector would fail the test). */
static struct {
    rt_rwmutex rw;
    rt_waitgroup inside;          /* the barrier */
    rt_waitgroup done;
    _Atomic int32_t max_inside;
    _Atomic int32_t now_inside;
} rc;

static void concurrent_reader(void *arg) {
    (void)arg;
    rt_rwmutex_rlock(&rc.rw);
    int32_t n = atomic_fetch_add(&rc.now_inside, 1) + 1;
    int32_t m = atomic_load(&rc.max_inside);
    while (n > m && !atomic_compare_exchange_weak(&rc.max_inside, &m, n)) {}
    rt_waitgroup_done(&rc.inside);
    rt_waitgroup_wait(&rc.inside);
    CHECK(!rt_rwmutex_trylock(&rc.rw));
    atomic_fetch_sub(&rc.now_inside, 1);
    rt_rwmutex_runlock(&rc.rw);
    rt_waitgroup_done(&rc.done);
}

static void test_rwmutex_readers_concurrent(void) {
    enum { N = 64 };
    rt_waitgroup_add(&rc.inside, N);
    rt_waitgroup_add(&rc.done, N);
    for (int i = 0; i < N; i++) go(concurrent_reader, NULL);
    rt_waitgroup_wait(&rc.done);
    CHECK_EQ(atomic_load(&rc.max_inside), N);
    CHECK(rt_rwmutex_trylock(&rc.rw));
    rt_rwmutex_unlock(&rc.rw);
}

static struct {
    rt_rwmutex rw;
    long a, b;                    /* plain: written only under the write lock */
    _Atomic int32_t readers, writers;
    _Atomic long violations;
    long iters;
    rt_waitgroup wg;
} rx;

static void exclusive_writer(void *arg) {
    long id = (long)(intptr_t)arg;
    for (long i = 0; i < rx.iters; i++) {
        rt_rwmutex_lock(&rx.rw);
        if (atomic_fetch_add(&rx.writers, 1) != 0 || atomic_load(&rx.readers) != 0)
            atomic_fetch_add(&rx.violations, 1);
        rx.a++;
        if ((i + id) % 64 == 0) rt_yield();
        rx.b++;
        atomic_fetch_sub(&rx.writers, 1);
        rt_rwmutex_unlock(&rx.rw);
    }
    rt_waitgroup_done(&rx.wg);
}

static void checking_reader(void *arg) {
    long id = (long)(intptr_t)arg;
    for (long i = 0; i < rx.iters * 4; i++) {
        rt_rwmutex_rlock(&rx.rw);
        atomic_fetch_add(&rx.readers, 1);
        if (atomic_load(&rx.writers) != 0) atomic_fetch_add(&rx.violations, 1);
        long a = rx.a;
        if ((i + id) % 64 == 0) rt_yield();
        if (rx.b != a) atomic_fetch_add(&rx.violations, 1);
        atomic_fetch_sub(&rx.readers, 1);
        rt_rwmutex_runlock(&rx.rw);
    }
    rt_waitgroup_done(&rx.wg);
}

static void test_rwmutex_writers_exclusive(void) {
    enum { W = 4, R = 8 };
    rx.iters = SCALED(20000);
    rt_waitgroup_add(&rx.wg, W + R);
    for (long i = 0; i < R; i++) go(checking_reader, (void *)(intptr_t)i);
    for (long i = 0; i < W; i++) go(exclusive_writer, (void *)(intptr_t)i);
    rt_waitgroup_wait(&rx.wg);
    CHECK_EQ(atomic_load(&rx.violations), 0);
    rt_rwmutex_rlock(&rx.rw);
    CHECK_EQ(rx.a, W * rx.iters);
    CHECK_EQ(rx.b, W * rx.iters);
    rt_rwmutex_runlock(&rx.rw);
    CHECK_EQ(atomic_load(&rx.rw.reader_count), 0);
    CHECK_EQ(atomic_load(&rx.rw.w.state), 0);
}

/*
 * Writer preference: with a reader inside and a writer waiting, a new
 * reader must wait for the writer.  Order: main (reader) holds the read
 * lock; the writer blocks; a second reader blocks behind the writer; main
 * leaves; the writer must run before the second reader.
 */
static struct {
    rt_rwmutex rw;
    rt_mutex log_mu;
    char log[8];
    int nlog;
    rt_waitgroup wg;
} wp;

static void wp_log(char c) {
    rt_mutex_lock(&wp.log_mu);
    wp.log[wp.nlog++] = c;
    rt_mutex_unlock(&wp.log_mu);
}

static void pref_writer(void *arg) {
    (void)arg;
    rt_rwmutex_lock(&wp.rw);
    wp_log('W');
    rt_rwmutex_unlock(&wp.rw);
    rt_waitgroup_done(&wp.wg);
}

static void pref_reader(void *arg) {
    (void)arg;
    rt_rwmutex_rlock(&wp.rw);
    wp_log('R');
    rt_rwmutex_runlock(&wp.rw);
    rt_waitgroup_done(&wp.wg);
}

static void test_rwmutex_writer_preference(void) {
    rt_rwmutex_rlock(&wp.rw);
    rt_waitgroup_add(&wp.wg, 2);
    go(pref_writer, NULL);
    /* The writer has announced itself once reader_count went negative. */
    while (atomic_load(&wp.rw.reader_count) >= 0) rt_yield();
    CHECK(!rt_rwmutex_tryrlock(&wp.rw));
    go(pref_reader, NULL);
    /* Wait until the second reader is counted (then it is parked behind
     * the writer) or, wrongly, got in. */
    for (;;) {
        rt_mutex_lock(&wp.log_mu);
        int n = wp.nlog;
        rt_mutex_unlock(&wp.log_mu);
        CHECK_EQ(n, 0);            /* neither got in while we read */
        if (atomic_load(&wp.rw.reader_count) == -RWMUTEX_MAX_READERS + 2) break;
        rt_yield();
    }
    for (int i = 0; i < 100; i++) rt_yield();
    rt_mutex_lock(&wp.log_mu);
    CHECK_EQ(wp.nlog, 0);
    rt_mutex_unlock(&wp.log_mu);
    rt_rwmutex_runlock(&wp.rw);
    rt_waitgroup_wait(&wp.wg);
    CHECK_EQ(wp.nlog, 2);
    CHECK_EQ(wp.log[0], 'W');
    CHECK_EQ(wp.log[1], 'R');
    CHECK_EQ(atomic_load(&wp.rw.reader_count), 0);
}

static int child_runlock_unlocked(void *arg) {
    (void)arg;
    static rt_rwmutex rw;
    rt_rwmutex_runlock(&rw);
    return 0;
}

static int child_runlock_write_locked(void *arg) {
    (void)arg;
    static rt_rwmutex rw;
    rt_rwmutex_lock(&rw);
    rt_rwmutex_runlock(&rw);
    return 0;
}

static int child_rw_unlock_unlocked(void *arg) {
    (void)arg;
    static rt_rwmutex rw;
    rt_rwmutex_rlock(&rw);
    rt_rwmutex_runlock(&rw);
    rt_rwmutex_unlock(&rw);
    return 0;
}

static void test_rwmutex_misuse_fatal(void) {
    CHECK_CHILD_FATAL("runlock_unlocked", "fatal error: sync: RUnlock of unlocked RWMutex");
    CHECK_CHILD_FATAL("runlock_write_locked", "fatal error: sync: RUnlock of unlocked RWMutex");
    CHECK_CHILD_FATAL("rw_unlock_unlocked", "fatal error: sync: Unlock of unlocked RWMutex");
}

/* ============================================================== waitgroup */

static struct {
    rt_waitgroup wg;
    _Atomic long ran;
    unsigned char *flags;
} wgm;

static void wg_worker(void *arg) {
    long i = (long)(intptr_t)arg;
    wgm.flags[i] = 1;             /* plain write, published by Done */
    atomic_fetch_add_explicit(&wgm.ran, 1, memory_order_relaxed);
    rt_waitgroup_done(&wgm.wg);
}

static void test_waitgroup_many(void) {
    enum { N = 10000 };
    wgm.flags = calloc(N, 1);
    CHECK(wgm.flags != NULL);
    rt_waitgroup_add(&wgm.wg, N);
    for (long i = 0; i < N; i++) go(wg_worker, (void *)(intptr_t)i);
    rt_waitgroup_wait(&wgm.wg);
    CHECK_EQ(atomic_load(&wgm.ran), N);
    long set = 0;
    for (long i = 0; i < N; i++) set += wgm.flags[i];
    CHECK_EQ(set, N);
    CHECK_EQ(atomic_load(&wgm.wg.state), 0);
    free(wgm.flags);
}

static struct {
    rt_waitgroup wg;
    rt_waitgroup waiters_done;
    _Atomic long work;
    _Atomic long seen_short;      /* waiters that returned before all work */
    long expect;
} wr;

static void reuse_worker(void *arg) {
    (void)arg;
    rt_yield();
    atomic_fetch_add(&wr.work, 1);
    rt_waitgroup_done(&wr.wg);
}

static void reuse_waiter(void *arg) {
    (void)arg;
    rt_waitgroup_wait(&wr.wg);
    if (atomic_load(&wr.work) < wr.expect) atomic_fetch_add(&wr.seen_short, 1);
    rt_waitgroup_done(&wr.waiters_done);
}

/* The same WaitGroup for many rounds, each with several waiters. */
static void test_waitgroup_reuse(void) {
    enum { WORKERS = 10, WAITERS = 5 };
    long rounds = SCALED(200);
    for (long r = 0; r < rounds; r++) {
        wr.expect = (r + 1) * WORKERS;
        rt_waitgroup_add(&wr.wg, WORKERS);
        rt_waitgroup_add(&wr.waiters_done, WAITERS);
        for (int i = 0; i < WAITERS; i++) go(reuse_waiter, NULL);
        for (int i = 0; i < WORKERS; i++) go(reuse_worker, NULL);
        rt_waitgroup_wait(&wr.wg);
        CHECK_EQ(atomic_load(&wr.work), wr.expect);
        rt_waitgroup_wait(&wr.waiters_done);   /* before the next round's Add */
    }
    CHECK_EQ(atomic_load(&wr.seen_short), 0);
    CHECK_EQ(atomic_load(&wr.wg.state), 0);
}

static void test_waitgroup_zero(void) {
    rt_waitgroup wg;
    memset(&wg, 0, sizeof wg);
    rt_waitgroup_wait(&wg);            /* returns at once */
    rt_waitgroup_add(&wg, 3);
    rt_waitgroup_add(&wg, -2);
    rt_waitgroup_done(&wg);
    rt_waitgroup_wait(&wg);
    CHECK_EQ(atomic_load(&wg.state), 0);
    CHECK_EQ(atomic_load(&wg.sema), 0);
}

static int child_wg_negative(void *arg) {
    (void)arg;
    static rt_waitgroup wg;
    rt_waitgroup_add(&wg, 1);
    rt_waitgroup_done(&wg);
    rt_waitgroup_done(&wg);
    return 0;
}

static void test_waitgroup_negative_fatal(void) {
    CHECK_CHILD_FATAL("wg_negative", "fatal error: sync: negative WaitGroup counter");
}

/* =================================================================== once */

static struct {
    rt_once once;
    long value;                   /* plain: written by fn, read by callers */
    _Atomic long runs;
    _Atomic long wrong;
    rt_waitgroup wg;
} on;

static void once_fn(void *arg) {
    atomic_fetch_add(&on.runs, 1);
    rt_sleep(2 * RT_MILLISECOND);   /* others arrive and must wait */
    on.value = (long)(intptr_t)arg;
}

static void once_caller(void *arg) {
    (void)arg;
    rt_once_do(&on.once, once_fn, (void *)(intptr_t)42);
    if (on.value != 42) atomic_fetch_add(&on.wrong, 1);
    rt_waitgroup_done(&on.wg);
}

static void test_once(void) {
    enum { N = 1000 };
    rt_waitgroup_add(&on.wg, N);
    for (int i = 0; i < N; i++) go(once_caller, NULL);
    rt_waitgroup_wait(&on.wg);
    CHECK_EQ(atomic_load(&on.runs), 1);
    CHECK_EQ(atomic_load(&on.wrong), 0);
    rt_once_do(&on.once, once_fn, (void *)(intptr_t)7);
    CHECK_EQ(atomic_load(&on.runs), 1);
    CHECK_EQ(on.value, 42);
}

/* =================================================================== cond */

static struct {
    rt_mutex mu;
    rt_cond cond;
    int waiting;                  /* under mu */
    int woken;                    /* under mu */
    _Atomic long not_relocked;
    rt_waitgroup wg;
} cv;

static void cond_waiter(void *arg) {
    (void)arg;
    rt_mutex_lock(&cv.mu);
    cv.waiting++;
    rt_cond_wait(&cv.cond, &cv.mu);
    /* Wait returns with the mutex held again. */
    if (rt_mutex_trylock(&cv.mu)) atomic_fetch_add(&cv.not_relocked, 1);
    cv.woken++;
    rt_mutex_unlock(&cv.mu);
    rt_waitgroup_done(&cv.wg);
}

static int cond_read(int *field) {
    rt_mutex_lock(&cv.mu);
    int v = *field;
    rt_mutex_unlock(&cv.mu);
    return v;
}

static void cond_start_waiters(int n) {
    memset(&cv, 0, sizeof cv);
    rt_waitgroup_add(&cv.wg, n);
    for (int i = 0; i < n; i++) go(cond_waiter, NULL);
    /* waiting is counted under the mutex before Wait takes its ticket and
     * releases the mutex, so once we see n, all n hold tickets. */
    while (cond_read(&cv.waiting) < n) rt_yield();
}

static void test_cond_signal_wakes_one(void) {
    enum { N = 10 };
    cond_start_waiters(N);
    rt_cond_signal(&cv.cond);
    while (cond_read(&cv.woken) < 1) rt_yield();
    rt_sleep(20 * RT_MILLISECOND);   /* give extra wakeups a chance to show */
    CHECK_EQ(cond_read(&cv.woken), 1);
    rt_cond_signal(&cv.cond);
    while (cond_read(&cv.woken) < 2) rt_yield();
    rt_sleep(5 * RT_MILLISECOND);
    CHECK_EQ(cond_read(&cv.woken), 2);
    rt_cond_broadcast(&cv.cond);
    rt_waitgroup_wait(&cv.wg);
    CHECK_EQ(cv.woken, N);
    CHECK_EQ(atomic_load(&cv.not_relocked), 0);
    /* All tickets were consumed: signal and broadcast are no-ops now. */
    CHECK_EQ(atomic_load(&cv.cond.wait_ticket), atomic_load(&cv.cond.notify_ticket));
    CHECK(cv.cond.head == NULL && cv.cond.tail == NULL);
}

static void test_cond_broadcast_wakes_all(void) {
    enum { N = 1000 };
    cond_start_waiters(N);
    rt_cond_broadcast(&cv.cond);
    rt_waitgroup_wait(&cv.wg);
    CHECK_EQ(cv.woken, N);
    CHECK_EQ(atomic_load(&cv.not_relocked), 0);
    CHECK(cv.cond.head == NULL && cv.cond.tail == NULL);
}

/* A signal with no waiter is not remembered (Go semantics). */
static void test_cond_signal_without_waiters(void) {
    rt_cond c;
    memset(&c, 0, sizeof c);
    rt_cond_signal(&c);
    rt_cond_broadcast(&c);
    CHECK_EQ(atomic_load(&c.notify_ticket), 0);
    cond_start_waiters(1);
    rt_cond_signal(&cv.cond);
    rt_waitgroup_wait(&cv.wg);
    CHECK_EQ(cv.woken, 1);
}

/* Bounded queue: producers wait for space, consumers for items. */
enum { Q_CAP = 16 };
static struct {
    rt_mutex mu;
    rt_cond not_empty, not_full;
    long buf[Q_CAP];
    int head, len;
    long consumed_sum;
    long consumed_count;
    long per_producer;
    rt_waitgroup wg;
} pc;

static void pc_producer(void *arg) {
    long id = (long)(intptr_t)arg;
    for (long i = 0; i < pc.per_producer; i++) {
        rt_mutex_lock(&pc.mu);
        while (pc.len == Q_CAP) rt_cond_wait(&pc.not_full, &pc.mu);
        pc.buf[(pc.head + pc.len) % Q_CAP] = id * pc.per_producer + i + 1;
        pc.len++;
        rt_cond_signal(&pc.not_empty);
        rt_mutex_unlock(&pc.mu);
    }
    rt_waitgroup_done(&pc.wg);
}

static void pc_consumer(void *arg) {
    long count = (long)(intptr_t)arg;
    for (long i = 0; i < count; i++) {
        rt_mutex_lock(&pc.mu);
        while (pc.len == 0) rt_cond_wait(&pc.not_empty, &pc.mu);
        long v = pc.buf[pc.head];
        pc.head = (pc.head + 1) % Q_CAP;
        pc.len--;
        pc.consumed_sum += v;
        pc.consumed_count++;
        rt_cond_signal(&pc.not_full);
        rt_mutex_unlock(&pc.mu);
    }
    rt_waitgroup_done(&pc.wg);
}

static void test_cond_producer_consumer(void) {
    enum { P = 4, C = 6 };
    pc.per_producer = SCALED(30000);
    long total = P * pc.per_producer;
    rt_waitgroup_add(&pc.wg, P + C);
    long left = total;
    for (int i = 0; i < C; i++) {
        long n = i == C - 1 ? left : total / C;
        left -= n;
        go(pc_consumer, (void *)(intptr_t)n);
    }
    for (long i = 0; i < P; i++) go(pc_producer, (void *)(intptr_t)i);
    rt_waitgroup_wait(&pc.wg);
    CHECK_EQ(pc.consumed_count, total);
    CHECK_EQ(pc.consumed_sum, total * (total + 1) / 2);   /* values 1..total */
    CHECK_EQ(pc.len, 0);
}

/* ================================================================= stress */

enum { ST_ONCES = 16, ST_TOKENS = 4 };
static struct {
    rt_mutex mu;
    long counter;                 /* under mu */
    rt_rwmutex rw;
    long ra, rb;                  /* under rw (write) */
    rt_once onces[ST_ONCES];
    long once_runs[ST_ONCES];     /* written inside the once fns */
    _Atomic long once_calls;
    rt_mutex qmu;
    rt_cond qcond;
    long tokens;                  /* under qmu */
    long holders;                 /* under qmu */
    _Atomic long violations;
    _Atomic long expect_counter;
    _Atomic long expect_writes;
    long iters;
    rt_waitgroup wg;
} st;

static void stress_once_fn(void *arg) { st.once_runs[(intptr_t)arg]++; }

static void stress_sub(void *arg) {
    rt_waitgroup *wg = arg;
    rt_mutex_lock(&st.mu);
    st.counter++;
    rt_mutex_unlock(&st.mu);
    atomic_fetch_add(&st.expect_counter, 1);
    rt_waitgroup_done(wg);
}

static void stress_worker(void *arg) {
    uint64_t x = (uint64_t)(intptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    for (long i = 0; i < st.iters; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        switch (x % 7) {
        case 0:
        case 1:
            rt_mutex_lock(&st.mu);
            st.counter++;
            if (x & 64) rt_yield();
            rt_mutex_unlock(&st.mu);
            atomic_fetch_add(&st.expect_counter, 1);
            break;
        case 2:
            rt_rwmutex_lock(&st.rw);
            st.ra++;
            if (x & 64) rt_yield();
            st.rb++;
            rt_rwmutex_unlock(&st.rw);
            atomic_fetch_add(&st.expect_writes, 1);
            break;
        case 3:
            rt_rwmutex_rlock(&st.rw);
            if (st.ra != st.rb) atomic_fetch_add(&st.violations, 1);
            if (x & 64) rt_yield();
            rt_rwmutex_runlock(&st.rw);
            break;
        case 4: {
            intptr_t k = (intptr_t)((x >> 8) % ST_ONCES);
            rt_once_do(&st.onces[k], stress_once_fn, (void *)k);
            if (st.once_runs[k] != 1) atomic_fetch_add(&st.violations, 1);
            atomic_fetch_add(&st.once_calls, 1);
            break;
        }
        case 5: {
            /* A counting semaphore built from Cond: at most ST_TOKENS
             * goroutines between take and give; the rest wait. */
            rt_mutex_lock(&st.qmu);
            while (st.tokens == 0) rt_cond_wait(&st.qcond, &st.qmu);
            st.tokens--;
            if (++st.holders > ST_TOKENS) atomic_fetch_add(&st.violations, 1);
            rt_mutex_unlock(&st.qmu);
            rt_yield();
            rt_mutex_lock(&st.qmu);
            st.holders--;
            st.tokens++;
            if (x & 128) rt_cond_broadcast(&st.qcond);
            else rt_cond_signal(&st.qcond);
            rt_mutex_unlock(&st.qmu);
            break;
        }
        case 6: {
            rt_waitgroup wg;
            memset(&wg, 0, sizeof wg);
            int n = 1 + (int)((x >> 8) % 3);
            rt_waitgroup_add(&wg, n);
            for (int k = 0; k < n; k++) go(stress_sub, &wg);
            rt_waitgroup_wait(&wg);
            break;
        }
        }
    }
    rt_waitgroup_done(&st.wg);
}

static void test_stress_mixed(void) {
    long n = SCALED(3000);
    if (n < 50) n = 50;
    st.iters = SCALED(200) < 20 ? 20 : SCALED(200);
    st.tokens = ST_TOKENS;
    rt_waitgroup_add(&st.wg, (int)n);
    for (long i = 0; i < n; i++) go(stress_worker, (void *)(intptr_t)(i + 1));
    rt_waitgroup_wait(&st.wg);
    CHECK_EQ(atomic_load(&st.violations), 0);
    rt_mutex_lock(&st.mu);
    CHECK_EQ(st.counter, atomic_load(&st.expect_counter));
    rt_mutex_unlock(&st.mu);
    rt_rwmutex_rlock(&st.rw);
    CHECK_EQ(st.ra, atomic_load(&st.expect_writes));
    CHECK_EQ(st.rb, st.ra);
    rt_rwmutex_runlock(&st.rw);
    long touched = 0;
    for (int k = 0; k < ST_ONCES; k++) {
        CHECK(st.once_runs[k] <= 1);
        touched += st.once_runs[k];
    }
    CHECK(atomic_load(&st.once_calls) == 0 || touched > 0);
    CHECK_EQ(st.tokens, ST_TOKENS);
    CHECK_EQ(st.holders, 0);
    CHECK_EQ(atomic_load(&st.mu.state), 0);
    CHECK_EQ(atomic_load(&st.rw.reader_count), 0);
}

/* ========================================================= plain threads
 * The sync types also work from a thread that is not a goroutine (it
 * cannot park, so the runtime polls for it), mixed with goroutines. */

#include <pthread.h>

static struct {
    rt_mutex mu;
    long counter;                 /* under mu */
    rt_waitgroup wg;              /* goroutines + the thread */
    rt_waitgroup gate;            /* the thread waits on it */
    rt_cond cond;
    bool go_ahead;                /* under mu */
    _Atomic int thread_done;
    long iters;
} ft;

static void ft_count(void) {
    for (long i = 0; i < ft.iters; i++) {
        rt_mutex_lock(&ft.mu);
        ft.counter++;
        rt_mutex_unlock(&ft.mu);
    }
}

static void *ft_thread(void *arg) {
    (void)arg;
    rt_waitgroup_wait(&ft.gate);          /* released by a goroutine */
    rt_mutex_lock(&ft.mu);
    while (!ft.go_ahead) rt_cond_wait(&ft.cond, &ft.mu);
    rt_mutex_unlock(&ft.mu);
    ft_count();
    rt_waitgroup_done(&ft.wg);            /* wakes a parked goroutine */
    atomic_store(&ft.thread_done, 1);
    return NULL;
}

static void ft_goroutine(void *arg) {
    (void)arg;
    ft_count();
    rt_waitgroup_done(&ft.wg);
}

/* While goroutines wait for the plain thread, the runtime cannot know the
 * thread will wake them: with every goroutine parked its deadlock detector
 * would fire.  A pending timer keeps it from concluding that. */
static void ft_keeper(void *arg) {
    (void)arg;
    while (!atomic_load(&ft.thread_done)) rt_sleep(RT_MILLISECOND);
}

static void test_plain_thread_interop(void) {
    enum { G = 4 };
    go(ft_keeper, NULL);
    ft.iters = SCALED(50000);
    rt_waitgroup_add(&ft.wg, G + 1);
    rt_waitgroup_add(&ft.gate, 1);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, ft_thread, NULL), 0);
    rt_sleep(RT_MILLISECOND);             /* let it block on the gate */
    rt_waitgroup_done(&ft.gate);
    rt_sleep(RT_MILLISECOND);             /* and on the cond */
    rt_mutex_lock(&ft.mu);
    ft.go_ahead = true;
    rt_cond_broadcast(&ft.cond);
    rt_mutex_unlock(&ft.mu);
    for (int i = 0; i < G; i++) go(ft_goroutine, NULL);
    rt_waitgroup_wait(&ft.wg);
    /* Done is the thread's last use of ft; join without blocking the P. */
    while (!atomic_load(&ft.thread_done)) rt_yield();
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(ft.counter, (G + 1) * ft.iters);
    CHECK_EQ(atomic_load(&ft.mu.state), 0);
}

/* ================================================================== main */

static int run(void *arg) {
    (void)arg;
    fprintf(stderr, "GOMAXPROCS=%d\n", rt_gomaxprocs());
    RUN(test_mutex_zero_value_and_trylock);
    RUN(test_mutex_contention);
    RUN(test_mutex_many_parked);
    RUN(test_mutex_starvation);
    RUN(test_mutex_starvation_one_p);
    RUN(test_mutex_unlock_unlocked_fatal);
    RUN(test_mutex_self_deadlock_fatal);
    RUN(test_rwmutex_zero_value_and_try);
    RUN(test_rwmutex_readers_concurrent);
    RUN(test_rwmutex_writers_exclusive);
    RUN(test_rwmutex_writer_preference);
    RUN(test_rwmutex_misuse_fatal);
    RUN(test_waitgroup_many);
    RUN(test_waitgroup_reuse);
    RUN(test_waitgroup_zero);
    RUN(test_waitgroup_negative_fatal);
    RUN(test_once);
    RUN(test_cond_signal_wakes_one);
    RUN(test_cond_broadcast_wakes_all);
    RUN(test_cond_signal_without_waiters);
    RUN(test_cond_producer_consumer);
    RUN(test_stress_mixed);
    RUN(test_plain_thread_interop);
    return rt_test_done();
}

static const rt_test_child children[] = {
    { "starvation_one_p", child_starvation_one_p },
    { "unlock_unlocked", child_unlock_unlocked },
    { "self_deadlock", child_self_deadlock },
    { "runlock_unlocked", child_runlock_unlocked },
    { "runlock_write_locked", child_runlock_write_locked },
    { "rw_unlock_unlocked", child_rw_unlock_unlocked },
    { "wg_negative", child_wg_negative },
    { NULL, NULL },
};

int main(int argc, char **argv) { return rt_test_main_with_children(argc, argv, run, children); }
