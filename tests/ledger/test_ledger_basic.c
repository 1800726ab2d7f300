/*
 * test_ledger_basic.c — every ledger operation and every error it can
 * return: accounts and @world, transfers, limits, history and cursors, API
 * keys and the admin key, persistence across reopen, synchronous=NORMAL,
 * contexts, the exclusive lock, and both storage-failure paths (a statement
 * failing inside the group's transaction: EIO, rolled back, store goes on;
 * COMMIT failing: EFAILED, store refuses writes, reopen recovers).
 */
#include "ledger_test.h"
#include "ledger_internal.h"   /* ledger_test_fail_commits */

#include <sys/stat.h>

static char *dir;
static char *db;

static bool is_rfc3339_ms(const char *s) {
    /* 2026-11-22T10:00:00.000Z */
    if (strlen(s) != 24) return false;
    for (int i = 0; i < 24; i++) {
        char c = s[i];
        switch (i) {
        case 4: case 7: if (c != '-') return false; break;
        case 10: if (c != 'T') return false; break;
        case 13: case 16: if (c != ':') return false; break;
        case 19: if (c != '.') return false; break;
        case 23: if (c != 'Z') return false; break;
        default: if (c < '0' || c > '9') return false;
        }
    }
    return true;
}

static void test_strerror(void) {
    for (int c = LEDGER_OK; c >= LEDGER_ENOMEM; c--) {
        CHECK(ledger_strerror(c) != NULL);
        CHECK(strcmp(ledger_strerror(c), "unknown ledger error") != 0);
        for (int d = c - 1; d >= LEDGER_ENOMEM; d--)
            CHECK(strcmp(ledger_strerror(c), ledger_strerror(d)) != 0);
    }
    CHECK(strcmp(ledger_strerror(-999), "unknown ledger error") == 0);
}

static void test_open_errors(void) {
    ledger *l = NULL;
    char err[256];
    CHECK_RC(ledger_open(NULL, NULL, &l, err, sizeof err), LEDGER_EINVAL);
    ledger_options o = { .sync = (ledger_sync)7 };
    CHECK_RC(ledger_open(db, &o, &l, err, sizeof err), LEDGER_EINVAL);
    o = (ledger_options){ .max_batch = -1 };
    CHECK_RC(ledger_open(db, &o, &l, err, sizeof err), LEDGER_EINVAL);
    o = (ledger_options){ .admin_key = "" };
    CHECK_RC(ledger_open(db, &o, &l, err, sizeof err), LEDGER_EINVAL);
    char *nodir = lt_path(dir, "missing/sub/x.db");
    CHECK(ledger_open(nodir, NULL, &l, err, sizeof err) != LEDGER_OK);
    CHECK(err[0] != 0);
    CHECK(l == NULL);
    free(nodir);
}

