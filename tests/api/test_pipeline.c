/*
 * test_pipeline.c — internal/pipeline on a real ledger (label "api"):
 *   - every outcome of one request: 201, 401 (also with a garbage body),
 *     400 (body, Idempotency-Key, duplicate header), 403, 404, 422 x3;
 *   - overload: with one auth worker blocked and a tiny queue, the next
 *     submit is 503 `overloaded` at once, and the shed counter moves;
 *   - deadline: requests stuck past their deadline are 504 and moved no
 *     money;
 *   - Idempotency-Key requests skip the balance check: a replay of a 201
 *     is still a 201 when the balance would now fail the check;
 *   - concurrency: many goroutines through the pipeline keep the ledger's
 *     invariant and every 201 is in the balances.
 *
 * Blocking a stage deterministically: ledger_authenticate takes the
 * ledger's mutex for account keys (struct ledger is visible through
 * ledger_internal.h, as in the ledger's own tests), so holding that mutex
 * parks every auth worker that is authenticating an account key.
 */
#include "ledger_test.h"
#include "ledger_internal.h"
#include "pipeline.h"

#define ADMIN "admin-secret-for-tests"

static char *g_dir;
static int g_seq;

static ledger *open_ledger(void) {
    char name[64], err[256];
    snprintf(name, sizeof name, "db%d.sqlite", g_seq++);
    char *db = lt_path(g_dir, name);
    ledger_options o = { .sync = LEDGER_SYNC_NORMAL, .admin_key = ADMIN };
    ledger *l = NULL;
    int rc = ledger_open(db, &o, &l, err, sizeof err);
    if (rc != LEDGER_OK) fprintf(stderr, "ledger_open: %s\n", err);
    CHECK_OK(rc);
    free(db);
    return l;
}

static void transfer_body(char *buf, size_t cap, const char *from, const char *to, long long amount,
                          const char *cur) {
    snprintf(buf, cap, "{\"from\":\"%s\",\"to\":\"%s\",\"amount\":%lld,\"currency\":\"%s\"}", from, to, amount, cur);
}

static void submit(pipeline *p, const char *secret, const char *body, const char *idem, pipeline_result *r) {
    pipeline_request rq = { .secret = secret, .secret_len = secret ? strlen(secret) : 0, .body = body,
                            .body_len = strlen(body), .idem_key = idem, .idem_key_len = idem ? strlen(idem) : 0,
                            .request_id = "test" };
    pipeline_submit(p, &rq, r);
}

static bool code_is(const char *got, const char *want) {
    if (want == NULL) return got == NULL;
    return got != NULL && strcmp(got, want) == 0;
}

#define CHECK_RESULT(r, st, cd)                                                              \
    do {                                                                                     \
        if ((r).status != (st) || !code_is((r).code, (cd))) {                                \
            fprintf(stderr, "%s:%d: got %d %s (%s), want %d %s\n", __FILE__, __LINE__, (r).status, \
                    (r).code ? (r).code : "-", (r).message, (st), (cd) ? (cd) : "-");        \
            _exit(1);                                                                        \
        }                                                                                    \
        atomic_fetch_add(&rt_test_checks, 1);                                                \
    } while (0)

static int64_t balance(ledger *l, const char *id) {
    ledger_account a;
    CHECK_OK(ledger_get_account(l, id, strcmp(id, "@world") == 0 ? "USD" : NULL, &a));
    return a.balance;
}

