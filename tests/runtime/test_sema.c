/*
 * test_sema.c — the runtime's internal address-keyed semaphores (sema.c):
 * counts kept across a release-before-acquire, FIFO wakeup order, LIFO
 * queueing, addresses that collide in one hash bucket, handoff, and many
 * waiters on one address.  White-box: it includes sema_internal.h and uses
 * sema_waiters() to know when goroutines have queued, so the order checks
 * need no timing.
 */
#include "rt_test.h"

#include "../../internal/runtime/sema_internal.h"

static void go(rt_func fn, void *arg) { CHECK_EQ(rt_go(fn, arg), RT_OK); }

/* Wake order log. */
static struct {
    rt_mutex mu;
    int ids[64];
    int n;
} wl;

static int log_len(void) {
    rt_mutex_lock(&wl.mu);
    int n = wl.n;
    rt_mutex_unlock(&wl.mu);
    return n;
}

typedef struct waiter {
    _Atomic uint32_t *addr;
    int id;
    bool lifo;
} waiter;

static void sema_waiter(void *arg) {
    waiter *w = arg;
    sema_acquire(w->addr, w->lifo, WAIT_SEMA);
    rt_mutex_lock(&wl.mu);
    wl.ids[wl.n++] = w->id;
    rt_mutex_unlock(&wl.mu);
}

/* Spawn a waiter and return once it is queued on addr. */
static void start_waiter(waiter *w, _Atomic uint32_t *addr, int id, bool lifo) {
    *w = (waiter){ .addr = addr, .id = id, .lifo = lifo };
    uint32_t before = sema_waiters(addr);
    go(sema_waiter, w);
    while (sema_waiters(addr) != before + 1) rt_yield();
}

/* Release addr once and wait until one more waiter has logged. */
static void release_one(_Atomic uint32_t *addr) {
    int n = log_len();
    sema_release(addr, false);
    while (log_len() != n + 1) rt_yield();
}

static void reset_log(void) {
    rt_mutex_lock(&wl.mu);
    wl.n = 0;
    rt_mutex_unlock(&wl.mu);
}

static void test_release_before_acquire(void) {
    static _Atomic uint32_t s;
    CHECK(!sema_try_acquire(&s));
    sema_release(&s, false);
    sema_release(&s, false);
    CHECK_EQ(atomic_load(&s), 2);
    sema_acquire(&s, false, WAIT_SEMA);   /* does not block */
    CHECK(sema_try_acquire(&s));
    CHECK(!sema_try_acquire(&s));
    CHECK_EQ(sema_waiters(&s), 0);
}

static void test_fifo_order(void) {
    enum { N = 8 };
    static _Atomic uint32_t s;
    static waiter ws[N];
    reset_log();
    for (int i = 0; i < N; i++) start_waiter(&ws[i], &s, i, false);
    CHECK_EQ(sema_waiters(&s), N);
    for (int i = 0; i < N; i++) release_one(&s);
    for (int i = 0; i < N; i++) CHECK_EQ(wl.ids[i], i);
    CHECK_EQ(sema_waiters(&s), 0);
    CHECK_EQ(atomic_load(&s), 0);
}

static void test_lifo_goes_first(void) {
    static _Atomic uint32_t s;
    static waiter ws[5];
    reset_log();
    start_waiter(&ws[0], &s, 0, false);
    start_waiter(&ws[1], &s, 1, false);
    start_waiter(&ws[2], &s, 2, true);    /* front: 2 0 1 */
    start_waiter(&ws[3], &s, 3, false);   /* back:  2 0 1 3 */
    start_waiter(&ws[4], &s, 4, true);    /* front: 4 2 0 1 3 */
    const int want[5] = { 4, 2, 0, 1, 3 };
    for (int i = 0; i < 5; i++) release_one(&s);
    for (int i = 0; i < 5; i++) CHECK_EQ(wl.ids[i], want[i]);
    CHECK_EQ(sema_waiters(&s), 0);
}

/* Addresses 251*8 bytes apart share a root: their waiters must stay apart,
 * and removing one address's queue must leave the others intact. */