static void test_accounts(void) {
    ledger *l = lt_open(db, NULL);
    ledger_account a;
    CHECK_OK(ledger_create_account(l, NULL, "alice", "USD", 10000, &a));
    CHECK(strcmp(a.id, "alice") == 0 && strcmp(a.currency, "USD") == 0);
    CHECK_EQ(a.balance, 10000);
    CHECK(is_rfc3339_ms(a.created_at));
    CHECK_OK(ledger_create_account(l, NULL, "bob", "USD", 0, &a));
    CHECK_EQ(a.balance, 0);
    CHECK_OK(ledger_create_account(l, NULL, "carol_EUR-1", "EUR", 500, NULL));

    CHECK_OK(ledger_get_account(l, "alice", NULL, &a));
    CHECK_EQ(a.balance, 10000);
    CHECK_OK(ledger_get_account(l, "@world", "USD", &a));
    CHECK(strcmp(a.id, "@world") == 0 && strcmp(a.currency, "USD") == 0);
    CHECK_EQ(a.balance, -10000);
    CHECK(is_rfc3339_ms(a.created_at));
    CHECK_EQ(lt_balance(l, "@world", "EUR"), -500);

    /* errors */
    CHECK_RC(ledger_create_account(l, NULL, "alice", "USD", 0, NULL), LEDGER_EEXISTS);
    CHECK_RC(ledger_create_account(l, NULL, "alice", "GBP", 0, NULL), LEDGER_EEXISTS);
    const char *bad_ids[] = { "", "a b", "caf\xc3\xa9", "@world", "@x", "a/b", "a.b", NULL };
    for (int i = 0; bad_ids[i]; i++)
        CHECK_RC(ledger_create_account(l, NULL, bad_ids[i], "USD", 0, NULL), LEDGER_EINVAL);
    CHECK_RC(ledger_create_account(l, NULL, NULL, "USD", 0, NULL), LEDGER_EINVAL);
    char id64[65], id65[66];
    memset(id64, 'x', 64); id64[64] = 0;
    memset(id65, 'y', 65); id65[65] = 0;
    CHECK_OK(ledger_create_account(l, NULL, id64, "USD", 0, NULL));
    CHECK_RC(ledger_create_account(l, NULL, id65, "USD", 0, NULL), LEDGER_EINVAL);
    const char *bad_cur[] = { "usd", "US", "USDX", "", "U1D", NULL };
    for (int i = 0; bad_cur[i]; i++)
        CHECK_RC(ledger_create_account(l, NULL, "dave", bad_cur[i], 0, NULL), LEDGER_EINVAL);
    CHECK_RC(ledger_create_account(l, NULL, "dave", NULL, 0, NULL), LEDGER_EINVAL);
    CHECK_RC(ledger_create_account(l, NULL, "dave", "USD", -1, NULL), LEDGER_EINVAL);
    CHECK_RC(ledger_create_account(l, NULL, "dave", "USD", LEDGER_AMOUNT_MAX + 1, NULL), LEDGER_EINVAL);
    CHECK_RC(ledger_get_account(l, "nobody", NULL, &a), LEDGER_ENOTFOUND);
    CHECK_RC(ledger_get_account(l, "@world", NULL, &a), LEDGER_ENOTFOUND);
    CHECK_RC(ledger_get_account(l, "@world", "JPY", &a), LEDGER_ENOTFOUND);
    CHECK_RC(ledger_get_account(l, "@nope", "USD", &a), LEDGER_ENOTFOUND);
    CHECK_RC(ledger_get_account(l, "bad id", NULL, &a), LEDGER_ENOTFOUND);

    /* the funding shows in the history, from @world */
    ledger_page p;
    CHECK_OK(ledger_list_transfers(l, NULL, "alice", NULL, 50, NULL, &p));
    CHECK_EQ(p.count, 1);
    CHECK(strcmp(p.items[0].from, "@world") == 0 && strcmp(p.items[0].to, "alice") == 0);
    CHECK_EQ(p.items[0].amount, 10000);
    CHECK(!p.items[0].has_memo);
    CHECK(!p.has_next && p.next[0] == 0);
    ledger_page_free(&p);
    CHECK_OK(ledger_list_transfers(l, NULL, "bob", NULL, 50, NULL, &p));
    CHECK_EQ(p.count, 0);   /* initial_balance 0 books no transfer */
    ledger_page_free(&p);

    ledger_stats st;
    ledger_get_stats(l, &st);
    CHECK_EQ(st.accounts, 6);   /* alice bob carol x*64 + two @world */
    CHECK_EQ(st.transfers, 2);
    ledger_close(l);
}

