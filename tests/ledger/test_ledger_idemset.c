/*
 * test_ledger_idemset.c — the in-memory index of recorded idempotency keys
 * (internal/ledger/idemset.c: fingerprint -> rowid) on its own, and the
 * ledger's use of it with the append-only idempotency table.
 *
 * The set (raw fingerprints, so probe sequences are chosen by the test)
 *   collisions   a deliberately tiny table (8 slots) with fingerprints that
 *                share a home slot, clusters that wrap round the end,
 *                deletion from the middle of a cluster (backward shift)
 *   duplicates   equal fingerprints keep separate entries, all candidates
 *                (filtered by age); fingerprint 0 (the empty marker) works
 *   expire       expiry over wrapping clusters, then shrinking
 *   model        many random operations (clustered and uniform
 *                fingerprints) checked against a plain array; 100k keys
 *                grown from 8 slots, looked up, half removed, expired
 *   lossy        a lossy set says "maybe" for everything
 *
 * The ledger
 *   fresh        a fresh key does no SQLite lookup (idem_lookups_skipped),
 *                its replay does one; recorded failures are remembered too
 *   rollback     a group that failed in SQLite adds no fingerprint (its
 *                key is still free and skips the lookup)
 *   collision    a fingerprint present for a key never recorded: the
 *                lookup runs, finds nothing, the transfer executes once
 *   reopen       the filter is reloaded: replays after reopen, idem_keys
 *                equals the stored rows
 *   race         16 goroutines on one fresh key, many rounds: money moves
 *                exactly once; only replays looked the key up
 *   expiry       small TTL: swept records leave the filter, the key is new
 *   forced collision  every key has one fingerprint (test hook): each key
 *                executes once and replays its own outcome, also with more
 *                colliding keys than IDEM_CANDIDATES_MAX (the scan)
 *   reuse+sweep  a key reused after expiry appends a row and replays the
 *                new outcome; the sweep deletes only the expired row;
 *                reopen after the sweep
 *   schema       no index on the idempotency table; the sweep's plans walk
 *                the rowid b-tree
 *   migrate v1   a version 1 table is migrated at open, replays unchanged;
 *                an unknown version is refused
 */
#include "ledger_test.h"
#include "ledger_internal.h"

static char *dir;

/* ------------------------------------------------------------- the set */

/* A fingerprint whose home slot in a table of cap slots is h. */
static uint64_t fp_at(size_t h, uint64_t tag) { return (tag << 20) | h; }

/* The rowid the set tests give a fingerprint's (single) entry. */
static int64_t rid(uint64_t fp) { return (int64_t)(fp >> 1) + 1; }

static void test_set_collisions(void) {
    idemset s;
    CHECK_OK(idemset_init(&s, 0));
    CHECK_EQ(s.cap, 8);
    /* five fingerprints with home 6: the cluster is 6, 7, 0, 1, 2 */
    uint64_t f[5];
    for (int i = 0; i < 5; i++) {
        f[i] = fp_at(6, (uint64_t)i + 1);
        CHECK(!idemset_maybe_contains(&s, f[i]));
        CHECK_OK(idemset_add(&s, f[i], rid(f[i]), 100 + i));
    }
    CHECK_EQ(s.cap, 8);   /* 5 <= 0.7 * 8 */
    CHECK_EQ(s.count, 5);
    CHECK(s.slots[6].fp == f[0] && s.slots[7].fp == f[1] && s.slots[0].fp == f[2]);
    /* a fingerprint with home 0 goes after the wrapped cluster */
    uint64_t z = fp_at(0, 99);
    CHECK(!idemset_maybe_contains(&s, z));   /* probes 0, 1, 2, ends at 3 */
    /* delete in the middle: the rest of the cluster shifts back over the
     * wrap and stays reachable */
    CHECK(idemset_remove(&s, f[1], rid(f[1])));
    CHECK(!idemset_remove(&s, f[1], rid(f[1])));
    CHECK(!idemset_maybe_contains(&s, f[1]));
    for (int i = 0; i < 5; i++)
        if (i != 1) CHECK(idemset_maybe_contains(&s, f[i]));
    CHECK(s.slots[7].fp == f[2] && s.slots[0].fp == f[3] && s.slots[1].fp == f[4] && s.slots[2].fp == 0);
    /* an entry at its home inside someone else's cluster must not move */
    CHECK_OK(idemset_add(&s, fp_at(2, 7), rid(fp_at(2, 7)), 1));    /* home 2, slot 2 */
    CHECK(idemset_remove(&s, f[2], rid(f[2])));              /* 7 emptied; f3, f4 move back */
    CHECK(s.slots[2].fp == fp_at(2, 7));
    CHECK(idemset_maybe_contains(&s, f[3]) && idemset_maybe_contains(&s, f[4]));
    CHECK(idemset_maybe_contains(&s, fp_at(2, 7)));
    CHECK_EQ(s.count, 4);
    /* growing rehashes everything (home slots change with the mask) */
    for (int i = 0; i < 40; i++) CHECK_OK(idemset_add(&s, fp_at(6, 1000 + (uint64_t)i), rid(fp_at(6, 1000 + (uint64_t)i)), 5));
    CHECK(s.cap >= 64);
    CHECK_EQ(s.count, 44);
    CHECK(idemset_maybe_contains(&s, f[0]) && idemset_maybe_contains(&s, f[4]));
    CHECK(idemset_maybe_contains(&s, fp_at(6, 1039)) && !idemset_maybe_contains(&s, f[1]));
    idemset_destroy(&s);
}

