/*
 * test_context.c — rt_context (cancellation and deadlines), the ctx_waiter
 * contract, and the context-bounded operations: channel send / receive /
 * select, mutex lock, sleep, and the semaphore acquire under them.
 *
 * White-box: it includes context_internal.h and sema_internal.h for
 * ctx_watch / ctx_unwatch, ctx_live_count (contexts not yet freed),
 * timers_earliest (0 when no timer is armed on any P), sema_acquire_ctx and
 * sema_waiters.  Leak checks use those: after the contexts are released,
 * no node, no timer and no goroutine may remain.
 *
 * Timing: lower bounds on elapsed time are exact (a timer never fires
 * early); upper bounds are generous (sanitizers, loaded CI machines).
 */
#include "rt_test.h"

#include "../../internal/runtime/context_internal.h"
#include "../../internal/runtime/sema_internal.h"

#include <sys/mman.h>

enum { MUTEX_LOCKED = 1, MUTEX_STARVING = 4, MUTEX_WAITER_SHIFT = 3 };

static void go(rt_func fn, void *arg) { CHECK_EQ(rt_go(fn, arg), RT_OK); }

static double ms_since(int64_t t0) { return (double)(rt_nanotime() - t0) / 1e6; }

static rt_context *with_cancel(rt_context *parent) {
    rt_context *c = NULL;
    CHECK_EQ(rt_context_with_cancel(parent, &c), RT_OK);
    CHECK(c != NULL);
    return c;
}

static rt_context *with_timeout(rt_context *parent, int64_t ns) {
    rt_context *c = NULL;
    CHECK_EQ(rt_context_with_timeout(parent, ns, &c), RT_OK);
    CHECK(c != NULL);
    return c;
}

static rt_context *with_deadline(rt_context *parent, int64_t when) {
    rt_context *c = NULL;
    CHECK_EQ(rt_context_with_deadline(parent, when, &c), RT_OK);
    CHECK(c != NULL);
    return c;
}

/* Is the done channel closed?  (A receive on it is ready with !ok.) */
static bool done_closed(rt_context *c) {
    bool ok = true;
    bool ready = rt_chan_try_recv(rt_context_done(c), NULL, &ok);
    return ready && !ok;
}

/* Goroutines parked with wait reason `state`, from a goroutine dump. */
static int count_parked(const char *state) {
    int fd = memfd_create("ctx-dump", 0);
    CHECK(fd >= 0);
    CHECK_EQ(rt_dump_goroutines(fd), RT_OK);
    off_t len = lseek(fd, 0, SEEK_END);
    CHECK(len >= 0);
    char *text = calloc(1, (size_t)len + 1);
    CHECK(text != NULL);
    CHECK_EQ(pread(fd, text, (size_t)len, 0), len);
    close(fd);
    char needle[64];
    snprintf(needle, sizeof needle, "[%s,", state);
    int n = 0;
    for (char *s = strstr(text, needle); s; s = strstr(s + 1, needle)) n++;
    free(text);
    return n;
}

static void wait_parked(const char *state, int n) {
    int64_t limit = rt_nanotime() + 60 * RT_SECOND;
    while (count_parked(state) < n) {
        CHECK(rt_nanotime() < limit);
        rt_sleep(RT_MILLISECOND);
    }
}

/* Wait (bounded) until the goroutine count is back to `base`: exiting
 * goroutines are counted until they are off their stacks. */
static void wait_goroutines(int64_t base) {
    int64_t limit = rt_nanotime() + 10 * RT_SECOND;
    while (rt_num_goroutine() > base) {
        CHECK(rt_nanotime() < limit);
        rt_sleep(RT_MILLISECOND);
    }
    /* (Below base is fine: a goroutine of an earlier test may have still
     * been exiting when base was taken.) */
    CHECK(rt_num_goroutine() <= base);
}

/* Wait (bounded) until exactly `want` context nodes exist.  A node whose
 * last user reference is gone may live on for a moment: a deadline timer
 * fn, or a parent's cancellation, running on another thread holds a
 * reference until it is done with it. */
static void check_live(int64_t want) {
    int64_t limit = rt_nanotime() + 10 * RT_SECOND;
    while (ctx_live_count() != want) {
        CHECK(rt_nanotime() < limit);
        rt_yield();
    }
    CHECK_EQ(ctx_live_count(), want);
}

/* No timer armed on any P (every test here cleans its timers up). */
static void check_no_timers(void) {
    int64_t limit = rt_nanotime() + 5 * RT_SECOND;
    while (timers_earliest() != 0) {   /* a fired timer may still be running */
        CHECK(rt_nanotime() < limit);
        rt_yield();
    }
    CHECK_EQ(timers_earliest(), 0);
}

/* ============================================================== basics */

static void test_background(void) {
    rt_context *bg = rt_context_background();
    CHECK(bg != NULL);
    CHECK_EQ(rt_context_err(bg), 0);
    CHECK_EQ(rt_context_err(NULL), 0);
    CHECK_EQ(rt_context_deadline(bg), 0);
    CHECK_EQ(rt_context_deadline(NULL), 0);
    CHECK(rt_context_done(bg) == NULL);      /* a nil channel: never ready */
    CHECK(rt_context_done(NULL) == NULL);
    rt_context_cancel(bg);                    /* no-ops */
    rt_context_retain(bg);
    rt_context_release(bg);
    rt_context_cancel(NULL);
    rt_context_release(NULL);
    CHECK_EQ(rt_context_err(bg), 0);
    CHECK_EQ(rt_context_with_cancel(NULL, NULL), RT_EINVAL);
    CHECK_EQ(rt_context_with_timeout(NULL, RT_SECOND, NULL), RT_EINVAL);
}

static void test_cancel_basics(void) {
    int64_t live0 = ctx_live_count();
    rt_context *c = with_cancel(NULL);
    CHECK_EQ(ctx_live_count(), live0 + 1);
    CHECK_EQ(rt_context_err(c), 0);
    CHECK_EQ(rt_context_deadline(c), 0);
    rt_chan *d = rt_context_done(c);
    CHECK(d != NULL);
    CHECK(rt_context_done(c) == d);           /* one channel per context */
    CHECK(!rt_chan_try_recv(d, NULL, NULL));  /* not closed */
    rt_context_cancel(c);
    CHECK_EQ(rt_context_err(c), RT_ECANCELED);
    CHECK(done_closed(c));
    rt_context_cancel(c);                     /* idempotent */
    CHECK_EQ(rt_context_err(c), RT_ECANCELED);
    rt_context_release(c);
    check_live(live0);

    /* The done channel asked for only after the context is done. */
    c = with_cancel(NULL);
    rt_context_cancel(c);
    CHECK(done_closed(c));
    rt_context_release(c);

    /* Release cancels, retain keeps the node (not the liveness). */
    c = with_cancel(NULL);
    rt_context_retain(c);
    rt_context_release(c);
    CHECK_EQ(rt_context_err(c), RT_ECANCELED);
    CHECK(done_closed(c));
    rt_context_release(c);
    check_live(live0);
}