static void test_transfers(void) {
    ledger *l = lt_open(db, NULL);
    ledger_transfer_rec t, g;
    ledger_transfer_req r = lt_xfer("alice", "bob", 1250, "USD");
    r.memo = "rent";
    r.memo_len = 4;
    bool replayed = true;
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, &replayed));
    CHECK(!replayed);
    CHECK_EQ(strlen(t.id), LEDGER_TRANSFER_ID_LEN);
    CHECK(strcmp(t.from, "alice") == 0 && strcmp(t.to, "bob") == 0);
    CHECK_EQ(t.amount, 1250);
    CHECK(strcmp(t.currency, "USD") == 0);
    CHECK(t.has_memo && t.memo_len == 4 && memcmp(t.memo, "rent", 4) == 0);
    CHECK(is_rfc3339_ms(t.created_at));
    CHECK_EQ(lt_balance(l, "alice", NULL), 8750);
    CHECK_EQ(lt_balance(l, "bob", NULL), 1250);
    CHECK_OK(ledger_get_transfer(l, NULL, t.id, &g));
    CHECK(memcmp(&t, &g, sizeof t) == 0);

    /* a second transfer gets a later, distinct id */
    ledger_transfer_rec t2;
    CHECK_OK(ledger_transfer(l, NULL, &r, &t2, NULL));
    CHECK(strcmp(t2.id, t.id) > 0);

    /* memo: null vs empty vs 256 bytes with a NUL inside */
    r.memo = "";
    r.memo_len = 0;
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, NULL));
    CHECK_OK(ledger_get_transfer(l, NULL, t.id, &g));
    CHECK(g.has_memo && g.memo_len == 0);
    char memo[LEDGER_MEMO_MAX];
    for (int i = 0; i < LEDGER_MEMO_MAX; i++) memo[i] = (char)('a' + i % 26);
    memo[100] = 0;
    r.memo = memo;
    r.memo_len = LEDGER_MEMO_MAX;
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, NULL));
    CHECK_OK(ledger_get_transfer(l, NULL, t.id, &g));
    CHECK(g.has_memo && g.memo_len == LEDGER_MEMO_MAX && memcmp(g.memo, memo, LEDGER_MEMO_MAX) == 0);
    r.memo_len = LEDGER_MEMO_MAX + 1;
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_EINVAL);
    r.memo = NULL;

    int64_t alice = lt_balance(l, "alice", NULL), bob = lt_balance(l, "bob", NULL);
    /* errors: nothing moves */
    r = lt_xfer("alice", "nobody", 1, "USD");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_ENOTFOUND);
    r = lt_xfer("nobody", "alice", 1, "USD");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_ENOTFOUND);
    r = lt_xfer("alice", "carol_EUR-1", 1, "USD");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_ECURRENCY);
    r = lt_xfer("alice", "bob", 1, "EUR");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_ECURRENCY);
    r = lt_xfer("alice", "bob", alice + 1, "USD");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_EFUNDS);
    r = lt_xfer("alice", "alice", 1, "USD");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_ESAME_ACCOUNT);
    r = lt_xfer("@world", "@world", 1, "USD");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_ESAME_ACCOUNT);
    int64_t bad_amounts[] = { 0, -1, LEDGER_AMOUNT_MAX + 1, INT64_MIN };
    for (int i = 0; i < 4; i++) {
        r = lt_xfer("alice", "bob", bad_amounts[i], "USD");
        CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_EINVAL);
    }
    r = lt_xfer("alice", "bob", 1, "usd");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_EINVAL);
    r = lt_xfer("alice", "@bank", 1, "USD");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_EINVAL);
    r = lt_xfer(NULL, "bob", 1, "USD");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_EINVAL);
    r = lt_xfer("alice", "bob", 1, "USD");
    r.idem_key = "k";   /* a key needs a scope */
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_EINVAL);
    r.idem_scope = "s";
    r.idem_key = "bad\nkey";
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_EINVAL);
    r.idem_key = "";
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_EINVAL);
    CHECK_EQ(lt_balance(l, "alice", NULL), alice);
    CHECK_EQ(lt_balance(l, "bob", NULL), bob);

    /* @world may pay and be paid (admin funding / withdrawal) */
    r = lt_xfer("@world", "bob", 700, "USD");
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, NULL));
    CHECK(strcmp(t.from, "@world") == 0);
    r = lt_xfer("bob", "@world", 200, "USD");
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, NULL));
    CHECK_EQ(lt_balance(l, "bob", NULL), bob + 500);
    /* exact funds: all of it can go */
    r = lt_xfer("alice", "bob", alice, "USD");
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, NULL));
    CHECK_EQ(lt_balance(l, "alice", NULL), 0);
    r = lt_xfer("alice", "bob", 1, "USD");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_EFUNDS);

    CHECK_RC(ledger_get_transfer(l, NULL, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &g), LEDGER_ENOTFOUND);
    CHECK_RC(ledger_get_transfer(l, NULL, "not-an-id", &g), LEDGER_ENOTFOUND);
    CHECK_RC(ledger_get_transfer(l, NULL, "", &g), LEDGER_ENOTFOUND);
    ledger_close(l);
}