static void test_set_duplicates_and_zero(void) {
    idemset s;
    CHECK_OK(idemset_init(&s, 0));
    /* equal fingerprints keep separate entries (a collision, or a key
     * recorded again after expiry): every rowid is a candidate */
    CHECK_OK(idemset_add(&s, 42, 7, 1000));
    CHECK_OK(idemset_add(&s, 42, 9, 500));
    CHECK_OK(idemset_add(&s, fp_at(42 & 7, 5), 11, 2000));   /* same home, other fp */
    CHECK_EQ(s.count, 3);
    int64_t c[4];
    CHECK_EQ(idemset_candidates(&s, 42, 0, c, 4), 2);
    CHECK(c[0] == 7 && c[1] == 9);
    CHECK_EQ(idemset_candidates(&s, 42, 600, c, 4), 1);     /* the 500 one is expired */
    CHECK_EQ(c[0], 7);
    CHECK_EQ(idemset_candidates(&s, 42, 0, c, 1), 2);       /* more than max: still counted */
    CHECK_EQ(idemset_candidates(&s, 43, 0, c, 4), 0);
    CHECK_EQ(idemset_expire(&s, 1000), 1);                  /* only (42, 9, 500) */
    CHECK(idemset_maybe_contains(&s, 42));
    CHECK_EQ(idemset_candidates(&s, 42, 0, c, 4), 1);
    CHECK_EQ(c[0], 7);
    CHECK(!idemset_remove(&s, 42, 9));
    CHECK(idemset_remove(&s, 42, 7));
    CHECK(!idemset_maybe_contains(&s, 42));
    CHECK_EQ(idemset_candidates(&s, fp_at(42 & 7, 5), 0, c, 4), 1);
    CHECK_EQ(c[0], 11);
    CHECK(idemset_remove(&s, fp_at(42 & 7, 5), 11));
    /* 0 is the empty marker: it is stored as 1 */
    CHECK(!idemset_maybe_contains(&s, 0));
    CHECK_OK(idemset_add(&s, 0, 3, 1));
    CHECK(idemset_maybe_contains(&s, 0) && idemset_maybe_contains(&s, 1));
    CHECK(idemset_remove(&s, 1, 3));
    CHECK(!idemset_maybe_contains(&s, 0));
    CHECK_EQ(s.count, 0);
    /* the fingerprint is keyed: the same bytes, another set, another value
     * (2^-64 odds of a false failure) */
    idemset t;
    CHECK_OK(idemset_init(&t, 0));
    uint64_t a = idemset_fingerprint(&s, "admin\x1fk", 7), b = idemset_fingerprint(&t, "admin\x1fk", 7);
    CHECK(a != b);
    CHECK(a == idemset_fingerprint(&s, "admin\x1fk", 7));
    CHECK(a != idemset_fingerprint(&s, "admin\x1fj", 7));
    idemset_destroy(&t);
    idemset_destroy(&s);
}

static void test_set_expire(void) {
    idemset s;
    CHECK_OK(idemset_init(&s, 0));
    /* cap 8: home 6 cluster wrapping to 0 and 1, alternating old and new */
    uint64_t f[5];
    for (int i = 0; i < 5; i++) {
        f[i] = fp_at(6, (uint64_t)i + 1);
        CHECK_OK(idemset_add(&s, f[i], rid(f[i]), i % 2 ? 10 : 100));   /* f1, f3 old */
    }
    CHECK_EQ(idemset_expire(&s, 50), 2);
    CHECK_EQ(s.count, 3);
    CHECK(idemset_maybe_contains(&s, f[0]) && idemset_maybe_contains(&s, f[2]) && idemset_maybe_contains(&s, f[4]));
    CHECK(!idemset_maybe_contains(&s, f[1]) && !idemset_maybe_contains(&s, f[3]));
    /* big then small: most entries go, the table shrinks, the rest stay */
    for (uint64_t i = 0; i < 10000; i++) CHECK_OK(idemset_add(&s, (i + 1) * 0x9e3779b97f4a7c15ULL, rid((i + 1) * 0x9e3779b97f4a7c15ULL), (int64_t)(i % 100)));
    size_t big = s.cap;
    CHECK(big >= 16384);
    CHECK_EQ(idemset_expire(&s, 99), 9900);   /* created 0..98 go: 99 per 100 */
    CHECK_EQ(s.count, 3 + 100);
    CHECK(s.cap < big / 8);
    for (uint64_t i = 0; i < 10000; i++)
        CHECK(idemset_maybe_contains(&s, (i + 1) * 0x9e3779b97f4a7c15ULL) == (i % 100 == 99));
    CHECK(idemset_maybe_contains(&s, f[0]) && idemset_maybe_contains(&s, f[4]));
    CHECK_EQ(idemset_expire(&s, 1000), 103);
    CHECK_EQ(s.count, 0);
    CHECK_EQ(idemset_expire(&s, 1000), 0);
    idemset_destroy(&s);
}

