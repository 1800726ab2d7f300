/*
 * ledger.h — the durable double-entry ledger store of ledgerd (the only
 * public header of internal/ledger).
 *
 * What it is
 *   Accounts, balances and transfers, held in memory behind one runtime mutex
 *   and stored in SQLite (WAL).  A transfer moves an amount between two
 *   accounts of the same currency; one system account per currency, @world,
 *   is the only account allowed to go negative, so per currency the sum of
 *   all balances is always 0 (double entry).  Funding an account is a
 *   transfer from @world.
 *
 * Durability and group commit
 *   Every write (account creation, transfer, API key) is handed to a single
 *   committer goroutine.  It takes everything queued (up to max_batch),
 *   checks and reserves it in memory under the mutex, writes the whole batch
 *   in ONE SQLite transaction (each transfer, both balance changes and the
 *   idempotency record together), commits (fsync with LEDGER_SYNC_FULL) with
 *   the mutex released, and only then publishes the new balances and
 *   answers every request of the batch.  So:
 *     - a call that returns LEDGER_OK has made its change durable (with
 *       LEDGER_SYNC_NORMAL: durable against a process crash, not against
 *       power loss);
 *     - readers (ledger_get_account, ledger_list_transfers, ...) see only
 *       committed state: a balance never shows money that could still be
 *       rolled back;
 *     - a batch whose SQLite transaction fails is rolled back in memory as a
 *       whole and every request in it fails: no half-applied transfer.
 *   The design is explained at length in internal/ledger/DESIGN.md.
 *
 * Threading
 *   Every function must be called from a goroutine (inside rt_main): the
 *   store parks the calling goroutine, never its thread, while SQLite works
 *   (rt_blocking).  All functions are safe to call concurrently.  A
 *   ledger_close must not race with other calls on the same ledger (calls
 *   that start after close began fail with LEDGER_ECLOSED; the caller must
 *   not free or reuse the handle until close has returned and every other
 *   call has returned).
 *
 * Conventions
 *   Functions return LEDGER_OK (0) or a negative ledger_error;
 *   ledger_strerror() gives a message for each.  Strings in records are
 *   NUL-terminated, in fixed buffers (no allocation to free, except pages).
 *   Times are RFC 3339 UTC with milliseconds: "2026-11-22T10:00:00.000Z".
 *   Calls that can wait take an rt_context (NULL: no deadline).  A context
 *   that ends before the request was applied yields LEDGER_ECANCELED /
 *   LEDGER_ETIMEDOUT and nothing changed; once a write has been taken into
 *   a commit group the call waits for its outcome (one commit, bounded), so
 *   an error from a write always means no money moved — except
 *   LEDGER_EFAILED, see below.
 */
#ifndef LEDGERD_LEDGER_H
#define LEDGERD_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */

typedef enum ledger_error {
    LEDGER_OK = 0,
    LEDGER_EINVAL = -1,          /* malformed argument (id, amount, currency, memo, key, cursor, limit) */
    LEDGER_ENOTFOUND = -2,       /* unknown account, transfer or key's account */
    LEDGER_EEXISTS = -3,         /* account id already taken (in any currency) */
    LEDGER_ESAME_ACCOUNT = -4,   /* transfer with from == to */
    LEDGER_ECURRENCY = -5,       /* transfer currency differs from an account's */
    LEDGER_EFUNDS = -6,          /* insufficient funds */
    LEDGER_ELIMIT = -7,          /* a balance would leave [-LEDGER_BALANCE_MAX, LEDGER_BALANCE_MAX] */
    LEDGER_EIDEM_REUSED = -8,    /* idempotency key reused with a different request */
    LEDGER_EIDEM_IN_USE = -9,    /* idempotency key's first request still in flight */
    LEDGER_EUNAUTHORIZED = -10,  /* no key matches the secret */
    LEDGER_ECANCELED = -11,      /* the context was cancelled before the request was applied */
    LEDGER_ETIMEDOUT = -12,      /* the context's deadline passed before the request was applied */
    LEDGER_ECLOSED = -13,        /* the ledger is closing or closed */
    LEDGER_EIO = -14,            /* storage error; the batch was rolled back, nothing changed */
    LEDGER_EFAILED = -15,        /* a COMMIT failed: its outcome on disk is unknown, the store
                                    refuses writes until reopened (retry with the same
                                    idempotency key after restart) */
    LEDGER_ECORRUPT = -16,       /* the database violates the ledger's invariants (open refused) */
    LEDGER_EBUSY = -17,          /* the database is open in another ledger (process or handle) */
    LEDGER_ENOMEM = -18,
} ledger_error;