static void test_limits(void) {
    ledger *l = lt_open(db, NULL);
    ledger_transfer_rec t;
    CHECK_OK(ledger_create_account(l, NULL, "rich", "LIM", LEDGER_AMOUNT_MAX, NULL));
    CHECK_EQ(lt_balance(l, "@world", "LIM"), -LEDGER_AMOUNT_MAX);
    /* @world cannot go below -LEDGER_BALANCE_MAX */
    CHECK_RC(ledger_create_account(l, NULL, "poor", "LIM", 1, NULL), LEDGER_ELIMIT);
    ledger_account a;
    CHECK_RC(ledger_get_account(l, "poor", NULL, &a), LEDGER_ENOTFOUND);
    CHECK_OK(ledger_create_account(l, NULL, "poor", "LIM", 0, NULL));
    ledger_transfer_req r = lt_xfer("@world", "poor", 1, "LIM");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_ELIMIT);
    /* a balance cannot pass +LEDGER_BALANCE_MAX */
    r = lt_xfer("rich", "poor", 10, "LIM");
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, NULL));
    r = lt_xfer("@world", "rich", 11, "LIM");
    CHECK_RC(ledger_transfer(l, NULL, &r, &t, NULL), LEDGER_ELIMIT);
    r = lt_xfer("poor", "@world", 10, "LIM");
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, NULL));
    r = lt_xfer("@world", "rich", 10, "LIM");
    CHECK_OK(ledger_transfer(l, NULL, &r, &t, NULL));
    CHECK_EQ(lt_balance(l, "rich", NULL), LEDGER_AMOUNT_MAX);
    CHECK_EQ(lt_balance(l, "poor", NULL), 0);
    CHECK_EQ(lt_balance(l, "@world", "LIM"), -LEDGER_AMOUNT_MAX);
    ledger_close(l);
}

static void test_history(void) {
    ledger *l = lt_open(db, NULL);
    CHECK_OK(ledger_create_account(l, NULL, "h1", "HIS", 1000, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "h2", "HIS", 1000, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "h3", "HIS", 1000, NULL));
    char ids[40][LEDGER_TRANSFER_ID_LEN + 1];
    int n = 0;
    strcpy(ids[n++], "");   /* the funding of h1, taken from the list below */
    for (int i = 0; i < 24; i++) {
        /* h1 pays h2, h2 pays h1, and h2<->h3 traffic that h1 must not see */
        ledger_transfer_req r = i % 3 == 0 ? lt_xfer("h1", "h2", i + 1, "HIS")
                              : i % 3 == 1 ? lt_xfer("h2", "h1", i + 1, "HIS")
                                           : lt_xfer("h2", "h3", i + 1, "HIS");
        ledger_transfer_rec t;
        CHECK_OK(ledger_transfer(l, NULL, &r, &t, NULL));
        if (i % 3 != 2) strcpy(ids[n++], t.id);
    }
    /* 17 transfers touch h1: its funding and 16.  Pages of 5, newest first. */
    ledger_page p;
    char cursor[LEDGER_CURSOR_MAX + 1] = "";
    int seen = 0, pages = 0;
    char prev[LEDGER_TRANSFER_ID_LEN + 1] = "~";
    for (;;) {
        CHECK_OK(ledger_list_transfers(l, NULL, "h1", NULL, 5, cursor, &p));
        pages++;
        for (size_t i = 0; i < p.count; i++) {
            CHECK(strcmp(p.items[i].id, prev) < 0);   /* newest first (ULIDs sort by commit) */
            strcpy(prev, p.items[i].id);
            CHECK(strcmp(p.items[i].from, "h1") == 0 || strcmp(p.items[i].to, "h1") == 0);
            int idx = n - 1 - seen;
            if (idx > 0) CHECK(strcmp(p.items[i].id, ids[idx]) == 0);
            else CHECK(strcmp(p.items[i].from, "@world") == 0);
            seen++;
        }
        if (pages == 1) {
            /* New transfers after the first page do not shift the next ones. */
            ledger_transfer_req r = lt_xfer("h2", "h1", 1, "HIS");
            ledger_transfer_rec t;
            CHECK_OK(ledger_transfer(l, NULL, &r, &t, NULL));
        }
        if (!p.has_next) {
            ledger_page_free(&p);
            break;
        }
        CHECK_EQ(p.count, 5);
        strcpy(cursor, p.next);
        ledger_page_free(&p);
    }
    CHECK_EQ(seen, 17);
    CHECK_EQ(pages, 4);
    /* the newest page now starts with the transfer made mid-walk */
    CHECK_OK(ledger_list_transfers(l, NULL, "h1", NULL, 1, NULL, &p));
    CHECK(p.count == 1 && p.has_next && strcmp(p.items[0].from, "h2") == 0 && p.items[0].amount == 1);
    ledger_page_free(&p);
    /* @world's history: the three fundings */
    CHECK_OK(ledger_list_transfers(l, NULL, "@world", "HIS", 1000, NULL, &p));
    CHECK_EQ(p.count, 3);
    CHECK(!p.has_next);
    ledger_page_free(&p);
    /* errors */
    CHECK_RC(ledger_list_transfers(l, NULL, "h1", NULL, 0, NULL, &p), LEDGER_EINVAL);
    CHECK_RC(ledger_list_transfers(l, NULL, "h1", NULL, 1001, NULL, &p), LEDGER_EINVAL);
    CHECK_RC(ledger_list_transfers(l, NULL, "h1", NULL, 5, "zz", &p), LEDGER_EINVAL);
    CHECK_RC(ledger_list_transfers(l, NULL, "h1", NULL, 5, "0", &p), LEDGER_EINVAL);
    CHECK_RC(ledger_list_transfers(l, NULL, "h1", NULL, 5, "ffffffffffffffffff", &p), LEDGER_EINVAL);
    CHECK_RC(ledger_list_transfers(l, NULL, "nobody", NULL, 5, NULL, &p), LEDGER_ENOTFOUND);
    CHECK_RC(ledger_list_transfers(l, NULL, "@world", NULL, 5, NULL, &p), LEDGER_ENOTFOUND);
    /* a cursor past the start: empty page */
    CHECK_OK(ledger_list_transfers(l, NULL, "h1", NULL, 5, "1", &p));
    CHECK_EQ(p.count, 0);
    ledger_page_free(&p);
    ledger_close(l);
}