static void test_timeout_basics(void) {
    int64_t t0 = rt_nanotime();
    rt_context *c = with_timeout(NULL, 20 * RT_MILLISECOND);
    int64_t dl = rt_context_deadline(c);
    CHECK(dl >= t0 + 20 * RT_MILLISECOND && dl <= rt_nanotime() + 20 * RT_MILLISECOND);
    CHECK_EQ(rt_context_err(c), 0);
    bool ok = true;
    CHECK(!rt_chan_recv(rt_context_done(c), NULL));   /* blocks until closed */
    CHECK(rt_nanotime() >= dl);
    CHECK_EQ(rt_context_err(c), RT_ETIMEDOUT);
    CHECK(rt_chan_try_recv(rt_context_done(c), NULL, &ok) && !ok);
    rt_context_cancel(c);                              /* stays ETIMEDOUT */
    CHECK_EQ(rt_context_err(c), RT_ETIMEDOUT);
    rt_context_release(c);

    /* A deadline in the past, or a timeout <= 0: born done. */
    c = with_deadline(NULL, rt_nanotime() - RT_SECOND);
    CHECK_EQ(rt_context_err(c), RT_ETIMEDOUT);
    CHECK(done_closed(c));
    rt_context_release(c);
    c = with_timeout(NULL, 0);
    CHECK_EQ(rt_context_err(c), RT_ETIMEDOUT);
    rt_context_release(c);
    c = with_deadline(NULL, 0);
    CHECK_EQ(rt_context_err(c), RT_ETIMEDOUT);
    rt_context_release(c);

    /* Cancel before the deadline: ECANCELED, and the timer is gone. */
    c = with_timeout(NULL, RT_SECOND);
    CHECK(timers_earliest() != 0);
    rt_context_cancel(c);
    CHECK_EQ(rt_context_err(c), RT_ECANCELED);
    check_no_timers();
    rt_context_release(c);

    /* A huge timeout saturates instead of overflowing. */
    c = with_timeout(NULL, INT64_MAX);
    CHECK_EQ(rt_context_deadline(c), INT64_MAX);
    CHECK_EQ(rt_context_err(c), 0);
    rt_context_release(c);
    check_no_timers();
}

/* ============================================================== trees */

static void test_tree_propagation(void) {
    int64_t live0 = ctx_live_count();

    /* A deep chain (cancel and free are iterative, not recursive). */
    long depth = SCALED(20000);
    rt_context **chain = calloc((size_t)depth, sizeof *chain);
    CHECK(chain != NULL);
    chain[0] = with_cancel(NULL);
    for (long i = 1; i < depth; i++) chain[i] = with_cancel(chain[i - 1]);
    CHECK_EQ(ctx_live_count(), live0 + depth);
    rt_chan *leaf_done = rt_context_done(chain[depth - 1]);
    rt_context_cancel(chain[0]);
    for (long i = 0; i < depth; i++) CHECK_EQ(rt_context_err(chain[i]), RT_ECANCELED);
    CHECK(!rt_chan_recv(leaf_done, NULL));
    /* Parents first: each is kept (but not live) by its child. */
    for (long i = 0; i < depth; i++) rt_context_release(chain[i]);
    check_live(live0);

    /* A wide tree: 4 children per node, 6 levels (5461 nodes), each with
     * a done channel.  Cancelling an inner node cancels exactly its
     * subtree. */
    enum { FAN = 4, LEVELS = 7 };
    long n = 0;
    for (long k = 0, w = 1; k < LEVELS; k++, w *= FAN) n += w;
    rt_context **t = calloc((size_t)n, sizeof *t);
    CHECK(t != NULL);
    t[0] = with_cancel(NULL);
    for (long i = 1; i < n; i++) t[i] = with_cancel(t[(i - 1) / FAN]);
    for (long i = 0; i < n; i++) CHECK(rt_context_done(t[i]) != NULL);
    rt_context_cancel(t[1]);   /* the first child of the root */
    for (long i = 0; i < n; i++) {
        long a = i;
        while (a > 1) a = (a - 1) / FAN;     /* the level-1 ancestor, or 0 */
        bool in_subtree = a == 1;
        CHECK_EQ(rt_context_err(t[i]), in_subtree ? RT_ECANCELED : 0);
        CHECK_EQ(done_closed(t[i]), in_subtree);
    }
    /* A cancelled child does not touch its parent or siblings. */
    CHECK_EQ(rt_context_err(t[0]), 0);
    CHECK_EQ(rt_context_err(t[2]), 0);
    rt_context_cancel(t[0]);
    for (long i = 0; i < n; i++) CHECK(done_closed(t[i]));
    for (long i = 0; i < n; i++) rt_context_release(t[i]);
    check_live(live0);

    /* Releasing a live child unlinks it from a live parent. */
    rt_context *par = with_cancel(NULL);
    for (int i = 0; i < 1000; i++) rt_context_release(with_cancel(par));
    CHECK_EQ(ctx_live_count(), live0 + 1);
    CHECK_EQ(rt_context_err(par), 0);
    rt_context_release(par);
    check_live(live0);

    free(t);
    free(chain);
}

static void test_born_done(void) {
    int64_t live0 = ctx_live_count();
    rt_context *par = with_cancel(NULL);
    rt_context_cancel(par);
    rt_context *a = with_cancel(par);
    rt_context *b = with_timeout(par, RT_SECOND);      /* parent's err wins */
    rt_context *c = with_deadline(par, 1);
    CHECK_EQ(rt_context_err(a), RT_ECANCELED);
    CHECK_EQ(rt_context_err(b), RT_ECANCELED);
    CHECK_EQ(rt_context_err(c), RT_ECANCELED);
    CHECK(done_closed(a));
    CHECK(done_closed(b));
    rt_context *aa = with_cancel(a);
    CHECK_EQ(rt_context_err(aa), RT_ECANCELED);
    check_no_timers();
    rt_context_release(par);   /* before its children */
    rt_context_release(aa);
    rt_context_release(a);
    rt_context_release(b);
    rt_context_release(c);

    rt_context *tp = with_timeout(NULL, RT_MILLISECOND);
    CHECK(!rt_chan_recv(rt_context_done(tp), NULL));
    rt_context *tc = with_cancel(tp);
    CHECK_EQ(rt_context_err(tc), RT_ETIMEDOUT);
    rt_context_release(tc);
    rt_context_release(tp);
    check_live(live0);
}

