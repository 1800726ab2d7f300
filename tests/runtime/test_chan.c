/*
 * test_chan.c — channels: rendezvous, buffering, close, non-blocking
 * operations, nil channels, element sizes, reference counts, wait-queue
 * order, fatal errors, and a many-producer/many-consumer stress test.
 */
#include "chan_test_util.h"

#include <stdint.h>

/* ------------------------------------------------------------------ make */

static void test_make_errors(void) {
    rt_chan *c = (rt_chan *)0x1;
    CHECK_EQ(rt_chan_make(&c, (size_t)64 * 1024 + 1, 1), RT_EINVAL);
    CHECK(c == NULL);
    c = (rt_chan *)0x1;
    CHECK_EQ(rt_chan_make(&c, 1024, SIZE_MAX / 512), RT_EINVAL);   /* overflows */
    CHECK(c == NULL);
    c = (rt_chan *)0x1;
    CHECK_EQ(rt_chan_make(&c, 8, SIZE_MAX / 8), RT_EINVAL);       /* > PTRDIFF_MAX */
    CHECK(c == NULL);
#if !defined(LEDGERD_SANITIZER)
    /* (Sanitizer allocators abort on such sizes instead of failing.) */
    c = (rt_chan *)0x1;
    CHECK_EQ(rt_chan_make(&c, 1024, (size_t)1 << 44), RT_ENOMEM); /* 16 PiB */
    CHECK(c == NULL);
#endif
    CHECK_EQ(rt_chan_make(NULL, 8, 1), RT_EINVAL);

    /* The limits themselves are fine. */
    CHECK_EQ(rt_chan_make(&c, (size_t)64 * 1024, 2), RT_OK);
    CHECK_EQ(rt_chan_cap(c), 2);
    rt_chan_release(c);
    CHECK_EQ(rt_chan_make(&c, 0, (size_t)1 << 40), RT_OK);       /* no buffer memory */
    CHECK_EQ(rt_chan_cap(c), (size_t)1 << 40);
    rt_chan_release(c);
}

/* ------------------------------------------------------------- unbuffered */

typedef struct counted_sender {
    rt_chan *c;
    long n;
    _Atomic long sent;      /* sends that have returned */
} counted_sender;

static void counted_sender_fn(void *arg) {
    counted_sender *cs = arg;
    for (long i = 1; i <= cs->n; i++) {
        rt_chan_send(cs->c, &i);
        atomic_store(&cs->sent, i);
    }
}

/* An unbuffered send completes only together with a receive: after the
 * k-th receive, at most k sends can have returned. */
static void test_unbuffered_rendezvous(void) {
    static counted_sender cs;
    cs.c = ctu_make(sizeof(long), 0);
    cs.n = SCALED(20000);
    atomic_store(&cs.sent, 0);
    CHECK_EQ(rt_go(counted_sender_fn, &cs), RT_OK);
    for (long k = 1; k <= cs.n; k++) {
        long v = 0;
        CHECK(rt_chan_recv(cs.c, &v));
        CHECK_EQ(v, k);
        CHECK(atomic_load(&cs.sent) <= k);
        CHECK_EQ(rt_chan_len(cs.c), 0);
    }
    /* The sender finishes; nothing is left behind. */
    bool ok = true;
    long v = -1;
    CHECK(!rt_chan_try_recv(cs.c, &v, &ok));
    rt_chan_release(cs.c);
}

/* -------------------------------------------------------------- buffered */

static void test_buffered_fifo(void) {
    rt_chan *c = ctu_make(sizeof(int), 16);
    CHECK_EQ(rt_chan_cap(c), 16);
    CHECK_EQ(rt_chan_len(c), 0);
    for (int i = 0; i < 16; i++) {
        CHECK(rt_chan_try_send(c, &i));
        CHECK_EQ(rt_chan_len(c), i + 1);
    }
    int x = 99;
    CHECK(!rt_chan_try_send(c, &x));
    CHECK_EQ(rt_chan_len(c), 16);
    for (int i = 0; i < 16; i++) {
        int v = -1;
        CHECK(rt_chan_recv(c, &v));
        CHECK_EQ(v, i);
        CHECK_EQ(rt_chan_len(c), 15 - i);
    }
    /* Wrap the ring around many times with a varying fill level. */
    int next_send = 0, next_recv = 0;
    for (int round = 0; round < 1000; round++) {
        int burst = 1 + round % 16;
        for (int i = 0; i < burst && rt_chan_len(c) < 16; i++) rt_chan_send(c, &next_send), next_send++;
        int take = 1 + (round * 7) % 16;
        for (int i = 0; i < take && rt_chan_len(c) > 0; i++) {
            int v;
            CHECK(rt_chan_recv(c, &v));
            CHECK_EQ(v, next_recv);
            next_recv++;
        }
    }
    while (rt_chan_len(c) > 0) {
        int v;
        CHECK(rt_chan_recv(c, &v));
        CHECK_EQ(v, next_recv);
        next_recv++;
    }
    CHECK_EQ(next_recv, next_send);
    rt_chan_release(c);
}

