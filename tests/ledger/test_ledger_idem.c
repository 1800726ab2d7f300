/*
 * test_ledger_idem.c — idempotency keys.
 *
 *   replay       same key, same body: the first outcome again, replayed,
 *                no money moves (successes and recorded failures alike)
 *   reused       same key, different body: EIDEM_REUSED
 *   in flight    same key while the first request runs: EIDEM_IN_USE
 *                (made deterministic by holding the ledger's close lock,
 *                which parks the first request after it claimed the key)
 *   concurrent   16 goroutines, one key: exactly one money movement
 *   scopes       the same key under two scopes is two keys
 *   freed        a request that failed without a record frees its key
 *   restart      records survive reopen
 *   expiry       records older than the TTL are swept and the key is free
 *   hash         the caller's own request hash is honoured
 */
#include "ledger_test.h"
#include "ledger_internal.h"   /* close_mu, to park a request in flight */

static char *dir;
static char *db;

static ledger_transfer_req keyed(const char *from, const char *to, int64_t amount,
                                 const char *scope, const char *key) {
    ledger_transfer_req r = lt_xfer(from, to, amount, "USD");
    r.idem_scope = scope;
    r.idem_key = key;
    return r;
}

static void setup(void) {
    ledger *l = lt_open(db, NULL);
    CHECK_OK(ledger_create_account(l, NULL, "alice", "USD", 10000, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "bob", "USD", 0, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "eve", "EUR", 10, NULL));
    ledger_close(l);
}

static void test_replay_and_reuse(void) {
    ledger *l = lt_open(db, NULL);
    ledger_transfer_rec t1, t2;
    bool replayed;
    ledger_transfer_req r = keyed("alice", "bob", 100, "admin", "pay-1");
    r.memo = "invoice 7";
    r.memo_len = 9;
    CHECK_OK(ledger_transfer(l, NULL, &r, &t1, &replayed));
    CHECK(!replayed);
    CHECK_OK(ledger_transfer(l, NULL, &r, &t2, &replayed));
    CHECK(replayed);
    CHECK(memcmp(&t1, &t2, sizeof t1) == 0);   /* same id, same everything */
    CHECK_OK(ledger_transfer(l, NULL, &r, &t2, &replayed));
    CHECK(replayed && strcmp(t1.id, t2.id) == 0);
    CHECK_EQ(lt_balance(l, "alice", NULL), 9900);
    CHECK_EQ(lt_balance(l, "bob", NULL), 100);
    /* any difference in the body is a different request */
    ledger_transfer_req d = r;
    d.amount = 101;
    CHECK_RC(ledger_transfer(l, NULL, &d, &t2, &replayed), LEDGER_EIDEM_REUSED);
    CHECK(!replayed);
    d = r;
    d.memo_len = 8;
    CHECK_RC(ledger_transfer(l, NULL, &d, &t2, NULL), LEDGER_EIDEM_REUSED);
    d = r;
    d.memo = NULL;
    CHECK_RC(ledger_transfer(l, NULL, &d, &t2, NULL), LEDGER_EIDEM_REUSED);
    d = r;
    d.to = "alice";
    d.from = "bob";
    CHECK_RC(ledger_transfer(l, NULL, &d, &t2, NULL), LEDGER_EIDEM_REUSED);
    CHECK_EQ(lt_balance(l, "alice", NULL), 9900);
    /* a key is scoped: another scope may use it for anything */
    d = r;
    d.idem_scope = "k0123";
    d.amount = 5;
    CHECK_OK(ledger_transfer(l, NULL, &d, &t2, &replayed));
    CHECK(!replayed && strcmp(t1.id, t2.id) != 0);
    CHECK_EQ(lt_balance(l, "bob", NULL), 105);
    /* validation errors are not recorded: they come back the same anyway */
    d = keyed("alice", "alice", 1, "admin", "pay-2");
    CHECK_RC(ledger_transfer(l, NULL, &d, &t2, &replayed), LEDGER_ESAME_ACCOUNT);
    d = keyed("alice", "bob", 1, "admin", "pay-2");
    CHECK_OK(ledger_transfer(l, NULL, &d, &t2, &replayed));
    CHECK(!replayed);
    ledger_close(l);
}

