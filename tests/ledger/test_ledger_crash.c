/*
 * test_ledger_crash.c — kill -9 in the middle of a transfer storm.
 *
 * The test re-runs itself as a child (RT_TEST_CHILD=crash).  The child
 * opens the ledger and runs 16 goroutines that make transfers, each with
 * an idempotency key "c<cycle>-g<g>-<i>" and a body that is a function of
 * the key (the key is also the memo).  After each acknowledgement it
 * appends "g i id" to an ack file with one write(2).  The parent waits
 * until enough transfers are acknowledged and SIGKILLs the child while
 * commits are in flight.  Then it reopens the store, which verifies the
 * double-entry invariant, and checks:
 *   - every acknowledged transfer is stored, as acknowledged, and its key
 *     replays it (acknowledged => durable);
 *   - the one request per goroutine that may have been in flight at the
 *     kill can be retried with its key and ends up stored exactly once,
 *     whether or not it had committed (its key was free again, or held
 *     its record);
 *   - no key was ever executed twice, and no transfer exists for a key
 *     that was never sent.
 * Two kill cycles run on the same database.
 */
#include "ledger_test.h"

#include <fcntl.h>

#define NGOR 16
#define NACC 8
#define CYCLES 2

static void body_for(int cycle, int g, int i, char *key, size_t keylen, ledger_transfer_req *r,
                     char from[16], char to[16]) {
    snprintf(key, keylen, "c%d-g%d-%d", cycle, g, i);
    snprintf(from, 16, "acc%d", (g + i) % NACC);
    snprintf(to, 16, "acc%d", (g + i + 1 + cycle) % NACC);   /* cycle < NACC - 1: never from */
    *r = lt_xfer(from, to, 1 + (g * 31 + i) % 50, "USD");
    r->memo = key;
    r->memo_len = strlen(key);
    r->idem_scope = "crash-test";
    r->idem_key = key;
}

/* ------------------------------------------------------------------ child */

typedef struct child_ctx {
    ledger *l;
    int fd;
    int cycle;
} child_ctx;

static child_ctx cc;

static void child_worker(void *arg) {
    int g = (int)(intptr_t)arg;
    for (int i = 0;; i++) {
        char key[64], from[16], to[16];
        ledger_transfer_req r;
        body_for(cc.cycle, g, i, key, sizeof key, &r, from, to);
        ledger_transfer_rec t;
        int rc = ledger_transfer(cc.l, NULL, &r, &t, NULL);
        if (rc != LEDGER_OK) {
            fprintf(stderr, "child: transfer %s: %s\n", key, ledger_strerror(rc));
            _exit(4);
        }
        char line[128];
        int n = snprintf(line, sizeof line, "%d %d %s\n", g, i, t.id);
        if (write(cc.fd, line, (size_t)n) != n) _exit(5);
    }
}

static int crash_child(void *arg) {
    (void)arg;
    const char *dbp = getenv("LEDGER_TEST_DB"), *acks = getenv("LEDGER_TEST_ACKS");
    cc.cycle = atoi(getenv("LEDGER_TEST_CYCLE"));
    cc.l = lt_open(dbp, NULL);
    cc.fd = open(acks, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0600);
    if (cc.fd < 0) return 6;
    for (int g = 0; g < NGOR; g++) rt_go(child_worker, (void *)(intptr_t)g);
    rt_sleep(60 * RT_SECOND);   /* the parent kills us long before */
    return 7;
}

/* ----------------------------------------------------------------- parent */

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (r == 0) break;
        n += r;
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static long count_lines(const char *path) {
    size_t len;
    char *b = read_file(path, &len);
    if (!b) return 0;
    long n = 0;
    for (size_t i = 0; i < len; i++) n += b[i] == '\n';
    free(b);
    return n;
}

