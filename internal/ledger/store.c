/*
 * store.c — the ledger's SQLite side: connections, schema, the rebuild and
 * verification of the in-memory ledger at open, the reader goroutines and
 * their queries, and the idempotency sweep.
 *
 * Connections
 *   One read-write connection (wdb), owned by the committer goroutine: it is
 *   the only writer, so SQLite never sees two writers and BEGIN IMMEDIATE
 *   never waits for a lock held by this process.  Plus `readers` read-only
 *   connections, one per reader goroutine.  WAL lets them read committed
 *   data while the committer writes and fsyncs: a read never waits for a
 *   commit and a commit never waits for a read.  Every connection is opened
 *   SQLITE_OPEN_NOMUTEX (one goroutine uses it at a time; the goroutine may
 *   move between OS threads, which SQLite's multi-thread mode allows), and
 *   every SQLite call runs between rt_blocking_enter/exit so that a slow
 *   disk parks the goroutine's thread, not its processor.  SQLite runs only
 *   on the committer and reader goroutines, which have large stacks.
 *
 * Checkpoints (ledger_options.checkpointer; off by default, see ledger.h)
 *   By default SQLite's autocheckpoint runs inside the COMMIT that pushes
 *   the WAL past 1000 frames: that group also waits for the copy into the
 *   database and its fsync (the p99 spikes in bench/RESULTS.md).  SQLite
 *   allows a checkpoint from any connection, concurrently with the writer
 *   and readers (WAL docs: checkpoints can run in a separate thread or
 *   process).  With the option the writer runs wal_autocheckpoint=0, and
 *   a checkpointer goroutine with its own read-write connection runs a
 *   PASSIVE checkpoint (never waits for, nor blocks, the writer or the
 *   readers) each time the committer, counting frames with
 *   sqlite3_wal_hook, has seen 1000 more frames; at close, a TRUNCATE.
 *   The WAL restarts from its beginning only after a checkpoint that copied
 *   every frame before the next write transaction began, which a
 *   checkpointer racing a busy committer keeps missing; so past 8000 frames
 *   the committer checkpoints itself (cheap: the checkpointer has copied
 *   nearly everything), which bounds the WAL (~32 MiB).
 *   Measured on the development VM (test_ledger_group, 64 goroutines): p99
 *   ~1 ms lower (10.1-10.7 vs 11.4-11.6 ms keyed) but throughput 10-20%
 *   lower — concurrent checkpoint fsyncs slow the WAL fsyncs on one disk —
 *   hence off by default.
 *
 * Why a goroutine per read connection rather than a pool shared by callers:
 *   callers are request goroutines with 64 KiB stacks, too small for SQLite
 *   under the sanitizers; and a goroutine that owns its connection keeps
 *   its prepared statements without any locking.  A read costs one channel
 *   round trip more.
 *
 * Schema (version 2)
 *   meta(name, value)                 schema_version, the generated admin key's salt+hash
 *   accounts(key, id, currency, balance, created_at)
 *        key is the id, or "@world:USD" for a currency's @world
 *   transfers(seq, id, from_key, to_key, amount, currency, memo, created_at)
 *        seq: commit order (INTEGER PRIMARY KEY, assigned by the committer);
 *        indexes on from_key and to_key, whose entries end in the rowid =
 *        seq, so an account's history is two backward index range scans
 *   idempotency(id, scope, key, request_hash, result, transfer_id, created_ms)
 *        append-only, id INTEGER PRIMARY KEY and no other index: rows are
 *        appended in commit order, so recording a key dirties only the
 *        table's last leaf (a PRIMARY KEY(scope, key) and a created_ms
 *        index cost two random leaves per keyed transfer, most of the
 *        COMMIT's pages), and rowid order is time order.  The lookup by
 *        key is the in-memory index (idemset.c): fingerprint -> rowid,
 *        rebuilt from one scan at open; the reader fetches candidates by
 *        rowid and compares scope and key.  A key reused after expiry
 *        gets a new row; the sweep deletes a prefix of the rowid range.
 *        Version 1 had PRIMARY KEY(scope, key) and an index on created_ms;
 *        such a database is migrated at open, in one transaction (rows
 *        copied in created_ms order).
 *   api_keys(id, account, salt, hash, created_at)
 *
 * Open-time verification (the double-entry invariant and its consequences)
 *   Every transfer: amount in 1..2^53-1, from != to, both accounts exist and
 *   have the transfer's currency; its amount is added to `to` and taken from
 *   `from` in a recomputed balance (overflow is corruption).  Then every
 *   account's stored balance must equal the recomputed one, only @world may
 *   be negative, |balance| <= LEDGER_BALANCE_MAX, and per currency the
 *   balances sum to 0 (in 128 bits).  API keys must name existing regular
 *   accounts; successful idempotency records must name stored transfers.
 *   The first violation refuses the open with LEDGER_ECORRUPT and a message.
 *   The scan is linear in the number of transfers (about a second per few
 *   million), the price of never serving from a ledger that does not add up.
 */
#include "ledger_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define SCHEMA_VERSION 2
#define SWEEP_CHUNK 5000
#define SWEEP_CHUNK_STR "5000"
/* WAL frames (4 KiB pages) after which the checkpointer is woken (SQLite's
 * autocheckpoint default), and after which the committer checkpoints
 * itself because the checkpointer has not caught up. */
#define CKPT_FRAMES 1000
#define CKPT_BACKSTOP_FRAMES 8000