static void test_recorded_failures(void) {
    ledger *l = lt_open(db, NULL);
    bool replayed;
    ledger_transfer_rec t;
    /* insufficient funds is the ledger's decision: recorded and replayed,
     * even after the money arrived */
    ledger_transfer_req r = keyed("bob", "alice", 1000000, "admin", "too-much");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, &replayed), LEDGER_EFUNDS);
    CHECK(!replayed);
    ledger_transfer_req fund = lt_xfer("@world", "bob", 2000000, "USD");
    CHECK_OK(ledger_transfer(l, NULL, &fund, &t, NULL));
    int64_t bob = lt_balance(l, "bob", NULL);
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, &replayed), LEDGER_EFUNDS);
    CHECK(replayed);
    CHECK_EQ(lt_balance(l, "bob", NULL), bob);
    r.amount = 1;
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, &replayed), LEDGER_EIDEM_REUSED);
    /* so are not-found, currency mismatch and the balance limit */
    r = keyed("alice", "ghost", 1, "admin", "nf");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, &replayed), LEDGER_ENOTFOUND);
    CHECK(!replayed);
    CHECK_OK(ledger_create_account(l, NULL, "ghost", "USD", 0, NULL));
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, &replayed), LEDGER_ENOTFOUND);
    CHECK(replayed);
    r = keyed("alice", "eve", 1, "admin", "cur");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, &replayed), LEDGER_ECURRENCY);
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, &replayed), LEDGER_ECURRENCY);
    CHECK(replayed);
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM idempotency WHERE result != 0"), 3);
    ledger_close(l);
}

/* ------------------------------------------------------------ in flight */

typedef struct flight {
    ledger *l;
    ledger_transfer_req req;
    int rc;
    bool replayed;
    ledger_transfer_rec t;
    rt_chan *done;
} flight;

static void fly(void *arg) {
    flight *f = arg;
    f->rc = ledger_transfer(f->l, NULL, &f->req, &f->t, &f->replayed);
    rt_chan_send(f->done, NULL);
}

static void test_in_flight(void) {
    ledger *l = lt_open(db, NULL);
    int64_t alice = lt_balance(l, "alice", NULL);
    flight f;
    memset(&f, 0, sizeof f);
    f.l = l;
    f.req = keyed("alice", "bob", 7, "admin", "slow");
    CHECK(rt_chan_make(&f.done, 0, 2) == RT_OK);
    /* Hold the close lock's write side: the first request claims its key,
     * then parks before it can reach a reader or the committer. */
    /* the same key in another scope is another key: it claims too */
    flight g = f;
    g.req.idem_scope = "other";
    rt_rwmutex_lock(&l->close_mu);
    CHECK(rt_go(fly, &f) == RT_OK);
    CHECK(rt_go(fly, &g) == RT_OK);
    for (int i = 0; i < 5000; i++) {
        rt_mutex_lock(&l->mu);
        size_t claims = l->claims.count;
        rt_mutex_unlock(&l->mu);
        if (claims == 2) break;
        rt_sleep(RT_MILLISECOND);
    }
    ledger_transfer_req same = f.req, other = f.req;
    other.amount = 8;
    ledger_transfer_rec t;
    bool replayed = true;
    CHECK_RC(ledger_transfer(l, NULL, &same, &t, &replayed), LEDGER_EIDEM_IN_USE);
    CHECK(!replayed);
    CHECK_RC(ledger_transfer(l, NULL, &other, &t, &replayed), LEDGER_EIDEM_IN_USE);
    rt_rwmutex_unlock(&l->close_mu);
    rt_chan_recv(f.done, NULL);
    rt_chan_recv(f.done, NULL);
    rt_chan_release(f.done);
    CHECK_OK(f.rc);
    CHECK_OK(g.rc);
    CHECK(!f.replayed && !g.replayed);
    CHECK(strcmp(f.t.id, g.t.id) != 0);
    /* finished: now it replays */
    CHECK_OK(ledger_transfer(l, NULL, &same, &t, &replayed));
    CHECK(replayed && strcmp(t.id, f.t.id) == 0);
    CHECK_EQ(lt_balance(l, "alice", NULL), alice - 14);
    rt_mutex_lock(&l->mu);
    CHECK_EQ(l->claims.count, 0);
    rt_mutex_unlock(&l->mu);
    ledger_close(l);
}

