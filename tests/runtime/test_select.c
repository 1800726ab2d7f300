/*
 * test_select.c — select: mixed sends and receives, default, nil cases,
 * uniform choice among ready cases (chi-square), duplicate channels, two
 * selects pairing with each other, timeouts, close waking a select, large
 * selects, a concurrent stress test, and the empty-select deadlock.
 */
#include "chan_test_util.h"


/* ------------------------------------------------------------- basics */

static void test_send_recv_mix(void) {
    rt_chan *a = ctu_make(sizeof(int), 1);   /* empty: a send is ready */
    rt_chan *b = ctu_make(sizeof(int), 1);   /* full: a receive is ready */
    int seven = 7;
    int chosen[2] = { 0, 0 };
    for (int i = 0; i < 200; i++) {
        rt_chan_send(b, &seven);
        int out = 5, in = -1;
        rt_select_case cases[2] = { RT_SEND_CASE(a, &out), RT_RECV_CASE(b, &in) };
        int k = rt_select(cases, 2, false);
        CHECK(k == 0 || k == 1);
        chosen[k]++;
        if (k == 0) {
            CHECK_EQ(rt_chan_len(a), 1);
            CHECK_EQ(rt_chan_len(b), 1);
            CHECK_EQ(in, -1);                /* the other case did nothing */
            int v = 0;
            CHECK(rt_chan_recv(a, &v));
            CHECK_EQ(v, 5);
            CHECK(rt_chan_recv(b, &v));      /* drain b for the next round */
        } else {
            CHECK_EQ(in, 7);
            CHECK(cases[1].recv_ok);
            CHECK_EQ(rt_chan_len(a), 0);
            CHECK_EQ(rt_chan_len(b), 0);
        }
    }
    CHECK(chosen[0] > 0 && chosen[1] > 0);
    rt_chan_release(a);
    rt_chan_release(b);
}

static void test_default(void) {
    rt_chan *full = ctu_make(sizeof(int), 1);
    rt_chan *empty = ctu_make(sizeof(int), 1);
    rt_chan *unbuf = ctu_make(sizeof(int), 0);
    int one = 1;
    rt_chan_send(full, &one);
    int x = 11, y = 22, z = 33;
    rt_select_case cases[4] = {
        RT_SEND_CASE(full, &x), RT_RECV_CASE(empty, &y),
        RT_SEND_CASE(unbuf, &x), RT_RECV_CASE(unbuf, &z),
    };
    for (int i = 0; i < 100; i++) CHECK_EQ(rt_select(cases, 4, true), -1);
    CHECK_EQ(y, 22);
    CHECK_EQ(z, 33);
    CHECK_EQ(rt_chan_len(full), 1);
    CHECK_EQ(rt_chan_len(empty), 0);
    /* Make one ready: it is taken instead of the default. */
    rt_chan_send(empty, &one);
    CHECK_EQ(rt_select(cases, 4, true), 1);
    CHECK_EQ(y, 1);
    CHECK(cases[1].recv_ok);
    rt_chan_release(full);
    rt_chan_release(empty);
    rt_chan_release(unbuf);
}

static void test_nil_cases(void) {
    rt_chan *c = ctu_make(sizeof(int), 1);
    int v = 9, got = 0, junk = 0;
    rt_select_case cases[4] = {
        RT_SEND_CASE(NULL, &v), RT_RECV_CASE(NULL, &junk),
        RT_RECV_CASE(c, &got), RT_SEND_CASE(NULL, &v),
    };
    for (int i = 0; i < 100; i++) {
        rt_chan_send(c, &i);
        CHECK_EQ(rt_select(cases, 4, false), 2);
        CHECK_EQ(got, i);
    }
    CHECK_EQ(junk, 0);
    /* Only nil cases, with a default. */
    cases[2].chan = NULL;
    CHECK_EQ(rt_select(cases, 4, true), -1);
    rt_chan_release(c);
}

static void test_zero_cases_default(void) {
    CHECK_EQ(rt_select(NULL, 0, true), -1);
    rt_select_case none[1];
    CHECK_EQ(rt_select(none, 0, true), -1);
}

