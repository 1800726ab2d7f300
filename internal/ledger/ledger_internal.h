/*
 * ledger_internal.h — what the files of internal/ledger share, and nothing
 * outside it may include (the tests do, for one fault-injection hook).
 *
 * Files
 *   ledger.c   the public calls: validation, idempotency claims, handing
 *              requests to the committer and the readers, open and close
 *   commit.c   the committer goroutine: group commit (check + reserve in
 *              memory, one SQLite transaction, publish or roll back)
 *   store.c    SQLite: connections, schema, rebuild and verification at
 *              open, the reader goroutines and their queries, the sweep
 *   auth.c     API keys and the admin key; authentication
 *   util.c     hash table, ids, time, encodings, validation, strerror
 *   idemset.c  the in-memory index of recorded idempotency keys
 *
 * Goroutines and ownership
 *   - The committer goroutine owns the write connection (wdb) and every
 *     field marked [committer]: only it reads or writes them, so they need
 *     no lock.  It also opens the store (schema, load, verify) before it
 *     starts serving, so all SQLite work runs on its large stack.
 *   - Each reader goroutine owns one read-only connection (lreader).
 *   - Fields marked [mu] are guarded by ledger.mu, an rt_mutex.  The mutex
 *     is held only for in-memory work: never across SQLite, a channel
 *     operation or anything else that can park or block.
 *   - An account's `balance` is written only by the committer, under mu
 *     (publish); readers read it under mu.  `pending`, `touched` and
 *     `touched_next` are committer-only scratch for the batch in flight.
 *
 * Lock order: close_mu (read side, around queue sends) may be held while
 * taking mu; never the reverse.
 */
#ifndef LEDGERD_LEDGER_INTERNAL_H
#define LEDGERD_LEDGER_INTERNAL_H

#include "ledger.h"

#include <sodium.h>
#include <sqlite3.h>
#include <stdatomic.h>

/* SQLite runs only on goroutines with this stack (virtual size, committed
 * as touched): the parser and VDBE want more than the 64 KiB default,
 * especially under AddressSanitizer. */
#define LEDGER_SQL_STACK ((size_t)2 * 1024 * 1024)

#define LEDGER_SALT_BYTES 16
#define LEDGER_CLAIM_MAX (LEDGER_SCOPE_MAX + 1 + LEDGER_IDEM_KEY_MAX)

/* ------------------------------------------------------------ hash table
 * Intrusive chained hash table keyed by byte strings, hashed with SipHash
 * (crypto_shorthash) under a random per-table key: account ids and
 * idempotency keys come from clients, so collisions must not be forceable.
 * The entry (hent) is embedded in the value; its key points into the value.
 */
typedef struct hent {
    struct hent *next;
    uint64_t hash;
    const char *key;
    size_t klen;
} hent;

typedef struct htab {
    hent **buckets;
    size_t nbuckets;   /* power of two */
    size_t count;
    unsigned char seed[crypto_shorthash_KEYBYTES];
} htab;

int htab_init(htab *t, size_t hint);               /* LEDGER_OK / LEDGER_ENOMEM */
void htab_destroy(htab *t, void (*free_entry)(hent *e));
hent *htab_get(const htab *t, const char *key, size_t klen);
/* Insert e (e->key/klen set, key absent).  Growing can fail: LEDGER_ENOMEM. */
int htab_put(htab *t, hent *e);
hent *htab_del(htab *t, const char *key, size_t klen);

/* -------------------------------------------------------- idempotency index
 * fingerprint -> (rowid, created_ms) of every recorded idempotency key
 * within the TTL (idemset.c explains it: "none" is exact, candidates are
 * checked against their rows; equal fingerprints keep separate entries).
 * Guarded by ledger.mu; idemset_fingerprint needs no lock. */
typedef struct idemset_slot {
    uint64_t fp;           /* 0: empty */
    int64_t rowid;         /* the record's idempotency.id */
    int64_t created_ms;    /* the record's created_ms */
} idemset_slot;

typedef struct idemset {
    idemset_slot *slots;
    size_t cap;            /* power of two */
    size_t count;
    bool lossy;            /* a growth failed: lookups scan the table */
    uint64_t fixed_fp;     /* tests only: non-zero = every key's fingerprint */
    unsigned char key[crypto_shorthash_KEYBYTES];   /* random per open */
} idemset;