static void test_len_cap(void) {
    CHECK_EQ(rt_chan_len(NULL), 0);
    CHECK_EQ(rt_chan_cap(NULL), 0);
    rt_chan *u = ctu_make(4, 0);
    CHECK_EQ(rt_chan_len(u), 0);
    CHECK_EQ(rt_chan_cap(u), 0);
    rt_chan *b = ctu_make(4, 3);
    int v = 1;
    rt_chan_send(b, &v);
    rt_chan_send(b, &v);
    CHECK_EQ(rt_chan_len(b), 2);
    CHECK_EQ(rt_chan_cap(b), 3);
    rt_chan_close(b);
    CHECK_EQ(rt_chan_len(b), 2);   /* closing keeps the buffered values */
    CHECK_EQ(rt_chan_cap(b), 3);
    rt_chan_close(u);
    CHECK_EQ(rt_chan_len(u), 0);
    rt_chan_release(u);
    rt_chan_release(b);
}

/* ------------------------------------------------------------------ close */

typedef struct blob {
    uint64_t a, b, c;
} blob;

static void test_close_semantics(void) {
    rt_chan *c = ctu_make(sizeof(blob), 4);
    for (uint64_t i = 1; i <= 3; i++) {
        blob b = { i, i * 10, i * 100 };
        rt_chan_send(c, &b);
    }
    rt_chan_close(c);
    for (uint64_t i = 1; i <= 3; i++) {
        blob b;
        CHECK(rt_chan_recv(c, &b));
        CHECK_EQ(b.a, i);
        CHECK_EQ(b.b, i * 10);
        CHECK_EQ(b.c, i * 100);
    }
    for (int k = 0; k < 3; k++) {
        blob b;
        memset(&b, 0xAB, sizeof b);
        CHECK(!rt_chan_recv(c, &b));
        CHECK(b.a == 0 && b.b == 0 && b.c == 0);
        memset(&b, 0xAB, sizeof b);
        bool ok = true;
        CHECK(rt_chan_try_recv(c, &b, &ok));   /* closed: never blocks */
        CHECK(!ok);
        CHECK(b.a == 0 && b.b == 0 && b.c == 0);
        CHECK(rt_chan_try_recv(c, NULL, NULL));
        CHECK(!rt_chan_recv(c, NULL));
    }
    CHECK_EQ(rt_chan_len(c), 0);
    rt_chan_release(c);

    /* Closed with values left: try_recv drains them first. */
    c = ctu_make(sizeof(int), 2);
    int one = 1;
    rt_chan_send(c, &one);
    rt_chan_close(c);
    int v = 0;
    bool ok = false;
    CHECK(rt_chan_try_recv(c, &v, &ok));
    CHECK(ok);
    CHECK_EQ(v, 1);
    v = 7;
    CHECK(rt_chan_try_recv(c, &v, &ok));
    CHECK(!ok);
    CHECK_EQ(v, 0);
    rt_chan_release(c);

    /* Unbuffered. */
    c = ctu_make(sizeof(int), 0);
    rt_chan_close(c);
    v = 5;
    CHECK(!rt_chan_recv(c, &v));
    CHECK_EQ(v, 0);
    rt_chan_release(c);
}

/* ----------------------------------------------------------- non-blocking */

typedef struct partner {
    rt_chan *c;
    int value;
    bool ok;
    rt_chan *done;
} partner;

static void blocking_receiver(void *arg) {
    partner *p = arg;
    p->value = -1;
    p->ok = rt_chan_recv(p->c, &p->value);
    rt_chan_send(p->done, NULL);
}

static void blocking_sender(void *arg) {
    partner *p = arg;
    rt_chan_send(p->c, &p->value);
    rt_chan_send(p->done, NULL);
}