static void test_keys_and_admin(void) {
    char *keyfile = lt_path(dir, "admin.key");
    ledger_options o = { .admin_key_file = keyfile };
    ledger *l = lt_open(db, &o);
    /* This database was first opened with the default file name, which got
     * the generated key; a second file is not written. */
    CHECK(ledger_admin_key_file(l) == NULL);
    ledger_close(l);

    /* A fresh database generates its admin key, writes it once, mode 0600. */
    char *db2 = lt_path(dir, "keys.db");
    l = lt_open(db2, &o);
    CHECK(ledger_admin_key_file(l) != NULL && strcmp(ledger_admin_key_file(l), keyfile) == 0);
    struct stat sb;
    CHECK(stat(keyfile, &sb) == 0);
    CHECK_EQ(sb.st_mode & 0777, 0600);
    char admin[256] = "";
    FILE *f = fopen(keyfile, "r");
    CHECK(f && fgets(admin, sizeof admin, f));
    fclose(f);
    admin[strcspn(admin, "\n")] = 0;
    CHECK(strlen(admin) > 40);
    ledger_principal pr;
    CHECK_OK(ledger_authenticate(l, admin, strlen(admin), &pr));
    CHECK_EQ(pr.kind, LEDGER_PRINCIPAL_ADMIN);
    CHECK(strcmp(pr.key_id, LEDGER_ADMIN_SCOPE) == 0 && pr.account[0] == 0);
    CHECK(lt_sql_int(db2, "SELECT count(*) FROM meta WHERE name = 'admin_hash'") == 1);
    CHECK(lt_sql_int(db2, "SELECT count(*) FROM meta WHERE value LIKE 'ladm_%'") == 0);

    /* account keys */
    CHECK_OK(ledger_create_account(l, NULL, "kay", "USD", 0, NULL));
    ledger_key k, k2;
    CHECK_OK(ledger_create_key(l, NULL, "kay", &k));
    CHECK_OK(ledger_create_key(l, NULL, "kay", &k2));
    CHECK_EQ(strlen(k.id), LEDGER_KEY_ID_LEN);
    CHECK(strcmp(k.account, "kay") == 0 && strcmp(k.id, k2.id) != 0 && strcmp(k.secret, k2.secret) != 0);
    CHECK(strncmp(k.secret, "lk_", 3) == 0 && strlen(k.secret) >= 64);
    CHECK(is_rfc3339_ms(k.created_at));
    CHECK_OK(ledger_authenticate(l, k.secret, strlen(k.secret), &pr));
    CHECK_EQ(pr.kind, LEDGER_PRINCIPAL_ACCOUNT);
    CHECK(strcmp(pr.account, "kay") == 0 && strcmp(pr.key_id, k.id) == 0);
    CHECK_OK(ledger_authenticate(l, k2.secret, strlen(k2.secret), &pr));
    CHECK(strcmp(pr.key_id, k2.id) == 0);
    /* the secret is stored nowhere, only its hash */
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM api_keys WHERE hash = '%s' OR salt = '%s' OR id = '%s'",
             k.secret, k.secret, k.id);
    CHECK_EQ(lt_sql_int(db2, sql), 1);   /* the id row, not the secret */
    /* wrong secrets */
    char bad[LEDGER_SECRET_MAX + 1];
    strcpy(bad, k.secret);
    bad[strlen(bad) - 1] ^= 1;
    CHECK_RC(ledger_authenticate(l, bad, strlen(bad), &pr), LEDGER_EUNAUTHORIZED);
    strcpy(bad, k.secret);
    memcpy(bad + 3, k2.id, LEDGER_KEY_ID_LEN);   /* k's random part with k2's id */
    CHECK_RC(ledger_authenticate(l, bad, strlen(bad), &pr), LEDGER_EUNAUTHORIZED);
    CHECK_RC(ledger_authenticate(l, "", 0, &pr), LEDGER_EUNAUTHORIZED);
    CHECK_RC(ledger_authenticate(l, "Bearer", 6, &pr), LEDGER_EUNAUTHORIZED);
    CHECK_RC(ledger_authenticate(l, k.secret, strlen(k.secret) - 1, &pr), LEDGER_EUNAUTHORIZED);
    CHECK_RC(ledger_authenticate(l, admin, strlen(admin) - 1, &pr), LEDGER_EUNAUTHORIZED);
    /* key errors */
    CHECK_RC(ledger_create_key(l, NULL, "nobody", &k2), LEDGER_ENOTFOUND);
    CHECK_RC(ledger_create_key(l, NULL, "@world", &k2), LEDGER_EINVAL);
    CHECK_RC(ledger_create_key(l, NULL, "", &k2), LEDGER_EINVAL);
    ledger_close(l);

    /* Reopen: the keys survive, the admin file is not rewritten. */
    CHECK(unlink(keyfile) == 0);
    l = lt_open(db2, &o);
    CHECK(ledger_admin_key_file(l) == NULL);
    CHECK(access(keyfile, F_OK) != 0);
    CHECK_OK(ledger_authenticate(l, admin, strlen(admin), &pr));
    CHECK_EQ(pr.kind, LEDGER_PRINCIPAL_ADMIN);
    CHECK_OK(ledger_authenticate(l, k.secret, strlen(k.secret), &pr));
    CHECK(strcmp(pr.account, "kay") == 0);
    ledger_close(l);

    /* A configured admin key replaces the generated one. */
    ledger_options oc = { .admin_key = "configured-admin-secret" };
    l = lt_open(db2, &oc);
    CHECK(ledger_admin_key_file(l) == NULL);
    CHECK_OK(ledger_authenticate(l, "configured-admin-secret", 23, &pr));
    CHECK_EQ(pr.kind, LEDGER_PRINCIPAL_ADMIN);
    CHECK_RC(ledger_authenticate(l, admin, strlen(admin), &pr), LEDGER_EUNAUTHORIZED);
    CHECK_OK(ledger_authenticate(l, k.secret, strlen(k.secret), &pr));
    ledger_close(l);
    free(db2);
    free(keyfile);
}