/* Candidate rowids a lookup checks at most; more (never seen outside
 * tests: 64-bit collisions) fall back to the scan, as when lossy. */
#define IDEM_CANDIDATES_MAX 4

/* Empty set sized for hint keys, with a fresh random key.  LEDGER_ENOMEM. */
int idemset_init(idemset *s, size_t hint);
void idemset_destroy(idemset *s);
/* SipHash-2-4 of key (scope 0x1f idempotency key) under the set's key. */
uint64_t idemset_fingerprint(const idemset *s, const char *key, size_t len);
/* false: no record of a key with this fingerprint (true also when lossy). */
bool idemset_maybe_contains(const idemset *s, uint64_t fp);
/* The rowids of the entries with fingerprint fp and created_ms >= min_ms:
 * the first max into rowids; returns how many there are (may exceed max).
 * Ignores `lossy` (the caller checks it). */
size_t idemset_candidates(const idemset *s, uint64_t fp, int64_t min_ms, int64_t *rowids, size_t max);
/* Add an entry (always a new one).  LEDGER_ENOMEM if it could not grow:
 * the set is then lossy (never wrong, only slower). */
int idemset_add(idemset *s, uint64_t fp, int64_t rowid, int64_t created_ms);
bool idemset_remove(idemset *s, uint64_t fp, int64_t rowid);
/* Remove the entries with created_ms < cutoff_ms; returns how many.
 * O(capacity). */
size_t idemset_expire(idemset *s, int64_t cutoff_ms);

#define container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* --------------------------------------------------------- in-memory state */

typedef struct lacct {
    hent node;
    char key[LEDGER_ACCOUNT_ID_MAX + 1];   /* id, or "@world:USD" */
    char id[LEDGER_ACCOUNT_ID_MAX + 1];    /* id, or "@world" */
    char currency[4];
    bool world;
    bool committed;        /* [mu] false while the batch creating it is in flight */
    bool touched;          /* [committer] on l->touched */
    int64_t balance;       /* [mu] the committed balance: what readers see */
    int64_t pending;       /* [committer] net change reserved by the batch in flight */
    int64_t verify;        /* open only: credits - debits over stored transfers */
    char created_at[LEDGER_TIME_LEN + 1];
    struct lacct *touched_next;
} lacct;

typedef struct lkey {
    hent node;
    bool committed;        /* [mu] false while the batch creating it is in flight */
    char id[LEDGER_KEY_ID_LEN + 1];
    char account[LEDGER_ACCOUNT_ID_MAX + 1];
    uint8_t salt[LEDGER_SALT_BYTES];
    uint8_t hash[LEDGER_HASH_BYTES];
} lkey;

/* An idempotency key whose request is in flight.  Lives in the requesting
 * goroutine's lreq (on its stack), which outlives the claim. */
typedef struct lclaim {
    hent node;
    char key[LEDGER_CLAIM_MAX + 1];        /* scope 0x1f key */
    size_t klen;
} lclaim;

/* ------------------------------------------------------ committer requests */

typedef enum lreq_kind {
    LREQ_TRANSFER = 1,
    LREQ_CREATE_ACCOUNT,
    LREQ_CREATE_KEY,
} lreq_kind;

/*
 * A write request, on the caller's stack.  The caller sends a pointer on
 * l->wq and then waits on `done` until the committer has answered (it
 * always waits once the send succeeded, so the committer may use the
 * request until it sends on done, and never after).
 */