/* select with a default works on a plain thread (no goroutine, no M). */
static void *foreign_select_fn(void *arg) {
    rt_chan **cc = arg;
    long hits[2] = { 0, 0 };
    bool good = rt_goid() == 0;
    for (int i = 0; i < 200; i++) {
        int a = -1, b = -1, one = 1;
        rt_select_case cases[2] = { RT_RECV_CASE(cc[0], &a), RT_RECV_CASE(cc[1], &b) };
        int k = rt_select(cases, 2, true);
        good = good && (k == 0 || k == 1) && (k == 0 ? a : b) == 1 && cases[k].recv_ok;
        if (k >= 0) {
            hits[k]++;
            good = good && rt_chan_try_send(cc[k], &one);   /* keep it ready */
        }
    }
    int sink;
    rt_select_case none[1] = { RT_RECV_CASE(cc[2], &sink) };
    good = good && rt_select(none, 1, true) == -1 && hits[0] > 0 && hits[1] > 0;
    return (void *)(uintptr_t)good;
}

static void test_select_outside_goroutine(void) {
    rt_chan *cc[3] = { ctu_make(sizeof(int), 1), ctu_make(sizeof(int), 1), ctu_make(sizeof(int), 0) };
    int one = 1;
    rt_chan_send(cc[0], &one);
    rt_chan_send(cc[1], &one);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, foreign_select_fn, cc), 0);
    void *res = NULL;
    CHECK_EQ(pthread_join(t, &res), 0);
    CHECK(res == (void *)1);
    for (int i = 0; i < 3; i++) rt_chan_release(cc[i]);
}

/* A closed channel: receive cases proceed with recv_ok false, zeroed. */
static void test_closed_recv_case(void) {
    rt_chan *c = ctu_make(sizeof(int64_t), 2);
    int64_t v = 17;
    rt_chan_send(c, &v);
    rt_chan_close(c);
    int64_t got = 0;
    rt_select_case cases[1] = { RT_RECV_CASE(c, &got) };
    CHECK_EQ(rt_select(cases, 1, true), 0);
    CHECK(cases[0].recv_ok);
    CHECK_EQ(got, 17);
    got = 99;
    CHECK_EQ(rt_select(cases, 1, false), 0);
    CHECK(!cases[0].recv_ok);
    CHECK_EQ(got, 0);
    rt_chan_release(c);
}

/* ------------------------------------------------------------- fairness */

/*
 * Four always-ready channels: each should win a quarter of the time.
 * Pearson's chi-square with 3 degrees of freedom; 16.27 is the 0.999
 * quantile, so a correct select fails 1 run in 1000, while a select that
 * favoured the first ready case (or any fixed order) fails every time.
 */
static void test_fairness_chi_square(void) {
    enum { K = 4 };
    rt_chan *cs[K];
    int one = 1;
    for (int i = 0; i < K; i++) {
        cs[i] = ctu_make(sizeof(int), 1);
        rt_chan_send(cs[i], &one);
    }
    long n = SCALED(100000);
    if (n < 4000) n = 4000;
    long counts[K] = { 0 };
    int v;
    rt_select_case cases[K];
    for (int i = 0; i < K; i++) cases[i] = RT_RECV_CASE(cs[i], &v);
    for (long i = 0; i < n; i++) {
        int k = rt_select(cases, K, false);
        CHECK(k >= 0 && k < K);
        counts[k]++;
        rt_chan_send(cs[k], &one);   /* keep it ready */
    }
    double expect = (double)n / K, chi2 = 0;
    for (int i = 0; i < K; i++) chi2 += (counts[i] - expect) * (counts[i] - expect) / expect;
    if (chi2 >= 16.27)
        fprintf(stderr, "counts %ld %ld %ld %ld chi2 %.2f\n", counts[0], counts[1], counts[2],
                counts[3], chi2);
    CHECK(chi2 < 16.27);
    for (int i = 0; i < K; i++) rt_chan_release(cs[i]);
}

/* ------------------------------------------------------ duplicate channels */

static void select_twice_recv(void *arg) {
    rt_chan **cc = arg;
    int a = -1, b = -1;
    rt_select_case cases[2] = { RT_RECV_CASE(cc[0], &a), RT_RECV_CASE(cc[0], &b) };
    int k = rt_select(cases, 2, false);
    int result = k == 0 ? a : k == 1 ? b + 1000 : -1;
    rt_chan_send(cc[1], &result);
}