static void test_try_ops(void) {
    /* Buffered: full / empty. */
    rt_chan *b = ctu_make(sizeof(int), 1);
    int v = 42, got = 0;
    bool ok = true;
    CHECK(!rt_chan_try_recv(b, &got, &ok));
    CHECK(!ok);
    CHECK(rt_chan_try_send(b, &v));
    CHECK(!rt_chan_try_send(b, &v));
    CHECK(rt_chan_try_recv(b, &got, &ok));
    CHECK(ok);
    CHECK_EQ(got, 42);
    CHECK(!rt_chan_try_recv(b, &got, NULL));
    rt_chan_release(b);

    /* Unbuffered with nobody there: both fail. */
    rt_chan *u = ctu_make(sizeof(int), 0);
    CHECK(!rt_chan_try_send(u, &v));
    CHECK(!rt_chan_try_recv(u, &got, &ok));

    /* Unbuffered with a parked receiver: try_send hands over directly. */
    static partner p;
    p.c = u;
    p.done = ctu_make(0, 1);
    CHECK_EQ(rt_go(blocking_receiver, &p), RT_OK);
    int64_t deadline = rt_nanotime() + 60 * RT_SECOND;
    v = 1234;
    while (!rt_chan_try_send(u, &v)) {
        CHECK(rt_nanotime() < deadline);
        rt_yield();
    }
    rt_chan_recv(p.done, NULL);
    CHECK(p.ok);
    CHECK_EQ(p.value, 1234);

    /* Unbuffered with a parked sender: try_recv takes its value. */
    p.value = 5678;
    CHECK_EQ(rt_go(blocking_sender, &p), RT_OK);
    got = 0;
    while (!rt_chan_try_recv(u, &got, &ok)) {
        CHECK(rt_nanotime() < deadline);
        rt_yield();
    }
    CHECK(ok);
    CHECK_EQ(got, 5678);
    rt_chan_recv(p.done, NULL);

    /* Closed: try_recv succeeds with ok == false. */
    rt_chan_close(u);
    got = 9;
    CHECK(rt_chan_try_recv(u, &got, &ok));
    CHECK(!ok);
    CHECK_EQ(got, 0);
    rt_chan_release(u);
    rt_chan_release(p.done);
}

/* Non-blocking operations work on a plain thread with no goroutine. */
static void *foreign_thread_fn(void *arg) {
    rt_chan *c = arg;
    int v = 77;
    bool r1 = rt_chan_try_send(c, &v);
    bool r2 = rt_chan_try_send(c, &v);   /* full */
    int got = 0;
    bool ok = false;
    bool r3 = rt_chan_try_recv(c, &got, &ok);
    bool ok4 = true;
    bool r4 = rt_chan_try_recv(c, &got, &ok4);  /* empty */
    return (void *)(uintptr_t)(r1 && !r2 && r3 && ok && got == 77 && !r4 && !ok4 &&
                               rt_goid() == 0);
}

static void test_try_ops_outside_goroutine(void) {
    rt_chan *c = ctu_make(sizeof(int), 1);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, foreign_thread_fn, c), 0);
    void *res = NULL;
    CHECK_EQ(pthread_join(t, &res), 0);
    CHECK(res == (void *)1);
    rt_chan_release(c);
}

/* ------------------------------------------------------------------- nil */

static _Atomic int nil_returned;

static void nil_recv_fn(void *arg) {
    (void)arg;
    int v;
    rt_chan_recv(NULL, &v);
    atomic_store(&nil_returned, 1);
}

static void nil_send_fn(void *arg) {
    (void)arg;
    int v = 1;
    rt_chan_send(NULL, &v);
    atomic_store(&nil_returned, 1);
}

static void test_nil_channel(void) {
    int before_r = ctu_count_in_state("chan receive (nil chan)");
    int before_s = ctu_count_in_state("chan send (nil chan)");
    CHECK_EQ(rt_go(nil_recv_fn, NULL), RT_OK);
    CHECK_EQ(rt_go(nil_send_fn, NULL), RT_OK);
    ctu_wait_count("chan receive (nil chan)", before_r + 1);
    ctu_wait_count("chan send (nil chan)", before_s + 1);
    rt_sleep(20 * RT_MILLISECOND);
    CHECK_EQ(atomic_load(&nil_returned), 0);   /* still blocked, main goes on */
    int v = 1;
    bool ok = true;
    CHECK(!rt_chan_try_send(NULL, &v));
    CHECK(!rt_chan_try_recv(NULL, &v, &ok));
    CHECK(!ok);
    rt_chan_retain(NULL);
    rt_chan_release(NULL);
}