typedef struct lreq {
    lreq_kind kind;
    rt_context *ctx;
    rt_chan *done;           /* elem size 0, capacity 1: never blocks the committer */
    int rc;

    /* transfer (also the funding transfer of an account) */
    char from_key[LEDGER_ACCOUNT_ID_MAX + 1];
    char to_key[LEDGER_ACCOUNT_ID_MAX + 1];
    int64_t amount;
    char currency[4];
    const char *memo;
    size_t memo_len;
    bool has_memo;

    /* idempotency: claim held by this request, released by the committer */
    bool has_idem;
    lclaim claim;
    const char *scope;
    const char *idem_key;
    uint64_t idem_fp;        /* idemset_fingerprint of claim.key */
    int64_t idem_rowid;      /* [committer] idempotency.id of the record written */
    uint8_t req_hash[LEDGER_HASH_BYTES];

    /* account / key creation */
    char account_id[LEDGER_ACCOUNT_ID_MAX + 1];

    /* the plan, filled when the batch is assembled */
    bool writes_transfer;
    bool writes_idem;
    uint64_t seq;
    int64_t now_ms;
    char transfer_id[LEDGER_TRANSFER_ID_LEN + 1];
    char created_at[LEDGER_TIME_LEN + 1];
    lacct *from_acct, *to_acct;
    lacct *new_acct, *new_world;
    lkey *new_key;
    char secret[LEDGER_SECRET_MAX + 1];

    /* results, filled on success */
    ledger_transfer_rec *out_transfer;
    ledger_account *out_account;
    ledger_key *out_key;
} lreq;

/* ---------------------------------------------------------- read requests */

typedef enum rreq_kind {
    RREQ_GET_TRANSFER = 1,
    RREQ_LIST,
    RREQ_IDEM_LOOKUP,
} rreq_kind;

typedef struct rreq {
    rreq_kind kind;
    rt_chan *done;
    int rc;
    /* get transfer */
    const char *transfer_id;
    ledger_transfer_rec *out;
    /* list */
    const char *acct_key;
    int64_t before;          /* seq bound (exclusive) */
    int limit;               /* rows wanted (the caller asks for one more) */
    ledger_transfer_rec *items;
    int64_t *seqs;           /* each item's commit sequence number */
    size_t count;
    /* idempotency lookup (out also receives the stored transfer) */
    const char *scope;
    const char *idem_key;
    int64_t min_ms;          /* records older than this are expired */
    int64_t cand[IDEM_CANDIDATES_MAX];   /* rowids that may be the key's record */
    size_t ncand;
    bool scan;               /* the index cannot say (lossy, or too many): scan */
    bool found;
    uint8_t hash[LEDGER_HASH_BYTES];
    int result;
} rreq;

typedef struct lreader lreader;   /* store.c */

/* --------------------------------------------------------------- ledger */

enum {
    WST_BEGIN, WST_COMMIT, WST_ROLLBACK, WST_INS_TRANSFER, WST_UPD_BALANCE,
    WST_INS_ACCOUNT, WST_INS_IDEM, WST_INS_KEY, WST_SWEEP_SCAN, WST_SWEEP, WST_COUNT
};

struct ledger {
    char *path;
    char *lock_path;
    int lock_fd;
    ledger_options opts;             /* defaults filled in */
    char *admin_key_file;
    bool admin_generated;            /* by this open: ledger_admin_key_file() */

    rt_mutex mu;
    htab accounts;                   /* [mu] key -> lacct */
    htab keys;                       /* [mu] id -> lkey */
    htab claims;                     /* [mu] scope 0x1f key -> lclaim */
    idemset idem;                    /* [mu] fingerprint -> rowid of recorded keys */
    ledger_stats stats;              /* [mu] */
    uint64_t grouped;                /* [mu] requests in committed batches */
    int64_t commit_ns_total;         /* [mu] */

    /* The admin key's hash: set at open, read-only afterwards. */
    bool admin_set;
    uint8_t admin_salt[LEDGER_SALT_BYTES];
    uint8_t admin_hash[LEDGER_HASH_BYTES];

    /* [committer] */
    sqlite3 *wdb;
    sqlite3_stmt *wst[WST_COUNT];
    int64_t next_seq;
    lacct *touched;
    int64_t ulid_ms;
    uint8_t ulid_rand[10];
    bool sweep_more;                 /* the last sweep deleted a full chunk */
    bool idem_scanned;               /* the index was swept at least once */
    int wal_frames;                  /* frames in the WAL after the last commit (wal hook) */
    int wal_signalled;               /* wal_frames when the checkpointer was last woken */

    /* The checkpointer (store.c): one signal "the WAL is long", sent by
     * the committer with try_send (capacity 1, elem size 0), closed by the
     * committer when it stops — after closing wdb — so the checkpointer
     * then truncates the WAL and exits. */
    rt_chan *ckq;

