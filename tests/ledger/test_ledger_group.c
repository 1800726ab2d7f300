/*
 * test_ledger_group.c — group commit under concurrency.
 *
 *   - 64 goroutines x N transfers (with accounts and keys created in the
 *     same storm): every one acknowledged, groups larger than one observed,
 *     the committed balances summing to 0 at every instant (a checker
 *     goroutine sums them under the ledger's mutex throughout), and after a
 *     reopen every acknowledged transfer is stored and every balance is
 *     what the acknowledged transfers say.
 *   - exact funds under contention: 64 goroutines race to spend one
 *     balance; exactly as many succeed as the balance covers.
 *   - throughput: durable transfers/s with group commit and without
 *     (max_batch = 1), printed, not asserted (the disk is shared).
 */
#include "ledger_test.h"
#include "ledger_internal.h"   /* the checker reads the in-memory ledger */

#define NG 64
#define NACCT 16
#define FUND 1000000

static char *dir;

typedef struct storm {
    ledger *l;
    int per;                       /* transfers per goroutine */
    char (*ids)[LEDGER_TRANSFER_ID_LEN + 1];
    int *from, *to;
    int64_t *amount;
    _Atomic int64_t delta[NACCT + NG];
    _Atomic int failures;
    rt_waitgroup wg;
    rt_waitgroup checker_wg;
    _Atomic bool stop;
    rt_chan *start;                /* closed once every worker exists */
} storm;

typedef struct worker_arg {
    storm *s;
    int g;
} worker_arg;

static char acct_name[NACCT + NG][16];