/* --------------------------------------------------------- element sizes */

static void zero_size_sender(void *arg) {
    rt_chan *c = arg;
    for (int i = 0; i < 1000; i++) rt_chan_send(c, NULL);
    rt_chan_close(c);
}

static void test_elem_size_zero(void) {
    rt_chan *b = ctu_make(0, 3);
    for (int i = 0; i < 3; i++) CHECK(rt_chan_try_send(b, NULL));
    CHECK(!rt_chan_try_send(b, NULL));
    CHECK_EQ(rt_chan_len(b), 3);
    char dummy = 'x';
    CHECK(rt_chan_recv(b, &dummy));
    CHECK_EQ(dummy, 'x');                      /* nothing is copied */
    CHECK_EQ(rt_chan_len(b), 2);
    rt_chan_release(b);

    rt_chan *u = ctu_make(0, 0);
    CHECK_EQ(rt_go(zero_size_sender, u), RT_OK);
    int n = 0;
    while (rt_chan_recv(u, NULL)) n++;
    CHECK_EQ(n, 1000);
    rt_chan_release(u);
}

#define BIG 1024
typedef struct big_elem {
    uint32_t seq;
    unsigned char bytes[BIG - sizeof(uint32_t)];
} big_elem;

static void big_fill(big_elem *e, uint32_t seq) {
    e->seq = seq;
    for (size_t i = 0; i < sizeof e->bytes; i++) e->bytes[i] = (unsigned char)(seq * 31 + i * 7);
}

static bool big_valid(const big_elem *e, uint32_t seq) {
    if (e->seq != seq) return false;
    for (size_t i = 0; i < sizeof e->bytes; i++)
        if (e->bytes[i] != (unsigned char)(seq * 31 + i * 7)) return false;
    return true;
}

static void big_sender(void *arg) {
    rt_chan *c = arg;
    big_elem *e = malloc(sizeof *e);
    for (uint32_t s = 0; s < 2000; s++) {
        big_fill(e, s);
        rt_chan_send(c, e);
        memset(e, 0xEE, sizeof *e);   /* the send copied it: reuse is safe */
    }
    free(e);
    rt_chan_close(c);
}

static void test_large_elements(void) {
    CHECK_EQ(sizeof(big_elem), BIG);
    size_t caps[] = { 0, 1, 7 };
    for (size_t k = 0; k < 3; k++) {
        rt_chan *c = ctu_make(sizeof(big_elem), caps[k]);
        CHECK_EQ(rt_go(big_sender, c), RT_OK);
        big_elem *e = malloc(sizeof *e);
        uint32_t s = 0;
        while (rt_chan_recv(c, e)) {
            CHECK(big_valid(e, s));
            s++;
        }
        CHECK_EQ(s, 2000);
        free(e);
        rt_chan_release(c);
    }

    /* The maximum element size, through the buffer and by handoff. */
    size_t max = (size_t)64 * 1024;
    rt_chan *c = ctu_make(max, 1);
    unsigned char *in = malloc(max), *out = malloc(max);
    for (size_t i = 0; i < max; i++) in[i] = (unsigned char)(i * 13 + 5);
    rt_chan_send(c, in);
    memset(out, 0, max);
    CHECK(rt_chan_recv(c, out));
    CHECK(memcmp(in, out, max) == 0);
    free(in);
    free(out);
    rt_chan_release(c);
}

/* --------------------------------------------------------------- refcount */

static void release_fn(void *arg) { rt_chan_release(arg); }

static void test_refcount(void) {
    rt_chan *c = ctu_make(sizeof(int), 2);
    rt_chan_retain(c);
    rt_chan_retain(c);
    rt_chan_release(c);
    rt_chan_release(c);
    int v = 3, got = 0;
    rt_chan_send(c, &v);           /* still alive: one reference left */
    CHECK(rt_chan_recv(c, &got));
    CHECK_EQ(got, 3);
    rt_chan_release(c);            /* freed (ASan would see a leak or a reuse) */

    /* A channel released with values still buffered is just freed. */
    c = ctu_make(sizeof(int), 4);
    rt_chan_send(c, &v);
    rt_chan_release(c);

    /* Many goroutines releasing concurrently: whoever is last frees. */
    c = ctu_make(0, 0);
    for (int i = 0; i < 64; i++) {
        rt_chan_retain(c);
        CHECK_EQ(rt_go(release_fn, c), RT_OK);
    }
    rt_chan_release(c);
}