/* A static message for a ledger_error code ("insufficient funds", ...). */
const char *ledger_strerror(int code);

/* ---------------------------------------------------------------- limits */

#define LEDGER_AMOUNT_MAX      INT64_C(9007199254740991)   /* 2^53 - 1 */
/* Every balance, @world's included, stays within +-LEDGER_BALANCE_MAX, so
 * every number the API prints is an exact JSON (double) integer.  A
 * transfer or funding that would break this fails with LEDGER_ELIMIT. */
#define LEDGER_BALANCE_MAX     LEDGER_AMOUNT_MAX
#define LEDGER_ACCOUNT_ID_MAX  64     /* [A-Za-z0-9_-]{1,64}; "@..." reserved */
#define LEDGER_MEMO_MAX        256    /* bytes */
#define LEDGER_IDEM_KEY_MAX    255    /* 1..255 printable ASCII bytes (0x20..0x7e) */
#define LEDGER_SCOPE_MAX       64     /* idempotency scope: printable ASCII */
#define LEDGER_TRANSFER_ID_LEN 26     /* ULID: Crockford base32, sorts by creation time */
#define LEDGER_KEY_ID_LEN      24     /* lower-case hex */
#define LEDGER_SECRET_MAX      128
#define LEDGER_TIME_LEN        24     /* "2026-11-22T10:00:00.000Z" */
#define LEDGER_CURSOR_MAX      16
#define LEDGER_HASH_BYTES      32
#define LEDGER_PAGE_MAX        1000
#define LEDGER_WORLD           "@world"
#define LEDGER_ADMIN_SCOPE     "admin" /* ledger_principal.key_id of the admin key */

/* --------------------------------------------------------------- records */

typedef struct ledger_account {
    char id[LEDGER_ACCOUNT_ID_MAX + 1];    /* "@world" for the system accounts */
    char currency[4];
    int64_t balance;                       /* committed (durable) balance */
    char created_at[LEDGER_TIME_LEN + 1];
} ledger_account;

typedef struct ledger_transfer_rec {
    char id[LEDGER_TRANSFER_ID_LEN + 1];
    char from[LEDGER_ACCOUNT_ID_MAX + 1];  /* "@world" for funding */
    char to[LEDGER_ACCOUNT_ID_MAX + 1];
    int64_t amount;
    char currency[4];
    bool has_memo;                         /* false: memo is null */
    size_t memo_len;                       /* bytes, as sent (may hold NULs) */
    char memo[LEDGER_MEMO_MAX + 1];        /* also NUL-terminated */
    char created_at[LEDGER_TIME_LEN + 1];
} ledger_transfer_rec;

/* A page of an account's history, newest first.  items is malloc'd:
 * release with ledger_page_free. */
typedef struct ledger_page {
    ledger_transfer_rec *items;
    size_t count;
    bool has_next;                          /* false: next is "" (JSON null) */
    char next[LEDGER_CURSOR_MAX + 1];       /* opaque cursor for `before` */
} ledger_page;

/* A new API key.  The secret is returned once and stored only as a hash. */
typedef struct ledger_key {
    char id[LEDGER_KEY_ID_LEN + 1];
    char account[LEDGER_ACCOUNT_ID_MAX + 1];
    char secret[LEDGER_SECRET_MAX + 1];
    char created_at[LEDGER_TIME_LEN + 1];
} ledger_key;

typedef enum ledger_principal_kind {
    LEDGER_PRINCIPAL_ADMIN = 1,
    LEDGER_PRINCIPAL_ACCOUNT = 2,
} ledger_principal_kind;

typedef struct ledger_principal {
    ledger_principal_kind kind;
    char key_id[LEDGER_KEY_ID_LEN + 1];       /* LEDGER_ADMIN_SCOPE for the admin:
                                                 use as the idempotency scope */
    char account[LEDGER_ACCOUNT_ID_MAX + 1];  /* "" for the admin */
} ledger_principal;

/* Group-commit counters since open (for tests, logs and /metrics). */
typedef struct ledger_stats {
    uint64_t commits;          /* SQLite transactions committed by the committer */
    uint64_t commit_failures;  /* batches rolled back (EIO) or failed at COMMIT (EFAILED) */
    uint64_t requests;         /* write requests the committer answered */
    uint64_t transfers;        /* transfers made durable (fundings included) */
    uint64_t max_group;        /* most requests in one commit */
    double avg_group;          /* requests per commit */
    int64_t commit_ns_last;    /* the COMMIT statement (WAL write + fsync) */
    int64_t commit_ns_max;
    double commit_ns_avg;
    uint64_t idem_swept;       /* expired idempotency records deleted */
    uint64_t accounts;         /* accounts in memory, @world ones included */
    bool failed;               /* see LEDGER_EFAILED */
    /* Idempotency filter (appended; see DESIGN.md "Idempotency"): */
    uint64_t idem_keys;        /* fingerprints of recorded keys held in memory */
    uint64_t idem_lookups;     /* keyed transfers that looked their key up in SQLite */
    uint64_t idem_lookups_skipped;  /* ... that skipped it: key certainly not recorded */
} ledger_stats;

