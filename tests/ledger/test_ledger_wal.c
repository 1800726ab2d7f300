/*
 * test_ledger_wal.c — checkpoints off the COMMIT path (store.c,
 * "Checkpoints", ledger_options.checkpointer = true): the writer never checkpoints on its own (autocheckpoint
 * off); a checkpointer goroutine does, when the WAL passes 1000 frames,
 * with a committer backstop past 8000.
 *
 *   storm   64 goroutines of keyed transfers for a while: the -wal file,
 *           sampled throughout, stays bounded (well under the backstop's
 *           size plus one group); every transfer acknowledged; at close
 *           the WAL is emptied (0 bytes or gone); the reopen verifies the
 *           ledger and the balances are what the acknowledgments say.
 */
#include "ledger_test.h"

#include <sys/stat.h>

#define NG 64
#define NACCT 8

static char *dir;

typedef struct storm {
    ledger *l;
    int64_t deadline;
    _Atomic long done;
    _Atomic long errors;
    _Atomic bool stop;
    rt_waitgroup wg;
} storm;

static void worker(void *arg) {
    storm *s = arg;
    static _Atomic int next_id;
    int me = atomic_fetch_add(&next_id, 1);
    char from[16], to[16], key[48];
    snprintf(from, sizeof from, "w%d", me % NACCT);
    snprintf(to, sizeof to, "w%d", (me + 1) % NACCT);
    long n = 0;
    while (rt_nanotime() < s->deadline) {
        ledger_transfer_req r = lt_xfer(from, to, 1, "USD");
        snprintf(key, sizeof key, "g%d-%ld", me, n++);
        r.idem_scope = "wal";
        r.idem_key = key;
        if (ledger_transfer(s->l, NULL, &r, NULL, NULL) == LEDGER_OK) atomic_fetch_add(&s->done, 1);
        else atomic_fetch_add(&s->errors, 1);
    }
    rt_waitgroup_done(&s->wg);
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static void test_storm_bounded_wal(void) {
    char *db = lt_path(dir, "storm.db");
    size_t n = strlen(db) + 5;
    char *wal = malloc(n);
    snprintf(wal, n, "%s-wal", db);
    ledger_options o = { .checkpointer = true };
    ledger *l = lt_open(db, &o);
    for (int i = 0; i < NACCT; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        CHECK_OK(ledger_create_account(l, NULL, id, "USD", 1000000000, NULL));
    }
    storm s;
    memset(&s, 0, sizeof s);
    s.l = l;
    int64_t duration = SCALED(4000) * RT_MILLISECOND;
    if (duration < 1500 * RT_MILLISECOND) duration = 1500 * RT_MILLISECOND;
    s.deadline = rt_nanotime() + duration;
    rt_waitgroup_add(&s.wg, NG);
    for (int i = 0; i < NG; i++) CHECK(rt_go(worker, &s) == RT_OK);
    /* Sample the WAL's size while the storm runs. */
    int64_t max = 0, samples = 0, sum = 0;
    while (rt_nanotime() < s.deadline) {
        rt_sleep(20 * RT_MILLISECOND);
        int64_t z = file_size(wal);
        if (z > max) max = z;
        if (z > 0) sum += z;
        samples++;
    }
    rt_waitgroup_wait(&s.wg);
    CHECK_EQ(atomic_load(&s.errors), 0);
    long done = atomic_load(&s.done);
    CHECK(done > 0);
    /* Bound: the backstop (8000 frames) plus one group of 256 transfers
     * (~5 pages each) plus slack, at 4 KiB + 24 bytes a frame.  Without
     * any checkpoint the storm writes several times that. */
    const int64_t frame = 4096 + 24, bound = (8000 + 2000) * frame;
    fprintf(stderr, "       %ld keyed transfers in %.1f s; -wal max %.1f MiB, mean %.1f MiB over %lld samples\n",
            done, (double)duration / 1e9, (double)max / 1048576.0,
            samples ? (double)sum / (double)samples / 1048576.0 : 0.0, (long long)samples);
    CHECK(max > 0);
    CHECK(max <= bound);
    ledger_close(l);
    /* closed: the TRUNCATE checkpoint (or the last close) emptied it */
    int64_t after = file_size(wal);
    CHECK(after <= 0);

    l = lt_open(db, &o);   /* verifies every balance against the transfers */
    int64_t sum_bal = 0;
    for (int i = 0; i < NACCT; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        sum_bal += lt_balance(l, id, NULL);
    }
    CHECK_EQ(sum_bal, (int64_t)NACCT * 1000000000);
    ledger_stats st;
    ledger_get_stats(l, &st);
    CHECK_EQ(st.idem_keys, (uint64_t)done);
    ledger_close(l);
    free(wal);
    free(db);
}

static int run(void *arg) {
    (void)arg;
    dir = lt_tmpdir("wal");
    RUN(test_storm_bounded_wal);
    lt_rmrf(dir);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