int ledger_sqlite_rc(int rc) {
    switch (rc & 0xff) {
    case SQLITE_OK: return LEDGER_OK;
    case SQLITE_NOMEM: return LEDGER_ENOMEM;
    case SQLITE_CORRUPT: case SQLITE_NOTADB: return LEDGER_ECORRUPT;
    case SQLITE_BUSY: case SQLITE_LOCKED: return LEDGER_EBUSY;
    default: return LEDGER_EIO;
    }
}

lacct *acct_new(const char *key, const char *id, const char *currency, bool world) {
    lacct *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    snprintf(a->key, sizeof a->key, "%s", key);
    snprintf(a->id, sizeof a->id, "%s", id);
    snprintf(a->currency, sizeof a->currency, "%s", currency);
    a->world = world;
    a->node.key = a->key;
    a->node.klen = strlen(a->key);
    return a;
}

/* ------------------------------------------------------------ connections */

static int open_conn(const char *path, bool readonly, sqlite3 **out, char *err, size_t errlen) {
    int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE |
                (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        ledger_errf(err, errlen, "sqlite3_open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return ledger_sqlite_rc(rc);
    }
    /* WAL recovery or a checkpoint elsewhere can make a statement see BUSY
     * briefly; wait (this thread is in a blocking call) rather than fail. */
    sqlite3_busy_timeout(db, 10000);
    *out = db;
    return LEDGER_OK;
}

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen) {
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        ledger_errf(err, errlen, "%s: %s", sql, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return ledger_sqlite_rc(rc);
    }
    return LEDGER_OK;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, char *err, size_t errlen) {
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc != SQLITE_OK) {
        ledger_errf(err, errlen, "prepare %s: %s", sql, sqlite3_errmsg(db));
        return ledger_sqlite_rc(rc);
    }
    return LEDGER_OK;
}