/* The model: a plain array of (fp, created_ms), compared after each batch. */
typedef struct model {
    uint64_t *fp;
    int64_t *ms;
    size_t n;
} model;

static ssize_t model_find(const model *m, uint64_t fp) {
    for (size_t i = 0; i < m->n; i++)
        if (m->fp[i] == fp) return (ssize_t)i;
    return -1;
}

static void model_check(const idemset *s, const model *m, uint64_t (*gen)(uint64_t), uint64_t space) {
    CHECK_EQ(s->count, m->n);
    for (size_t i = 0; i < m->n; i++) CHECK(idemset_maybe_contains(s, m->fp[i]));
    for (uint64_t x = 0; x < space; x++) {
        uint64_t fp = gen(x);
        CHECK(idemset_maybe_contains(s, fp) == (model_find(m, fp) >= 0));
    }
}

/* Clustered: the low 16 bits take 4 values (homes 0, 2, 4, 6 at any size),
 * so clusters merge and wrap. */
static uint64_t gen_clustered(uint64_t x) { return ((x + 1) << 16) | ((x % 4) * 2); }
static uint64_t gen_uniform(uint64_t x) { return (x + 1) * 0x9e3779b97f4a7c15ULL; }

static void run_model(uint64_t (*gen)(uint64_t), uint64_t space, int steps, int check_every) {
    idemset s;
    CHECK_OK(idemset_init(&s, 0));
    model m = { calloc(space, sizeof(uint64_t)), calloc(space, sizeof(int64_t)), 0 };
    uint32_t seed = 12345;
    int64_t now = 0;
    for (int step = 0; step < steps; step++) {
        seed = seed * 1103515245u + 12345u;
        uint32_t r = seed >> 8;
        uint64_t fp = gen(r % space);
        ssize_t at = model_find(&m, fp);
        now++;
        switch (r % 10) {
        case 0: case 1: case 2:   /* remove */
            CHECK(idemset_remove(&s, fp, rid(fp)) == (at >= 0));
            if (at >= 0) {
                m.fp[at] = m.fp[m.n - 1];
                m.ms[at] = m.ms[m.n - 1];
                m.n--;
            }
            break;
        case 3:   /* expire what is older than a while ago */
            if (step % 7 == 0) {
                int64_t cut = now - (int64_t)space;
                size_t want = 0;
                for (size_t i = 0; i < m.n;) {
                    if (m.ms[i] < cut) {
                        m.fp[i] = m.fp[m.n - 1];
                        m.ms[i] = m.ms[m.n - 1];
                        m.n--;
                        want++;
                    } else {
                        i++;
                    }
                }
                CHECK_EQ(idemset_expire(&s, cut), want);
            }
            break;
        default:   /* add / refresh (a refresh replaces the entry) */
            if (at >= 0) CHECK(idemset_remove(&s, fp, rid(fp)));
            CHECK_OK(idemset_add(&s, fp, rid(fp), now));
            if (at >= 0) m.ms[at] = now;
            else {
                m.fp[m.n] = fp;
                m.ms[m.n] = now;
                m.n++;
            }
        }
        if (step % check_every == 0) model_check(&s, &m, gen, space);
    }
    model_check(&s, &m, gen, space);
    CHECK(!s.lossy);
    free(m.fp);
    free(m.ms);
    idemset_destroy(&s);
}

static void test_set_model(void) {
    run_model(gen_clustered, 256, (int)SCALED(40000), 97);
    run_model(gen_uniform, 2048, (int)SCALED(60000), 1499);
    /* many keys: growth from 8 slots, then all removed */
    idemset s;
    CHECK_OK(idemset_init(&s, 0));
    size_t n = (size_t)SCALED(100000);
    for (size_t i = 0; i < n; i++) CHECK_OK(idemset_add(&s, gen_uniform(i), rid(gen_uniform(i)), (int64_t)i));
    CHECK_EQ(s.count, n);
    CHECK(s.count * 10 <= s.cap * 7 && s.count * 10 > s.cap * 7 / 2);
    for (size_t i = 0; i < n; i++) CHECK(idemset_maybe_contains(&s, gen_uniform(i)));
    size_t fp = 0;
    for (size_t i = n; i < 2 * n; i++) fp += idemset_maybe_contains(&s, gen_uniform(i));
    CHECK_EQ(fp, 0);
    for (size_t i = 0; i < n; i += 2) CHECK(idemset_remove(&s, gen_uniform(i), rid(gen_uniform(i))));
    for (size_t i = 0; i < n; i++) CHECK(idemset_maybe_contains(&s, gen_uniform(i)) == (i % 2 == 1));
    CHECK_EQ(idemset_expire(&s, (int64_t)n), n / 2);
    CHECK_EQ(s.count, 0);
    idemset_destroy(&s);
}

