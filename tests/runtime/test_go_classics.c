/*
 * test_go_classics.c — C ports of classic Go channel programs, each
 * checking its answer:
 *
 *   sieve          the concurrent prime sieve (a chain of filter goroutines)
 *   fifo           test/chan/fifo.go: buffered FIFO and a chain of receivers
 *   whispers       the daisy chain of 10,000 goroutines (answer: n + 1)
 *   nonblock       test/chan/nonblock.go: select-with-default sends and
 *                  receives against partners that arrive later
 *   select         test/chan/select.go: each ready case taken exactly once
 *   doubleselect   test/chan/doubleselect.go: one select must never run two
 *                  cases (duplicates would show)
 *   closedchan     test/closedchan.go: closed channels through plain
 *                  operations, single-case selects and general selects
 */
#include "chan_test_util.h"

/* ------------------------------------------------------------------ sieve */

typedef struct sieve_stage {
    rt_chan *in, *out, *quit, *done;
    long prime;        /* 0: the generator */
} sieve_stage;

/* Send v on out unless quit is closed first; false when quitting. */
static bool send_or_quit(rt_chan *out, long *v, rt_chan *quit) {
    rt_select_case cases[2] = { RT_SEND_CASE(out, v), RT_RECV_CASE(quit, NULL) };
    return rt_select(cases, 2, false) == 0;
}

static bool recv_or_quit(rt_chan *in, long *v, rt_chan *quit) {
    rt_select_case cases[2] = { RT_RECV_CASE(in, v), RT_RECV_CASE(quit, NULL) };
    return rt_select(cases, 2, false) == 0;
}

static void sieve_generate(void *arg) {
    sieve_stage *st = arg;
    for (long i = 2;; i++)
        if (!send_or_quit(st->out, &i, st->quit)) break;
    rt_chan_send(st->done, NULL);
}

static void sieve_filter(void *arg) {
    sieve_stage *st = arg;
    long v;
    while (recv_or_quit(st->in, &v, st->quit))
        if (v % st->prime != 0 && !send_or_quit(st->out, &v, st->quit)) break;
    rt_chan_send(st->done, NULL);
}

static void test_sieve(void) {
    long n = SCALED(1000);
    if (n < 100) n = 100;
    /* The reference answer: a plain sieve of Eratosthenes. */
    long limit = 10000;
    char *composite = calloc((size_t)limit, 1);
    long *expect = calloc((size_t)n, sizeof *expect);
    long found = 0;
    for (long i = 2; i < limit && found < n; i++) {
        if (composite[i]) continue;
        expect[found++] = i;
        for (long j = i * i; j < limit; j += i) composite[j] = 1;
    }
    CHECK_EQ(found, n);

    sieve_stage *stages = calloc((size_t)n + 1, sizeof *stages);
    rt_chan *quit = ctu_make(0, 0);
    rt_chan *done = ctu_make(0, (size_t)n + 1);
    rt_chan *ch = ctu_make(sizeof(long), 0);
    stages[0] = (sieve_stage){ .out = ch, .quit = quit, .done = done };
    CHECK_EQ(rt_go(sieve_generate, &stages[0]), RT_OK);
    for (long i = 0; i < n; i++) {
        long prime = 0;
        CHECK(rt_chan_recv(ch, &prime));
        CHECK_EQ(prime, expect[i]);
        rt_chan *next = ctu_make(sizeof(long), 0);
        stages[i + 1] = (sieve_stage){ .in = ch, .out = next, .quit = quit, .done = done,
                                       .prime = prime };
        CHECK_EQ(rt_go(sieve_filter, &stages[i + 1]), RT_OK);
        ch = next;
    }
    /* Shut the pipeline down and reclaim everything. */
    rt_chan_close(quit);
    for (long i = 0; i <= n; i++) rt_chan_recv(done, NULL);
    rt_chan_release(stages[0].out);
    for (long i = 1; i <= n; i++) rt_chan_release(stages[i].out);
    rt_chan_release(quit);
    rt_chan_release(done);
    free(stages);
    free(expect);
    free(composite);
}

/* ------------------------------------------------------------------- fifo */

#define FIFO_N 100

static void test_async_fifo(void) {
    rt_chan *ch = ctu_make(sizeof(int), FIFO_N);
    for (int i = 0; i < FIFO_N; i++) rt_chan_send(ch, &i);
    for (int i = 0; i < FIFO_N; i++) {
        int v = -1;
        CHECK(rt_chan_recv(ch, &v));
        CHECK_EQ(v, i);
    }
    rt_chan_release(ch);
}