static void test_same_channel_twice(void) {
    /* Ready: both cases get chosen over time. */
    rt_chan *c = ctu_make(sizeof(int), 1);
    int hits[2] = { 0, 0 };
    for (int i = 0; i < 400; i++) {
        rt_chan_send(c, &i);
        int a = -1, b = -1;
        rt_select_case cases[2] = { RT_RECV_CASE(c, &a), RT_RECV_CASE(c, &b) };
        int k = rt_select(cases, 2, false);
        CHECK(k == 0 || k == 1);
        CHECK_EQ(k == 0 ? a : b, i);
        CHECK_EQ(k == 0 ? b : a, -1);
        hits[k]++;
    }
    CHECK(hits[0] > 0 && hits[1] > 0);
    rt_chan_release(c);

    /* Blocking: two sudogs on one channel; one wins, the other must leave
     * the queue (else the next receive would hand a value to a ghost). */
    rt_chan *cc[2] = { ctu_make(sizeof(int), 0), ctu_make(sizeof(int), 1) };
    for (int round = 0; round < 50; round++) {
        int before = ctu_count_in_state("select");
        CHECK_EQ(rt_go(select_twice_recv, cc), RT_OK);
        ctu_wait_count("select", before + 1);
        rt_chan_send(cc[0], &round);
        int result = -2;
        CHECK(rt_chan_recv(cc[1], &result));
        CHECK(result == round || result == round + 1000);
        int v = 1;
        CHECK(!rt_chan_try_send(cc[0], &v));   /* nobody is left waiting */
    }
    rt_chan_release(cc[0]);
    rt_chan_release(cc[1]);
}

/* A goroutine selecting both to send and to receive on one unbuffered
 * channel, against a partner doing the same: they pair up every round. */
typedef struct dual {
    rt_chan *c;
    long rounds;
    long sent, recvd, sum_recvd;
    rt_chan *done;
} dual;

static void dual_fn(void *arg) {
    dual *d = arg;
    for (long i = 0; i < d->rounds; i++) {
        long out = i + 1, in = 0;
        rt_select_case cases[2] = { RT_SEND_CASE(d->c, &out), RT_RECV_CASE(d->c, &in) };
        int k = rt_select(cases, 2, false);
        if (k == 0) {
            d->sent++;
        } else {
            CHECK(cases[1].recv_ok);
            CHECK_EQ(in, i + 1);   /* both sides are in the same round */
            d->recvd++;
            d->sum_recvd += in;
        }
    }
    rt_chan_send(d->done, NULL);
}

static void test_select_pairs_on_one_channel(void) {
    static dual d[2];
    rt_chan *c = ctu_make(sizeof(long), 0);
    rt_chan *done = ctu_make(0, 2);
    long rounds = SCALED(20000);
    for (int i = 0; i < 2; i++) {
        d[i] = (dual){ .c = c, .rounds = rounds, .done = done };
        CHECK_EQ(rt_go(dual_fn, &d[i]), RT_OK);
    }
    rt_chan_recv(done, NULL);
    rt_chan_recv(done, NULL);
    CHECK_EQ(d[0].sent, d[1].recvd);
    CHECK_EQ(d[1].sent, d[0].recvd);
    CHECK_EQ(d[0].sent + d[0].recvd, rounds);
    CHECK_EQ(d[0].sum_recvd + d[1].sum_recvd, rounds * (rounds + 1) / 2);
    rt_chan_release(c);
    rt_chan_release(done);
}

/* Two goroutines selecting on each other's channels: A {send a, recv b},
 * B {send b, recv a}.  Each round exactly one transfer happens. */
typedef struct cross {
    rt_chan *mine, *theirs;
    long rounds;
    long sent, recvd;
    int64_t sum_sent, sum_recvd;
    rt_chan *done;
} cross;

static void cross_fn(void *arg) {
    cross *x = arg;
    for (long i = 0; i < x->rounds; i++) {
        int64_t out = (int64_t)(uintptr_t)x % 1000 + i, in = 0;
        rt_select_case cases[2] = { RT_SEND_CASE(x->mine, &out), RT_RECV_CASE(x->theirs, &in) };
        int k = rt_select(cases, 2, false);
        if (k == 0) {
            x->sent++;
            x->sum_sent += out;
        } else {
            CHECK(cases[1].recv_ok);
            x->recvd++;
            x->sum_recvd += in;
        }
    }
    rt_chan_send(x->done, NULL);
}