static void test_set_lossy(void) {
    idemset s;
    CHECK_OK(idemset_init(&s, 0));
    CHECK(!idemset_maybe_contains(&s, 77));
    s.lossy = true;
    CHECK(idemset_maybe_contains(&s, 77));
    idemset_destroy(&s);
}

/* ------------------------------------------------------------- the ledger */

static ledger_transfer_req keyed(const char *from, const char *to, int64_t amount, const char *key) {
    ledger_transfer_req r = lt_xfer(from, to, amount, "USD");
    r.idem_scope = "admin";
    r.idem_key = key;
    return r;
}

static ledger_stats stats(ledger *l) {
    ledger_stats st;
    ledger_get_stats(l, &st);
    return st;
}

static void setup(ledger *l) {
    CHECK_OK(ledger_create_account(l, NULL, "alice", "USD", 1000000, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "bob", "USD", 0, NULL));
}

static void test_fresh_skips_lookup(void) {
    char *db = lt_path(dir, "fresh.db");
    ledger *l = lt_open(db, NULL);
    setup(l);
    ledger_stats s0 = stats(l);
    CHECK_EQ(s0.idem_keys, 0);
    ledger_transfer_rec t1, t2;
    bool replayed = true;
    ledger_transfer_req r = keyed("alice", "bob", 10, "fresh-1");
    CHECK_OK(ledger_transfer(l, NULL, &r, &t1, &replayed));
    CHECK(!replayed);
    ledger_stats s1 = stats(l);
    CHECK_EQ(s1.idem_lookups, s0.idem_lookups);             /* no SQLite lookup */
    CHECK_EQ(s1.idem_lookups_skipped, s0.idem_lookups_skipped + 1);
    CHECK_EQ(s1.idem_keys, 1);
    /* the replay looks it up, finds it, moves nothing */
    CHECK_OK(ledger_transfer(l, NULL, &r, &t2, &replayed));
    CHECK(replayed && memcmp(&t1, &t2, sizeof t1) == 0);
    ledger_stats s2 = stats(l);
    CHECK_EQ(s2.idem_lookups, s1.idem_lookups + 1);
    CHECK_EQ(s2.idem_keys, 1);
    r.amount = 11;
    CHECK_RC(ledger_transfer(l, NULL, &r, &t2, &replayed), LEDGER_EIDEM_REUSED);
    CHECK_EQ(lt_balance(l, "bob", NULL), 10);
    /* a recorded failure is remembered too */
    ledger_transfer_req f = keyed("bob", "alice", 1000, "broke");
    CHECK_RC(ledger_transfer(l, NULL, &f, NULL, &replayed), LEDGER_EFUNDS);
    CHECK(!replayed);
    CHECK_EQ(stats(l).idem_keys, 2);
    CHECK_RC(ledger_transfer(l, NULL, &f, NULL, &replayed), LEDGER_EFUNDS);
    CHECK(replayed);
    /* unkeyed transfers do not touch the filter or the counters */
    ledger_transfer_req u = lt_xfer("alice", "bob", 1, "USD");
    CHECK_OK(ledger_transfer(l, NULL, &u, NULL, NULL));
    ledger_stats s3 = stats(l);
    CHECK_EQ(s3.idem_keys, 2);
    CHECK_EQ(s3.idem_lookups + s3.idem_lookups_skipped, 5);
    CHECK_EQ(s3.idem_lookups_skipped, 2);
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM idempotency"), 2);
    ledger_close(l);

    /* reopen: the filter is reloaded from the table */
    l = lt_open(db, NULL);
    CHECK_EQ(stats(l).idem_keys, 2);
    r.amount = 10;
    CHECK_OK(ledger_transfer(l, NULL, &r, &t2, &replayed));
    CHECK(replayed && strcmp(t1.id, t2.id) == 0);
    CHECK_RC(ledger_transfer(l, NULL, &f, NULL, &replayed), LEDGER_EFUNDS);
    CHECK(replayed);
    ledger_stats s4 = stats(l);
    CHECK_EQ(s4.idem_lookups, 2);
    CHECK_EQ(s4.idem_lookups_skipped, 0);
    ledger_transfer_req n = keyed("alice", "bob", 5, "fresh-2");
    CHECK_OK(ledger_transfer(l, NULL, &n, NULL, &replayed));
    CHECK(!replayed);
    CHECK_EQ(stats(l).idem_lookups_skipped, 1);
    CHECK_EQ(stats(l).idem_keys, 3);
    CHECK_EQ(lt_balance(l, "bob", NULL), 16);
    ledger_close(l);
    free(db);
}