static void test_outcomes(void) {
    ledger *l = open_ledger();
    CHECK_OK(ledger_create_account(l, NULL, "alice", "USD", 1000, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "bob", "USD", 0, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "eve", "EUR", 50, NULL));
    ledger_key ak;
    CHECK_OK(ledger_create_key(l, NULL, "alice", &ak));
    pipeline *p;
    CHECK_OK(pipeline_start(l, &(pipeline_options){ .transfer_workers = 4 }, &p));
    char body[256];
    pipeline_result r;

    transfer_body(body, sizeof body, "alice", "bob", 250, "USD");
    submit(p, ADMIN, body, NULL, &r);
    CHECK_RESULT(r, 201, NULL);
    CHECK(!r.replayed && strcmp(r.rec.from, "alice") == 0 && r.rec.amount == 250 && r.rec.id[0]);
    CHECK_EQ(balance(l, "alice"), 750);
    CHECK_EQ(balance(l, "bob"), 250);
    submit(p, ak.secret, body, NULL, &r);   /* the owner of `from` */
    CHECK_RESULT(r, 201, NULL);

    /* 401 first, whatever the body */
    submit(p, NULL, "{garbage", NULL, &r);
    CHECK_RESULT(r, 401, "unauthorized");
    submit(p, "wrong", body, NULL, &r);
    CHECK_RESULT(r, 401, "unauthorized");
    submit(p, "", body, "", &r);
    CHECK_RESULT(r, 401, "unauthorized");
    /* then 400 */
    submit(p, ADMIN, "{garbage", NULL, &r);
    CHECK_RESULT(r, 400, "invalid_json");
    transfer_body(body, sizeof body, "alice", "bob", 0, "USD");
    submit(p, ADMIN, body, NULL, &r);
    CHECK_RESULT(r, 400, "invalid_field");
    CHECK(strstr(r.message, "amount") != NULL);
    transfer_body(body, sizeof body, "@world", "bob", 5, "USD");
    submit(p, ADMIN, body, NULL, &r);
    CHECK_RESULT(r, 400, "invalid_field");
    CHECK(strstr(r.message, "from") != NULL);
    transfer_body(body, sizeof body, "alice", "bob", 1, "USD");
    submit(p, ADMIN, body, "", &r);
    CHECK_RESULT(r, 400, "invalid_field");
    CHECK(strstr(r.message, "Idempotency-Key") != NULL);
    pipeline_request dup = { .secret = ADMIN, .secret_len = strlen(ADMIN), .body = body, .body_len = strlen(body),
                             .idem_key = "k", .idem_key_len = 1, .idem_key_dup = true };
    pipeline_submit(p, &dup, &r);
    CHECK_RESULT(r, 400, "invalid_field");
    /* 400 comes before 403: an account key with a bad body */
    transfer_body(body, sizeof body, "bob", "alice", -1, "USD");
    submit(p, ak.secret, body, NULL, &r);
    CHECK_RESULT(r, 400, "invalid_field");
    /* 403: alice's key moving bob's money */
    transfer_body(body, sizeof body, "bob", "alice", 1, "USD");
    submit(p, ak.secret, body, NULL, &r);
    CHECK_RESULT(r, 403, "forbidden");
    /* the balance check stage */
    transfer_body(body, sizeof body, "alice", "alice", 1, "USD");
    submit(p, ADMIN, body, NULL, &r);
    CHECK_RESULT(r, 422, "same_account");
    transfer_body(body, sizeof body, "alice", "ghost", 1, "USD");
    submit(p, ADMIN, body, NULL, &r);
    CHECK_RESULT(r, 404, "not_found");
    transfer_body(body, sizeof body, "ghost", "alice", 1, "USD");
    submit(p, ADMIN, body, NULL, &r);
    CHECK_RESULT(r, 404, "not_found");
    transfer_body(body, sizeof body, "alice", "eve", 1, "USD");
    submit(p, ADMIN, body, NULL, &r);
    CHECK_RESULT(r, 422, "currency_mismatch");
    transfer_body(body, sizeof body, "alice", "bob", 1, "EUR");
    submit(p, ADMIN, body, NULL, &r);
    CHECK_RESULT(r, 422, "currency_mismatch");
    transfer_body(body, sizeof body, "alice", "bob", 501, "USD");
    submit(p, ADMIN, body, NULL, &r);
    CHECK_RESULT(r, 422, "insufficient_funds");
    /* the same refusals from the ledger itself (keyed requests skip the check) */
    submit(p, ADMIN, body, "k-funds", &r);
    CHECK_RESULT(r, 422, "insufficient_funds");
    transfer_body(body, sizeof body, "alice", "eve", 1, "USD");
    submit(p, ADMIN, body, "k-cur", &r);
    CHECK_RESULT(r, 422, "currency_mismatch");
    transfer_body(body, sizeof body, "alice", "ghost", 1, "USD");
    submit(p, ADMIN, body, "k-ghost", &r);
    CHECK_RESULT(r, 404, "not_found");
    transfer_body(body, sizeof body, "alice", "alice", 1, "USD");
    submit(p, ADMIN, body, "k-same", &r);
    CHECK_RESULT(r, 422, "same_account");
    /* memo travels as sent */
    const char *mb = "{\"from\":\"alice\",\"to\":\"bob\",\"amount\":1,\"currency\":\"USD\",\"memo\":\"a\\u0000\\\"b\"}";
    submit(p, ADMIN, mb, NULL, &r);
    CHECK_RESULT(r, 201, NULL);
    CHECK(r.rec.has_memo && r.rec.memo_len == 4 && memcmp(r.rec.memo, "a\0\"b", 4) == 0);

    CHECK_EQ(balance(l, "alice"), 499);
    CHECK_EQ(balance(l, "bob"), 501);
    pipeline_stats st;
    pipeline_get_stats(p, &st);
    CHECK_EQ(st.submitted, 23);
    CHECK(st.shed == 0 && st.expired == 0);
    pipeline_stop(p);
    ledger_close(l);
}