/* The schema-v2 idempotency table, used by the schema and the v1 migration. */
#define IDEMPOTENCY_COLUMNS_V2                                                    \
    "(id INTEGER PRIMARY KEY, scope TEXT NOT NULL, key TEXT NOT NULL,"            \
    " request_hash BLOB NOT NULL, result INTEGER NOT NULL, transfer_id TEXT,"     \
    " created_ms INTEGER NOT NULL);"

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS meta("
    "  name TEXT PRIMARY KEY,"
    "  value);"
    "CREATE TABLE IF NOT EXISTS accounts("
    "  key TEXT PRIMARY KEY,"
    "  id TEXT NOT NULL,"
    "  currency TEXT NOT NULL,"
    "  balance INTEGER NOT NULL,"
    "  created_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS transfers("
    "  seq INTEGER PRIMARY KEY,"
    "  id TEXT NOT NULL UNIQUE,"
    "  from_key TEXT NOT NULL,"
    "  to_key TEXT NOT NULL,"
    "  amount INTEGER NOT NULL,"
    "  currency TEXT NOT NULL,"
    "  memo TEXT,"
    "  created_at TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS transfers_from ON transfers(from_key);"
    "CREATE INDEX IF NOT EXISTS transfers_to ON transfers(to_key);"
    "CREATE TABLE IF NOT EXISTS idempotency" IDEMPOTENCY_COLUMNS_V2
    "CREATE TABLE IF NOT EXISTS api_keys("
    "  id TEXT PRIMARY KEY,"
    "  account TEXT NOT NULL,"
    "  salt BLOB NOT NULL,"
    "  hash BLOB NOT NULL,"
    "  created_at TEXT NOT NULL);";

/* Version 1 -> 2: the idempotency table becomes append-only (see the top).
 * Runs inside create_schema's transaction, so a crash leaves version 1. */
static const char *const migrate_v1_sql =
    "CREATE TABLE idempotency_v2" IDEMPOTENCY_COLUMNS_V2
    "INSERT INTO idempotency_v2(scope, key, request_hash, result, transfer_id, created_ms)"
    "  SELECT scope, key, request_hash, result, transfer_id, created_ms FROM idempotency"
    "  ORDER BY created_ms, scope, key;"
    "DROP TABLE idempotency;"   /* and its indexes */
    "ALTER TABLE idempotency_v2 RENAME TO idempotency;"
    "UPDATE meta SET value = 2 WHERE name = 'schema_version';";

static int create_schema(ledger *l) {
    char *err = l->open_err;
    size_t elen = sizeof l->open_err;
    int rc = exec_sql(l->wdb, "BEGIN IMMEDIATE", err, elen);
    if (rc) return rc;
    rc = exec_sql(l->wdb, schema_sql, err, elen);
    sqlite3_stmt *st = NULL;
    if (!rc) rc = prepare(l->wdb, "SELECT value FROM meta WHERE name='schema_version'", &st, err, elen);
    if (!rc) {
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            int64_t v = sqlite3_column_int64(st, 0);
            if (v == 1) {
                sqlite3_reset(st);   /* no read in progress across the DDL */
                rc = exec_sql(l->wdb, migrate_v1_sql, err, elen);
            } else if (v != SCHEMA_VERSION) {
                ledger_errf(err, elen, "schema version %" PRId64 ", this build knows %d", v, SCHEMA_VERSION);
                rc = LEDGER_ECORRUPT;
            }
        } else if (s == SQLITE_DONE) {
            char sql[96];
            snprintf(sql, sizeof sql, "INSERT INTO meta(name, value) VALUES('schema_version', %d)", SCHEMA_VERSION);
            rc = exec_sql(l->wdb, sql, err, elen);
        } else {
            ledger_errf(err, elen, "read schema version: %s", sqlite3_errmsg(l->wdb));
            rc = ledger_sqlite_rc(s);
        }
    }
    sqlite3_finalize(st);
    if (!rc) rc = exec_sql(l->wdb, "COMMIT", err, elen);
    if (rc) sqlite3_exec(l->wdb, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* -------------------------------------------------------- load and verify */

static const char *col_text(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

static bool col_is_int(sqlite3_stmt *st, int i) {
    return sqlite3_column_type(st, i) == SQLITE_INTEGER;
}

static bool valid_time(const char *s) {
    return strlen(s) == LEDGER_TIME_LEN && s[4] == '-' && s[10] == 'T' && s[23] == 'Z';
}

static int corrupt(ledger *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int corrupt(ledger *l, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ledger_errf(l->open_err, sizeof l->open_err, "invariant violated: %s", msg);
    return LEDGER_ECORRUPT;
}

static int sql_fail(ledger *l, const char *what, int rc) {
    ledger_errf(l->open_err, sizeof l->open_err, "%s: %s", what, sqlite3_errmsg(l->wdb));
    return ledger_sqlite_rc(rc);
}

static int load_accounts(ledger *l) {
    sqlite3_stmt *st = NULL;
    int rc = prepare(l->wdb, "SELECT key, id, currency, balance, created_at FROM accounts",
                     &st, l->open_err, sizeof l->open_err);
    if (rc) return rc;
    int s = SQLITE_DONE;
    while (rc == LEDGER_OK && (s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *key = col_text(st, 0), *id = col_text(st, 1), *cur = col_text(st, 2);
        const char *created = col_text(st, 4);
        int64_t bal = sqlite3_column_int64(st, 3);
        bool world = strcmp(id, LEDGER_WORLD) == 0;
        char want[LEDGER_ACCOUNT_ID_MAX + 1];
        if (!ledger_valid_currency(cur) || !ledger_account_key(id, cur, want) ||
            strcmp(want, key) != 0 || !col_is_int(st, 3) || !valid_time(created)) {
            rc = corrupt(l, "malformed account row %s", key);
            break;
        }
        if (bal < -LEDGER_BALANCE_MAX || bal > LEDGER_BALANCE_MAX) {
            rc = corrupt(l, "account %s: balance %" PRId64 " out of range", key, bal);
            break;
        }
        if (!world && bal < 0) {
            rc = corrupt(l, "account %s: negative balance %" PRId64, key, bal);
            break;
        }
        lacct *a = acct_new(key, id, cur, world);
        if (!a) { rc = LEDGER_ENOMEM; break; }
        a->balance = bal;
        a->committed = true;
        snprintf(a->created_at, sizeof a->created_at, "%s", created);
        if (htab_put(&l->accounts, &a->node) != LEDGER_OK) {
            free(a);
            rc = LEDGER_ENOMEM;
        }
    }
    if (rc == LEDGER_OK && s != SQLITE_DONE) rc = sql_fail(l, "load accounts", s);
    sqlite3_finalize(st);
    return rc;
}

static int load_keys(ledger *l) {
    sqlite3_stmt *st = NULL;
    int rc = prepare(l->wdb, "SELECT id, account, salt, hash FROM api_keys", &st,
                     l->open_err, sizeof l->open_err);
    if (rc) return rc;
    int s = SQLITE_DONE;
    while (rc == LEDGER_OK && (s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = col_text(st, 0), *account = col_text(st, 1);
        hent *e = ledger_valid_account_id(account) ? htab_get(&l->accounts, account, strlen(account)) : NULL;
        if (strlen(id) != LEDGER_KEY_ID_LEN || !e ||
            sqlite3_column_bytes(st, 2) != LEDGER_SALT_BYTES ||
            sqlite3_column_bytes(st, 3) != LEDGER_HASH_BYTES) {
            rc = corrupt(l, "API key %s: malformed or its account does not exist", id);
            break;
        }
        lkey *k = calloc(1, sizeof *k);
        if (!k) { rc = LEDGER_ENOMEM; break; }
        k->committed = true;
        snprintf(k->id, sizeof k->id, "%s", id);
        snprintf(k->account, sizeof k->account, "%s", account);
        memcpy(k->salt, sqlite3_column_blob(st, 2), LEDGER_SALT_BYTES);
        memcpy(k->hash, sqlite3_column_blob(st, 3), LEDGER_HASH_BYTES);
        k->node.key = k->id;
        k->node.klen = strlen(k->id);
        if (htab_put(&l->keys, &k->node) != LEDGER_OK) {
            free(k);
            rc = LEDGER_ENOMEM;
        }
    }
    if (rc == LEDGER_OK && s != SQLITE_DONE) rc = sql_fail(l, "load keys", s);
    sqlite3_finalize(st);
    return rc;
}

static lacct *find(ledger *l, const char *key) {
    hent *e = htab_get(&l->accounts, key, strlen(key));
    return e ? container_of(e, lacct, node) : NULL;
}

/* Recompute every balance from the transfers (into lacct.verify). */
static int replay_transfers(ledger *l) {
    sqlite3_stmt *st = NULL;
    int rc = prepare(l->wdb, "SELECT seq, id, from_key, to_key, amount, currency FROM transfers ORDER BY seq",
                     &st, l->open_err, sizeof l->open_err);
    if (rc) return rc;
    int s = SQLITE_DONE;
    l->next_seq = 1;
    while (rc == LEDGER_OK && (s = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        const char *id = col_text(st, 1);
        lacct *from = find(l, col_text(st, 2)), *to = find(l, col_text(st, 3));
        int64_t amount = sqlite3_column_int64(st, 4);
        const char *cur = col_text(st, 5);
        if (!col_is_int(st, 4) || amount < 1 || amount > LEDGER_AMOUNT_MAX)
            rc = corrupt(l, "transfer %s: amount %" PRId64 " out of range", id, amount);
        else if (!from || !to)
            rc = corrupt(l, "transfer %s: unknown account (seq %" PRId64 ")", id, seq);
        else if (from == to)
            rc = corrupt(l, "transfer %s: from == to (seq %" PRId64 ")", id, seq);
        else if (strcmp(from->currency, cur) != 0 || strcmp(to->currency, cur) != 0)
            rc = corrupt(l, "transfer %s: currency differs from its accounts' (seq %" PRId64 ")", id, seq);
        else if (__builtin_sub_overflow(from->verify, amount, &from->verify) ||
                 __builtin_add_overflow(to->verify, amount, &to->verify))
            rc = corrupt(l, "transfer %s: balance overflow (seq %" PRId64 ")", id, seq);
        if (seq >= l->next_seq) l->next_seq = seq + 1;
    }
    if (rc == LEDGER_OK && s != SQLITE_DONE) rc = sql_fail(l, "replay transfers", s);
    sqlite3_finalize(st);
    return rc;
}

typedef struct csum {
    hent node;
    char currency[4];
    __int128 sum;
} csum;

static void free_csum(hent *e) { free(container_of(e, csum, node)); }

static int check_balances(ledger *l) {
    htab sums;
    if (htab_init(&sums, 16) != LEDGER_OK) return LEDGER_ENOMEM;
    int rc = LEDGER_OK;
    for (size_t i = 0; i < l->accounts.nbuckets && rc == LEDGER_OK; i++) {
        for (hent *e = l->accounts.buckets[i]; e && rc == LEDGER_OK; e = e->next) {
            lacct *a = container_of(e, lacct, node);
            if (a->balance != a->verify) {
                rc = corrupt(l, "account %s: stored balance %" PRId64 " != %" PRId64 " from its transfers",
                             a->key, a->balance, a->verify);
                break;
            }
            hent *se = htab_get(&sums, a->currency, 3);
            csum *c = se ? container_of(se, csum, node) : NULL;
            if (!c) {
                c = calloc(1, sizeof *c);
                if (!c) { rc = LEDGER_ENOMEM; break; }
                memcpy(c->currency, a->currency, 4);
                c->node.key = c->currency;
                c->node.klen = 3;
                if (htab_put(&sums, &c->node) != LEDGER_OK) { free(c); rc = LEDGER_ENOMEM; break; }
            }
            c->sum += a->balance;
        }
    }
    for (size_t i = 0; i < sums.nbuckets && rc == LEDGER_OK; i++) {
        for (hent *e = sums.buckets[i]; e; e = e->next) {
            csum *c = container_of(e, csum, node);
            if (c->sum != 0) {
                rc = corrupt(l, "currency %s: balances sum to %" PRId64 " (low 64 bits), not 0",
                             c->currency, (int64_t)c->sum);
                break;
            }
        }
    }
    htab_destroy(&sums, free_csum);
    return rc;
}

/*
 * The index of recorded keys (idemset.c): fingerprint -> rowid of every
 * record within the TTL, from one scan of the table.  Older rows are
 * expired already (the lookup ignores them) and the first sweep deletes
 * them.  Runs before the ledger serves, so mu is not needed yet.
 */
static int load_idempotency_index(ledger *l) {
    sqlite3_stmt *st = NULL;
    int rc = prepare(l->wdb, "SELECT id, scope, key, created_ms FROM idempotency WHERE created_ms >= ?1",
                     &st, l->open_err, sizeof l->open_err);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, ledger_now_ms() - l->opts.idem_ttl_ms);
    int s;
    char claim[LEDGER_CLAIM_MAX + 1];
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        /* The same bytes as the claim key ledger_transfer fingerprints. */
        int n = snprintf(claim, sizeof claim, "%s\x1f%s", col_text(st, 1), col_text(st, 2));
        size_t len = n < 0 ? 0 : (size_t)n < sizeof claim ? (size_t)n : sizeof claim - 1;
        /* ENOMEM makes the index lossy: correct, only slower. */
        (void)idemset_add(&l->idem, idemset_fingerprint(&l->idem, claim, len),
                          sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 3));
    }
    if (s != SQLITE_DONE) rc = sql_fail(l, "load idempotency keys", s);
    sqlite3_finalize(st);
    return rc;
}

static int check_idempotency(ledger *l) {
    sqlite3_stmt *st = NULL;
    int rc = prepare(l->wdb,
                     "SELECT scope, key FROM idempotency WHERE result = 0 AND NOT EXISTS "
                     "(SELECT 1 FROM transfers t WHERE t.id = idempotency.transfer_id) LIMIT 1",
                     &st, l->open_err, sizeof l->open_err);
    if (rc) return rc;
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        char who[LEDGER_CLAIM_MAX + 8];
        snprintf(who, sizeof who, "%s/%s", col_text(st, 0), col_text(st, 1));
        rc = corrupt(l, "idempotency record %s names a transfer that is not stored", who);
    } else if (s != SQLITE_DONE) {
        rc = sql_fail(l, "check idempotency", s);
    }
    sqlite3_finalize(st);
    return rc;
}

/* The commit hook: fault injection for tests (returning non-zero turns the
 * COMMIT into a rollback, and COMMIT reports an error). */
static int commit_hook(void *arg) {
    ledger *l = arg;
    int n = atomic_load(&l->test_fail_commits);
    while (n > 0) {
        if (atomic_compare_exchange_weak(&l->test_fail_commits, &n, n - 1)) return 1;
    }
    return 0;
}

void ledger_test_fail_commits(ledger *l, int n) { atomic_store(&l->test_fail_commits, n); }

void ledger_test_fixed_fingerprint(ledger *l) {
    rt_mutex_lock(&l->mu);
    l->idem.fixed_fp = 0x5eed;
    rt_mutex_unlock(&l->mu);
}

/* After each commit on wdb (inside sqlite3_step, on the committer): note
 * the WAL's length; store_after_commit acts on it outside SQLite. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames) {
    (void)db;
    (void)name;
    ((ledger *)arg)->wal_frames = frames;
    return SQLITE_OK;
}

static int prepare_writes(ledger *l) {
    static const char *const sql[WST_COUNT] = {
        [WST_BEGIN] = "BEGIN IMMEDIATE",
        [WST_COMMIT] = "COMMIT",
        [WST_ROLLBACK] = "ROLLBACK",
        [WST_INS_TRANSFER] = "INSERT INTO transfers(seq, id, from_key, to_key, amount, currency, memo, created_at) "
                             "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        [WST_UPD_BALANCE] = "UPDATE accounts SET balance = ?2 WHERE key = ?1",
        [WST_INS_ACCOUNT] = "INSERT INTO accounts(key, id, currency, balance, created_at) VALUES(?1, ?2, ?3, 0, ?4)",
        [WST_INS_IDEM] = "INSERT INTO idempotency(scope, key, request_hash, result, transfer_id, created_ms) "
                         "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
        [WST_INS_KEY] = "INSERT INTO api_keys(id, account, salt, hash, created_at) VALUES(?1, ?2, ?3, ?4, ?5)",
        /* The sweep's two halves (see store_sweep): the plans are a scan of
         * the table b-tree in rowid order (SCAN idempotency, no sort) and a
         * rowid range (SEARCH idempotency USING INTEGER PRIMARY KEY). */
        [WST_SWEEP_SCAN] = "SELECT id, created_ms FROM idempotency ORDER BY id LIMIT " SWEEP_CHUNK_STR,
        [WST_SWEEP] = "DELETE FROM idempotency WHERE id <= ?1",
    };
    for (int i = 0; i < WST_COUNT; i++) {
        int rc = prepare(l->wdb, sql[i], &l->wst[i], l->open_err, sizeof l->open_err);
        if (rc) return rc;
    }
    return LEDGER_OK;
}

static int lock_file(ledger *l) {
    l->lock_fd = open(l->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (l->lock_fd < 0) {
        ledger_errf(l->open_err, sizeof l->open_err, "open %s: %s", l->lock_path, strerror(errno));
        return LEDGER_EIO;
    }
    /* One ledger per database: two would each trust their own in-memory
     * balances.  flock conflicts across processes and across separate
     * opens within one process; the kernel drops it when a process dies. */
    if (flock(l->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        ledger_errf(l->open_err, sizeof l->open_err, "%s: %s", l->lock_path,
                    e == EWOULDBLOCK ? "database is open in another ledger" : strerror(e));
        return e == EWOULDBLOCK ? LEDGER_EBUSY : LEDGER_EIO;
    }
    return LEDGER_OK;
}

int store_open_writer(ledger *l) {
    char *err = l->open_err;
    size_t elen = sizeof l->open_err;
    int rc = lock_file(l);
    if (rc) return rc;
    rc = open_conn(l->path, false, &l->wdb, err, elen);
    if (rc) return rc;
    sqlite3_extended_result_codes(l->wdb, 1);

    /* journal_mode=WAL is persistent in the file; check that it took (it
     * cannot on some filesystems, and then readers would block writers). */
    sqlite3_stmt *st = NULL;
    rc = prepare(l->wdb, "PRAGMA journal_mode=WAL", &st, err, elen);
    if (rc) return rc;
    int s = sqlite3_step(st);
    bool wal = s == SQLITE_ROW && strcmp(col_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    if (!wal) {
        ledger_errf(err, elen, "cannot switch %s to WAL mode: %s", l->path, sqlite3_errmsg(l->wdb));
        return LEDGER_EIO;
    }
    rc = exec_sql(l->wdb, l->opts.sync == LEDGER_SYNC_NORMAL ? "PRAGMA synchronous=NORMAL"
                                                              : "PRAGMA synchronous=FULL", err, elen);
    if (!rc) rc = exec_sql(l->wdb, "PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY", err, elen);
    if (!rc) rc = create_schema(l);
    if (!rc) rc = load_accounts(l);
    if (!rc) rc = load_keys(l);
    if (!rc) rc = replay_transfers(l);
    if (!rc) rc = check_balances(l);
    if (!rc) rc = check_idempotency(l);
    if (!rc) rc = load_idempotency_index(l);
    if (!rc) rc = auth_setup_admin(l);
    if (!rc) rc = prepare_writes(l);
    if (!rc) sqlite3_commit_hook(l->wdb, commit_hook, l);
    /* Checkpoints move to the checkpointer (see "Checkpoints" at the top).
     * The PRAGMA comes first: it is itself a wal hook and would replace
     * ours (SQLite keeps one per connection). */
    if (!rc && l->opts.checkpointer) rc = exec_sql(l->wdb, "PRAGMA wal_autocheckpoint=0", err, elen);
    if (!rc && l->opts.checkpointer) sqlite3_wal_hook(l->wdb, wal_hook, l);
    return rc;
}

void store_close_writer(ledger *l) {
    for (int i = 0; i < WST_COUNT; i++) {
        sqlite3_finalize(l->wst[i]);
        l->wst[i] = NULL;
    }
    if (l->wdb) {
        sqlite3_close(l->wdb);   /* the last connection checkpoints the WAL */
        l->wdb = NULL;
    }
}

/* ------------------------------------------------------------------ sweep */

/*
 * The last rowid of the expired prefix of the table: walk rows in rowid
 * (= commit) order from the start and stop at the first live one, or after
 * a chunk.  Stopping at the first live row (rather than picking expired
 * rows wherever they are) keeps the deletion a prefix, so a row that
 * looks old only because the wall clock stepped back is never deleted
 * ahead of an older-rowid live one — it merely waits for the next sweep.
 * 0: nothing to delete.  *full: the chunk ended before a live row.
 */
static int64_t expired_prefix(ledger *l, int64_t cutoff, bool *full, int *err) {
    sqlite3_stmt *st = l->wst[WST_SWEEP_SCAN];
    int64_t last = 0;
    int n = 0, s;
    *full = false;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_int64(st, 1) >= cutoff) break;
        last = sqlite3_column_int64(st, 0);
        n++;
    }
    *err = s == SQLITE_ROW || s == SQLITE_DONE ? SQLITE_OK : s;
    sqlite3_reset(st);
    *full = s == SQLITE_DONE && n == SWEEP_CHUNK;
    return *err == SQLITE_OK ? last : 0;
}

void store_sweep(ledger *l) {
    bool backlog = l->sweep_more;   /* a continuation, between groups */
    l->sweep_more = false;
    if (atomic_load(&l->failed)) return;
    int64_t cutoff = ledger_now_ms() - l->opts.idem_ttl_ms;
    bool full = false;
    int n = 0, err;
    rt_blocking_enter();
    int64_t last = expired_prefix(l, cutoff, &full, &err);
    if (last > 0) {
        sqlite3_stmt *st = l->wst[WST_SWEEP];
        sqlite3_bind_int64(st, 1, last);
        int s = sqlite3_step(st);
        n = s == SQLITE_DONE ? sqlite3_changes(l->wdb) : 0;
        sqlite3_reset(st);
    }
    rt_blocking_exit();
    rt_mutex_lock(&l->mu);
    l->stats.idem_swept += (uint64_t)n;
    /* The index forgets records by the same cutoff: every deleted row had
     * created_ms < cutoff, and an entry of an expired row that survives
     * (clock stepped back, or a failed DELETE) would be skipped by the
     * lookup anyway, which ignores expired records.  It is a scan of the
     * whole table under mu, about 1 ns a slot (1M keys ~ 2-3 ms), so it
     * runs once per tick, not again for every chunk of a backlog: an entry
     * that outlives its row only costs a lookup that finds no row. */
    if (!backlog || !l->idem_scanned) {
        idemset_expire(&l->idem, cutoff);
        l->idem_scanned = true;
    }
    rt_mutex_unlock(&l->mu);
    /* A full chunk: there is more; the committer sweeps again between
     * batches instead of stalling writes on one long delete. */
    l->sweep_more = full && n > 0;
    store_after_commit(l);
}

/* ------------------------------------------------------------ checkpoints */

void store_after_commit(ledger *l) {
    if (!l->opts.checkpointer) return;   /* SQLite's autocheckpoint */
    if (l->wal_frames < l->wal_signalled) l->wal_signalled = 0;   /* the WAL restarted */
    /* One checkpoint per CKPT_FRAMES new frames, like autocheckpoint: back
     * to back they would keep the disk busy with the database's fsyncs. */
    if (l->wal_frames >= l->wal_signalled + CKPT_FRAMES && rt_chan_try_send(l->ckq, NULL))
        l->wal_signalled = l->wal_frames;
    if (l->wal_frames < CKPT_BACKSTOP_FRAMES) return;
    /* The checkpointer copied most frames, but the WAL restarts only after
     * a checkpoint that saw no commit happen meanwhile; do that one here
     * (it copies only the frames since the last checkpoint). */
    rt_blocking_enter();
    (void)sqlite3_wal_checkpoint_v2(l->wdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    rt_blocking_exit();
    l->wal_frames = 0;
}

static void checkpointer_main(void *arg) {
    ledger *l = arg;
    sqlite3 *db = NULL;
    char err[200] = "";
    rt_blocking_enter();
    int rc = open_conn(l->path, false, &db, err, sizeof err);
    /* A connection learns that the database is in WAL mode (and opens the
     * WAL) on its first read; until then sqlite3_wal_checkpoint_v2 is a
     * silent no-op.  So read once now. */
    if (!rc) rc = exec_sql(db, "SELECT count(*) FROM sqlite_master", err, sizeof err);
    rt_blocking_exit();
    if (rc) {
        rt_mutex_lock(&l->mu);
        if (!l->open_err[0]) snprintf(l->open_err, sizeof l->open_err, "checkpointer: %s", err);
        rt_mutex_unlock(&l->mu);
    }
    rt_chan_send(l->ready, &rc);
    if (rc != LEDGER_OK) {
        rt_blocking_enter();
        sqlite3_close(db);
        rt_blocking_exit();
    } else {
        while (rt_chan_recv(l->ckq, NULL)) {
            rt_blocking_enter();
            /* PASSIVE: copies what no reader still needs, never waits for
             * (or blocks) the committer or the readers. */
            (void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            rt_blocking_exit();
        }
        /* Closed by the committer after it closed wdb: no writer is left,
         * so empty the WAL and cut the file to 0 bytes. */
        rt_blocking_enter();
        (void)sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        sqlite3_close(db);
        rt_blocking_exit();
    }
    rt_waitgroup_done(&l->workers);
}

int store_start_checkpointer(ledger *l) {
    rt_spawn_opts so = { .stack_size = LEDGER_SQL_STACK };
    rt_waitgroup_add(&l->workers, 1);
    if (rt_go_opts(checkpointer_main, l, &so) != RT_OK) {
        rt_waitgroup_done(&l->workers);
        return LEDGER_ENOMEM;
    }
    int rc;
    rt_chan_recv(l->ready, &rc);
    return rc;
}

/* ---------------------------------------------------------------- readers */

struct lreader {
    ledger *l;
    sqlite3 *db;
    sqlite3_stmt *get, *list, *idem_row, *idem_scan;
};

static const char *const list_sql =
    "SELECT seq, id, from_key, to_key, amount, currency, memo, created_at FROM ("
    "  SELECT * FROM (SELECT * FROM transfers WHERE from_key = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3)"
    "  UNION ALL"
    "  SELECT * FROM (SELECT * FROM transfers WHERE to_key = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3)"
    ") ORDER BY seq DESC LIMIT ?3";

static void row_to_transfer(sqlite3_stmt *st, ledger_transfer_rec *t, int64_t *seq) {
    memset(t, 0, sizeof *t);
    if (seq) *seq = sqlite3_column_int64(st, 0);
    snprintf(t->id, sizeof t->id, "%s", col_text(st, 1));
    ledger_key_to_id(col_text(st, 2), t->from);
    ledger_key_to_id(col_text(st, 3), t->to);
    t->amount = sqlite3_column_int64(st, 4);
    snprintf(t->currency, sizeof t->currency, "%s", col_text(st, 5));
    if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
        const void *m = sqlite3_column_text(st, 6);
        size_t n = (size_t)sqlite3_column_bytes(st, 6);
        if (n > LEDGER_MEMO_MAX) n = LEDGER_MEMO_MAX;
        t->has_memo = true;
        t->memo_len = n;
        if (m) memcpy(t->memo, m, n);
        t->memo[n] = 0;
    }
    snprintf(t->created_at, sizeof t->created_at, "%s", col_text(st, 7));
}

static int get_transfer(lreader *r, const char *id, ledger_transfer_rec *out) {
    sqlite3_stmt *st = r->get;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    int rc = LEDGER_ENOTFOUND;
    if (s == SQLITE_ROW) {
        row_to_transfer(st, out, NULL);
        rc = LEDGER_OK;
    } else if (s != SQLITE_DONE) {
        rc = ledger_sqlite_rc(s);
    }
    /* Reset at once: a statement left mid-read keeps its read transaction
     * (an old snapshot, and a WAL the checkpointer cannot reset). */
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

/* A record's columns (request_hash, result, transfer_id from column i on)
 * into q; false if malformed. */
static bool take_record(sqlite3_stmt *st, int i, rreq *q, char tid[LEDGER_TRANSFER_ID_LEN + 1]) {
    if (sqlite3_column_bytes(st, i) != LEDGER_HASH_BYTES) return false;
    memcpy(q->hash, sqlite3_column_blob(st, i), LEDGER_HASH_BYTES);
    q->result = sqlite3_column_int(st, i + 1);
    snprintf(tid, LEDGER_TRANSFER_ID_LEN + 1, "%s", col_text(st, i + 2));
    return true;
}

/* Fetch candidate row id; if it is q's key and live, and newer than what
 * q holds, it becomes q's record. */
static int check_candidate(lreader *r, rreq *q, int64_t id, int64_t *best,
                           char tid[LEDGER_TRANSFER_ID_LEN + 1]) {
    sqlite3_stmt *st = r->idem_row;
    sqlite3_bind_int64(st, 1, id);
    int s = sqlite3_step(st), rc = LEDGER_OK;
    if (s == SQLITE_ROW) {
        /* A collision (another key) or an expired record is not a match. */
        bool match = strcmp(col_text(st, 0), q->scope) == 0 && strcmp(col_text(st, 1), q->idem_key) == 0 &&
                     sqlite3_column_int64(st, 5) >= q->min_ms;
        if (match && id > *best) {
            if (take_record(st, 2, q, tid)) {
                *best = id;
                q->found = true;
            } else {
                rc = LEDGER_ECORRUPT;
            }
        }
    } else if (s != SQLITE_DONE) {   /* DONE: swept since the index was read */
        rc = ledger_sqlite_rc(s);
    }
    sqlite3_reset(st);
    return rc;
}

/* The index could not name the candidates: the newest live record of the
 * key by a scan of the table (no index on scope/key: O(records)). */
static int scan_for_record(lreader *r, rreq *q, char tid[LEDGER_TRANSFER_ID_LEN + 1]) {
    sqlite3_stmt *st = r->idem_scan;
    sqlite3_bind_text(st, 1, q->scope, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, q->idem_key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, q->min_ms);
    int s = sqlite3_step(st), rc = LEDGER_OK;
    if (s == SQLITE_ROW) {
        if (take_record(st, 0, q, tid)) q->found = true;
        else rc = LEDGER_ECORRUPT;
    } else if (s != SQLITE_DONE) {
        rc = ledger_sqlite_rc(s);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

/*
 * The key's record, if any: the newest live row among the candidates whose
 * scope and key are q's (see idemset.c: candidates may be other keys).
 * A recorded success also fetches its transfer for the replay; transfers
 * are immutable, so separate read transactions are as good as one.
 */
static int idem_lookup(lreader *r, rreq *q) {
    char tid[LEDGER_TRANSFER_ID_LEN + 1] = "";
    int64_t best = 0;
    int rc = LEDGER_OK;
    q->found = false;
    if (q->scan) rc = scan_for_record(r, q, tid);
    for (size_t i = 0; !q->scan && rc == LEDGER_OK && i < q->ncand; i++)
        rc = check_candidate(r, q, q->cand[i], &best, tid);
    if (rc == LEDGER_OK && q->found && q->result == LEDGER_OK) {
        rc = get_transfer(r, tid, q->out);
        if (rc == LEDGER_ENOTFOUND) rc = LEDGER_ECORRUPT;
    }
    return rc;
}

static void reader_exec(lreader *r, rreq *q) {
    switch (q->kind) {
    case RREQ_GET_TRANSFER:
        q->rc = get_transfer(r, q->transfer_id, q->out);
        break;
    case RREQ_LIST: {
        sqlite3_stmt *st = r->list;
        sqlite3_bind_text(st, 1, q->acct_key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, q->before);
        sqlite3_bind_int(st, 3, q->limit);
        int s;
        q->count = 0;
        while ((s = sqlite3_step(st)) == SQLITE_ROW && q->count < (size_t)q->limit) {
            row_to_transfer(st, &q->items[q->count], &q->seqs[q->count]);
            q->count++;
        }
        q->rc = s == SQLITE_ROW || s == SQLITE_DONE ? LEDGER_OK : ledger_sqlite_rc(s);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        break;
    }
    case RREQ_IDEM_LOOKUP:
        q->rc = idem_lookup(r, q);
        break;
    }
}

static int reader_open(lreader *r, char *err, size_t elen) {
    int rc = open_conn(r->l->path, true, &r->db, err, elen);
    if (!rc) rc = prepare(r->db, "SELECT seq, id, from_key, to_key, amount, currency, memo, created_at "
                                 "FROM transfers WHERE id = ?1", &r->get, err, elen);
    if (!rc) rc = prepare(r->db, list_sql, &r->list, err, elen);
    if (!rc) rc = prepare(r->db, "SELECT scope, key, request_hash, result, transfer_id, created_ms "
                                 "FROM idempotency WHERE id = ?1", &r->idem_row, err, elen);
    if (!rc) rc = prepare(r->db, "SELECT request_hash, result, transfer_id FROM idempotency "
                                 "WHERE scope = ?1 AND key = ?2 AND created_ms >= ?3 ORDER BY id DESC LIMIT 1",
                          &r->idem_scan, err, elen);
    return rc;
}

static void reader_close(lreader *r) {
    sqlite3_finalize(r->get);
    sqlite3_finalize(r->list);
    sqlite3_finalize(r->idem_row);
    sqlite3_finalize(r->idem_scan);
    sqlite3_close(r->db);
    r->get = r->list = r->idem_row = r->idem_scan = NULL;
    r->db = NULL;
}

void reader_main(void *arg) {
    lreader *r = arg;
    ledger *l = r->l;
    char err[240] = "";   /* leaves room for the "reader: " prefix in open_err */
    rt_blocking_enter();
    int rc = reader_open(r, err, sizeof err);
    if (rc) reader_close(r);
    rt_blocking_exit();
    if (rc && err[0]) {
        rt_mutex_lock(&l->mu);
        if (!l->open_err[0]) snprintf(l->open_err, sizeof l->open_err, "reader: %s", err);
        rt_mutex_unlock(&l->mu);
    }
    rt_chan_send(l->ready, &rc);
    if (rc == LEDGER_OK) {
        rreq *q;
        while (rt_chan_recv(l->rq, &q)) {
            rt_blocking_enter();
            reader_exec(r, q);
            rt_blocking_exit();
            rt_chan_send(q->done, NULL);
        }
        rt_blocking_enter();
        reader_close(r);
        rt_blocking_exit();
    }
    rt_waitgroup_done(&l->workers);
}

int store_start_readers(ledger *l) {
    l->readers = calloc((size_t)l->opts.readers, sizeof *l->readers);
    if (!l->readers) return LEDGER_ENOMEM;
    rt_spawn_opts so = { .stack_size = LEDGER_SQL_STACK };
    int started = 0, rc = LEDGER_OK;
    for (int i = 0; i < l->opts.readers; i++) {
        lreader *r = calloc(1, sizeof *r);
        if (!r) { rc = LEDGER_ENOMEM; break; }
        r->l = l;
        l->readers[i] = r;
        l->nreaders = i + 1;
        rt_waitgroup_add(&l->workers, 1);
        if (rt_go_opts(reader_main, r, &so) != RT_OK) {
            rt_waitgroup_done(&l->workers);
            rc = LEDGER_ENOMEM;
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        int r;
        rt_chan_recv(l->ready, &r);
        if (r != LEDGER_OK && rc == LEDGER_OK) rc = r;
    }
    return rc;
}