static void test_rollback_adds_nothing(void) {
    char *db = lt_path(dir, "rollback.db");
    ledger *l = lt_open(db, NULL);
    setup(l);
    lt_sql(db, "CREATE TRIGGER boom BEFORE INSERT ON transfers WHEN NEW.amount = 13 "
               "BEGIN SELECT RAISE(ABORT, 'injected'); END");
    ledger_transfer_req r = keyed("alice", "bob", 13, "io");
    CHECK_RC(ledger_transfer(l, NULL, &r, NULL, NULL), LEDGER_EIO);
    CHECK_EQ(stats(l).idem_keys, 0);
    lt_sql(db, "DROP TRIGGER boom");
    ledger_stats s0 = stats(l);
    bool replayed = true;
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, &replayed));
    CHECK(!replayed);
    ledger_stats s1 = stats(l);
    CHECK_EQ(s1.idem_lookups_skipped, s0.idem_lookups_skipped + 1);
    CHECK_EQ(s1.idem_lookups, s0.idem_lookups);
    CHECK_EQ(s1.idem_keys, 1);
    CHECK_EQ(lt_balance(l, "bob", NULL), 13);
    ledger_close(l);
    free(db);
}

static void test_false_positive(void) {
    char *db = lt_path(dir, "collision.db");
    ledger *l = lt_open(db, NULL);
    setup(l);
    /* What a 64-bit collision looks like to the ledger: the key's
     * fingerprint is present although the key was never recorded. */
    const char claim[] = "admin\x1f" "never-seen";
    rt_mutex_lock(&l->mu);
    CHECK_OK(idemset_add(&l->idem, idemset_fingerprint(&l->idem, claim, sizeof claim - 1), 999999,
                         ledger_now_ms()));
    rt_mutex_unlock(&l->mu);
    ledger_stats s0 = stats(l);
    bool replayed = true;
    ledger_transfer_rec t;
    ledger_transfer_req r = keyed("alice", "bob", 7, "never-seen");
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, &replayed));
    CHECK(!replayed);
    CHECK_EQ(stats(l).idem_lookups, s0.idem_lookups + 1);   /* looked up, not found */
    CHECK_EQ(lt_balance(l, "bob", NULL), 7);
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, &replayed));
    CHECK(replayed);
    CHECK_EQ(lt_balance(l, "bob", NULL), 7);
    CHECK_EQ(stats(l).idem_keys, 2);   /* the record's entry beside the injected one */
    /* lossy (as after a failed growth): every key is looked up, and
     * outcomes are unchanged */
    rt_mutex_lock(&l->mu);
    l->idem.lossy = true;
    rt_mutex_unlock(&l->mu);
    ledger_stats s1 = stats(l);
    ledger_transfer_req n = keyed("alice", "bob", 1, "lossy-fresh");
    CHECK_OK(ledger_transfer(l, NULL, &n, NULL, &replayed));
    CHECK(!replayed);
    CHECK_OK(ledger_transfer(l, NULL, &n, NULL, &replayed));
    CHECK(replayed);
    ledger_stats s2 = stats(l);
    CHECK_EQ(s2.idem_lookups, s1.idem_lookups + 2);
    CHECK_EQ(s2.idem_lookups_skipped, s1.idem_lookups_skipped);
    CHECK_EQ(lt_balance(l, "bob", NULL), 8);
    ledger_close(l);
    free(db);
}

typedef struct racer {
    ledger *l;
    ledger_transfer_req req;
    int rc;
    bool replayed;
    int64_t delay;         /* spread the racers over the first commit */
    rt_chan *done;
} racer;

static void race(void *arg) {
    racer *f = arg;
    if (f->delay) rt_sleep(f->delay);
    f->rc = ledger_transfer(f->l, NULL, &f->req, NULL, &f->replayed);
    rt_chan_send(f->done, NULL);
}

#define NC 16