static void test_persistence(void) {
    /* Everything above is still there, and balances add up (open verified). */
    ledger *l = lt_open(db, NULL);
    CHECK_EQ(lt_balance(l, "alice", NULL), 0);
    CHECK_EQ(lt_balance(l, "rich", NULL), LEDGER_AMOUNT_MAX);
    int64_t sum = lt_balance(l, "@world", "USD");
    ledger_page p;
    const char *usd[] = { "alice", "bob", NULL };
    for (int i = 0; usd[i]; i++) sum += lt_balance(l, usd[i], NULL);
    CHECK_EQ(sum, 0);   /* the 64-x account has 0 */
    CHECK_OK(ledger_list_transfers(l, NULL, "bob", NULL, 1000, NULL, &p));
    CHECK(p.count >= 6);
    ledger_transfer_rec g;
    CHECK_OK(ledger_get_transfer(l, NULL, p.items[0].id, &g));
    CHECK(memcmp(&g, &p.items[0], sizeof g) == 0);
    ledger_page_free(&p);
    ledger_close(l);
}

static void test_exclusive(void) {
    ledger *l = lt_open(db, NULL);
    ledger *l2 = NULL;
    char err[256];
    CHECK_RC(ledger_open(db, NULL, &l2, err, sizeof err), LEDGER_EBUSY);
    CHECK(strstr(err, "another") != NULL);
    ledger_close(l);
    l2 = lt_open(db, NULL);
    ledger_close(l2);
}