static void test_deadline_min(void) {
    int64_t now = rt_nanotime();
    rt_context *par = with_deadline(NULL, now + 200 * RT_MILLISECOND);
    rt_context *later = with_deadline(par, now + 100 * RT_SECOND);
    rt_context *sooner = with_deadline(par, now + 20 * RT_MILLISECOND);
    rt_context *plain = with_cancel(par);
    rt_context *grand = with_timeout(sooner, 100 * RT_SECOND);
    CHECK_EQ(rt_context_deadline(par), now + 200 * RT_MILLISECOND);
    CHECK_EQ(rt_context_deadline(later), now + 200 * RT_MILLISECOND);
    CHECK_EQ(rt_context_deadline(sooner), now + 20 * RT_MILLISECOND);
    CHECK_EQ(rt_context_deadline(plain), now + 200 * RT_MILLISECOND);
    CHECK_EQ(rt_context_deadline(grand), now + 20 * RT_MILLISECOND);

    /* The child's own, earlier deadline fires alone. */
    CHECK(!rt_chan_recv(rt_context_done(sooner), NULL));
    CHECK(rt_nanotime() >= now + 20 * RT_MILLISECOND);
    CHECK_EQ(rt_context_err(sooner), RT_ETIMEDOUT);
    CHECK_EQ(rt_context_err(grand), RT_ETIMEDOUT);
    CHECK_EQ(rt_context_err(par), 0);
    CHECK_EQ(rt_context_err(later), 0);

    /* The parent's deadline times the rest of the subtree out. */
    CHECK(!rt_chan_recv(rt_context_done(later), NULL));
    CHECK(rt_nanotime() >= now + 200 * RT_MILLISECOND);
    CHECK_EQ(rt_context_err(par), RT_ETIMEDOUT);
    CHECK_EQ(rt_context_err(later), RT_ETIMEDOUT);
    CHECK_EQ(rt_context_err(plain), RT_ETIMEDOUT);
    rt_context_release(grand);
    rt_context_release(plain);
    rt_context_release(sooner);
    rt_context_release(later);
    rt_context_release(par);
    check_no_timers();
}

/* ------------------------------------- 1,000 children blocked in select */

static struct {
    rt_context **kids;
    rt_chan *never;
    rt_waitgroup wg;
    _Atomic int64_t last_return;
    _Atomic int bad;
} fan;

static void fan_child(void *arg) {
    long i = (long)(intptr_t)arg;
    rt_context *kid = fan.kids[i];
    int err;
    if (i % 2 == 0) {
        rt_select_case cases[2] = {
            RT_RECV_CASE(rt_context_done(kid), NULL),
            RT_RECV_CASE(fan.never, NULL),
        };
        err = rt_select(cases, 2, false) == 0 && !cases[0].recv_ok ? rt_context_err(kid) : -100;
    } else {
        err = rt_chan_recv_ctx(kid, fan.never, NULL, NULL);
    }
    if (err != RT_ECANCELED) atomic_fetch_add(&fan.bad, 1);
    int64_t now = rt_nanotime();
    int64_t prev = atomic_load(&fan.last_return);
    while (now > prev && !atomic_compare_exchange_weak(&fan.last_return, &prev, now)) {
    }
    rt_waitgroup_done(&fan.wg);
}

static void test_thousand_children(void) {
    int64_t g0 = rt_num_goroutine();
    int64_t live0 = ctx_live_count();
    long n = SCALED(1000);
    if (n < 100) n = 100;
    rt_context *par = with_cancel(NULL);
    fan.kids = calloc((size_t)n, sizeof *fan.kids);
    CHECK(fan.kids != NULL);
    CHECK_EQ(rt_chan_make(&fan.never, 0, 0), RT_OK);
    for (long i = 0; i < n; i++) fan.kids[i] = with_cancel(par);
    rt_waitgroup_add(&fan.wg, (int)n);
    for (long i = 0; i < n; i++) go(fan_child, (void *)(intptr_t)i);
    wait_parked("select", (int)n);

    int64_t t0 = rt_nanotime();
    rt_context_cancel(par);
    int64_t t_cancel = rt_nanotime();
    rt_waitgroup_wait(&fan.wg);
    double total = ms_since(t0);
    double last = (double)(atomic_load(&fan.last_return) - t0) / 1e6;
    fprintf(stderr, "       %ld children: cancel %.3f ms, all returned %.3f ms (last %.3f ms)\n",
            n, (double)(t_cancel - t0) / 1e6, total, last);
    CHECK_EQ(atomic_load(&fan.bad), 0);
    CHECK(total < 500.0);

    for (long i = 0; i < n; i++) rt_context_release(fan.kids[i]);
    rt_context_release(par);
    rt_chan_release(fan.never);
    free(fan.kids);
    check_live(live0);
    wait_goroutines(g0);
}

/* ============================================================ channels */

typedef struct delayed {
    rt_chan *c;
    rt_context *ctx;
    int64_t delay;
    int value;
    rt_waitgroup wg;
} delayed;

static void delayed_send(void *arg) {
    delayed *d = arg;
    rt_sleep(d->delay);
    rt_chan_send(d->c, &d->value);
    rt_waitgroup_done(&d->wg);
}

static void delayed_recv(void *arg) {
    delayed *d = arg;
    rt_sleep(d->delay);
    CHECK(rt_chan_recv(d->c, &d->value));
    rt_waitgroup_done(&d->wg);
}

static void delayed_cancel(void *arg) {
    delayed *d = arg;
    rt_sleep(d->delay);
    rt_context_cancel(d->ctx);
    rt_waitgroup_done(&d->wg);
}