static void test_race(void) {
    char *db = lt_path(dir, "race.db");
    ledger *l = lt_open(db, NULL);
    setup(l);
    int rounds = (int)SCALED(50);
    long replays_total = 0;
    for (int round = 0; round < rounds; round++) {
        int64_t bob = lt_balance(l, "bob", NULL);
        ledger_stats s0 = stats(l);
        char key[32];
        snprintf(key, sizeof key, "race-%d", round);
        racer f[NC];
        rt_chan *done;
        CHECK(rt_chan_make(&done, 0, NC) == RT_OK);
        for (int i = 0; i < NC; i++) {
            memset(&f[i], 0, sizeof f[i]);
            f[i].l = l;
            f[i].req = keyed("alice", "bob", 3, key);
            f[i].done = done;
            f[i].delay = (int64_t)(i % 8) * 250 * RT_MICROSECOND;
            CHECK(rt_go(race, &f[i]) == RT_OK);
        }
        for (int i = 0; i < NC; i++) rt_chan_recv(done, NULL);
        rt_chan_release(done);
        int executed = 0, replays = 0, in_use = 0;
        for (int i = 0; i < NC; i++) {
            if (f[i].rc == LEDGER_OK && !f[i].replayed) executed++;
            else if (f[i].rc == LEDGER_OK) replays++;
            else if (f[i].rc == LEDGER_EIDEM_IN_USE) in_use++;
            else CHECK(!"unexpected result");
        }
        CHECK_EQ(executed, 1);
        CHECK_EQ(executed + replays + in_use, NC);
        CHECK_EQ(lt_balance(l, "bob", NULL), bob + 3);
        /* the one that executed skipped the lookup; every replay did one */
        ledger_stats s1 = stats(l);
        CHECK_EQ(s1.idem_lookups_skipped - s0.idem_lookups_skipped, 1);
        CHECK_EQ(s1.idem_lookups - s0.idem_lookups, (uint64_t)replays);
        replays_total += replays;
    }
    CHECK_EQ(stats(l).idem_keys, (uint64_t)rounds);
    fprintf(stderr, "       %d rounds of %d on one fresh key: 1 execution each, %ld replays\n", rounds, NC,
            replays_total);
    ledger_close(l);
    free(db);
}

static void test_expiry(void) {
    char *db = lt_path(dir, "expiry.db");
    ledger *l = lt_open(db, NULL);
    setup(l);
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "old-%d", i);
        ledger_transfer_req r = keyed("alice", "bob", 1, key);
        CHECK_OK(ledger_transfer(l, NULL, &r, NULL, NULL));
    }
    CHECK_EQ(stats(l).idem_keys, 20);
    ledger_close(l);
    rt_sleep(350 * RT_MILLISECOND);

    /* TTL 300 ms: the records are expired, so not even loaded */
    ledger_options o = { .idem_ttl_ms = 300, .idem_sweep_ms = 50 };
    l = lt_open(db, &o);
    CHECK_EQ(stats(l).idem_keys, 0);
    bool replayed;
    ledger_transfer_req r = keyed("alice", "bob", 2, "short-lived");
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, &replayed));
    CHECK(!replayed);
    CHECK_EQ(stats(l).idem_keys, 1);
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, &replayed));
    CHECK(replayed);
    /* then it expires: the sweep drops the row and the fingerprint */
    int64_t t0 = rt_nanotime();
    while ((stats(l).idem_keys > 0 || lt_sql_int(db, "SELECT count(*) FROM idempotency") > 0) &&
           rt_nanotime() - t0 < 5 * RT_SECOND)
        rt_sleep(20 * RT_MILLISECOND);
    CHECK_EQ(stats(l).idem_keys, 0);
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM idempotency"), 0);
    CHECK(stats(l).idem_swept >= 21);
    /* the key is new again, and nothing needs looking up */
    ledger_stats s0 = stats(l);
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, &replayed));
    CHECK(!replayed);
    CHECK_EQ(stats(l).idem_lookups_skipped, s0.idem_lookups_skipped + 1);
    CHECK_EQ(lt_balance(l, "bob", NULL), 20 + 4);
    ledger_close(l);
    free(db);
}

/* Every key gets the same fingerprint: the index holds one entry per record
 * under one fingerprint, and each lookup must pick its own key's row. */