static void test_sync_normal(void) {
    char *p = lt_path(dir, "normal.db");
    ledger_options o = { .sync = LEDGER_SYNC_NORMAL };
    ledger *l = lt_open(p, &o);
    CHECK_OK(ledger_create_account(l, NULL, "n1", "USD", 1000, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "n2", "USD", 0, NULL));
    int n = (int)SCALED(100);
    int64_t t0 = rt_nanotime();
    for (int i = 0; i < n; i++) {
        ledger_transfer_req r = lt_xfer("n1", "n2", 1, "USD");
        CHECK_OK(ledger_transfer(l, NULL, &r, NULL, NULL));
    }
    double normal_us = (double)(rt_nanotime() - t0) / 1e3 / n;
    ledger_close(l);
    l = lt_open(p, &o);
    CHECK_EQ(lt_balance(l, "n2", NULL), n);
    ledger_close(l);
    /* The same, fsync'd (FULL). */
    o.sync = LEDGER_SYNC_FULL;
    l = lt_open(p, &o);
    t0 = rt_nanotime();
    for (int i = 0; i < n; i++) {
        ledger_transfer_req r = lt_xfer("n1", "n2", 1, "USD");
        CHECK_OK(ledger_transfer(l, NULL, &r, NULL, NULL));
    }
    double full_us = (double)(rt_nanotime() - t0) / 1e3 / n;
    CHECK_EQ(lt_balance(l, "n2", NULL), 2 * n);
    ledger_close(l);
    fprintf(stderr, "       one transfer at a time: synchronous=NORMAL %.0f us, FULL %.0f us\n",
            normal_us, full_us);
    free(p);
}

static void test_context(void) {
    ledger *l = lt_open(db, NULL);
    rt_context *ctx;
    CHECK(rt_context_with_cancel(NULL, &ctx) == RT_OK);
    rt_context_cancel(ctx);
    int64_t bob = lt_balance(l, "bob", NULL);
    ledger_transfer_req r = lt_xfer("bob", "alice", 1, "USD");
    CHECK_RC(ledger_transfer(l, ctx, &r, NULL, NULL), LEDGER_ECANCELED);
    CHECK_RC(ledger_create_account(l, ctx, "ctxacct", "USD", 0, NULL), LEDGER_ECANCELED);
    ledger_page p;
    CHECK_RC(ledger_list_transfers(l, ctx, "bob", NULL, 10, NULL, &p), LEDGER_ECANCELED);
    rt_context_release(ctx);
    CHECK(rt_context_with_timeout(NULL, 1, &ctx) == RT_OK);
    rt_sleep(2 * RT_MILLISECOND);
    CHECK_RC(ledger_transfer(l, ctx, &r, NULL, NULL), LEDGER_ETIMEDOUT);
    rt_context_release(ctx);
    CHECK_EQ(lt_balance(l, "bob", NULL), bob);
    ledger_account a;
    CHECK_RC(ledger_get_account(l, "ctxacct", NULL, &a), LEDGER_ENOTFOUND);
    /* a live context changes nothing */
    CHECK(rt_context_with_timeout(NULL, 10 * RT_SECOND, &ctx) == RT_OK);
    CHECK_OK(ledger_transfer(l, ctx, &r, NULL, NULL));
    rt_context_release(ctx);
    CHECK_EQ(lt_balance(l, "bob", NULL), bob - 1);
    ledger_close(l);
}