static void test_idempotency_skips_check(void) {
    ledger *l = open_ledger();
    CHECK_OK(ledger_create_account(l, NULL, "alice", "USD", 100, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "bob", "USD", 0, NULL));
    pipeline *p;
    CHECK_OK(pipeline_start(l, NULL, &p));
    char body[256];
    pipeline_result r1, r2;
    transfer_body(body, sizeof body, "alice", "bob", 100, "USD");
    submit(p, ADMIN, body, "key-1", &r1);
    CHECK_RESULT(r1, 201, NULL);
    CHECK(!r1.replayed);
    /* alice is empty now: a fresh check would say 422, the replay says 201 */
    submit(p, ADMIN, body, NULL, &r2);
    CHECK_RESULT(r2, 422, "insufficient_funds");
    submit(p, ADMIN, body, "key-1", &r2);
    CHECK_RESULT(r2, 201, NULL);
    CHECK(r2.replayed);
    CHECK(strcmp(r1.rec.id, r2.rec.id) == 0);
    /* same key, other body */
    transfer_body(body, sizeof body, "alice", "bob", 99, "USD");
    submit(p, ADMIN, body, "key-1", &r2);
    CHECK_RESULT(r2, 409, "idempotency_key_reused");
    CHECK_EQ(balance(l, "alice"), 0);
    CHECK_EQ(balance(l, "bob"), 100);
    pipeline_stop(p);
    ledger_close(l);
}

/* ------------------------------------------------ overload and deadline */

typedef struct bg {
    pipeline *p;
    const char *secret;
    char body[256];
    pipeline_result r;
    rt_waitgroup *wg;
} bg;

static void bg_submit(void *arg) {
    bg *b = arg;
    submit(b->p, b->secret, b->body, NULL, &b->r);
    rt_waitgroup_done(b->wg);
}

static void wait_for_depth(pipeline *p, int64_t depth) {
    for (int i = 0; i < 5000; i++) {
        pipeline_stats st;
        pipeline_get_stats(p, &st);
        if (st.auth_queue >= depth) return;
        rt_sleep(RT_MILLISECOND);
    }
    CHECK(!"auth queue never filled");
}

/* The (single) auth worker has taken a job and parked on the ledger's
 * mutex, which the test holds: the mutex's waiter count (state >> 3, see
 * the layout at the top of internal/runtime/sync.c) is no longer 0. */
static void wait_for_worker_parked(rt_mutex *mu) {
    for (int i = 0; i < 5000; i++) {
        if ((atomic_load(&mu->state) >> 3) >= 1) return;
        rt_sleep(RT_MILLISECOND);
    }
    CHECK(!"the auth worker never took the first job");
}