    _Atomic bool failed;             /* a COMMIT failed: writes refused */
    _Atomic int test_fail_commits;   /* fault injection (tests) */

    rt_chan *wq;                     /* lreq* to the committer */
    rt_chan *rq;                     /* rreq* to the readers */
    rt_chan *ready;                  /* int: open results of the goroutines */
    rt_rwmutex close_mu;             /* read-held around queue sends */
    bool closed;                     /* [close_mu] */
    rt_waitgroup workers;            /* committer + readers */
    int nreaders;
    lreader **readers;

    char open_err[256];              /* the committer's open failure message */
};

/* ------------------------------------------------------------- util.c */

int64_t ledger_now_ms(void);                          /* wall clock, Unix ms */
void ledger_format_time(int64_t unix_ms, char out[LEDGER_TIME_LEN + 1]);
bool ledger_valid_account_id(const char *id);         /* regular ids only */
bool ledger_valid_currency(const char *cur);
bool ledger_valid_printable(const char *s, size_t min, size_t max);
/* "alice" -> "alice"; "@world" + "USD" -> "@world:USD"; false if invalid. */
bool ledger_account_key(const char *id, const char *currency, char out[LEDGER_ACCOUNT_ID_MAX + 1]);
/* The id shown for a stored key ("@world:USD" -> "@world"). */
void ledger_key_to_id(const char *key, char out[LEDGER_ACCOUNT_ID_MAX + 1]);
/* A new ULID for l (monotonic within a millisecond). [committer] */
void ledger_new_ulid(ledger *l, int64_t now_ms, char out[LEDGER_TRANSFER_ID_LEN + 1]);
bool ledger_valid_ulid(const char *s);
void ledger_hex(const uint8_t *in, size_t n, char *out);   /* out: 2n+1 */
void ledger_b64url(const uint8_t *in, size_t n, char *out, size_t outlen);
void ledger_cursor_encode(int64_t seq, char out[LEDGER_CURSOR_MAX + 1]);
bool ledger_cursor_decode(const char *s, int64_t *seq);
void ledger_errf(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------- store.c */

/* Committer, before serving: open wdb, schema, load, verify, admin key,
 * prepare the write statements.  On failure, l->open_err says why. */
int store_open_writer(ledger *l);
void store_close_writer(ledger *l);
int store_start_readers(ledger *l);                 /* spawns; waits for them */
void reader_main(void *arg);
/* Spawn the checkpointer goroutine and wait for its open. */
int store_start_checkpointer(ledger *l);
/* After a group: wake the checkpointer if the WAL passed its threshold
 * (and checkpoint here if it is far past it: the backstop). [committer] */
void store_after_commit(ledger *l);
/* Delete expired idempotency records (its own transaction) and their
 * index entries. [committer] */
void store_sweep(ledger *l);
int ledger_sqlite_rc(int sqlite_rc);                /* SQLite code -> ledger_error */
lacct *acct_new(const char *key, const char *id, const char *currency, bool world);

/* ------------------------------------------------------------- commit.c */

void committer_main(void *arg);

/* ------------------------------------------------------------- auth.c */

/* At open, on the committer: set up the admin key (configured, stored, or
 * generated now and written to its file). */
int auth_setup_admin(ledger *l);
/* Fill k's id, salt, hash and secret (fresh from the CSPRNG). */
void auth_make_key(lkey *k, char secret[LEDGER_SECRET_MAX + 1]);
void auth_hash(const uint8_t salt[LEDGER_SALT_BYTES], const char *secret, size_t len,
               uint8_t out[LEDGER_HASH_BYTES]);

/* ------------------------------------------------------------- tests */

/* Make the next n COMMITs of the committer fail (a commit hook turns them
 * into rollbacks), exercising the LEDGER_EFAILED path. */
void ledger_test_fail_commits(ledger *l, int n);
/* Give every idempotency key the same fingerprint from now on (call right
 * after open, before any keyed request): exercises collisions. */
void ledger_test_fixed_fingerprint(ledger *l);

#endif /* LEDGERD_LEDGER_INTERNAL_H */