static void crash_cycle(const char *dir, const char *db, int cycle) {
    char *acks = lt_path(dir, "acks.txt");
    char env_db[4200], env_acks[4200], env_cycle[64];
    snprintf(env_db, sizeof env_db, "LEDGER_TEST_DB=%s", db);
    snprintf(env_acks, sizeof env_acks, "LEDGER_TEST_ACKS=%s", acks);
    snprintf(env_cycle, sizeof env_cycle, "LEDGER_TEST_CYCLE=%d", cycle);
    const char *env[] = { env_db, env_acks, env_cycle, NULL };
    unlink(acks);
    pid_t pid = lt_spawn_child("crash", env);

    long want = SCALED(600);
    if (want < 60) want = 60;
    int64_t t0 = rt_nanotime();
    long n = 0;
    while ((n = count_lines(acks)) < want && rt_nanotime() - t0 < 30 * RT_SECOND) {
        int st;
        CHECK(waitpid(pid, &st, WNOHANG) == 0);   /* the child must still run */
        rt_sleep(2 * RT_MILLISECOND);
    }
    CHECK(n >= want);
    /* land somewhere inside a commit rather than right after an ack */
    rt_sleep((rt_nanotime() % 3000) * RT_MICROSECOND);
    CHECK(kill(pid, SIGKILL) == 0);
    int status = lt_waitpid(pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* Reopen: ledger_open verifies the invariant (or refuses). */
    ledger *l = lt_open(db, NULL);
    size_t len;
    char *b = read_file(acks, &len);
    CHECK(b != NULL);
    int last[NGOR];
    for (int g = 0; g < NGOR; g++) last[g] = -1;
    long acked = 0;
    char *save = NULL;
    for (char *line = strtok_r(b, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int g, i;
        char id[64];
        if (sscanf(line, "%d %d %63s", &g, &i, id) != 3) continue;   /* cannot happen: one write each */
        CHECK(g >= 0 && g < NGOR && i == last[g] + 1);
        last[g] = i;
        acked++;
        char key[64], from[16], to[16];
        ledger_transfer_req r;
        body_for(cycle, g, i, key, sizeof key, &r, from, to);
        ledger_transfer_rec t;
        CHECK_OK(ledger_get_transfer(l, NULL, id, &t));
        CHECK(strcmp(t.from, from) == 0 && strcmp(t.to, to) == 0 && t.amount == r.amount);
        CHECK(t.has_memo && strcmp(t.memo, key) == 0);
        bool replayed;
        CHECK_OK(ledger_transfer(l, NULL, &r, &t, &replayed));
        CHECK(replayed && strcmp(t.id, id) == 0);
    }
    free(b);
    /* The request each goroutine had in flight: retry it. */
    int replays = 0;
    long expected = 0;
    for (int g = 0; g < NGOR; g++) {
        char key[64], from[16], to[16];
        ledger_transfer_req r;
        body_for(cycle, g, last[g] + 1, key, sizeof key, &r, from, to);
        bool replayed;
        CHECK_OK(ledger_transfer(l, NULL, &r, NULL, &replayed));
        replays += replayed;
        expected += last[g] + 2;
    }
    ledger_close(l);
    /* Exactly once: one transfer per key sent, none twice, none unsent. */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM transfers WHERE memo LIKE 'c%d-%%'", cycle);
    CHECK_EQ(lt_sql_int(db, sql), expected);
    CHECK_EQ(lt_sql_int(db, "SELECT count(*) FROM (SELECT memo FROM transfers WHERE memo IS NOT NULL "
                            "GROUP BY memo HAVING count(*) > 1)"), 0);
    fprintf(stderr, "       cycle %d: killed after %ld acks; all stored; %d of %d in-flight requests "
                    "had committed unacknowledged, the rest ran on retry\n",
            cycle, acked, replays, NGOR);
    free(acks);
}

static void test_kill9(void) {
    char *dir = lt_tmpdir("crash");
    char *db = lt_path(dir, "ledger.db");
    ledger *l = lt_open(db, NULL);
    for (int i = 0; i < NACC; i++) {
        char id[16];
        snprintf(id, sizeof id, "acc%d", i);
        CHECK_OK(ledger_create_account(l, NULL, id, "USD", 1000000000, NULL));
    }
    ledger_close(l);
    for (int c = 0; c < CYCLES; c++) crash_cycle(dir, db, c);
    /* Final: the invariant holds (open) and the money adds up. */
    l = lt_open(db, NULL);
    int64_t sum = lt_balance(l, "@world", "USD");
    for (int i = 0; i < NACC; i++) {
        char id[16];
        snprintf(id, sizeof id, "acc%d", i);
        sum += lt_balance(l, id, NULL);
    }
    CHECK_EQ(sum, 0);
    ledger_close(l);
    lt_rmrf(dir);
    free(db);
    free(dir);
}

static int run(void *arg) {
    (void)arg;
    RUN(test_kill9);
    return rt_test_done();
}

static const rt_test_child children[] = {
    { "crash", crash_child },
    { NULL, NULL },
};

int main(int argc, char **argv) { return rt_test_main_with_children(argc, argv, run, children); }