static void test_cross_select(void) {
    static cross x[2];
    rt_chan *a = ctu_make(sizeof(int64_t), 0), *b = ctu_make(sizeof(int64_t), 0);
    rt_chan *done = ctu_make(0, 2);
    long rounds = SCALED(20000);
    x[0] = (cross){ .mine = a, .theirs = b, .rounds = rounds, .done = done };
    x[1] = (cross){ .mine = b, .theirs = a, .rounds = rounds, .done = done };
    CHECK_EQ(rt_go(cross_fn, &x[0]), RT_OK);
    CHECK_EQ(rt_go(cross_fn, &x[1]), RT_OK);
    rt_chan_recv(done, NULL);
    rt_chan_recv(done, NULL);
    CHECK_EQ(x[0].sent, x[1].recvd);
    CHECK_EQ(x[1].sent, x[0].recvd);
    CHECK_EQ(x[0].sum_sent, x[1].sum_recvd);
    CHECK_EQ(x[1].sum_sent, x[0].sum_recvd);
    CHECK_EQ(x[0].sent + x[0].recvd, rounds);
    rt_chan_release(a);
    rt_chan_release(b);
    rt_chan_release(done);
}

/* ------------------------------------------------------------- timeouts */

static void test_timeout(void) {
    rt_chan *never = ctu_make(sizeof(int), 0);
    int64_t start = rt_nanotime();
    rt_chan *t = rt_after(10 * RT_MILLISECOND);
    CHECK(t != NULL);
    int v = 0;
    int64_t fired = 0;
    rt_select_case cases[2] = { RT_RECV_CASE(never, &v), RT_RECV_CASE(t, &fired) };
    CHECK_EQ(rt_select(cases, 2, false), 1);
    CHECK(cases[1].recv_ok);
    CHECK(rt_nanotime() - start >= 10 * RT_MILLISECOND);
    CHECK(fired >= start + 10 * RT_MILLISECOND);
    rt_chan_release(t);

    /* Data arrives before the timeout; the timer is released unfired. */
    rt_chan *data = ctu_make(sizeof(int), 1);
    int seven = 7;
    rt_chan_send(data, &seven);
    t = rt_after(10 * RT_SECOND);
    cases[0] = RT_RECV_CASE(data, &v);
    cases[1] = RT_RECV_CASE(t, &fired);
    CHECK_EQ(rt_select(cases, 2, false), 0);
    CHECK_EQ(v, 7);
    rt_chan_release(t);

    /* Many short timeouts in a loop, as a poll loop would do. */
    for (int i = 0; i < 20; i++) {
        t = rt_after(RT_MILLISECOND / 4);
        cases[0] = RT_RECV_CASE(never, &v);
        cases[1] = RT_RECV_CASE(t, &fired);
        CHECK_EQ(rt_select(cases, 2, false), 1);
        rt_chan_release(t);
    }
    rt_chan_release(data);
    rt_chan_release(never);
}

/* ----------------------------------------------------- close wakes select */

typedef struct closewait {
    rt_chan *a, *b, *done;
    int index;
    bool ok;
    int64_t value;
} closewait;

static void closewait_fn(void *arg) {
    closewait *w = arg;
    int64_t va = -1;
    w->value = -1;
    rt_select_case cases[2] = { RT_RECV_CASE(w->a, &va), RT_RECV_CASE(w->b, &w->value) };
    w->index = rt_select(cases, 2, false);
    w->ok = cases[w->index].recv_ok;
    rt_chan_send(w->done, NULL);
}

static void test_close_wakes_select(void) {
    static closewait w;
    w.a = ctu_make(sizeof(int64_t), 0);
    w.b = ctu_make(sizeof(int64_t), 0);
    w.done = ctu_make(0, 1);
    w.ok = true;
    int before = ctu_count_in_state("select");
    CHECK_EQ(rt_go(closewait_fn, &w), RT_OK);
    ctu_wait_count("select", before + 1);
    rt_chan_close(w.b);
    rt_chan_release(w.b);   /* the select holds its own reference while parked */
    rt_chan_recv(w.done, NULL);
    CHECK_EQ(w.index, 1);
    CHECK(!w.ok);
    CHECK_EQ(w.value, 0);
    /* The losing case's sudog left a's queue. */
    int64_t v = 1;
    CHECK(!rt_chan_try_send(w.a, &v));
    rt_chan_release(w.a);
    rt_chan_release(w.done);
}

/* ------------------------------------------------------------ big selects */

typedef struct bigsel {
    rt_chan **chans;
    size_t n;
    int index;
    int value;
    rt_chan *done;
} bigsel;