static void test_forced_collision(void) {
    char *db = lt_path(dir, "forced.db");
    ledger *l = lt_open(db, NULL);
    setup(l);
    ledger_test_fixed_fingerprint(l);
    ledger_transfer_rec ta, tb, t;
    bool replayed = true;
    ledger_transfer_req a = keyed("alice", "bob", 5, "key-a");
    ledger_transfer_req b = keyed("alice", "bob", 7, "key-b");
    CHECK_OK(ledger_transfer(l, NULL, &a, &ta, &replayed));
    CHECK(!replayed);
    /* b's fingerprint is a's: looked up, a's row does not match, executes */
    ledger_stats s0 = stats(l);
    CHECK_OK(ledger_transfer(l, NULL, &b, &tb, &replayed));
    CHECK(!replayed);
    CHECK_EQ(stats(l).idem_lookups, s0.idem_lookups + 1);
    CHECK_EQ(stats(l).idem_keys, 2);
    CHECK(strcmp(ta.id, tb.id) != 0);
    /* each replays its own outcome, and moves nothing */
    CHECK_OK(ledger_transfer(l, NULL, &a, &t, &replayed));
    CHECK(replayed && strcmp(t.id, ta.id) == 0 && t.amount == 5);
    CHECK_OK(ledger_transfer(l, NULL, &b, &t, &replayed));
    CHECK(replayed && strcmp(t.id, tb.id) == 0 && t.amount == 7);
    /* a body reused under either key is still caught */
    a.amount = 6;
    CHECK_RC(ledger_transfer(l, NULL, &a, NULL, &replayed), LEDGER_EIDEM_REUSED);
    a.amount = 5;
    /* more colliding keys than IDEM_CANDIDATES_MAX: the scan takes over */
    char keys[IDEM_CANDIDATES_MAX + 2][16];
    for (int i = 0; i < IDEM_CANDIDATES_MAX + 2; i++) {
        snprintf(keys[i], sizeof keys[i], "many-%d", i);
        ledger_transfer_req m = keyed("alice", "bob", 1, keys[i]);
        CHECK_OK(ledger_transfer(l, NULL, &m, NULL, &replayed));
        CHECK(!replayed);
    }
    for (int i = 0; i < IDEM_CANDIDATES_MAX + 2; i++) {
        ledger_transfer_req m = keyed("alice", "bob", 1, keys[i]);
        CHECK_OK(ledger_transfer(l, NULL, &m, NULL, &replayed));
        CHECK(replayed);
    }
    CHECK_OK(ledger_transfer(l, NULL, &b, &t, &replayed));
    CHECK(replayed && strcmp(t.id, tb.id) == 0);
    CHECK_EQ(lt_balance(l, "bob", NULL), 12 + IDEM_CANDIDATES_MAX + 2);
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM idempotency"), 2 + IDEM_CANDIDATES_MAX + 2);
    ledger_close(l);
    /* reopened (real fingerprints again): the same replays */
    l = lt_open(db, NULL);
    CHECK_OK(ledger_transfer(l, NULL, &a, &t, &replayed));
    CHECK(replayed && strcmp(t.id, ta.id) == 0);
    CHECK_OK(ledger_transfer(l, NULL, &b, &t, &replayed));
    CHECK(replayed && strcmp(t.id, tb.id) == 0);
    CHECK_EQ(lt_balance(l, "bob", NULL), 12 + IDEM_CANDIDATES_MAX + 2);
    ledger_close(l);
    free(db);
}

/* A key reused after its record expired appends a new row (the table is
 * append-only) and replays the new outcome; the sweep deletes only the
 * expired prefix; a reopen after the sweep still replays the live keys. */
static void test_reuse_and_sweep(void) {
    char *db = lt_path(dir, "reuse.db");
    ledger *l = lt_open(db, NULL);
    setup(l);
    ledger_close(l);
    /* TTL 1 s, sweep only once a minute: expired rows stay until then */
    ledger_options o = { .idem_ttl_ms = 1000, .idem_sweep_ms = 60000 };
    l = lt_open(db, &o);
    bool replayed;
    ledger_transfer_rec t1, t2, t;
    ledger_transfer_req r = keyed("alice", "bob", 3, "again");
    CHECK_OK(ledger_transfer(l, NULL, &r, &t1, &replayed));
    CHECK(!replayed);
    rt_sleep(1100 * RT_MILLISECOND);
    /* expired: a new body is accepted and recorded in a new row */
    r.amount = 4;
    CHECK_OK(ledger_transfer(l, NULL, &r, &t2, &replayed));
    CHECK(!replayed && strcmp(t1.id, t2.id) != 0);
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM idempotency WHERE key = 'again'"), 2);
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, &replayed));
    CHECK(replayed && strcmp(t.id, t2.id) == 0 && t.amount == 4);
    r.amount = 3;   /* the old body is now a different request */
    CHECK_RC(ledger_transfer(l, NULL, &r, NULL, &replayed), LEDGER_EIDEM_REUSED);
    CHECK_EQ(lt_balance(l, "bob", NULL), 7);
    ledger_close(l);

    /* the open sweeps at once: only the expired row goes */
    l = lt_open(db, &o);
    int64_t t0 = rt_nanotime();
    while (lt_sql_int(db, "SELECT count(*) FROM idempotency") > 1 && rt_nanotime() - t0 < 5 * RT_SECOND)
        rt_sleep(20 * RT_MILLISECOND);
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM idempotency"), 1);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM idempotency WHERE transfer_id = '%s'", t2.id);
    CHECK_EQ(lt_sql_int(db, sql), 1);
    r.amount = 4;
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, &replayed));
    CHECK(replayed && strcmp(t.id, t2.id) == 0);
    ledger_close(l);
    /* and after a reopen (the sweep ran): still the new outcome */
    l = lt_open(db, NULL);
    CHECK_EQ(stats(l).idem_keys, 1);
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, &replayed));
    CHECK(replayed && strcmp(t.id, t2.id) == 0);
    CHECK_EQ(lt_balance(l, "bob", NULL), 7);
    ledger_close(l);
    free(db);
}

/* The schema: append-only idempotency table with no index but its rowid;
 * the sweep's statements walk the rowid b-tree (no sort, no index). */