typedef struct chain_link {
    rt_chan *ch, *in, *out;
    int val;
} chain_link;

static _Atomic int chain_errors;

static void chain_fn(void *arg) {
    chain_link *l = arg;
    int one = 1, v = -1;
    rt_chan_recv(l->in, NULL);
    if (!rt_chan_recv(l->ch, &v) || v != l->val) atomic_fetch_add(&chain_errors, 1);
    rt_chan_send(l->out, &one);
}

static void test_sync_fifo(void) {
    static chain_link links[FIFO_N];
    rt_chan *ch = ctu_make(sizeof(int), 0);
    rt_chan *start = ctu_make(sizeof(int), 0);
    rt_chan *in = start;
    for (int i = 0; i < FIFO_N; i++) {
        rt_chan *out = ctu_make(sizeof(int), 0);
        links[i] = (chain_link){ .ch = ch, .in = in, .out = out, .val = i };
        CHECK_EQ(rt_go(chain_fn, &links[i]), RT_OK);
        in = out;
    }
    int zero = 0;
    rt_chan_send(start, &zero);
    for (int i = 0; i < FIFO_N; i++) rt_chan_send(ch, &i);
    CHECK(rt_chan_recv(in, NULL));
    CHECK_EQ(atomic_load(&chain_errors), 0);
    rt_chan_release(start);
    for (int i = 0; i < FIFO_N; i++) rt_chan_release(links[i].out);
    rt_chan_release(ch);
}

/* ---------------------------------------------------------------- whispers */

typedef struct whisper_pair {
    rt_chan *left, *right;
} whisper_pair;

static void whisper(void *arg) {
    whisper_pair *w = arg;
    int v = 0;
    CHECK(rt_chan_recv(w->right, &v));
    v++;
    rt_chan_send(w->left, &v);
}

static void first_whisper(void *arg) {
    int one = 1;
    rt_chan_send(arg, &one);
}

static void test_whispers(void) {
    long n = SCALED(10000);
    if (n < 100) n = 100;
#if defined(__SANITIZE_THREAD__)
    if (n > 4000) n = 4000;   /* each goroutine is a TSan fiber: 8128 max */
#endif
    rt_chan **chans = calloc((size_t)n + 1, sizeof *chans);
    whisper_pair *pairs = calloc((size_t)n, sizeof *pairs);
    chans[0] = ctu_make(sizeof(int), 0);   /* leftmost */
    for (long i = 0; i < n; i++) {
        chans[i + 1] = ctu_make(sizeof(int), 0);
        pairs[i] = (whisper_pair){ .left = chans[i], .right = chans[i + 1] };
        CHECK_EQ(rt_go(whisper, &pairs[i]), RT_OK);
    }
    CHECK_EQ(rt_go(first_whisper, chans[n]), RT_OK);
    int result = 0;
    CHECK(rt_chan_recv(chans[0], &result));
    CHECK_EQ(result, n + 1);
    for (long i = 0; i <= n; i++) rt_chan_release(chans[i]);
    free(chans);
    free(pairs);
}

/* ---------------------------------------------------------------- nonblock */

/* The element kinds of nonblock.go: int32, int64, bool, string. */
typedef struct nb_kind {
    const char *name;
    size_t size;
    const void *to_receiver;   /* nonblock.go's 123 / true / "hello" */
    const void *from_sender;   /* 234 / true / "hello again" */
} nb_kind;

static const int32_t i32_a = 123, i32_b = 234;
static const int64_t i64_a = 123456, i64_b = 234567;
static const bool b_a = true, b_b = true;
static const char s_a[16] = "hello", s_b[16] = "hello again";

static const nb_kind nb_kinds[] = {
    { "int32", sizeof(int32_t), &i32_a, &i32_b },
    { "int64", sizeof(int64_t), &i64_a, &i64_b },
    { "bool", sizeof(bool), &b_a, &b_b },
    { "string", sizeof s_a, s_a, s_b },
};

typedef struct nb_partner {
    rt_chan *c, *strobe;
    const nb_kind *kind;
} nb_partner;

static void nb_receiver(void *arg) {
    nb_partner *p = arg;
    char buf[16];
    CHECK(rt_chan_recv(p->c, buf));
    CHECK(memcmp(buf, p->kind->to_receiver, p->kind->size) == 0);
    rt_chan_send(p->strobe, NULL);
}