static void test_chan_ctx(void) {
    rt_chan *c;
    CHECK_EQ(rt_chan_make(&c, sizeof(int), 0), RT_OK);
    int v = 0;
    bool ok = false;

    /* Timeout fires. */
    int64_t t0 = rt_nanotime();
    rt_context *ctx = with_timeout(NULL, 20 * RT_MILLISECOND);
    CHECK_EQ(rt_chan_recv_ctx(ctx, c, &v, &ok), RT_ETIMEDOUT);
    CHECK(rt_nanotime() - t0 >= 20 * RT_MILLISECOND);
    CHECK(rt_nanotime() >= rt_context_deadline(ctx));
    v = 7;
    CHECK_EQ(rt_chan_send_ctx(ctx, c, &v), RT_ETIMEDOUT);   /* done: at once */
    rt_context_release(ctx);

    ctx = with_timeout(NULL, 10 * RT_MILLISECOND);
    CHECK_EQ(rt_chan_send_ctx(ctx, c, &v), RT_ETIMEDOUT);
    CHECK(!rt_chan_try_recv(c, NULL, NULL));                 /* not sent */
    rt_context_release(ctx);

    /* Cancel fires. */
    delayed d = { .c = c, .delay = 10 * RT_MILLISECOND };
    d.ctx = with_cancel(NULL);
    rt_waitgroup_add(&d.wg, 1);
    go(delayed_cancel, &d);
    CHECK_EQ(rt_chan_recv_ctx(d.ctx, c, &v, &ok), RT_ECANCELED);
    rt_waitgroup_wait(&d.wg);
    rt_context_release(d.ctx);

    /* The operation completes first. */
    ctx = with_timeout(NULL, 10 * RT_SECOND);
    d.ctx = NULL;
    d.value = 42;
    rt_waitgroup_add(&d.wg, 1);
    go(delayed_send, &d);
    v = 0;
    CHECK_EQ(rt_chan_recv_ctx(ctx, c, &v, &ok), RT_OK);
    CHECK(ok);
    CHECK_EQ(v, 42);
    rt_waitgroup_wait(&d.wg);

    rt_waitgroup_add(&d.wg, 1);
    go(delayed_recv, &d);
    v = 99;
    CHECK_EQ(rt_chan_send_ctx(ctx, c, &v), RT_OK);
    rt_waitgroup_wait(&d.wg);
    CHECK_EQ(d.value, 99);
    CHECK_EQ(rt_context_err(ctx), 0);

    /* An already-done context wins even over a ready operation. */
    rt_chan *buf;
    CHECK_EQ(rt_chan_make(&buf, sizeof(int), 1), RT_OK);
    rt_context *dead = with_cancel(NULL);
    rt_context_cancel(dead);
    CHECK_EQ(rt_chan_send_ctx(dead, buf, &v), RT_ECANCELED);
    CHECK_EQ(rt_chan_len(buf), 0);
    rt_chan_send(buf, &v);
    CHECK_EQ(rt_chan_recv_ctx(dead, buf, &v, &ok), RT_ECANCELED);
    CHECK_EQ(rt_chan_len(buf), 1);
    rt_context_release(dead);

    /* Closed channel: RT_OK with ok == false. */
    CHECK_EQ(rt_chan_recv_ctx(ctx, buf, &v, &ok), RT_OK);
    CHECK(ok);
    rt_chan_close(buf);
    ok = true;
    CHECK_EQ(rt_chan_recv_ctx(ctx, buf, &v, &ok), RT_OK);
    CHECK(!ok);
    rt_context_release(ctx);

    /* Background and NULL: the plain operations. */
    rt_chan *b2;
    CHECK_EQ(rt_chan_make(&b2, sizeof(int), 1), RT_OK);
    v = 5;
    CHECK_EQ(rt_chan_send_ctx(NULL, b2, &v), RT_OK);
    v = 0;
    CHECK_EQ(rt_chan_recv_ctx(rt_context_background(), b2, &v, &ok), RT_OK);
    CHECK(ok);
    CHECK_EQ(v, 5);

    rt_chan_release(b2);
    rt_chan_release(buf);
    rt_chan_release(c);
    check_no_timers();
}

static void test_select_ctx(void) {
    enum { N = 20 };   /* more than fit on select's stack arrays */
    rt_chan *cs[N];
    rt_select_case cases[N];
    int vals[N];
    for (int i = 0; i < N; i++) {
        CHECK_EQ(rt_chan_make(&cs[i], sizeof(int), 1), RT_OK);
        cases[i] = RT_RECV_CASE(cs[i], &vals[i]);
    }
    int64_t t0 = rt_nanotime();
    rt_context *ctx = with_timeout(NULL, 15 * RT_MILLISECOND);
    CHECK_EQ(rt_select_ctx(ctx, cases, N), RT_ETIMEDOUT);
    CHECK(rt_nanotime() - t0 >= 15 * RT_MILLISECOND);
    CHECK(rt_nanotime() >= rt_context_deadline(ctx));
    rt_context_release(ctx);

    ctx = with_cancel(NULL);
    int x = 1234;
    rt_chan_send(cs[13], &x);
    cases[13].recv_ok = false;
    CHECK_EQ(rt_select_ctx(ctx, cases, N), 13);
    CHECK(cases[13].recv_ok);
    CHECK_EQ(vals[13], 1234);
    rt_chan_close(cs[4]);
    CHECK_EQ(rt_select_ctx(ctx, cases, 8), 4);   /* the small path */
    CHECK(!cases[4].recv_ok);
    /* A send case completing. */
    rt_select_case sc[2] = { RT_SEND_CASE(cs[0], &x), RT_RECV_CASE(cs[1], NULL) };
    CHECK_EQ(rt_select_ctx(ctx, sc, 2), 0);
    CHECK_EQ(rt_chan_len(cs[0]), 1);
    /* No cases: waits for the context only. */
    delayed d = { .ctx = ctx, .delay = 5 * RT_MILLISECOND };
    rt_waitgroup_add(&d.wg, 1);
    go(delayed_cancel, &d);
    CHECK_EQ(rt_select_ctx(ctx, NULL, 0), RT_ECANCELED);
    rt_waitgroup_wait(&d.wg);
    CHECK_EQ(rt_select_ctx(ctx, cases, N), RT_ECANCELED);
    rt_context_release(ctx);

    static rt_select_case too_many[RT_SELECT_MAX_CASES];
    ctx = with_cancel(NULL);
    CHECK_EQ(rt_select_ctx(ctx, too_many, RT_SELECT_MAX_CASES), RT_EINVAL);
    rt_context_release(ctx);
    for (int i = 0; i < N; i++) rt_chan_release(cs[i]);
    check_no_timers();
}

/* =============================================================== sleep */

static void test_sleep_ctx(void) {
    rt_context *ctx = with_cancel(NULL);
    int64_t t0 = rt_nanotime();
    CHECK_EQ(rt_sleep_ctx(ctx, 10 * RT_MILLISECOND), RT_OK);
    CHECK(rt_nanotime() - t0 >= 10 * RT_MILLISECOND);
    CHECK_EQ(rt_sleep_ctx(ctx, 0), RT_OK);
    CHECK_EQ(rt_sleep_ctx(ctx, -5), RT_OK);

    delayed d = { .ctx = ctx, .delay = 10 * RT_MILLISECOND };
    rt_waitgroup_add(&d.wg, 1);
    go(delayed_cancel, &d);
    t0 = rt_nanotime();
    CHECK_EQ(rt_sleep_ctx(ctx, 100 * RT_SECOND), RT_ECANCELED);
    CHECK(ms_since(t0) < 5000);
    rt_waitgroup_wait(&d.wg);
    CHECK_EQ(rt_sleep_ctx(ctx, RT_SECOND), RT_ECANCELED);   /* at once */
    rt_context_release(ctx);

    ctx = with_timeout(NULL, 10 * RT_MILLISECOND);
    CHECK_EQ(rt_sleep_ctx(ctx, 100 * RT_SECOND), RT_ETIMEDOUT);
    CHECK(rt_nanotime() >= rt_context_deadline(ctx));
    rt_context_release(ctx);

    t0 = rt_nanotime();
    CHECK_EQ(rt_sleep_ctx(NULL, 2 * RT_MILLISECOND), RT_OK);
    CHECK(rt_nanotime() - t0 >= 2 * RT_MILLISECOND);

    /* Races: the sleep and the deadline end at about the same time. */
    long rounds = SCALED(300);
    for (long i = 0; i < rounds; i++) {
        int64_t ns = (int64_t)(i % 7) * 50 * RT_MICROSECOND;
        ctx = with_timeout(NULL, ns + (int64_t)(i % 3) * 20 * RT_MICROSECOND);
        int rc = rt_sleep_ctx(ctx, ns + (int64_t)((i + 1) % 3) * 20 * RT_MICROSECOND);
        CHECK(rc == RT_OK || rc == RT_ETIMEDOUT);
        rt_context_release(ctx);
    }
    check_no_timers();
}