static uint64_t next_rand(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void storm_worker(void *arg) {
    worker_arg *wa = arg;
    storm *s = wa->s;
    /* Start together, so requests pile up behind the commit in flight
     * however slowly goroutines are created (ThreadSanitizer). */
    rt_chan_recv(s->start, NULL);
    uint64_t seed = 0x9e3779b97f4a7c15ULL * (uint64_t)(wa->g + 1);
    int extra = -1;
    if (wa->g % 8 == 0) {
        /* Some workers open an account and a key mid-storm: the groups mix
         * kinds of writes. */
        extra = NACCT + wa->g;
        if (ledger_create_account(s->l, NULL, acct_name[extra], "USD", 0, NULL) != LEDGER_OK)
            atomic_fetch_add(&s->failures, 1);
        ledger_key k;
        if (ledger_create_key(s->l, NULL, acct_name[extra], &k) != LEDGER_OK)
            atomic_fetch_add(&s->failures, 1);
    }
    for (int i = 0; i < s->per; i++) {
        int idx = wa->g * s->per + i;
        int f = (int)(next_rand(&seed) % NACCT);
        int t = (int)(next_rand(&seed) % (NACCT - 1));
        if (t >= f) t++;
        if (extra >= 0 && i % 2 == 1) t = extra;
        int64_t amount = 1 + (int64_t)(next_rand(&seed) % 100);
        ledger_transfer_req r = lt_xfer(acct_name[f], acct_name[t], amount, "USD");
        ledger_transfer_rec rec;
        int rc = ledger_transfer(s->l, NULL, &r, &rec, NULL);
        if (rc != LEDGER_OK) {
            fprintf(stderr, "storm transfer: %s\n", ledger_strerror(rc));
            atomic_fetch_add(&s->failures, 1);
            continue;
        }
        memcpy(s->ids[idx], rec.id, sizeof s->ids[idx]);
        s->from[idx] = f;
        s->to[idx] = t;
        s->amount[idx] = amount;
        atomic_fetch_sub(&s->delta[f], amount);
        atomic_fetch_add(&s->delta[t], amount);
    }
    rt_waitgroup_done(&s->wg);
}

/* Sums the committed balances under the ledger's mutex, over and over:
 * they must add up to 0 at every instant, whatever groups are in flight. */
static _Atomic long checker_rounds;
static void checker(void *arg) {
    storm *s = arg;
    while (!atomic_load(&s->stop)) {
        ledger *l = s->l;
        rt_mutex_lock(&l->mu);
        int64_t sum = 0;
        for (size_t i = 0; i < l->accounts.nbuckets; i++)
            for (hent *e = l->accounts.buckets[i]; e; e = e->next)
                sum += container_of(e, lacct, node)->balance;
        rt_mutex_unlock(&l->mu);
        CHECK_EQ(sum, 0);
        atomic_fetch_add(&checker_rounds, 1);
        rt_sleep(100 * RT_MICROSECOND);
    }
    rt_waitgroup_done(&s->checker_wg);
}

static void test_storm(void) {
    char *p = lt_path(dir, "storm.db");
    ledger *l = lt_open(p, NULL);
    for (int i = 0; i < NACCT + NG; i++) snprintf(acct_name[i], sizeof acct_name[i], "acct%02d", i);
    for (int i = 0; i < NACCT; i++) CHECK_OK(ledger_create_account(l, NULL, acct_name[i], "USD", FUND, NULL));

    storm *s = calloc(1, sizeof *s);
    s->l = l;
    s->per = (int)SCALED(40);
    int total = NG * s->per;
    s->ids = calloc((size_t)total, sizeof *s->ids);
    s->from = calloc((size_t)total, sizeof *s->from);
    s->to = calloc((size_t)total, sizeof *s->to);
    s->amount = calloc((size_t)total, sizeof *s->amount);
    ledger_stats before;
    ledger_get_stats(l, &before);

    worker_arg wa[NG];
    CHECK(rt_chan_make(&s->start, 0, 0) == RT_OK);
    rt_waitgroup_add(&s->checker_wg, 1);
    CHECK(rt_go(checker, s) == RT_OK);
    int64_t t0 = rt_nanotime();
    rt_waitgroup_add(&s->wg, NG);
    for (int g = 0; g < NG; g++) {
        wa[g] = (worker_arg){ s, g };
        CHECK(rt_go(storm_worker, &wa[g]) == RT_OK);
    }
    rt_chan_close(s->start);
    rt_waitgroup_wait(&s->wg);
    rt_chan_release(s->start);
    double secs = (double)(rt_nanotime() - t0) / 1e9;
    atomic_store(&s->stop, true);
    rt_waitgroup_wait(&s->checker_wg);
    CHECK_EQ(atomic_load(&s->failures), 0);
    CHECK(atomic_load(&checker_rounds) > 0);

    ledger_stats st;
    ledger_get_stats(l, &st);
    CHECK(st.max_group > 1);
    CHECK(st.commits - before.commits < (uint64_t)total);
    CHECK_EQ(st.transfers - before.transfers, total);
    CHECK_EQ(st.commit_failures, 0);
    fprintf(stderr, "       %d transfers by %d goroutines in %.2f s: %llu commits, group avg %.1f max %llu, "
                    "commit (fsync) avg %.2f ms max %.2f ms\n",
            total, NG, secs, (unsigned long long)(st.commits - before.commits), st.avg_group,
            (unsigned long long)st.max_group, st.commit_ns_avg / 1e6, (double)st.commit_ns_max / 1e6);
    for (int i = 0; i < NACCT + NG; i++) {
        if (i >= NACCT && (i - NACCT) % 8 != 0) continue;
        CHECK_EQ(lt_balance(l, acct_name[i], NULL), (i < NACCT ? FUND : 0) + atomic_load(&s->delta[i]));
    }
    ledger_close(l);

    /* Reopen: the invariant is verified by ledger_open; every acknowledged
     * transfer is there as acknowledged; balances match. */
    l = lt_open(p, NULL);
    for (int i = 0; i < total; i++) {
        ledger_transfer_rec t;
        CHECK_OK(ledger_get_transfer(l, NULL, s->ids[i], &t));
        CHECK(strcmp(t.from, acct_name[s->from[i]]) == 0);
        CHECK(strcmp(t.to, acct_name[s->to[i]]) == 0);
        CHECK_EQ(t.amount, s->amount[i]);
    }
    for (int i = 0; i < NACCT + NG; i++) {
        if (i >= NACCT && (i - NACCT) % 8 != 0) continue;
        CHECK_EQ(lt_balance(l, acct_name[i], NULL), (i < NACCT ? FUND : 0) + atomic_load(&s->delta[i]));
    }
    CHECK_EQ(lt_sql_int(p, "SELECT count(*) FROM transfers"), total + NACCT);
    CHECK_EQ(lt_sql_int(p, "SELECT count(*) FROM api_keys"), NG / 8);
    ledger_close(l);
    free(s->ids);
    free(s->from);
    free(s->to);
    free(s->amount);
    free(s);
    free(p);
}

/* ------------------------------------------------------------ exact funds */

typedef struct race {
    ledger *l;
    _Atomic int ok, funds, other;
    rt_waitgroup wg;
} race;

static void spender(void *arg) {
    race *r = arg;
    ledger_transfer_req x = lt_xfer("pot", "sink", 100, "USD");
    int rc = ledger_transfer(r->l, NULL, &x, NULL, NULL);
    if (rc == LEDGER_OK) atomic_fetch_add(&r->ok, 1);
    else if (rc == LEDGER_EFUNDS) atomic_fetch_add(&r->funds, 1);
    else atomic_fetch_add(&r->other, 1);
    rt_waitgroup_done(&r->wg);
}

static void test_exact_funds(void) {
    char *p = lt_path(dir, "race.db");
    ledger *l = lt_open(p, NULL);
    CHECK_OK(ledger_create_account(l, NULL, "pot", "USD", 1050, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "sink", "USD", 0, NULL));
    for (int round = 0; round < 3; round++) {
        race r;
        memset(&r, 0, sizeof r);
        r.l = l;
        rt_waitgroup_add(&r.wg, NG);
        for (int i = 0; i < NG; i++) CHECK(rt_go(spender, &r) == RT_OK);
        rt_waitgroup_wait(&r.wg);
        CHECK_EQ(atomic_load(&r.ok), round == 0 ? 10 : 0);
        CHECK_EQ(atomic_load(&r.funds), round == 0 ? NG - 10 : NG);
        CHECK_EQ(atomic_load(&r.other), 0);
        CHECK_EQ(lt_balance(l, "pot", NULL), 50);
        CHECK_EQ(lt_balance(l, "sink", NULL), 1000);
    }
    ledger_close(l);
    free(p);
}

/* ------------------------------------------------------------- throughput */

#define LAT_BUCKETS 2000   /* 0.1 ms each: up to 200 ms, then one overflow bucket */

typedef struct bench {
    ledger *l;
    int64_t deadline;
    _Atomic long done;
    _Atomic long errors;
    bool keyed;            /* every transfer with a fresh idempotency key */
    rt_waitgroup wg;
    _Atomic long lat[LAT_BUCKETS + 1];   /* per-transfer latency, 0.1 ms buckets */
} bench;

/* The latency below which a fraction q of b's transfers completed, ms. */
static double lat_quantile(bench *b, double q) {
    long total = 0, seen = 0;
    for (int i = 0; i <= LAT_BUCKETS; i++) total += atomic_load(&b->lat[i]);
    for (int i = 0; i <= LAT_BUCKETS; i++) {
        seen += atomic_load(&b->lat[i]);
        if ((double)seen >= q * (double)total) return (i + 1) * 0.1;
    }
    return LAT_BUCKETS * 0.1;
}

static void bench_worker(void *arg) {
    bench *b = arg;
    static _Atomic int next_id;
    int me = atomic_fetch_add(&next_id, 1);
    char from[16], to[16];
    snprintf(from, sizeof from, "b%d", me % 8);
    snprintf(to, sizeof to, "b%d", (me + 1) % 8);
    long n = 0;
    while (rt_nanotime() < b->deadline) {
        ledger_transfer_req r = lt_xfer(from, to, 1, "USD");
        char key[48];
        if (b->keyed) {
            snprintf(key, sizeof key, "w%d-%ld", me, n++);
            r.idem_scope = "bench";
            r.idem_key = key;
        }
        int64_t t0 = rt_nanotime();
        if (ledger_transfer(b->l, NULL, &r, NULL, NULL) == LEDGER_OK) atomic_fetch_add(&b->done, 1);
        else atomic_fetch_add(&b->errors, 1);
        int64_t us100 = (rt_nanotime() - t0) / 100000;
        atomic_fetch_add(&b->lat[us100 < LAT_BUCKETS ? us100 : LAT_BUCKETS], 1);
    }
    rt_waitgroup_done(&b->wg);
}

static double measure(const char *name, int max_batch, bool keyed, int goroutines, int64_t duration,
                      ledger_stats *st, double *p50, double *p99) {
    char *p = lt_path(dir, name);
    ledger_options o = { .max_batch = max_batch };
    ledger *l = lt_open(p, &o);
    for (int i = 0; i < 8; i++) {
        char id[16];
        snprintf(id, sizeof id, "b%d", i);
        CHECK_OK(ledger_create_account(l, NULL, id, "USD", 1000000000, NULL));
    }
    ledger_stats before;
    ledger_get_stats(l, &before);
    bench *bp = calloc(1, sizeof *bp);   /* the histogram is too big for a stack */
    CHECK(bp != NULL);
#define b (*bp)
    b.l = l;
    b.keyed = keyed;
    int64_t t0 = rt_nanotime();
    b.deadline = t0 + duration;
    rt_waitgroup_add(&b.wg, goroutines);
    for (int i = 0; i < goroutines; i++) CHECK(rt_go(bench_worker, &b) == RT_OK);
    rt_waitgroup_wait(&b.wg);
    double secs = (double)(rt_nanotime() - t0) / 1e9;
    CHECK_EQ(atomic_load(&b.errors), 0);
    CHECK(atomic_load(&b.done) > 0);
    ledger_get_stats(l, st);
    st->commits -= before.commits;
    st->avg_group = st->commits ? (double)(st->requests - before.requests) / (double)st->commits : 0;
    ledger_close(l);
    free(p);
    *p50 = lat_quantile(bp, 0.50);
    *p99 = lat_quantile(bp, 0.99);
    double rate = (double)atomic_load(&b.done) / secs;
#undef b
    free(bp);
    return rate;
}

static void test_throughput(void) {
    int64_t duration = SCALED(1000) * RT_MILLISECOND;
    if (duration < 300 * RT_MILLISECOND) duration = 300 * RT_MILLISECOND;
    ledger_stats g, s1, k;
    double q50[3], q99[3];
    double single = measure("nogroup.db", 1, false, NG, duration, &s1, &q50[0], &q99[0]);
    double group = measure("group.db", 0, false, NG, duration, &g, &q50[1], &q99[1]);
    double keyed = measure("keyed.db", 0, true, NG, duration, &k, &q50[2], &q99[2]);
    fprintf(stderr, "       durable transfers/s, %d goroutines, synchronous=FULL:\n"
                    "         without group commit (max_batch 1): %8.0f/s  (group 1.0, commit avg %.2f ms)\n"
                    "         with group commit (max_batch 256):  %8.0f/s  (group avg %.1f max %llu, commit avg %.2f ms)\n"
                    "         speed-up x%.1f\n",
            NG, single, s1.commit_ns_avg / 1e6, group, g.avg_group, (unsigned long long)g.max_group,
            g.commit_ns_avg / 1e6, group / single);
    fprintf(stderr, "         group commit, a fresh idempotency key each: %8.0f/s  (group avg %.1f, commit avg %.2f ms)\n",
            keyed, k.avg_group, k.commit_ns_avg / 1e6);
    fprintf(stderr, "         transfer latency p50/p99 ms: max_batch 1 %.1f/%.1f, group %.1f/%.1f, keyed %.1f/%.1f\n",
            q50[0], q99[0], q50[1], q99[1], q50[2], q99[2]);
    CHECK_EQ(s1.max_group, 1);
}

static int run(void *arg) {
    (void)arg;
    dir = lt_tmpdir("group");
    RUN(test_storm);
    RUN(test_exact_funds);
    RUN(test_throughput);
    lt_rmrf(dir);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