/* ------------------------------------------------------------------ open */

typedef enum ledger_sync {
    LEDGER_SYNC_FULL = 0,      /* fsync every commit: survives power loss (default) */
    LEDGER_SYNC_NORMAL = 1,    /* WAL fsync'd at checkpoints only: survives a process
                                  crash (kill -9), may lose the last commits on power loss */
} ledger_sync;

typedef struct ledger_options {
    ledger_sync sync;
    int max_batch;             /* requests per commit group; 0: 256; 1: no group commit */
    int readers;               /* read-only connections (reader goroutines); 0: 2 */
    int queue_cap;             /* committer queue; 0: 4096 (senders wait when full) */
    /* The admin key.  Set: its hash is kept in memory (the store ignores any
     * generated key).  NULL: the key generated on first open is used; if
     * there is none yet, one is generated now: only its hash is stored, and
     * the secret is written once to admin_key_file (mode 0600; default
     * "<path>.admin-key") — see ledger_admin_key_file(). */
    const char *admin_key;
    const char *admin_key_file;
    /* Idempotency records are kept idem_ttl_ms (0: 24 h) and deleted by a
     * sweep every idem_sweep_ms (0: 60 s).  The daemon must keep >= 24 h;
     * smaller values exist for tests. */
    int64_t idem_ttl_ms;
    int64_t idem_sweep_ms;
    /* true: WAL checkpoints run on a goroutine with its own connection
     * (PASSIVE, past 1000 frames; TRUNCATE at close) instead of inside the
     * COMMIT that passes 1000 frames (SQLite's autocheckpoint, the
     * default).  Off by default: on the development VM it lowered the
     * p99 of keyed transfers ~8% but their throughput 10-20% (the
     * checkpoint's fsyncs compete with the WAL's); measure on the target
     * disk before turning it on. */
    bool checkpointer;
} ledger_options;

typedef struct ledger ledger;

/*
 * Open (creating if needed) the store at path: schema, WAL, then rebuild the
 * in-memory ledger from SQLite and verify the invariants — per currency the
 * balances sum to 0, every balance equals credits minus debits over the
 * stored transfers, no account but @world is negative, every transfer's
 * accounts exist with its currency, every stored idempotency record names a
 * stored transfer.  If anything is off it refuses with LEDGER_ECORRUPT and
 * says what in errmsg.  Other failures: LEDGER_EBUSY (open elsewhere: a lock
 * file "<path>.lock" is held for the ledger's lifetime), LEDGER_EIO,
 * LEDGER_EINVAL (bad options), LEDGER_ENOMEM.  errmsg (may be NULL) gets a
 * one-line description on failure.  opts may be NULL (defaults).
 */
int ledger_open(const char *path, const ledger_options *opts, ledger **out,
                char *errmsg, size_t errlen);

/* Finish queued writes, stop the goroutines, close SQLite, free.  NULL ok. */
void ledger_close(ledger *l);

/* The generated admin secret's file if one was generated by this open (log
 * it), else NULL. */
const char *ledger_admin_key_file(ledger *l);

/* False once a COMMIT failed (LEDGER_EFAILED): /readyz should say 503. */
bool ledger_healthy(ledger *l);

void ledger_get_stats(ledger *l, ledger_stats *out);

/* -------------------------------------------------------------- accounts */

/*
 * Create account id (regular id syntax) in currency ("USD": three upper-case
 * letters) with initial_balance (0..LEDGER_AMOUNT_MAX).  The first account
 * of a currency also creates that currency's @world.  initial_balance > 0 is
 * booked as a transfer from @world in the same transaction.  Errors:
 * LEDGER_EINVAL, LEDGER_EEXISTS, LEDGER_ELIMIT (@world would pass
 * -LEDGER_BALANCE_MAX), context errors, LEDGER_EIO / LEDGER_EFAILED /
 * LEDGER_ECLOSED.  out (may be NULL) gets the account as committed.
 */
int ledger_create_account(ledger *l, rt_context *ctx, const char *id,
                          const char *currency, int64_t initial_balance,
                          ledger_account *out);