static void test_schema_and_plans(void) {
    char *db = lt_path(dir, "schema.db");
    ledger *l = lt_open(db, NULL);
    setup(l);
    ledger_close(l);
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM sqlite_master WHERE tbl_name = 'idempotency' AND type = 'index'"), 0);
    CHECK_EQ(lt_sql_int(db, "SELECT value FROM meta WHERE name = 'schema_version'"), 2);
    /* EXPLAIN QUERY PLAN detail strings (column 3) */
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM (SELECT 1) WHERE EXISTS (SELECT 1 FROM pragma_table_info('idempotency') "
                            "WHERE name = 'id' AND pk = 1)"), 1);
    sqlite3 *h;
    CHECK(sqlite3_open(db, &h) == SQLITE_OK);
    const char *q[2] = { "EXPLAIN QUERY PLAN SELECT id, created_ms FROM idempotency ORDER BY id LIMIT 5000",
                         "EXPLAIN QUERY PLAN DELETE FROM idempotency WHERE id <= 5" };
    const char *want[2] = { "SCAN idempotency", "SEARCH idempotency USING INTEGER PRIMARY KEY (rowid<?)" };
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *st;
        CHECK(sqlite3_prepare_v2(h, q[i], -1, &st, NULL) == SQLITE_OK);
        int rows = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *d = (const char *)sqlite3_column_text(st, 3);
            fprintf(stderr, "       plan: %s\n", d);
            CHECK(strcmp(d, want[i]) == 0);
            rows++;
        }
        CHECK_EQ(rows, 1);
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    free(db);
}

/* A version 1 database (PRIMARY KEY(scope, key), index on created_ms) is
 * migrated at open: rows copied in time order, replays unchanged. */
static void test_migrate_v1(void) {
    char *db = lt_path(dir, "v1.db");
    ledger *l = lt_open(db, NULL);
    setup(l);
    ledger_transfer_rec t1, t2, t;
    ledger_transfer_req a = keyed("alice", "bob", 5, "m-a"), b = keyed("alice", "bob", 6, "m-b");
    CHECK_OK(ledger_transfer(l, NULL, &b, &t2, NULL));
    CHECK_OK(ledger_transfer(l, NULL, &a, &t1, NULL));
    ledger_close(l);
    /* rewrite the table as version 1 had it, b recorded 1 s after a (so the
     * copy in created_ms order must put b second) */
    lt_sql(db, "BEGIN;"
               "CREATE TABLE old(scope TEXT NOT NULL, key TEXT NOT NULL, request_hash BLOB NOT NULL,"
               "  result INTEGER NOT NULL, transfer_id TEXT, created_ms INTEGER NOT NULL, PRIMARY KEY(scope, key));"
               "INSERT INTO old SELECT scope, key, request_hash, result, transfer_id,"
               "  created_ms + 1000 * (key = 'm-b') FROM idempotency;"
               "DROP TABLE idempotency; ALTER TABLE old RENAME TO idempotency;"
               "CREATE INDEX idempotency_age ON idempotency(created_ms);"
               "UPDATE meta SET value = 1 WHERE name = 'schema_version'; COMMIT");
    l = lt_open(db, NULL);
    CHECK_EQ(stats(l).idem_keys, 2);
    bool replayed;
    CHECK_OK(ledger_transfer(l, NULL, &a, &t, &replayed));
    CHECK(replayed && strcmp(t.id, t1.id) == 0);
    CHECK_OK(ledger_transfer(l, NULL, &b, &t, &replayed));
    CHECK(replayed && strcmp(t.id, t2.id) == 0);
    CHECK_EQ(lt_balance(l, "bob", NULL), 11);
    ledger_close(l);
    CHECK_EQ(lt_sql_int(db, "SELECT value FROM meta WHERE name = 'schema_version'"), 2);
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM sqlite_master WHERE tbl_name = 'idempotency' AND type = 'index'"), 0);
    CHECK_EQ(lt_sql_int(db, "SELECT id FROM idempotency WHERE key = 'm-b'"), 2);   /* time order */
    /* an unknown version is refused with a message naming it */
    lt_sql(db, "UPDATE meta SET value = 99 WHERE name = 'schema_version'");
    ledger *bad = NULL;
    char err[256] = "";
    ledger_options o = { 0 };
    CHECK_RC(ledger_open(db, &o, &bad, err, sizeof err), LEDGER_ECORRUPT);
    CHECK(strstr(err, "schema version 99") != NULL);
    free(db);
}

static int run(void *arg) {
    (void)arg;
    dir = lt_tmpdir("idemset");
    RUN(test_set_collisions);
    RUN(test_set_duplicates_and_zero);
    RUN(test_set_expire);
    RUN(test_set_model);
    RUN(test_set_lossy);
    RUN(test_fresh_skips_lookup);
    RUN(test_rollback_adds_nothing);
    RUN(test_false_positive);
    RUN(test_race);
    RUN(test_expiry);
    RUN(test_forced_collision);
    RUN(test_reuse_and_sweep);
    RUN(test_schema_and_plans);
    RUN(test_migrate_v1);
    lt_rmrf(dir);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