/* ------------------------------------------------------------ concurrent */

#define NC 16

static void test_concurrent_same_key(void) {
    ledger *l = lt_open(db, NULL);
    int total_replays = 0, total_in_use = 0, rounds = 0;
    for (int round = 0; round < (int)SCALED(20); round++) {
        int64_t alice = lt_balance(l, "alice", NULL);
        char key[32];
        snprintf(key, sizeof key, "race-%d", round);
        flight f[NC];
        rt_chan *done;
        CHECK(rt_chan_make(&done, 0, NC) == RT_OK);
        for (int i = 0; i < NC; i++) {
            memset(&f[i], 0, sizeof f[i]);
            f[i].l = l;
            f[i].req = keyed("alice", "bob", 3, "admin", key);
            f[i].done = done;
            CHECK(rt_go(fly, &f[i]) == RT_OK);
        }
        for (int i = 0; i < NC; i++) rt_chan_recv(done, NULL);
        rt_chan_release(done);
        int executed = 0, replays = 0, in_use = 0;
        const char *id = NULL;
        for (int i = 0; i < NC; i++) {
            if (f[i].rc == LEDGER_OK && !f[i].replayed) executed++;
            else if (f[i].rc == LEDGER_OK) replays++;
            else if (f[i].rc == LEDGER_EIDEM_IN_USE) in_use++;
            else CHECK(!"unexpected result");
            if (f[i].rc == LEDGER_OK) {
                if (!id) id = f[i].t.id;
                CHECK(strcmp(id, f[i].t.id) == 0);
            }
        }
        CHECK_EQ(executed, 1);
        CHECK_EQ(executed + replays + in_use, NC);
        CHECK_EQ(lt_balance(l, "alice", NULL), alice - 3);
        total_replays += replays;
        total_in_use += in_use;
        rounds++;
    }
    fprintf(stderr, "       %d rounds of %d goroutines on one key: 1 execution each, %d replays, %d in use\n",
            rounds, NC, total_replays, total_in_use);
    ledger_close(l);
}

static void test_freed_on_failure(void) {
    ledger *l = lt_open(db, NULL);
    int64_t alice = lt_balance(l, "alice", NULL);
    /* a cancelled request leaves no record: the key is free */
    rt_context *ctx;
    CHECK(rt_context_with_cancel(NULL, &ctx) == RT_OK);
    rt_context_cancel(ctx);
    ledger_transfer_req r = keyed("alice", "bob", 11, "admin", "cancelled");
    CHECK_RC(ledger_transfer(l, ctx, &r, NULL, NULL), LEDGER_ECANCELED);
    rt_context_release(ctx);
    r.amount = 12;   /* even a different body is fine: nothing was recorded */
    bool replayed = true;
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, &replayed));
    CHECK(!replayed);
    CHECK_EQ(lt_balance(l, "alice", NULL), alice - 12);
    /* a storage failure too (trigger: amount 13 cannot be inserted) */
    lt_sql(db, "CREATE TRIGGER boom BEFORE INSERT ON transfers WHEN NEW.amount = 13 "
               "BEGIN SELECT RAISE(ABORT, 'injected'); END");
    r = keyed("alice", "bob", 13, "admin", "io");
    CHECK_RC(ledger_transfer(l, NULL, &r, NULL, NULL), LEDGER_EIO);
    lt_sql(db, "DROP TRIGGER boom");
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, &replayed));
    CHECK(!replayed);
    CHECK_EQ(lt_balance(l, "alice", NULL), alice - 25);
    ledger_close(l);
}