/* The committed account.  id "@world" needs currency; for other ids currency
 * is ignored (may be NULL).  LEDGER_ENOTFOUND for anything unknown or
 * malformed. */
int ledger_get_account(ledger *l, const char *id, const char *currency,
                       ledger_account *out);

/* ------------------------------------------------------------- transfers */

typedef struct ledger_transfer_req {
    const char *from;            /* account id, or "@world" (of `currency`) */
    const char *to;
    int64_t amount;              /* 1..LEDGER_AMOUNT_MAX */
    const char *currency;
    const char *memo;            /* NULL: no memo (null); else memo_len bytes */
    size_t memo_len;             /* <= LEDGER_MEMO_MAX */
    /* Idempotency (optional): idem_key NULL means none.  Keys are scoped by
     * idem_scope (the authenticating key's id).  request_hash identifies the
     * request body (LEDGER_HASH_BYTES); NULL: derived from the fields above,
     * so two bodies that differ only in JSON layout count as the same. */
    const char *idem_scope;
    const char *idem_key;
    const uint8_t *request_hash;
} ledger_transfer_req;

/*
 * Move amount from `from` to `to`.  LEDGER_OK: the transfer is durable and
 * *out holds it.  Errors, checked in this order:
 *   LEDGER_EINVAL         malformed field ("@x" ids other than @world too)
 *   LEDGER_ESAME_ACCOUNT  from == to
 *   LEDGER_EIDEM_IN_USE   the key's first request has not finished
 *   LEDGER_EIDEM_REUSED   the key finished with a different request hash
 *   LEDGER_ENOTFOUND      an account does not exist
 *   LEDGER_ECURRENCY      the currency differs from an account's
 *   LEDGER_EFUNDS         from's balance is below amount (never for @world)
 *   LEDGER_ELIMIT         a balance would leave +-LEDGER_BALANCE_MAX
 *   context errors, LEDGER_EIO, LEDGER_EFAILED, LEDGER_ECLOSED, LEDGER_ENOMEM
 *
 * Idempotency.  With a key, the outcome is recorded in the same SQLite
 * transaction as the transfer: success (the transfer id) and the ledger's
 * decisions NOTFOUND / CURRENCY / FUNDS / LIMIT.  A later call with the same
 * scope+key and the same request hash returns that outcome again with
 * *replayed = true (LEDGER_OK with the same transfer, or the same error) and
 * moves no money.  Outcomes that depend on nothing but the request (EINVAL,
 * ESAME_ACCOUNT) are not recorded (a retry gets them again anyway), nor are
 * failures that left nothing behind (context, EIO, EFAILED, ECLOSED): the
 * key is free again, as it is after a crash that interrupted its request.
 * Records are kept idem_ttl_ms (>= 24 h in the daemon) and survive restart.
 * replayed may be NULL.
 */
int ledger_transfer(ledger *l, rt_context *ctx, const ledger_transfer_req *req,
                    ledger_transfer_rec *out, bool *replayed);

/* A committed transfer by id.  LEDGER_ENOTFOUND if unknown or malformed. */
int ledger_get_transfer(ledger *l, rt_context *ctx, const char *id,
                        ledger_transfer_rec *out);

/*
 * The committed transfers of an account, newest first (in commit order),
 * both directions.  account "@world" needs currency.  limit 1..1000.
 * before: NULL/"" for the first page, else a cursor from a previous page
 * (LEDGER_EINVAL if malformed).  Cursors are stable: new transfers never
 * shift later pages.  LEDGER_ENOTFOUND for an unknown account.
 */
int ledger_list_transfers(ledger *l, rt_context *ctx, const char *account,
                          const char *currency, int limit, const char *before,
                          ledger_page *out);
void ledger_page_free(ledger_page *page);

/* ------------------------------------------------------------- API keys */

/*
 * Make an API key for a regular account: a 256-bit secret from libsodium's
 * CSPRNG, returned once in out->secret; only a salted BLAKE2b hash is
 * stored.  LEDGER_ENOTFOUND if the account does not exist; LEDGER_EINVAL for
 * @world.  Durable on return, like every write.
 */
int ledger_create_key(ledger *l, rt_context *ctx, const char *account,
                      ledger_key *out);

/*
 * Which key does `secret` (len bytes, from "Authorization: Bearer ...")
 * belong to?  The admin key or an account key, or LEDGER_EUNAUTHORIZED.
 * Hashes are compared in constant time (sodium_memcmp); no storage access.
 */
int ledger_authenticate(ledger *l, const char *secret, size_t len,
                        ledger_principal *out);

#ifdef __cplusplus
}
#endif
#endif /* LEDGERD_LEDGER_H */