static void nb_sender(void *arg) {
    nb_partner *p = arg;
    rt_chan_send(p->c, p->kind->from_sender);
    rt_chan_send(p->strobe, NULL);
}

/* nonblock.go's sleep(): a little time and a few yields between tries. */
static void nb_sleep(void) {
    rt_sleep(10 * RT_MICROSECOND);
    rt_yield();
    rt_yield();
    rt_yield();
}

/* Generous: the original allows 10,000 tries; we allow a minute. */
#define NB_DEADLINE (60 * RT_SECOND)

static void test_nonblock(void) {
    static nb_partner p;
    rt_chan *strobe = ctu_make(0, 0);
    for (size_t buffer = 0; buffer < 2; buffer++) {
        for (size_t k = 0; k < sizeof nb_kinds / sizeof nb_kinds[0]; k++) {
            const nb_kind *kind = &nb_kinds[k];
            rt_chan *c = ctu_make(kind->size, buffer);
            char buf[16];

            /* Nothing there: a receive with default does not block. */
            rt_select_case rc[1] = { RT_RECV_CASE(c, buf) };
            CHECK_EQ(rt_select(rc, 1, true), -1);

            /* Send with default until the receiver shows up (or, buffered,
             * at once). */
            p = (nb_partner){ .c = c, .strobe = strobe, .kind = kind };
            CHECK_EQ(rt_go(nb_receiver, &p), RT_OK);
            int64_t deadline = rt_nanotime() + NB_DEADLINE;
            rt_select_case sc[1] = { RT_SEND_CASE(c, kind->to_receiver) };
            while (rt_select(sc, 1, true) != 0) {
                CHECK(rt_nanotime() < deadline);
                nb_sleep();
            }
            rt_chan_recv(strobe, NULL);

            /* Receive with default until the sender shows up. */
            CHECK_EQ(rt_go(nb_sender, &p), RT_OK);
            if (buffer > 0) rt_chan_recv(strobe, NULL);
            memset(buf, 0, sizeof buf);
            deadline = rt_nanotime() + NB_DEADLINE;
            while (rt_select(rc, 1, true) != 0) {
                CHECK(rt_nanotime() < deadline);
                nb_sleep();
            }
            CHECK(rc[0].recv_ok);
            CHECK(memcmp(buf, kind->from_sender, kind->size) == 0);
            if (buffer == 0) rt_chan_recv(strobe, NULL);
            rt_chan_release(c);
        }
    }
    rt_chan_release(strobe);
}

/* ------------------------------------------------------------------ select */

/* test/chan/select.go: both send expressions are evaluated every time (the
 * counter), each ready case is taken exactly once, then the default. */
static unsigned sel_counter, sel_shift;

static unsigned get_value(void) {
    sel_counter++;
    return 1u << sel_shift;
}

static int select_send(rt_chan *a, rt_chan *b) {
    int i = 0;
    for (;;) {
        unsigned va = get_value(), vb = get_value();
        rt_select_case cases[2] = { RT_SEND_CASE(a, &va), RT_SEND_CASE(b, &vb) };
        int k = rt_select(cases, 2, true);
        if (k < 0) break;
        i++;
        if (k == 0) a = NULL;
        else b = NULL;
        sel_shift++;
    }
    return i;
}

static void test_select_go(void) {
    for (int rep = 0; rep < 100; rep++) {
        sel_counter = sel_shift = 0;
        rt_chan *a = ctu_make(sizeof(unsigned), 1), *b = ctu_make(sizeof(unsigned), 1);
        CHECK_EQ(select_send(a, b), 2);
        unsigned av = 0, bv = 0;
        CHECK(rt_chan_recv(a, &av));
        CHECK(rt_chan_recv(b, &bv));
        CHECK_EQ(av | bv, 3);
        CHECK_EQ(select_send(a, NULL), 1);
        CHECK_EQ(sel_counter, 10);
        rt_chan_release(a);
        rt_chan_release(b);
    }
}

/* ------------------------------------------------------------ doubleselect */

typedef struct dsel {
    rt_chan *c[4];
    rt_chan *cmux;
    rt_chan *done;
    long n;
} dsel;

/* Send each counter value on one of four channels, via select. */
static void dsel_sender(void *arg) {
    dsel *d = arg;
    for (long i = 0; i < d->n; i++) {
        rt_select_case cases[4];
        for (int j = 0; j < 4; j++) cases[j] = RT_SEND_CASE(d->c[j], &i);
        CHECK(rt_select(cases, 4, false) >= 0);
    }
    for (int j = 0; j < 4; j++) rt_chan_close(d->c[j]);
}

