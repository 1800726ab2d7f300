/*
 * test_ledger_invariant.c — ledger_open verifies the double-entry invariant
 * and refuses a database that breaks it.
 *
 * Each case builds a small valid ledger through the API, closes it, breaks
 * the database with plain SQL (as a bad migration, a hand edit or a bug
 * would), and expects ledger_open to fail with LEDGER_ECORRUPT and a
 * message naming the problem.  Undoing the damage makes it open again, so
 * the refusal is about the damage and nothing else.
 */
#include "ledger_test.h"

static char *dir;
static int case_no;

/* A valid ledger: alice 1000, bob 500 (USD), eve 300 (EUR), a key for
 * alice, one transfer alice -> bob 100 under an idempotency key. */
static char *make_db(void) {
    char name[64];
    snprintf(name, sizeof name, "case%d.db", case_no++);
    char *path = lt_path(dir, name);
    ledger *l = lt_open(path, NULL);
    CHECK_OK(ledger_create_account(l, NULL, "alice", "USD", 1000, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "bob", "USD", 500, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "eve", "EUR", 300, NULL));
    ledger_key k;
    CHECK_OK(ledger_create_key(l, NULL, "alice", &k));
    ledger_transfer_req r = lt_xfer("alice", "bob", 100, "USD");
    r.idem_scope = "admin";
    r.idem_key = "first";
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, NULL));
    ledger_close(l);
    return path;
}

static void expect_refused(const char *path, const char *needle) {
    ledger *l = NULL;
    char err[512] = "";
    int rc = ledger_open(path, NULL, &l, err, sizeof err);
    if (rc != LEDGER_ECORRUPT || !strstr(err, needle)) {
        fprintf(stderr, "open after damage: %s: %s (wanted ECORRUPT with \"%s\")\n",
                ledger_strerror(rc), err, needle);
    }
    CHECK_RC(rc, LEDGER_ECORRUPT);
    CHECK(strstr(err, needle) != NULL);
    CHECK(l == NULL);
    static char last[512];
    if (strcmp(last, err) != 0) fprintf(stderr, "       refused: %s\n", err);
    snprintf(last, sizeof last, "%s", err);
}

static void expect_opens(const char *path) {
    ledger *l = lt_open(path, NULL);
    ledger_close(l);
}

static void corrupt_case(const char *damage, const char *repair, const char *needle) {
    char *p = make_db();
    expect_opens(p);
    lt_sql(p, damage);
    expect_refused(p, needle);
    expect_refused(p, needle);   /* refusing changed nothing */
    if (repair) {
        lt_sql(p, repair);
        expect_opens(p);
    }
    free(p);
}

static void test_balance_edited(void) {
    /* Sum per currency still 0, but balances no longer match the transfers. */
    corrupt_case("UPDATE accounts SET balance = balance + 50 WHERE key = 'alice';"
                 "UPDATE accounts SET balance = balance - 50 WHERE key = 'bob'",
                 "UPDATE accounts SET balance = balance - 50 WHERE key = 'alice';"
                 "UPDATE accounts SET balance = balance + 50 WHERE key = 'bob'",
                 "transfers");
}

static void test_money_created(void) {
    /* Balance and a matching fake credit: the sum is no longer 0... */
    corrupt_case("UPDATE accounts SET balance = balance + 7 WHERE key = 'bob'",
                 "UPDATE accounts SET balance = balance - 7 WHERE key = 'bob'",
                 "bob");
    /* ...and a forged transfer from @world credited to bob: bob agrees
     * with the transfers now, @world does not.  (Once every balance equals
     * credits minus debits, the per-currency sum is 0 by construction: the
     * separate sum check is a second line of defence.) */
    corrupt_case("INSERT INTO transfers(seq, id, from_key, to_key, amount, currency, memo, created_at) "
                 "SELECT max(seq) + 1, '01BX5ZZKBKACTAV9WEVGEMMVRZ', '@world:USD', 'bob', 9, 'USD', NULL, "
                 "'2026-11-22T10:00:00.000Z' FROM transfers;"
                 "UPDATE accounts SET balance = balance + 9 WHERE key = 'bob'",
                 "UPDATE accounts SET balance = balance - 9 WHERE key = '@world:USD'",
                 "@world:USD");
}

static void test_transfer_deleted(void) {
    corrupt_case("DELETE FROM transfers WHERE from_key = 'alice' AND to_key = 'bob'", NULL, "stored balance");
}

static void test_unknown_account(void) {
    corrupt_case("UPDATE transfers SET to_key = 'mallory' WHERE from_key = 'alice'",
                 "UPDATE transfers SET to_key = 'bob' WHERE to_key = 'mallory'",
                 "unknown account");
    corrupt_case("DELETE FROM accounts WHERE key = 'eve'", NULL, "unknown account");
}

static void test_currency_mismatch(void) {
    corrupt_case("UPDATE transfers SET currency = 'EUR' WHERE from_key = 'alice'",
                 "UPDATE transfers SET currency = 'USD' WHERE from_key = 'alice'",
                 "currency");
    corrupt_case("UPDATE accounts SET currency = 'EUR' WHERE key = 'bob'", NULL, "currency");
}

static void test_negative_balance(void) {
    /* alice sends more than she had: balances consistent, but negative. */
    corrupt_case("UPDATE transfers SET amount = 1500 WHERE from_key = 'alice' AND to_key = 'bob';"
                 "UPDATE accounts SET balance = -500 WHERE key = 'alice';"
                 "UPDATE accounts SET balance = 2000 WHERE key = 'bob'",
                 NULL, "negative");
}

static void test_bad_amount(void) {
    corrupt_case("UPDATE transfers SET amount = 0 WHERE from_key = 'alice'", NULL, "out of range");
    corrupt_case("UPDATE transfers SET amount = 'lots' WHERE from_key = 'alice'", NULL, "out of range");
    corrupt_case("UPDATE transfers SET to_key = 'alice' WHERE from_key = 'alice'", NULL, "from == to");
}

static void test_dangling_records(void) {
    corrupt_case("UPDATE idempotency SET transfer_id = '01BX5ZZKBKACTAV9WEVGEMMVRZ'", NULL,
                 "idempotency record");
    corrupt_case("UPDATE api_keys SET account = 'ghost'", "UPDATE api_keys SET account = 'alice'",
                 "API key");
    corrupt_case("UPDATE accounts SET key = 'Alice' WHERE key = 'alice'", NULL, "malformed account");
    corrupt_case("UPDATE meta SET value = 99 WHERE name = 'schema_version'",
                 "UPDATE meta SET value = 1 WHERE name = 'schema_version'", "schema version");
}

static void test_not_a_database(void) {
    char *p = lt_path(dir, "garbage.db");
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    for (int i = 0; i < 512; i++) fputs("this is not an SQLite database\n", f);
    fclose(f);
    ledger *l = NULL;
    char err[512] = "";
    int rc = ledger_open(p, NULL, &l, err, sizeof err);
    CHECK(rc == LEDGER_ECORRUPT || rc == LEDGER_EIO);
    CHECK(err[0] != 0);
    CHECK(l == NULL);
    free(p);
}

static int run(void *arg) {
    (void)arg;
    dir = lt_tmpdir("invariant");
    RUN(test_balance_edited);
    RUN(test_money_created);
    RUN(test_transfer_deleted);
    RUN(test_unknown_account);
    RUN(test_currency_mismatch);
    RUN(test_negative_balance);
    RUN(test_bad_amount);
    RUN(test_dangling_records);
    RUN(test_not_a_database);
    lt_rmrf(dir);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