static _Atomic uint32_t bucket[3 * 502 + 1];

static void test_colliding_addresses(void) {
    _Atomic uint32_t *a = &bucket[0], *b = &bucket[502], *c = &bucket[1004];
    CHECK_EQ(((uintptr_t)b - (uintptr_t)a), 251 * 8);
    static waiter ws[9];
    reset_log();
    for (int i = 0; i < 3; i++) {
        start_waiter(&ws[3 * i + 0], a, 10 + i, false);
        start_waiter(&ws[3 * i + 1], b, 20 + i, false);
        start_waiter(&ws[3 * i + 2], c, 30 + i, false);
    }
    CHECK_EQ(sema_waiters(a), 3);
    CHECK_EQ(sema_waiters(b), 3);
    CHECK_EQ(sema_waiters(c), 3);
    /* Drain the middle address first, then the others. */
    for (int i = 0; i < 3; i++) release_one(b);
    CHECK_EQ(sema_waiters(a), 3);
    CHECK_EQ(sema_waiters(b), 0);
    CHECK_EQ(sema_waiters(c), 3);
    release_one(c);
    release_one(a);
    release_one(c);
    release_one(a);
    release_one(a);
    release_one(c);
    const int want[9] = { 20, 21, 22, 30, 10, 31, 11, 12, 32 };
    for (int i = 0; i < 9; i++) CHECK_EQ(wl.ids[i], want[i]);
    CHECK_EQ(sema_waiters(a) + sema_waiters(b) + sema_waiters(c), 0);
    /* A release with nobody waiting on that address (but others in the
     * root) just leaves the count. */
    start_waiter(&ws[0], a, 1, false);
    sema_release(b, false);
    CHECK_EQ(atomic_load(b), 1);
    CHECK_EQ(sema_waiters(a), 1);
    CHECK(sema_try_acquire(b));
    release_one(a);
}

/* Handoff: the releaser consumes the count on the waiter's behalf, so a
 * goroutine that tries to barge in right after the release finds nothing. */
static _Atomic int handoff_done;

static void handoff_waiter(void *arg) {
    sema_acquire(arg, false, WAIT_SEMA);
    atomic_store(&handoff_done, 1);
}

static void test_handoff(void) {
    static _Atomic uint32_t s;
    for (int round = 0; round < 100; round++) {
        atomic_store(&handoff_done, 0);
        go(handoff_waiter, (void *)&s);
        while (sema_waiters(&s) != 1) rt_yield();
        sema_release(&s, true);
        CHECK_EQ(atomic_load(&s), 0);
        CHECK(!sema_try_acquire(&s));
        while (!atomic_load(&handoff_done)) rt_yield();
    }
    CHECK_EQ(sema_waiters(&s), 0);
}

/* Many waiters, released by several goroutines at once. */
static struct {
    _Atomic uint32_t s;
    _Atomic long woken;
    rt_waitgroup wg;
} mw;

static void many_waiter(void *arg) {
    (void)arg;
    sema_acquire(&mw.s, false, WAIT_SEMA);
    atomic_fetch_add(&mw.woken, 1);
    rt_waitgroup_done(&mw.wg);
}

static void many_releaser(void *arg) {
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) sema_release(&mw.s, (i & 1) != 0);
    rt_waitgroup_done(&mw.wg);
}

static void test_many_waiters(void) {
    enum { N = 2000, R = 4 };
    rt_waitgroup_add(&mw.wg, N + R);
    for (int i = 0; i < N; i++) go(many_waiter, NULL);
    for (int i = 0; i < R; i++) go(many_releaser, (void *)(intptr_t)(N / R));
    rt_waitgroup_wait(&mw.wg);
    CHECK_EQ(atomic_load(&mw.woken), N);
    CHECK_EQ(atomic_load(&mw.s), 0);
    CHECK_EQ(sema_waiters(&mw.s), 0);
}

static int run(void *arg) {
    (void)arg;
    RUN(test_release_before_acquire);
    RUN(test_fifo_order);
    RUN(test_lifo_goes_first);
    RUN(test_colliding_addresses);
    RUN(test_handoff);
    RUN(test_many_waiters);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