typedef struct dmux {
    rt_chan *in;
    dsel *d;
} dmux;

static void dsel_mux(void *arg) {
    dmux *m = arg;
    long v;
    while (rt_chan_recv(m->in, &v)) rt_chan_send(m->d->cmux, &v);
    rt_chan_send(m->d->done, NULL);
}

static void dsel_closer(void *arg) {
    dsel *d = arg;
    for (int j = 0; j < 4; j++) rt_chan_recv(d->done, NULL);
    rt_chan_close(d->cmux);
}

static void test_doubleselect(void) {
    static dsel d;
    static dmux muxes[4];
    d.n = SCALED(100000);
    for (int j = 0; j < 4; j++) d.c[j] = ctu_make(sizeof(long), 0);
    d.cmux = ctu_make(sizeof(long), 0);
    d.done = ctu_make(0, 0);
    CHECK_EQ(rt_go(dsel_sender, &d), RT_OK);
    for (int j = 0; j < 4; j++) {
        muxes[j] = (dmux){ .in = d.c[j], .d = &d };
        CHECK_EQ(rt_go(dsel_mux, &muxes[j]), RT_OK);
    }
    CHECK_EQ(rt_go(dsel_closer, &d), RT_OK);
    char *seen = calloc((size_t)d.n, 1);
    long v, count = 0;
    while (rt_chan_recv(d.cmux, &v)) {
        CHECK(v >= 0 && v < d.n);
        CHECK_EQ(seen[v], 0);   /* a duplicate: two cases of one select ran */
        seen[v] = 1;
        count++;
    }
    CHECK_EQ(count, d.n);
    free(seen);
    for (int j = 0; j < 4; j++) rt_chan_release(d.c[j]);
    rt_chan_release(d.cmux);
    rt_chan_release(d.done);
}

/* -------------------------------------------------------------- closedchan */

/* closedchan.go's Chan interface: the same operations done three ways. */
typedef struct chan_ops {
    const char *name;
    int (*recv)(rt_chan *c);
    int (*recv2)(rt_chan *c, bool *ok);
    int (*nbrecv)(rt_chan *c, bool *selected);
    int (*nbrecv2)(rt_chan *c, bool *ok, bool *selected);
} chan_ops;

/* XChan: plain channel operations. */
static int x_recv(rt_chan *c) {
    int v = -1;
    rt_chan_recv(c, &v);
    return v;
}
static int x_recv2(rt_chan *c, bool *ok) {
    int v = -1;
    *ok = rt_chan_recv(c, &v);
    return v;
}
static int x_nbrecv(rt_chan *c, bool *selected) {
    int v = -1;
    *selected = rt_chan_try_recv(c, &v, NULL);
    return v;
}
static int x_nbrecv2(rt_chan *c, bool *ok, bool *selected) {
    int v = -1;
    *selected = rt_chan_try_recv(c, &v, ok);
    return v;
}

/* SChan: a select with the one case (and a default for nb). */
static int s_select(rt_chan *c, bool block, bool *ok, bool *selected) {
    int v = -1;
    rt_select_case cases[1] = { RT_RECV_CASE(c, &v) };
    int k = rt_select(cases, 1, !block);
    *selected = k == 0;
    *ok = k == 0 && cases[0].recv_ok;
    return v;
}
static int s_recv(rt_chan *c) {
    bool ok, sel;
    return s_select(c, true, &ok, &sel);
}
static int s_recv2(rt_chan *c, bool *ok) {
    bool sel;
    return s_select(c, true, ok, &sel);
}
static int s_nbrecv(rt_chan *c, bool *selected) {
    bool ok;
    return s_select(c, false, &ok, selected);
}
static int s_nbrecv2(rt_chan *c, bool *ok, bool *selected) {
    return s_select(c, false, ok, selected);
}

/* SSChan: like SChan plus a never-ready dummy case, forcing the general
 * path (more than one channel to lock and poll). */
static int ss_select(rt_chan *c, bool block, bool *ok, bool *selected) {
    rt_chan *dummy = ctu_make(sizeof(bool), 0);
    int v = -1;
    bool d = false;
    rt_select_case cases[2] = { RT_RECV_CASE(dummy, &d), RT_RECV_CASE(c, &v) };
    int k = rt_select(cases, 2, !block);
    CHECK(k != 0);
    *selected = k == 1;
    *ok = k == 1 && cases[1].recv_ok;
    rt_chan_release(dummy);
    return v;
}
static int ss_recv(rt_chan *c) {
    bool ok, sel;
    return ss_select(c, true, &ok, &sel);
}
static int ss_recv2(rt_chan *c, bool *ok) {
    bool sel;
    return ss_select(c, true, ok, &sel);
}
static int ss_nbrecv(rt_chan *c, bool *selected) {
    bool ok;
    return ss_select(c, false, &ok, selected);
}
static int ss_nbrecv2(rt_chan *c, bool *ok, bool *selected) {
    return ss_select(c, false, ok, selected);
}