/* =============================================================== mutex */

static int32_t mstate(rt_mutex *mu) { return atomic_load(&mu->state); }

typedef struct mwait {
    rt_mutex *mu;
    rt_context *ctx;
    int64_t timeout;
    int rc;
    int64_t elapsed;
    bool plain;
    rt_waitgroup wg;
} mwait;

static void mutex_waiter(void *arg) {
    mwait *w = arg;
    int64_t t0 = rt_nanotime();
    if (w->plain) {
        rt_mutex_lock(w->mu);
        w->rc = RT_OK;
    } else if (w->ctx != NULL) {
        w->rc = rt_mutex_lock_ctx(w->ctx, w->mu);
    } else {
        w->rc = rt_mutex_lock_timeout(w->mu, w->timeout);
    }
    w->elapsed = rt_nanotime() - t0;
    if (w->rc == RT_OK) rt_mutex_unlock(w->mu);
    rt_waitgroup_done(&w->wg);
}

static void wait_mutex_waiters(rt_mutex *mu, int n) {
    int64_t limit = rt_nanotime() + 10 * RT_SECOND;
    while ((mstate(mu) >> MUTEX_WAITER_SHIFT) < n || sema_waiters(&mu->sema) < (uint32_t)n) {
        CHECK(rt_nanotime() < limit);
        rt_yield();
    }
}

static void test_mutex_timeout(void) {
    rt_mutex mu;
    memset(&mu, 0, sizeof mu);

    /* Uncontended, and timeout <= 0 as a trylock. */
    CHECK_EQ(rt_mutex_lock_timeout(&mu, RT_SECOND), RT_OK);
    CHECK_EQ(mstate(&mu), MUTEX_LOCKED);
    CHECK_EQ(rt_mutex_lock_timeout(&mu, 0), RT_ETIMEDOUT);
    CHECK_EQ(mstate(&mu), MUTEX_LOCKED);
    rt_mutex_unlock(&mu);
    CHECK_EQ(rt_mutex_lock_timeout(&mu, 0), RT_OK);

    /* The holder keeps it; the waiter times out. */
    int64_t t0 = rt_nanotime();
    CHECK_EQ(rt_mutex_lock_timeout(&mu, 20 * RT_MILLISECOND), RT_ETIMEDOUT);
    CHECK(rt_nanotime() - t0 >= 20 * RT_MILLISECOND);
    CHECK_EQ(mstate(&mu), MUTEX_LOCKED);   /* no waiter left behind */
    CHECK_EQ(sema_waiters(&mu.sema), 0);
    CHECK_EQ(atomic_load(&mu.sema), 0);
    CHECK(!rt_mutex_trylock(&mu));

    /* One waiter times out while another waits for good (queued first, so
     * the one that gives up leaves from behind it); then the holder's
     * unlock lets the second one in.  (Not waiting for both to be queued:
     * under a sanitizer the timeout may pass before we could look.) */
    mwait a = { .mu = &mu, .timeout = 20 * RT_MILLISECOND };
    mwait b = { .mu = &mu, .plain = true };
    rt_waitgroup_add(&a.wg, 1);
    rt_waitgroup_add(&b.wg, 1);
    go(mutex_waiter, &b);
    wait_mutex_waiters(&mu, 1);
    go(mutex_waiter, &a);
    rt_waitgroup_wait(&a.wg);
    CHECK_EQ(a.rc, RT_ETIMEDOUT);
    CHECK(a.elapsed >= 20 * RT_MILLISECOND);
    CHECK_EQ(mstate(&mu) >> MUTEX_WAITER_SHIFT, 1);
    CHECK_EQ(sema_waiters(&mu.sema), 1);
    rt_mutex_unlock(&mu);
    rt_waitgroup_wait(&b.wg);
    CHECK_EQ(b.rc, RT_OK);
    CHECK_EQ(mstate(&mu), 0);
    CHECK_EQ(atomic_load(&mu.sema), 0);

    /* Still an ordinary mutex afterwards. */
    rt_mutex_lock(&mu);
    CHECK(!rt_mutex_trylock(&mu));
    rt_mutex_unlock(&mu);
    CHECK_EQ(mstate(&mu), 0);
    check_no_timers();
}

static void test_mutex_ctx(void) {
    rt_mutex mu;
    memset(&mu, 0, sizeof mu);
    rt_context *ctx = with_cancel(NULL);
    CHECK_EQ(rt_mutex_lock_ctx(ctx, &mu), RT_OK);

    /* Cancel a parked waiter. */
    mwait a = { .mu = &mu, .ctx = ctx };
    rt_waitgroup_add(&a.wg, 1);
    go(mutex_waiter, &a);
    wait_mutex_waiters(&mu, 1);
    rt_context_cancel(ctx);
    rt_waitgroup_wait(&a.wg);
    CHECK_EQ(a.rc, RT_ECANCELED);
    CHECK_EQ(mstate(&mu), MUTEX_LOCKED);
    CHECK_EQ(sema_waiters(&mu.sema), 0);
    rt_mutex_unlock(&mu);

    /* A done context does not even take a free mutex. */
    CHECK_EQ(rt_mutex_lock_ctx(ctx, &mu), RT_ECANCELED);
    CHECK_EQ(mstate(&mu), 0);
    rt_context_release(ctx);

    /* A context deadline. */
    rt_mutex_lock(&mu);
    ctx = with_timeout(NULL, 15 * RT_MILLISECOND);
    CHECK_EQ(rt_mutex_lock_ctx(ctx, &mu), RT_ETIMEDOUT);
    CHECK(rt_nanotime() >= rt_context_deadline(ctx));
    rt_context_release(ctx);
    CHECK_EQ(mstate(&mu), MUTEX_LOCKED);
    rt_mutex_unlock(&mu);

    /* Background: a plain lock. */
    CHECK_EQ(rt_mutex_lock_ctx(NULL, &mu), RT_OK);
    rt_mutex_unlock(&mu);

    /* Many waiters cancelled at once, one plain waiter survives and gets in. */
    rt_mutex_lock(&mu);
    ctx = with_cancel(NULL);
    enum { W = 50 };
    static mwait ws[W];
    for (int i = 0; i < W; i++) {
        ws[i] = (mwait){ .mu = &mu, .ctx = ctx, .plain = i == W / 2 };
        rt_waitgroup_add(&ws[i].wg, 1);
        go(mutex_waiter, &ws[i]);
    }
    wait_mutex_waiters(&mu, W);
    rt_context_cancel(ctx);
    for (int i = 0; i < W; i++)
        if (i != W / 2) {
            rt_waitgroup_wait(&ws[i].wg);
            CHECK_EQ(ws[i].rc, RT_ECANCELED);
        }
    CHECK_EQ(mstate(&mu), MUTEX_LOCKED | (1 << MUTEX_WAITER_SHIFT));
    rt_mutex_unlock(&mu);
    rt_waitgroup_wait(&ws[W / 2].wg);
    CHECK_EQ(ws[W / 2].rc, RT_OK);
    CHECK_EQ(mstate(&mu), 0);
    CHECK_EQ(atomic_load(&mu.sema), 0);
    rt_context_release(ctx);
    check_no_timers();
}