static void test_overload(void) {
    ledger *l = open_ledger();
    CHECK_OK(ledger_create_account(l, NULL, "alice", "USD", 1000, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "bob", "USD", 0, NULL));
    ledger_key ak;
    CHECK_OK(ledger_create_key(l, NULL, "alice", &ak));
    pipeline *p;
    CHECK_OK(pipeline_start(l, &(pipeline_options){ .auth_workers = 1, .queue_cap = 2 }, &p));
    enum { N = 3 };
    bg jobs[N];
    rt_waitgroup wg = { 0 };
    rt_mutex_lock(&l->mu);   /* the auth worker parks in ledger_authenticate */
    for (int i = 0; i < N; i++) {
        jobs[i] = (bg){ .p = p, .secret = ak.secret, .wg = &wg };
        transfer_body(jobs[i].body, sizeof jobs[i].body, "alice", "bob", 1, "USD");
        rt_waitgroup_add(&wg, 1);
        CHECK_OK(rt_go(bg_submit, &jobs[i]));
        /* The first job must be in the worker before the others queue:
         * submitted all at once on a loaded machine, two could fill the
         * queue before the worker ran and the third would be shed. */
        if (i == 0) wait_for_worker_parked(&l->mu);
    }
    wait_for_depth(p, 2);   /* one in the worker, two queued: full */
    pipeline_result r;
    char body[256];
    transfer_body(body, sizeof body, "alice", "bob", 1, "USD");
    int64_t t0 = rt_nanotime();
    submit(p, ak.secret, body, NULL, &r);
    CHECK_RESULT(r, 503, "overloaded");
    CHECK(rt_nanotime() - t0 < TIMING_BOUND(100 * RT_MILLISECOND));   /* at once, no waiting */
    pipeline_stats st;
    pipeline_get_stats(p, &st);
    CHECK_EQ(st.shed, 1);
    CHECK_EQ(st.queue_cap, 2);
    rt_mutex_unlock(&l->mu);
    rt_waitgroup_wait(&wg);
    for (int i = 0; i < N; i++) CHECK_RESULT(jobs[i].r, 201, NULL);
    CHECK_EQ(balance(l, "alice"), 1000 - N);
    pipeline_stop(p);
    ledger_close(l);
}

static void test_deadline(void) {
    ledger *l = open_ledger();
    CHECK_OK(ledger_create_account(l, NULL, "alice", "USD", 1000, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "bob", "USD", 0, NULL));
    ledger_key ak;
    CHECK_OK(ledger_create_key(l, NULL, "alice", &ak));
    pipeline *p;
    CHECK_OK(pipeline_start(l, &(pipeline_options){ .auth_workers = 1, .deadline_ns = 50 * RT_MILLISECOND }, &p));
    enum { N = 5 };
    bg jobs[N];
    rt_waitgroup wg = { 0 };
    rt_mutex_lock(&l->mu);
    for (int i = 0; i < N; i++) {
        jobs[i] = (bg){ .p = p, .secret = ak.secret, .wg = &wg };
        transfer_body(jobs[i].body, sizeof jobs[i].body, "alice", "bob", 10, "USD");
        rt_waitgroup_add(&wg, 1);
        CHECK_OK(rt_go(bg_submit, &jobs[i]));
    }
    wait_for_depth(p, N - 1);
    rt_sleep(150 * RT_MILLISECOND);   /* every deadline passes while the stage is stuck */
    rt_mutex_unlock(&l->mu);
    rt_waitgroup_wait(&wg);
    for (int i = 0; i < N; i++) CHECK_RESULT(jobs[i].r, 504, "deadline_exceeded");
    pipeline_stats st;
    pipeline_get_stats(p, &st);
    CHECK_EQ(st.expired, N);
    /* no money moved */
    CHECK_EQ(balance(l, "alice"), 1000);
    CHECK_EQ(balance(l, "bob"), 0);
    ledger_stats ls;
    ledger_get_stats(l, &ls);
    CHECK_EQ(ls.transfers, 1);   /* alice's funding only */
    /* and the pipeline still works */
    pipeline_result r;
    submit(p, ak.secret, jobs[0].body, NULL, &r);
    CHECK_RESULT(r, 201, NULL);
    pipeline_stop(p);
    ledger_close(l);
}