static void test_storage_failures(void) {
    char *p = lt_path(dir, "fail.db");
    ledger *l = lt_open(p, NULL);
    CHECK_OK(ledger_create_account(l, NULL, "f1", "USD", 1000, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "f2", "USD", 0, NULL));
    /* A statement that fails inside the group's transaction (as a full disk
     * would): a trigger, installed from outside, rejects amount 13. */
    lt_sql(p, "CREATE TRIGGER boom BEFORE INSERT ON transfers WHEN NEW.amount = 13 "
              "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    ledger_transfer_req r = lt_xfer("f1", "f2", 13, "USD");
    r.idem_scope = "s";
    r.idem_key = "boom-key";
    CHECK_RC(ledger_transfer(l, NULL, &r, NULL, NULL), LEDGER_EIO);
    CHECK(ledger_healthy(l));
    CHECK_EQ(lt_balance(l, "f1", NULL), 1000);
    CHECK_EQ(lt_balance(l, "f2", NULL), 0);
    /* an account created in a failed group does not exist */
    CHECK_RC(ledger_create_account(l, NULL, "f3", "USD", 13, NULL), LEDGER_EIO);
    ledger_account a;
    CHECK_RC(ledger_get_account(l, "f3", NULL, &a), LEDGER_ENOTFOUND);
    CHECK_RC(ledger_create_account(l, NULL, "f4", "NEW", 13, NULL), LEDGER_EIO);
    CHECK_RC(ledger_get_account(l, "@world", "NEW", &a), LEDGER_ENOTFOUND);
    ledger_stats st;
    ledger_get_stats(l, &st);
    CHECK_EQ(st.commit_failures, 3);
    lt_sql(p, "DROP TRIGGER boom");
    /* the store goes on; the failed request's idempotency key is free */
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, NULL));
    CHECK_OK(ledger_create_account(l, NULL, "f3", "USD", 13, NULL));
    CHECK_EQ(lt_balance(l, "f2", NULL), 13);

    /* COMMIT failing: the outcome is unknown, so the store stops writing. */
    ledger_test_fail_commits(l, 1);
    r = lt_xfer("f1", "f2", 7, "USD");
    CHECK_RC(ledger_transfer(l, NULL, &r, NULL, NULL), LEDGER_EFAILED);
    CHECK(!ledger_healthy(l));
    CHECK_EQ(lt_balance(l, "f2", NULL), 13);
    CHECK_RC(ledger_transfer(l, NULL, &r, NULL, NULL), LEDGER_EFAILED);
    CHECK_RC(ledger_create_account(l, NULL, "f5", "USD", 0, NULL), LEDGER_EFAILED);
    ledger_get_stats(l, &st);
    CHECK(st.failed);
    /* reads still work */
    ledger_page pg;
    CHECK_OK(ledger_list_transfers(l, NULL, "f2", NULL, 10, NULL, &pg));
    CHECK_EQ(pg.count, 1);
    ledger_page_free(&pg);
    ledger_close(l);
    /* Reopen: memory is rebuilt from the disk, which never got the group. */
    l = lt_open(p, NULL);
    CHECK(ledger_healthy(l));
    CHECK_EQ(lt_balance(l, "f2", NULL), 13);
    CHECK_OK(ledger_transfer(l, NULL, &r, NULL, NULL));
    CHECK_EQ(lt_balance(l, "f2", NULL), 20);
    ledger_close(l);
    free(p);
}

static int run(void *arg) {
    (void)arg;
    dir = lt_tmpdir("basic");
    db = lt_path(dir, "ledger.db");
    RUN(test_strerror);
    RUN(test_open_errors);
    RUN(test_accounts);
    RUN(test_transfers);
    RUN(test_limits);
    RUN(test_history);
    RUN(test_keys_and_admin);
    RUN(test_persistence);
    RUN(test_exclusive);
    RUN(test_sync_normal);
    RUN(test_context);
    RUN(test_storage_failures);
    lt_rmrf(dir);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