/* Stress: plain lockers and lockers with tiny timeouts, some holding the
 * mutex past the 1 ms starvation threshold, so both modes and every
 * give-up path run.  Mutual exclusion must hold, and at the end the state
 * word and the semaphore must be back to zero. */
static struct {
    rt_mutex mu;
    long counter;            /* only under mu */
    _Atomic int inside;
    _Atomic long violations;
    _Atomic long acquired;
    _Atomic long timeouts;
    _Atomic long cancels;
    long iters;
    rt_waitgroup wg;
} ms;

/* Drops its reference after a moment; the release cancels the context. */
static void cancel_soon(void *arg) {
    rt_sleep((int64_t)(rt_goid() % 200) * RT_MICROSECOND);
    rt_context_release(arg);
}

static void mutex_stress_worker(void *arg) {
    long id = (long)(intptr_t)arg;
    uint32_t r = (uint32_t)id * 2654435761u + 1;
    for (long i = 0; i < ms.iters; i++) {
        r = r * 1103515245u + 12345u;
        int kind = (int)((r >> 16) % 4);
        int rc;
        rt_context *ctx = NULL;
        if (kind == 0) {
            rt_mutex_lock(&ms.mu);
            rc = RT_OK;
        } else if (kind == 1) {
            rc = rt_mutex_lock_timeout(&ms.mu, (int64_t)((r >> 8) % 300) * RT_MICROSECOND);
        } else if (kind == 2) {
            CHECK_EQ(rt_context_with_timeout(NULL, (int64_t)((r >> 4) % 400) * RT_MICROSECOND, &ctx),
                     RT_OK);
            rc = rt_mutex_lock_ctx(ctx, &ms.mu);
        } else {
            ctx = with_cancel(NULL);
            rt_context_retain(ctx);
            go(cancel_soon, ctx);
            rc = rt_mutex_lock_ctx(ctx, &ms.mu);
        }
        if (rc == RT_OK) {
            if (atomic_fetch_add(&ms.inside, 1) != 0) atomic_fetch_add(&ms.violations, 1);
            ms.counter++;
            atomic_fetch_add(&ms.acquired, 1);
            if ((r & 31) == 0) rt_sleep(1200 * RT_MICROSECOND);   /* starve others */
            else if ((r & 3) == 0) rt_yield();
            atomic_fetch_sub(&ms.inside, 1);
            rt_mutex_unlock(&ms.mu);
        } else if (rc == RT_ETIMEDOUT) {
            atomic_fetch_add(&ms.timeouts, 1);
        } else {
            CHECK_EQ(rc, RT_ECANCELED);
            atomic_fetch_add(&ms.cancels, 1);
        }
        rt_context_release(ctx);   /* NULL for kinds 0 and 1 */
    }
    rt_waitgroup_done(&ms.wg);
}

static void test_mutex_stress(void) {
    int64_t g0 = rt_num_goroutine();
    int workers = 16;
    ms.iters = SCALED(2000);
    rt_waitgroup_add(&ms.wg, workers);
    for (int i = 0; i < workers; i++) go(mutex_stress_worker, (void *)(intptr_t)i);
    rt_waitgroup_wait(&ms.wg);
    fprintf(stderr, "       %ld acquired, %ld timed out, %ld cancelled\n",
            (long)ms.acquired, (long)ms.timeouts, (long)ms.cancels);
    CHECK_EQ(atomic_load(&ms.violations), 0);
    CHECK_EQ(ms.counter, atomic_load(&ms.acquired));
    CHECK_EQ(ms.acquired + ms.timeouts + ms.cancels, (long)workers * ms.iters);
    CHECK(ms.timeouts > 0);
    CHECK(ms.cancels > 0);
    CHECK_EQ(mstate(&ms.mu), 0);
    CHECK_EQ(atomic_load(&ms.mu.sema), 0);
    CHECK_EQ(sema_waiters(&ms.mu.sema), 0);
    rt_mutex_lock(&ms.mu);
    rt_mutex_unlock(&ms.mu);
    CHECK_EQ(mstate(&ms.mu), 0);
    wait_goroutines(g0);
    check_no_timers();
}

/* ========================================================== semaphore */

typedef struct semwait {
    _Atomic uint32_t *sem;
    int64_t deadline;
    rt_context *ctx;
    int rc;
    rt_waitgroup wg;
} semwait;

static void sema_waiter(void *arg) {
    semwait *w = arg;
    w->rc = sema_acquire_ctx(w->sem, false, WAIT_SEMA, w->ctx, w->deadline);
    rt_waitgroup_done(&w->wg);
}

static void test_sema_ctx(void) {
    _Atomic uint32_t s = 0;
    CHECK_EQ(sema_acquire_ctx(&s, false, WAIT_SEMA, NULL, rt_nanotime() + 5 * RT_MILLISECOND),
             RT_ETIMEDOUT);
    CHECK_EQ(atomic_load(&s), 0);
    CHECK_EQ(sema_waiters(&s), 0);
    /* A count that is there is taken even with a done context. */
    rt_context *dead = with_cancel(NULL);
    rt_context_cancel(dead);
    CHECK_EQ(sema_acquire_ctx(&s, false, WAIT_SEMA, dead, 0), RT_ECANCELED);
    sema_release(&s, false);
    CHECK_EQ(sema_acquire_ctx(&s, false, WAIT_SEMA, dead, 0), RT_OK);
    CHECK_EQ(sema_acquire_ctx(&s, false, WAIT_SEMA, NULL, 1), RT_ETIMEDOUT);
    rt_context_release(dead);

    /* Abandon from the middle and the ends of a FIFO of waiters. */
    enum { W = 5 };
    semwait ws[W];
    rt_context *ctxs[W];
    for (int i = 0; i < W; i++) {
        ctxs[i] = with_cancel(NULL);
        ws[i] = (semwait){ .sem = &s, .ctx = ctxs[i] };
        rt_waitgroup_add(&ws[i].wg, 1);
        go(sema_waiter, &ws[i]);
        while (sema_waiters(&s) != (uint32_t)i + 1) rt_yield();   /* in order */
    }
    int order[] = { 2, 0, 4 };
    for (int k = 0; k < 3; k++) {
        rt_context_cancel(ctxs[order[k]]);
        rt_waitgroup_wait(&ws[order[k]].wg);
        CHECK_EQ(ws[order[k]].rc, RT_ECANCELED);
        CHECK_EQ(sema_waiters(&s), (uint32_t)(W - 1 - k));
    }
    sema_release(&s, false);
    sema_release(&s, false);
    rt_waitgroup_wait(&ws[1].wg);
    rt_waitgroup_wait(&ws[3].wg);
    CHECK_EQ(ws[1].rc, RT_OK);
    CHECK_EQ(ws[3].rc, RT_OK);
    CHECK_EQ(atomic_load(&s), 0);
    CHECK_EQ(sema_waiters(&s), 0);
    for (int i = 0; i < W; i++) rt_context_release(ctxs[i]);

    /* Races between a release (with and without handoff) and the
     * deadline: a count is never lost or duplicated. */
    long rounds = SCALED(2000);
    long got = 0, lost = 0;
    for (long i = 0; i < rounds; i++) {
        int64_t wait = (int64_t)(i % 10) * 20 * RT_MICROSECOND;
        semwait w = { .sem = &s, .deadline = rt_nanotime() + 100 * RT_MICROSECOND };
        rt_waitgroup_add(&w.wg, 1);
        go(sema_waiter, &w);
        if (i & 1) rt_yield();
        rt_sleep(wait);
        sema_release(&s, (i & 2) != 0);
        rt_waitgroup_wait(&w.wg);
        if (w.rc == RT_OK) {
            got++;
            CHECK_EQ(atomic_load(&s), 0);
        } else {
            lost++;
            CHECK_EQ(w.rc, RT_ETIMEDOUT);
            CHECK_EQ(atomic_load(&s), 1);   /* the count stayed for others */
            CHECK(sema_try_acquire(&s));
        }
        CHECK_EQ(sema_waiters(&s), 0);
    }
    fprintf(stderr, "       release/timeout races: %ld acquired, %ld timed out\n", got, lost);
    check_no_timers();
}