static const chan_ops chan_impls[] = {
    { "XChan", x_recv, x_recv2, x_nbrecv, x_nbrecv2 },
    { "SChan", s_recv, s_recv2, s_nbrecv, s_nbrecv2 },
    { "SSChan", ss_recv, ss_recv2, ss_nbrecv, ss_nbrecv2 },
};

/* A closed, drained channel: every receive returns zero at once. */
static void closed_test1(const chan_ops *ops, rt_chan *c) {
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(ops->recv(c), 0);
        bool ok = true, selected = false;
        CHECK_EQ(ops->recv2(c, &ok), 0);
        CHECK(!ok);
        CHECK_EQ(ops->nbrecv(c, &selected), 0);
        CHECK(selected);
        ok = true;
        selected = false;
        CHECK_EQ(ops->nbrecv2(c, &ok, &selected), 0);
        CHECK(!ok);
        CHECK(selected);
    }
    CHECK_EQ(rt_chan_len(c), 0);
}

static rt_chan *closed_sync(void) {
    rt_chan *c = ctu_make(sizeof(int), 0);
    rt_chan_close(c);
    return c;
}

static rt_chan *closed_async(void) {
    rt_chan *c = ctu_make(sizeof(int), 2);
    int one = 1;
    rt_chan_send(c, &one);
    rt_chan_close(c);
    CHECK_EQ(rt_chan_len(c), 1);
    CHECK_EQ(rt_chan_cap(c), 2);
    return c;
}

static void test_closedchan(void) {
    size_t nimpl = sizeof chan_impls / sizeof chan_impls[0];
    for (size_t m = 0; m < nimpl; m++) {
        rt_chan *c = closed_sync();
        closed_test1(&chan_impls[m], c);
        rt_chan_release(c);
    }
    /* The buffered value comes out first, by each kind of receive. */
    for (int how = 0; how < 4; how++) {
        for (size_t m = 0; m < nimpl; m++) {
            const chan_ops *ops = &chan_impls[m];
            rt_chan *c = closed_async();
            bool ok = false, selected = false;
            switch (how) {
            case 0: CHECK_EQ(ops->recv(c), 1); break;
            case 1: CHECK_EQ(ops->recv2(c, &ok), 1); CHECK(ok); break;
            case 2: CHECK_EQ(ops->nbrecv(c, &selected), 1); CHECK(selected); break;
            case 3:
                CHECK_EQ(ops->nbrecv2(c, &ok, &selected), 1);
                CHECK(ok);
                CHECK(selected);
                break;
            }
            closed_test1(ops, c);
            rt_chan_release(c);
        }
    }
}

/* The shouldPanic parts of closedchan.go are fatal errors here. */
static int child_nbsend_closed(void *arg) {
    (void)arg;
    rt_chan *c = closed_sync();
    int v = 1;
    rt_select_case cases[1] = { RT_SEND_CASE(c, &v) };
    rt_select(cases, 1, true);
    return 0;
}

static int child_close_twice(void *arg) {
    (void)arg;
    rt_chan *c = closed_async();
    rt_chan_close(c);
    return 0;
}

static void test_closedchan_fatal(void) {
    CHECK_CHILD_FATAL("nbsend_closed", "fatal error: send on closed channel");
    CHECK_CHILD_FATAL("close_twice", "fatal error: close of closed channel");
}

static const rt_test_child children[] = {
    { "nbsend_closed", child_nbsend_closed },
    { "close_twice", child_close_twice },
    { NULL, NULL },
};

static int run(void *arg) {
    (void)arg;
    RUN(test_sieve);
    RUN(test_async_fifo);
    RUN(test_sync_fifo);
    RUN(test_whispers);
    RUN(test_nonblock);
    RUN(test_select_go);
    RUN(test_doubleselect);
    RUN(test_closedchan);
    RUN(test_closedchan_fatal);
    return rt_test_done();
}

int main(int argc, char **argv) {
    return rt_test_main_with_children(argc, argv, run, children);
}