/* ------------------------------------------------------------ FIFO waiters */

#define NWAIT 40

typedef struct waiter {
    rt_chan *c;
    rt_chan *done;
    int index;
    int value;
    _Atomic uint64_t goid;
} waiter;

static void fifo_receiver(void *arg) {
    waiter *w = arg;
    atomic_store(&w->goid, rt_goid());
    w->value = -1;
    CHECK(rt_chan_recv(w->c, &w->value));
    rt_chan_send(w->done, &w->index);
}

static void fifo_sender(void *arg) {
    waiter *w = arg;
    atomic_store(&w->goid, rt_goid());
    rt_chan_send(w->c, &w->index);
    rt_chan_send(w->done, &w->index);
}

/* Start waiters one at a time, each only after the previous one is parked,
 * so the queue order is known. */
static void start_in_order(waiter *ws, int n, rt_chan *c, rt_chan *done, rt_func fn,
                           const char *state) {
    for (int i = 0; i < n; i++) {
        ws[i].c = c;
        ws[i].done = done;
        ws[i].index = i;
        atomic_store(&ws[i].goid, 0);
        CHECK_EQ(rt_go(fn, &ws[i]), RT_OK);
        while (atomic_load(&ws[i].goid) == 0) rt_yield();
        ctu_wait_parked(atomic_load(&ws[i].goid), state);
    }
}

static void test_fifo_waiters(void) {
    static waiter ws[NWAIT];
    rt_chan *done = ctu_make(sizeof(int), NWAIT);

    /* Receivers get values in the order they started waiting. */
    rt_chan *c = ctu_make(sizeof(int), 0);
    start_in_order(ws, NWAIT, c, done, fifo_receiver, "chan receive");
    for (int i = 0; i < NWAIT; i++) rt_chan_send(c, &i);
    for (int i = 0; i < NWAIT; i++) rt_chan_recv(done, NULL);
    for (int i = 0; i < NWAIT; i++) CHECK_EQ(ws[i].value, i);

    /* Senders are received from in the order they started waiting. */
    start_in_order(ws, NWAIT, c, done, fifo_sender, "chan send");
    for (int i = 0; i < NWAIT; i++) {
        int v = -1;
        CHECK(rt_chan_recv(c, &v));
        CHECK_EQ(v, i);
    }
    for (int i = 0; i < NWAIT; i++) rt_chan_recv(done, NULL);
    rt_chan_release(c);

    /* A full buffer with senders waiting: buffer first, then the senders,
     * each value moving into the ring as a slot frees. */
    c = ctu_make(sizeof(int), 4);
    for (int i = 0; i < 4; i++) {
        int v = 1000 + i;
        rt_chan_send(c, &v);
    }
    start_in_order(ws, NWAIT, c, done, fifo_sender, "chan send");
    for (int i = 0; i < 4; i++) {
        int v = -1;
        CHECK(rt_chan_recv(c, &v));
        CHECK_EQ(v, 1000 + i);
    }
    for (int i = 0; i < NWAIT; i++) {
        int v = -1;
        CHECK(rt_chan_recv(c, &v));
        CHECK_EQ(v, i);
    }
    for (int i = 0; i < NWAIT; i++) rt_chan_recv(done, NULL);
    CHECK_EQ(rt_chan_len(c), 0);
    rt_chan_release(c);
    rt_chan_release(done);
}

/* ------------------------------------------------------ close wakes all */

typedef struct closed_recv {
    rt_chan *c;
    rt_chan *done;
} closed_recv;

static void closed_receiver(void *arg) {
    closed_recv *cr = arg;
    int64_t v = -1;
    bool ok = rt_chan_recv(cr->c, &v);
    int result = (!ok && v == 0) ? 1 : 0;
    rt_chan_send(cr->done, &result);
}