/* ============================================================ waiters */

typedef struct counting_waiter {
    ctx_waiter w;
    _Atomic int calls;
    _Atomic int err;
} counting_waiter;

static void count_fire(ctx_waiter *w, int err) {
    counting_waiter *cw = w->arg;
    atomic_fetch_add(&cw->calls, 1);
    atomic_store(&cw->err, err);
}

static void test_waiter_contract(void) {
    counting_waiter cw;
    memset(&cw, 0, sizeof cw);
    cw.w.fn = count_fire;
    cw.w.arg = &cw;

    CHECK_EQ(ctx_watch(NULL, &cw.w), 0);
    CHECK(ctx_unwatch(NULL, &cw.w));
    CHECK_EQ(ctx_watch(rt_context_background(), &cw.w), 0);
    CHECK(ctx_unwatch(rt_context_background(), &cw.w));

    rt_context *c = with_cancel(NULL);
    CHECK_EQ(ctx_watch(c, &cw.w), 0);
    CHECK(ctx_unwatch(c, &cw.w));
    CHECK_EQ(ctx_watch(c, &cw.w), 0);
    rt_context_cancel(c);
    CHECK_EQ(atomic_load(&cw.calls), 1);
    CHECK_EQ(atomic_load(&cw.err), RT_ECANCELED);
    CHECK(!ctx_unwatch(c, &cw.w));
    CHECK_EQ(ctx_watch(c, &cw.w), RT_ECANCELED);   /* done: not registered */
    CHECK(ctx_unwatch(c, &cw.w));
    CHECK_EQ(atomic_load(&cw.calls), 1);
    rt_context_release(c);

    /* A parent's deadline fires a grandchild's waiter with ETIMEDOUT. */
    rt_context *par = with_timeout(NULL, 5 * RT_MILLISECOND);
    rt_context *mid = with_cancel(par);
    rt_context *kid = with_cancel(mid);
    counting_waiter k2;
    memset(&k2, 0, sizeof k2);
    k2.w.fn = count_fire;
    k2.w.arg = &k2;
    CHECK_EQ(ctx_watch(kid, &k2.w), 0);
    CHECK(!rt_chan_recv(rt_context_done(kid), NULL));
    CHECK(!ctx_unwatch(kid, &k2.w));
    CHECK_EQ(atomic_load(&k2.calls), 1);
    CHECK_EQ(atomic_load(&k2.err), RT_ETIMEDOUT);
    rt_context_release(par);
    rt_context_release(mid);
    rt_context_release(kid);
}

/* Watch / unwatch racing with cancel from many goroutines: every waiter
 * either is removed (true) and never fires, or fires exactly once and
 * unwatch says so (false). */
static struct {
    rt_context *ctx;
    _Atomic long removed;
    _Atomic long fired_seen;
    _Atomic long fn_calls;
    rt_waitgroup wg;
} wr;

static void race_fire(ctx_waiter *w, int err) {
    (void)err;
    atomic_fetch_add(&wr.fn_calls, 1);
    atomic_fetch_add((_Atomic int *)w->arg, 1);
}

static void watch_racer(void *arg) {
    (void)arg;
    for (int i = 0; i < 50; i++) {
        _Atomic int calls = 0;
        ctx_waiter w;
        memset(&w, 0, sizeof w);
        w.fn = race_fire;
        w.arg = (void *)&calls;
        int rc = ctx_watch(wr.ctx, &w);
        if (rc != 0) {
            CHECK_EQ(rc, RT_ECANCELED);
            CHECK(ctx_unwatch(wr.ctx, &w));
            CHECK_EQ(atomic_load(&calls), 0);
            continue;
        }
        if (i & 1) rt_yield();
        if (ctx_unwatch(wr.ctx, &w)) {
            atomic_fetch_add(&wr.removed, 1);
            CHECK_EQ(atomic_load(&calls), 0);
        } else {
            atomic_fetch_add(&wr.fired_seen, 1);
            CHECK_EQ(atomic_load(&calls), 1);
        }
    }
    rt_waitgroup_done(&wr.wg);
}

static void test_waiter_races(void) {
    long rounds = SCALED(50);
    for (long r = 0; r < rounds; r++) {
        wr.ctx = with_cancel(NULL);
        atomic_store(&wr.fired_seen, 0);
        atomic_store(&wr.fn_calls, 0);
        int n = 8;
        rt_waitgroup_add(&wr.wg, n);
        for (int i = 0; i < n; i++) go(watch_racer, NULL);
        rt_sleep((r % 5) * 20 * RT_MICROSECOND);
        rt_context_cancel(wr.ctx);
        rt_waitgroup_wait(&wr.wg);
        CHECK_EQ(atomic_load(&wr.fn_calls), atomic_load(&wr.fired_seen));
        rt_context_release(wr.ctx);
    }
}

/* ============================================================== leaks */

static void blocked_sleeper(void *arg) {
    rt_context *c = arg;
    CHECK_EQ(rt_sleep_ctx(c, 3600 * RT_SECOND), RT_ECANCELED);
    rt_context_release(c);
}

static void blocked_receiver(void *arg) {
    rt_context *c = arg;
    rt_chan *never;
    CHECK_EQ(rt_chan_make(&never, 0, 0), RT_OK);
    CHECK_EQ(rt_chan_recv_ctx(c, never, NULL, NULL), RT_ECANCELED);
    rt_chan_release(never);
    rt_context_release(c);
}

static rt_mutex leak_mu;

static void blocked_locker(void *arg) {
    rt_context *c = arg;
    CHECK_EQ(rt_mutex_lock_ctx(c, &leak_mu), RT_ECANCELED);
    rt_context_release(c);
}