static void test_restart(void) {
    ledger *l = lt_open(db, NULL);
    ledger_transfer_req r = keyed("alice", "bob", 100, "admin", "pay-1");
    r.memo = "invoice 7";
    r.memo_len = 9;
    ledger_transfer_rec t;
    bool replayed;
    int64_t alice = lt_balance(l, "alice", NULL);
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, &replayed));   /* from test_replay_and_reuse */
    CHECK(replayed && t.amount == 100 && t.has_memo);
    r.amount = 1;
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, &replayed), LEDGER_EIDEM_REUSED);
    r = keyed("bob", "alice", 1000000, "admin", "too-much");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, &replayed), LEDGER_EFUNDS);
    CHECK(replayed);
    CHECK_EQ(lt_balance(l, "alice", NULL), alice);
    ledger_close(l);
}

static void test_caller_hash(void) {
    ledger *l = lt_open(db, NULL);
    uint8_t h1[LEDGER_HASH_BYTES], h2[LEDGER_HASH_BYTES];
    memset(h1, 1, sizeof h1);
    memset(h2, 2, sizeof h2);
    ledger_transfer_req r = keyed("alice", "bob", 1, "admin", "hashed");
    r.request_hash = h1;
    bool replayed;
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, &replayed));
    /* the fields differ but the caller says it is the same body */
    r.amount = 2;
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, &replayed));
    CHECK(replayed);
    r.amount = 1;
    r.request_hash = h2;
    CHECK_RC(ledger_transfer(l, NULL, &r, NULL, &replayed), LEDGER_EIDEM_REUSED);
    ledger_close(l);
}

static void test_expiry(void) {
    ledger_options o = { .idem_ttl_ms = 300, .idem_sweep_ms = 50 };
    ledger *l = lt_open(db, &o);
    ledger_transfer_req r = keyed("alice", "bob", 1, "admin", "short-lived");
    bool replayed;
    ledger_transfer_rec t1, t2;
    CHECK_OK(ledger_transfer(l, NULL, &r, &t1, &replayed));
    CHECK_OK(ledger_transfer(l, NULL, &r, &t2, &replayed));
    CHECK(replayed && strcmp(t1.id, t2.id) == 0);
    /* Every record written by the earlier tests is long past 300 ms: the
     * sweep at open and on the ticker deletes them all. */
    ledger_stats st;
    int64_t t0 = rt_nanotime();
    do {
        rt_sleep(20 * RT_MILLISECOND);
        ledger_get_stats(l, &st);
    } while (lt_sql_int(db, "SELECT count(*) FROM idempotency") > 0 && rt_nanotime() - t0 < 5 * RT_SECOND);
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM idempotency"), 0);
    CHECK(st.idem_swept >= 10);
    /* expired: the key is free, a new transfer happens */
    CHECK_OK(ledger_transfer(l, NULL, &r, &t2, &replayed));
    CHECK(!replayed && strcmp(t1.id, t2.id) != 0);
    r.amount = 5;
    rt_sleep(350 * RT_MILLISECOND);
    /* expired but perhaps not swept yet: still free, and replaced */
    CHECK_OK(ledger_transfer(l, NULL, &r, &t2, &replayed));
    CHECK(!replayed && t2.amount == 5);
    ledger_close(l);
}

static int run(void *arg) {
    (void)arg;
    dir = lt_tmpdir("idem");
    db = lt_path(dir, "ledger.db");
    RUN(setup);
    RUN(test_replay_and_reuse);
    RUN(test_recorded_failures);
    RUN(test_in_flight);
    RUN(test_concurrent_same_key);
    RUN(test_freed_on_failure);
    RUN(test_restart);
    RUN(test_caller_hash);
    RUN(test_expiry);
    lt_rmrf(dir);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