static void bigsel_fn(void *arg) {
    bigsel *bs = arg;
    rt_select_case *cases = calloc(bs->n, sizeof *cases);
    int *vals = calloc(bs->n, sizeof *vals);
    for (size_t i = 0; i < bs->n; i++) cases[i] = RT_RECV_CASE(bs->chans[i], &vals[i]);
    bs->index = rt_select(cases, bs->n, false);
    bs->value = vals[bs->index];
    free(cases);
    free(vals);
    rt_chan_send(bs->done, NULL);
}

static void test_many_cases(void) {
    size_t n = RT_SELECT_MAX_CASES;
    rt_chan **chans = calloc(n, sizeof *chans);
    for (size_t i = 0; i < n; i++) chans[i] = ctu_make(sizeof(int), 0);
    static bigsel bs;
    bs = (bigsel){ .chans = chans, .n = n, .done = ctu_make(0, 1) };
    for (int round = 0; round < 5; round++) {
        size_t target = (size_t)(round * 397 + 73) % n;
        int before = ctu_count_in_state("select");
        CHECK_EQ(rt_go(bigsel_fn, &bs), RT_OK);
        ctu_wait_count("select", before + 1);
        int v = 4242 + round;
        rt_chan_send(chans[target], &v);
        rt_chan_recv(bs.done, NULL);
        CHECK_EQ(bs.index, (int)target);
        CHECK_EQ(bs.value, v);
        /* Every other channel's queue is empty again. */
        for (size_t i = 0; i < n; i++) CHECK(!rt_chan_try_send(chans[i], &v));
    }
    /* Non-blocking with all cases, none ready. */
    rt_select_case *cases = calloc(n, sizeof *cases);
    int sink;
    for (size_t i = 0; i < n; i++) cases[i] = RT_RECV_CASE(chans[i], &sink);
    CHECK_EQ(rt_select(cases, n, true), -1);
    free(cases);
    for (size_t i = 0; i < n; i++) rt_chan_release(chans[i]);
    free(chans);
    rt_chan_release(bs.done);
}

/* --------------------------------------------------------------- stress */

#define SK 6   /* channels */

typedef struct sstress {
    rt_chan *chans[SK];
    rt_chan *results;
    long per_producer;
    int producers;
    _Atomic int producers_left;
    _Atomic int next_id;
} sstress;

typedef struct sresult {
    int64_t sum, count;
} sresult;

/* Each producer sends its values through a select over three channels. */
static void sstress_producer(void *arg) {
    sstress *s = arg;
    int id = atomic_fetch_add(&s->next_id, 1);
    for (long i = 0; i < s->per_producer; i++) {
        int64_t v = (int64_t)id * s->per_producer + i + 1;
        rt_select_case cases[3];
        for (int j = 0; j < 3; j++) cases[j] = RT_SEND_CASE(s->chans[(id + j * 2) % SK], &v);
        if (i % 4 == 0) {
            while (rt_select(cases, 3, true) < 0) rt_yield();
        } else {
            CHECK(rt_select(cases, 3, false) >= 0);
        }
    }
    if (atomic_fetch_sub(&s->producers_left, 1) == 1)
        for (int j = 0; j < SK; j++) rt_chan_close(s->chans[j]);
}

/* Each consumer selects over all channels, dropping closed ones (nil). */
static void sstress_consumer(void *arg) {
    sstress *s = arg;
    sresult r = { 0, 0 };
    int64_t v;
    rt_select_case cases[SK];
    for (int j = 0; j < SK; j++) cases[j] = RT_RECV_CASE(s->chans[j], &v);
    int open = SK;
    while (open > 0) {
        int k = rt_select(cases, SK, false);
        CHECK(k >= 0);
        if (!cases[k].recv_ok) {
            cases[k].chan = NULL;
            open--;
            continue;
        }
        r.sum += v;
        r.count++;
    }
    rt_chan_send(s->results, &r);
}