static void test_leaks(void) {
    int64_t g0 = rt_num_goroutine();
    int64_t live0 = ctx_live_count();
    check_no_timers();

    /* 10,000 contexts with deadlines (an hour away, so none fires), in
     * small trees; some with goroutines blocked on them. */
    long n = 10000;
    rt_context **cs = calloc((size_t)n, sizeof *cs);
    CHECK(cs != NULL);
    int64_t now = rt_nanotime();
    for (long i = 0; i < n; i++) {
        rt_context *parent = (i % 10 == 0) ? NULL : cs[i - 1 - (i % 3 == 0)];
        cs[i] = with_deadline(parent, now + 3600 * RT_SECOND - i);   /* own timers */
        if (i % 10 == 5) (void)rt_context_done(cs[i]);
    }
    CHECK_EQ(ctx_live_count(), live0 + n);
    CHECK(timers_earliest() != 0);

    rt_mutex_lock(&leak_mu);
    int blocked = 0;
    for (long i = 7; i < n; i += 100) {
        rt_context_retain(cs[i]);   /* the goroutine's reference */
        rt_func f = (i % 3 == 0) ? blocked_sleeper : (i % 3 == 1) ? blocked_receiver : blocked_locker;
        go(f, cs[i]);
        blocked++;
    }
    int64_t limit = rt_nanotime() + 10 * RT_SECOND;
    while (count_parked("sleep") + count_parked("select") + count_parked("mutex") < blocked) {
        CHECK(rt_nanotime() < limit);
        rt_sleep(RT_MILLISECOND);
    }

    /* Release in an order that frees parents before children as often as
     * not; the blocked goroutines are woken by the cancellation. */
    for (long i = 0; i < n; i += 2) rt_context_release(cs[i]);
    for (long i = 1; i < n; i += 2) rt_context_release(cs[i]);
    wait_goroutines(g0);
    rt_mutex_unlock(&leak_mu);
    CHECK_EQ(mstate(&leak_mu), 0);
    check_live(live0);
    check_no_timers();
    free(cs);

    /* Deadlines that do fire, with the contexts released afterwards. */
    rt_context *fired[200];
    for (int i = 0; i < 200; i++) fired[i] = with_timeout(i % 2 ? fired[i - 1] : NULL, (i % 5) * RT_MICROSECOND);
    for (int i = 0; i < 200; i++) {
        CHECK(!rt_chan_recv(rt_context_done(fired[i]), NULL));
        CHECK_EQ(rt_context_err(fired[i]), RT_ETIMEDOUT);
        rt_context_release(fired[i]);
    }
    check_live(live0);
    check_no_timers();
    wait_goroutines(g0);
}

/* Releasing a parent before its children, and the children from other
 * goroutines while the parent is being cancelled. */
static struct {
    rt_context *kids[64];
    rt_waitgroup wg;
} rel;

static void release_kid(void *arg) {
    long i = (long)(intptr_t)arg;
    if (i & 1) rt_yield();
    rt_context_release(rel.kids[i]);
    rt_waitgroup_done(&rel.wg);
}

static void test_release_order(void) {
    int64_t live0 = ctx_live_count();
    long rounds = SCALED(200);
    for (long r = 0; r < rounds; r++) {
        rt_context *par = (r & 1) ? with_cancel(NULL) : with_timeout(NULL, (r % 7) * RT_MICROSECOND);
        for (int i = 0; i < 64; i++) {
            rel.kids[i] = (i & 1) ? with_cancel(par) : with_timeout(par, (i % 5) * RT_MICROSECOND);
            if (i % 4 == 0) (void)rt_context_done(rel.kids[i]);
        }
        rt_waitgroup_add(&rel.wg, 64);
        for (int i = 0; i < 64; i++) go(release_kid, (void *)(intptr_t)i);
        rt_context_release(par);
        rt_waitgroup_wait(&rel.wg);
        check_live(live0);
    }
    check_no_timers();
}

/* Contexts from a plain thread (no goroutine): creation, cancel, done and
 * err work there; a deadline that needs a timer does not (no processor);
 * the bounded operations poll.  And a cancel from a plain thread wakes a
 * parked goroutine. */
static void *thread_main(void *arg) {
    rt_context *shared = arg;
    rt_context *c = NULL;
    CHECK_EQ(rt_context_with_cancel(shared, &c), RT_OK);
    CHECK_EQ(rt_context_err(c), 0);
    rt_context *t = NULL;
    CHECK_EQ(rt_context_with_timeout(c, RT_SECOND, &t), RT_ESTATE);
    CHECK(t == NULL);
    CHECK_EQ(rt_context_with_timeout(c, 0, &t), RT_OK);   /* born done: no timer */
    CHECK_EQ(rt_context_err(t), RT_ETIMEDOUT);
    CHECK(done_closed(t));
    rt_context_release(t);
    CHECK_EQ(rt_sleep_ctx(c, RT_MILLISECOND), RT_OK);
    CHECK_EQ(rt_mutex_lock_timeout(&leak_mu, 3 * RT_MILLISECOND), RT_ETIMEDOUT);
    rt_context_release(c);
    return NULL;
}

static void *cancel_from_thread(void *arg) {
    rt_context_cancel(arg);
    return NULL;
}

static void test_foreign_thread(void) {
    rt_context *c = with_cancel(NULL);
    rt_context *kid = with_cancel(c);
    rt_chan *never;
    CHECK_EQ(rt_chan_make(&never, 0, 0), RT_OK);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, cancel_from_thread, c), 0);
    CHECK_EQ(rt_chan_recv_ctx(kid, never, NULL, NULL), RT_ECANCELED);
    CHECK_EQ(pthread_join(th, NULL), 0);
    rt_chan_release(never);
    rt_context_release(kid);
    rt_context_release(c);

    c = with_cancel(NULL);
    rt_mutex_lock(&leak_mu);
    CHECK_EQ(pthread_create(&th, NULL, thread_main, c), 0);
    rt_blocking_enter();
    CHECK_EQ(pthread_join(th, NULL), 0);
    rt_blocking_exit();
    rt_mutex_unlock(&leak_mu);
    CHECK_EQ(rt_context_err(c), 0);   /* the thread's child did not cancel it */
    rt_context_release(c);
}

static int run(void *arg) {
    (void)arg;
    RUN(test_background);
    RUN(test_cancel_basics);
    RUN(test_timeout_basics);
    RUN(test_tree_propagation);
    RUN(test_born_done);
    RUN(test_deadline_min);
    RUN(test_thousand_children);
    RUN(test_chan_ctx);
    RUN(test_select_ctx);
    RUN(test_sleep_ctx);
    RUN(test_mutex_timeout);
    RUN(test_mutex_ctx);
    RUN(test_mutex_stress);
    RUN(test_sema_ctx);
    RUN(test_waiter_contract);
    RUN(test_waiter_races);
    RUN(test_release_order);
    RUN(test_foreign_thread);
    RUN(test_leaks);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