static void test_close_wakes_receivers(void) {
    long n = SCALED(1000);
    if (n < 10) n = 10;
    static closed_recv cr;
    cr.c = ctu_make(sizeof(int64_t), 0);
    cr.done = ctu_make(sizeof(int), (size_t)n);
    int before = ctu_count_in_state("chan receive");
    for (long i = 0; i < n; i++) CHECK_EQ(rt_go(closed_receiver, &cr), RT_OK);
    ctu_wait_count("chan receive", before + (int)n);
    rt_chan_close(cr.c);
    rt_chan_release(cr.c);   /* woken receivers no longer touch the channel */
    long good = 0;
    for (long i = 0; i < n; i++) {
        int r = 0;
        CHECK(rt_chan_recv(cr.done, &r));
        good += r;
    }
    CHECK_EQ(good, n);
    rt_chan_release(cr.done);
}

/* ---------------------------------------------------------------- stress */

typedef struct stress {
    rt_chan *c;
    rt_chan *results;
    long per_producer;
    int producers;
    _Atomic int producers_left;
    _Atomic uint8_t *seen;
} stress;

typedef struct stress_result {
    int64_t sum;
    int64_t count;
} stress_result;

static void stress_producer(void *arg) {
    stress *s = arg;
    static _Atomic int next_id;
    int id = atomic_fetch_add(&next_id, 1) % s->producers;
    for (long i = 0; i < s->per_producer; i++) {
        int64_t v = (int64_t)id * s->per_producer + i + 1;
        if (i % 3 == 0) {
            while (!rt_chan_try_send(s->c, &v)) rt_yield();
        } else {
            rt_chan_send(s->c, &v);
        }
    }
    if (atomic_fetch_sub(&s->producers_left, 1) == 1) rt_chan_close(s->c);
}

static void stress_consumer(void *arg) {
    stress *s = arg;
    stress_result r = { 0, 0 };
    int64_t v;
    unsigned k = 0;
    for (;;) {
        bool ok;
        if (++k % 5 == 0) {
            if (!rt_chan_try_recv(s->c, &v, &ok)) {
                rt_yield();
                continue;
            }
        } else {
            ok = rt_chan_recv(s->c, &v);
        }
        if (!ok) break;
        CHECK(v >= 1 && v <= (int64_t)s->producers * s->per_producer);
        CHECK_EQ(atomic_fetch_add(&s->seen[v - 1], 1), 0);
        r.sum += v;
        r.count++;
    }
    rt_chan_send(s->results, &r);
}

static void run_stress(size_t cap) {
    static stress s;
    int procs = rt_gomaxprocs();
    int np = 2 * procs, nc = 2 * procs;
    if (np < 4) np = nc = 4;
    s.c = ctu_make(sizeof(int64_t), cap);
    s.results = ctu_make(sizeof(stress_result), (size_t)nc);
    s.per_producer = SCALED(20000);
    s.producers = np;
    atomic_store(&s.producers_left, np);
    int64_t total = (int64_t)np * s.per_producer;
    s.seen = calloc((size_t)total, 1);
    CHECK(s.seen != NULL);
    for (int i = 0; i < nc; i++) CHECK_EQ(rt_go(stress_consumer, &s), RT_OK);
    for (int i = 0; i < np; i++) CHECK_EQ(rt_go(stress_producer, &s), RT_OK);
    int64_t sum = 0, count = 0;
    for (int i = 0; i < nc; i++) {
        stress_result r;
        CHECK(rt_chan_recv(s.results, &r));
        sum += r.sum;
        count += r.count;
    }
    CHECK_EQ(count, total);
    CHECK_EQ(sum, total * (total + 1) / 2);
    for (int64_t i = 0; i < total; i++) CHECK_EQ(atomic_load(&s.seen[i]), 1);
    free((void *)s.seen);
    rt_chan_release(s.c);
    rt_chan_release(s.results);
}

static void test_stress_unbuffered(void) { run_stress(0); }
static void test_stress_buffered_1(void) { run_stress(1); }
static void test_stress_buffered_64(void) { run_stress(64); }

/* Ping-pong: two goroutines bouncing one token across Ps. */
typedef struct pingpong {
    rt_chan *ping, *pong;
    long n;
} pingpong;

static void ponger(void *arg) {
    pingpong *pp = arg;
    long v;
    while (rt_chan_recv(pp->ping, &v)) {
        v++;
        rt_chan_send(pp->pong, &v);
    }
    rt_chan_close(pp->pong);
}