static void test_select_stress(void) {
    static sstress s;
    int procs = rt_gomaxprocs();
    int np = procs < 2 ? 4 : 2 * procs, nc = np;
    for (int j = 0; j < SK; j++) s.chans[j] = ctu_make(sizeof(int64_t), (size_t)(j % 3));
    s.results = ctu_make(sizeof(sresult), (size_t)nc);
    s.per_producer = SCALED(20000);
    s.producers = np;
    atomic_store(&s.producers_left, np);
    atomic_store(&s.next_id, 0);
    for (int i = 0; i < nc; i++) CHECK_EQ(rt_go(sstress_consumer, &s), RT_OK);
    for (int i = 0; i < np; i++) CHECK_EQ(rt_go(sstress_producer, &s), RT_OK);
    int64_t sum = 0, count = 0, total = (int64_t)np * s.per_producer;
    for (int i = 0; i < nc; i++) {
        sresult r;
        CHECK(rt_chan_recv(s.results, &r));
        sum += r.sum;
        count += r.count;
    }
    CHECK_EQ(count, total);
    CHECK_EQ(sum, total * (total + 1) / 2);
    for (int j = 0; j < SK; j++) rt_chan_release(s.chans[j]);
    rt_chan_release(s.results);
}

/* ------------------------------------------------------------ fatal errors */

static int child_no_cases(void *arg) {
    (void)arg;
    rt_select(NULL, 0, false);
    return 0;
}

static int child_only_nil_cases(void *arg) {
    (void)arg;
    int v;
    rt_select_case cases[2] = { RT_RECV_CASE(NULL, &v), RT_SEND_CASE(NULL, &v) };
    rt_select(cases, 2, false);
    return 0;
}

static int child_select_send_closed(void *arg) {
    (void)arg;
    rt_chan *c = ctu_make(sizeof(int), 1);
    rt_chan_close(c);
    int v = 1;
    rt_select_case cases[1] = { RT_SEND_CASE(c, &v) };
    rt_select(cases, 1, true);
    return 0;
}

static void select_sender_fn(void *arg) {
    rt_chan **cc = arg;
    int v = 1, w;
    rt_select_case cases[2] = { RT_SEND_CASE(cc[0], &v), RT_RECV_CASE(cc[1], &w) };
    rt_select(cases, 2, false);
    _exit(3);   /* unreachable: the send case dies */
}

static int child_close_wakes_select_sender(void *arg) {
    (void)arg;
    static rt_chan *cc[2];
    cc[0] = ctu_make(sizeof(int), 0);
    cc[1] = ctu_make(sizeof(int), 0);
    CHECK_EQ(rt_go(select_sender_fn, cc), RT_OK);
    ctu_wait_count("select", 1);
    rt_chan_close(cc[0]);
    rt_sleep(10 * RT_SECOND);
    return 0;
}

static int child_too_many_cases(void *arg) {
    (void)arg;
    static rt_select_case cases[RT_SELECT_MAX_CASES + 1];
    rt_select(cases, RT_SELECT_MAX_CASES + 1, true);
    return 0;
}

static void test_fatal_errors(void) {
    CHECK_CHILD_FATAL("no_cases", "fatal error: all goroutines are asleep - deadlock!");
    CHECK_CHILD_FATAL("no_cases", "[select (no cases)");
    CHECK_CHILD_FATAL("only_nil_cases", "fatal error: all goroutines are asleep - deadlock!");
    CHECK_CHILD_FATAL("select_send_closed", "fatal error: send on closed channel");
    CHECK_CHILD_FATAL("close_wakes_select_sender", "fatal error: send on closed channel");
    CHECK_CHILD_FATAL("too_many_cases", "fatal error: select: too many cases");
}

static const rt_test_child children[] = {
    { "no_cases", child_no_cases },
    { "only_nil_cases", child_only_nil_cases },
    { "select_send_closed", child_select_send_closed },
    { "close_wakes_select_sender", child_close_wakes_select_sender },
    { "too_many_cases", child_too_many_cases },
    { NULL, NULL },
};

static int run(void *arg) {
    (void)arg;
    RUN(test_send_recv_mix);
    RUN(test_default);
    RUN(test_nil_cases);
    RUN(test_zero_cases_default);
    RUN(test_select_outside_goroutine);
    RUN(test_closed_recv_case);
    RUN(test_fairness_chi_square);
    RUN(test_same_channel_twice);
    RUN(test_select_pairs_on_one_channel);
    RUN(test_cross_select);
    RUN(test_timeout);
    RUN(test_close_wakes_select);
    RUN(test_many_cases);
    RUN(test_select_stress);
    RUN(test_fatal_errors);
    return rt_test_done();
}

int main(int argc, char **argv) {
    return rt_test_main_with_children(argc, argv, run, children);
}