/* ------------------------------------------------------- concurrency */

#define NACC 8
static const char *const acct_names[NACC] = { "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7" };

typedef struct worker_state {
    pipeline *p;
    int seed, n;
    _Atomic int64_t *delta;   /* per account, from 201s */
    _Atomic long *ok, *refused;
    rt_waitgroup *wg;
} worker_state;

static void hammer(void *arg) {
    worker_state *w = arg;
    unsigned s = (unsigned)w->seed * 2654435761u + 1;
    for (int i = 0; i < w->n; i++) {
        s = s * 1103515245u + 12345u;
        int from = (int)((s >> 8) % NACC), to = (int)((s >> 16) % NACC);
        long long amount = 1 + (long long)((s >> 4) % 300);
        char body[256], key[32];
        transfer_body(body, sizeof body, acct_names[from], acct_names[to], amount, "USD");
        snprintf(key, sizeof key, "w%d-%d", w->seed, i);
        pipeline_result r;
        submit(w->p, ADMIN, body, (i % 3 == 0) ? key : NULL, &r);
        if (r.status == 201) {
            atomic_fetch_sub(&w->delta[from], amount);
            atomic_fetch_add(&w->delta[to], amount);
            atomic_fetch_add(w->ok, 1);
        } else {
            /* the only refusals possible here */
            CHECK(r.status == 422 && (strcmp(r.code, "insufficient_funds") == 0 ||
                                      strcmp(r.code, "same_account") == 0));
            atomic_fetch_add(w->refused, 1);
        }
    }
    rt_waitgroup_done(w->wg);
}

static void test_concurrent_invariant(void) {
    ledger *l = open_ledger();
    for (int i = 0; i < NACC; i++) CHECK_OK(ledger_create_account(l, NULL, acct_names[i], "USD", 1000, NULL));
    pipeline *p;
    CHECK_OK(pipeline_start(l, NULL, &p));
    enum { W = 32 };
    int per = (int)SCALED(60);
    _Atomic int64_t delta[NACC] = { 0 };
    _Atomic long ok = 0, refused = 0;
    rt_waitgroup wg = { 0 };
    worker_state ws[W];
    int64_t t0 = rt_nanotime();
    for (int i = 0; i < W; i++) {
        ws[i] = (worker_state){ p, i, per, delta, &ok, &refused, &wg };
        rt_waitgroup_add(&wg, 1);
        CHECK_OK(rt_go(hammer, &ws[i]));
    }
    rt_waitgroup_wait(&wg);
    double secs = (double)(rt_nanotime() - t0) / 1e9;
    int64_t sum = 0;
    for (int i = 0; i < NACC; i++) {
        int64_t b = balance(l, acct_names[i]);
        CHECK(b >= 0);
        CHECK_EQ(b, 1000 + atomic_load(&delta[i]));
        sum += b;
    }
    CHECK_EQ(sum + balance(l, "@world"), 0);
    CHECK_EQ(ok + refused, (long)W * per);
    ledger_stats ls;
    ledger_get_stats(l, &ls);
    CHECK_EQ((long)ls.transfers, NACC + ok);
    fprintf(stderr, "    %ld transfers ok, %ld refused in %.2f s (%.0f/s), avg group %.1f, max %llu\n", (long)ok,
            (long)refused, secs, (double)(ok + refused) / secs, ls.avg_group, (unsigned long long)ls.max_group);
    pipeline_stop(p);
    ledger_close(l);
}

static int run(void *arg) {
    (void)arg;
    g_dir = lt_tmpdir("pipeline");
    RUN(test_outcomes);
    RUN(test_idempotency_skips_check);
    RUN(test_overload);
    RUN(test_deadline);
    RUN(test_concurrent_invariant);
    lt_rmrf(g_dir);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