static void test_ping_pong(void) {
    static pingpong pp;
    pp.ping = ctu_make(sizeof(long), 0);
    pp.pong = ctu_make(sizeof(long), 0);
    pp.n = SCALED(50000);
    CHECK_EQ(rt_go(ponger, &pp), RT_OK);
    long v = 0;
    for (long i = 0; i < pp.n; i++) {
        rt_chan_send(pp.ping, &v);
        CHECK(rt_chan_recv(pp.pong, &v));
        v++;
    }
    CHECK_EQ(v, 2 * pp.n);
    rt_chan_close(pp.ping);
    CHECK(!rt_chan_recv(pp.pong, &v));
    rt_chan_release(pp.ping);
    rt_chan_release(pp.pong);
}

/* ------------------------------------------------------------- preemption */

/*
 * Goroutines that compute without calling the runtime for longer than
 * sysmon's preemption limit (10 ms) lose their P, then must park in a
 * receive, while pollers hammer the same channel's lock (a select with a
 * default always locks).  A goroutine that parked holding the channel lock
 * while it waited for a P back would leave the pollers spinning on that
 * lock with every P: this test would hang.
 */
typedef struct hog_test {
    rt_chan *c, *other, *done;
    long rounds;
    int hogs;
    _Atomic long received;
    _Atomic int pollers_stop;
} hog_test;

static __attribute__((noinline)) uint64_t busy_compute(uint64_t x, int64_t ns) {
    int64_t until = rt_nanotime() + ns;
    while (rt_nanotime() < until)
        for (int i = 0; i < 100; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

static void hog_fn(void *arg) {
    hog_test *h = arg;
    uint64_t x = 1;
    for (long i = 0; i < h->rounds; i++) {
        x = busy_compute(x, 15 * RT_MILLISECOND);
        long v = 0;
        if (i % 2) {
            int sink;
            rt_select_case cases[2] = { RT_RECV_CASE(h->c, &v), RT_RECV_CASE(NULL, &sink) };
            CHECK_EQ(rt_select(cases, 2, false), 0);
        } else {
            CHECK(rt_chan_recv(h->c, &v));
        }
        CHECK_EQ(v, 7);
        atomic_fetch_add(&h->received, 1);
    }
    rt_chan_send(h->done, NULL);
}

static void poller_fn(void *arg) {
    hog_test *h = arg;
    long seven = 7, sink;
    while (!atomic_load(&h->pollers_stop)) {
        rt_select_case cases[2] = { RT_SEND_CASE(h->c, &seven), RT_RECV_CASE(h->other, &sink) };
        (void)rt_select(cases, 2, true);
    }
    rt_chan_send(h->done, NULL);
}

static void test_preempted_goroutines_block(void) {
    static hog_test h;
    int procs = rt_gomaxprocs();
    h.hogs = 2 * procs;
    h.rounds = SCALED(12);
    if (h.rounds < 4) h.rounds = 4;
    h.c = ctu_make(sizeof(long), 0);
    h.other = ctu_make(sizeof(long), 0);
    int pollers = 2 * procs;   /* more than the Ps: never an idle P */
    h.done = ctu_make(0, (size_t)(h.hogs + pollers));
    atomic_store(&h.received, 0);
    atomic_store(&h.pollers_stop, 0);
    for (int i = 0; i < pollers; i++) CHECK_EQ(rt_go(poller_fn, &h), RT_OK);
    for (int i = 0; i < h.hogs; i++) CHECK_EQ(rt_go(hog_fn, &h), RT_OK);
    for (int i = 0; i < h.hogs; i++) rt_chan_recv(h.done, NULL);
    atomic_store(&h.pollers_stop, 1);
    for (int i = 0; i < pollers; i++) rt_chan_recv(h.done, NULL);
    CHECK_EQ(atomic_load(&h.received), h.hogs * h.rounds);
    rt_chan_release(h.c);
    rt_chan_release(h.other);
    rt_chan_release(h.done);
}

/* ------------------------------------------------------------ fatal errors */

static int child_send_closed(void *arg) {
    (void)arg;
    rt_chan *c = ctu_make(sizeof(int), 1);
    rt_chan_close(c);
    int v = 1;
    rt_chan_send(c, &v);
    return 0;
}

static int child_try_send_closed(void *arg) {
    (void)arg;
    rt_chan *c = ctu_make(sizeof(int), 0);
    rt_chan_close(c);
    int v = 1;
    (void)rt_chan_try_send(c, &v);
    return 0;
}

static int child_close_closed(void *arg) {
    (void)arg;
    rt_chan *c = ctu_make(sizeof(int), 0);
    rt_chan_close(c);
    rt_chan_close(c);
    return 0;
}

static int child_close_nil(void *arg) {
    (void)arg;
    rt_chan_close(NULL);
    return 0;
}

static void blocked_sender_fn(void *arg) {
    int v = 1;
    rt_chan_send(arg, &v);
    _exit(3);   /* must not get here: the send dies */
}

/* Senders parked on a channel that gets closed die when they wake. */
static int child_close_wakes_senders(void *arg) {
    (void)arg;
    rt_chan *c = ctu_make(sizeof(int), 0);
    int n = 8;
    for (int i = 0; i < n; i++) CHECK_EQ(rt_go(blocked_sender_fn, c), RT_OK);
    ctu_wait_count("chan send", n);
    rt_chan_close(c);
    rt_sleep(10 * RT_SECOND);
    return 0;
}

static int child_close_wakes_one_sender(void *arg) {
    (void)arg;
    rt_chan *c = ctu_make(sizeof(int), 0);
    CHECK_EQ(rt_go(blocked_sender_fn, c), RT_OK);
    ctu_wait_count("chan send", 1);
    rt_chan_close(c);
    rt_sleep(10 * RT_SECOND);
    return 0;
}

static void blocked_receiver_fn(void *arg) {
    int v;
    rt_chan_recv(arg, &v);
}

static int child_release_with_waiters(void *arg) {
    (void)arg;
    rt_chan *c = ctu_make(sizeof(int), 0);
    CHECK_EQ(rt_go(blocked_receiver_fn, c), RT_OK);
    ctu_wait_count("chan receive", 1);
    rt_chan_release(c);
    return 0;
}

static void *recv_on_thread(void *arg) {
    int v;
    rt_chan_recv(arg, &v);
    return NULL;
}

static int child_blocking_outside_goroutine(void *arg) {
    (void)arg;
    rt_chan *c = ctu_make(sizeof(int), 0);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, recv_on_thread, c), 0);
    pthread_join(t, NULL);
    return 0;
}

static void test_fatal_errors(void) {
    CHECK_CHILD_FATAL("send_closed", "fatal error: send on closed channel");
    CHECK_CHILD_FATAL("try_send_closed", "fatal error: send on closed channel");
    CHECK_CHILD_FATAL("close_closed", "fatal error: close of closed channel");
    CHECK_CHILD_FATAL("close_nil", "fatal error: close of nil channel");
    CHECK_CHILD_FATAL("close_wakes_one_sender", "fatal error: send on closed channel");
    CHECK_CHILD_FATAL("close_wakes_senders", "fatal error: send on closed channel");
    CHECK_CHILD_FATAL("release_with_waiters", "fatal error: release of channel with waiters");
    CHECK_CHILD_FATAL("blocking_outside_goroutine",
                      "blocking channel operation outside a goroutine");
}

static const rt_test_child children[] = {
    { "send_closed", child_send_closed },
    { "try_send_closed", child_try_send_closed },
    { "close_closed", child_close_closed },
    { "close_nil", child_close_nil },
    { "close_wakes_senders", child_close_wakes_senders },
    { "close_wakes_one_sender", child_close_wakes_one_sender },
    { "release_with_waiters", child_release_with_waiters },
    { "blocking_outside_goroutine", child_blocking_outside_goroutine },
    { NULL, NULL },
};

static int run(void *arg) {
    (void)arg;
    RUN(test_make_errors);
    RUN(test_unbuffered_rendezvous);
    RUN(test_buffered_fifo);
    RUN(test_len_cap);
    RUN(test_close_semantics);
    RUN(test_try_ops);
    RUN(test_try_ops_outside_goroutine);
    RUN(test_nil_channel);
    RUN(test_elem_size_zero);
    RUN(test_large_elements);
    RUN(test_refcount);
    RUN(test_fifo_waiters);
    RUN(test_close_wakes_receivers);
    RUN(test_ping_pong);
    RUN(test_stress_unbuffered);
    RUN(test_stress_buffered_1);
    RUN(test_stress_buffered_64);
    RUN(test_preempted_goroutines_block);
    RUN(test_fatal_errors);
    return rt_test_done();
}

int main(int argc, char **argv) {
    return rt_test_main_with_children(argc, argv, run, children);
}
