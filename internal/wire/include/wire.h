/*
 * wire.h — the request and response bodies of ledgerd's HTTP API
 * (/work/shared/API.md), the only public header of internal/wire.
 *
 * Input: strict JSON (jansson) and the field rules of API.md.
 *   - A body is one JSON object and nothing else: duplicate keys, a second
 *     value or any byte after the object (a trailing NUL too) — only JSON
 *     whitespace may follow — invalid UTF-8, or a top-level array or scalar
 *     are 400 `invalid_json`.
 *   - Unknown fields are ignored (forward compatibility: a newer client may
 *     send fields this server does not know; they never change the outcome).
 *   - Amounts (amount, initial_balance) must be JSON integers within
 *     [min, 9007199254740991] (min 1 for amount, 0 for initial_balance).  A
 *     real (12.5, 1e3, 100.0), string, bool, null, array or object, a
 *     negative, zero (for amount) or anything above 2^53-1 is 400
 *     `invalid_field` naming the field.  Integers jansson itself refuses
 *     (beyond the int64 range, 1e400) are 400 `invalid_json`.
 *   - Currency: a string of exactly 3 letters A-Z.
 *   - Account ids in bodies: a string of 1..64 of [A-Za-z0-9_-]; "@..." ids
 *     (@world included) are never accepted in a body: `invalid_field`.
 *   - memo: optional string of at most 256 bytes (UTF-8, as JSON decodes
 *     it).  `"memo": null` is the same as no memo (it is how the memo is
 *     shown).  \u0000 is accepted: the ledger stores memos by length, and
 *     the memo comes back exactly as sent (re-encoded as \u0000).
 *   - Idempotency-Key: 1..255 bytes of printable ASCII (0x20..0x7e).
 *   - History query: limit 1..1000 (plain decimal digits; default 50),
 *     before an opaque cursor (printable, at most LEDGER_CURSOR_MAX bytes
 *     after percent-decoding; the ledger judges the rest).
 * Errors are reported as a wire_error: HTTP status, API code and a message
 * that starts with the field's name ("amount: must be ...").
 *
 * Output: the API's JSON objects rendered straight into a caller's buffer
 * (no JSON tree: these are the hot path of the benchmarks).  Ids, currencies
 * and times come from the ledger, already restricted to safe character sets,
 * and are printed as they are; the memo, arbitrary UTF-8, is escaped by
 * jansson.  Each renderer needs at most the *_JSON_MAX bytes it names and
 * returns the length written (no NUL counted) or -1 if cap is too small.
 *
 * No global state; every function is thread-safe.
 */
#ifndef LEDGERD_WIRE_H
#define LEDGERD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WIRE_MESSAGE_MAX 256
#define WIRE_LIMIT_DEFAULT 50

/* An API error: status (400, ...), code (a static string such as
 * "invalid_field") and a message naming the field. */
typedef struct wire_error {
    int status;
    const char *code;
    char message[WIRE_MESSAGE_MAX];
} wire_error;

/* Fill *e; returns -1 so that parse functions can `return wire_fail(...)`. */
int wire_fail(wire_error *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ------------------------------------------------------------- fields */

bool wire_valid_account_id(const char *s, size_t len);   /* [A-Za-z0-9_-]{1,64} */
bool wire_valid_currency(const char *s, size_t len);     /* [A-Z]{3} */
/* 0, or -1 with 400 invalid_field "Idempotency-Key: ..." in *e. */
int wire_check_idem_key(const char *key, size_t len, wire_error *e);

/* ------------------------------------------------------------- bodies */

typedef struct wire_transfer {
    char from[LEDGER_ACCOUNT_ID_MAX + 1];
    char to[LEDGER_ACCOUNT_ID_MAX + 1];
    int64_t amount;
    char currency[4];
    bool has_memo;
    size_t memo_len;
    char memo[LEDGER_MEMO_MAX + 1];       /* NUL-terminated too */
} wire_transfer;

typedef struct wire_account {
    char id[LEDGER_ACCOUNT_ID_MAX + 1];
    char currency[4];
    int64_t initial_balance;              /* 0 when absent */
} wire_account;

typedef struct wire_key {
    char account[LEDGER_ACCOUNT_ID_MAX + 1];
} wire_key;

/* Parse and validate a body.  0, or -1 with *e set (400 invalid_json /
 * invalid_field).  body need not be NUL-terminated. */
int wire_parse_transfer(const char *body, size_t len, wire_transfer *out, wire_error *e);
int wire_parse_account(const char *body, size_t len, wire_account *out, wire_error *e);
int wire_parse_key(const char *body, size_t len, wire_key *out, wire_error *e);

/* -------------------------------------------------------------- query */

/*
 * Find parameter `name` in a raw query string (the part after '?', not
 * decoded; may be NULL) and percent-decode its value ('+' is a space) into
 * out (cap bytes, NUL-terminated).  Returns 1 found (value length in
 * *out_len), 0 absent, -1 present but malformed (bad %-escape, too long for
 * cap, or a decoded NUL byte).  The first occurrence wins.
 */
int wire_query_param(const char *query, size_t query_len, const char *name,
                     char *out, size_t cap, size_t *out_len);

typedef struct wire_page_query {
    int limit;                            /* 1..1000, default 50 */
    bool has_before;
    char before[LEDGER_CURSOR_MAX + 1];   /* "" when absent */
} wire_page_query;

/* limit and before of GET /v1/accounts/{id}/transfers. */
int wire_parse_page_query(const char *query, size_t query_len, wire_page_query *out,
                          wire_error *e);

/* ------------------------------------------------------- ledger errors */

/*
 * The API status and code of a ledger_error (one table for every caller):
 *   ENOTFOUND 404 not_found          EEXISTS 409 account_exists
 *   ESAME_ACCOUNT 422 same_account   ECURRENCY 422 currency_mismatch
 *   EFUNDS 422 insufficient_funds    ELIMIT 422 balance_limit
 *   EIDEM_REUSED 409 idempotency_key_reused
 *   EIDEM_IN_USE 409 idempotency_key_in_use
 *   EUNAUTHORIZED 401 unauthorized   EINVAL 400 invalid_field
 *   ETIMEDOUT, ECANCELED 504 deadline_exceeded
 *   ECLOSED 503 draining             EIO, EFAILED 503 storage_unavailable
 *   anything else (ENOMEM, ...) 500 internal
 */
void wire_ledger_status(int ledger_rc, int *status, const char **code);

/* ------------------------------------------------------------- output */

/* {"id","currency","balance","created_at"} */
#define WIRE_ACCOUNT_JSON_MAX 256
/* {"id","from","to","amount","currency","memo","status","created_at"}:
 * the memo may grow 6x when escaped (\u0000). */
#define WIRE_TRANSFER_JSON_MAX (512 + 6 * LEDGER_MEMO_MAX)
/* {"id","account","secret","created_at"} */
#define WIRE_KEY_JSON_MAX (256 + LEDGER_SECRET_MAX)

int wire_render_account(char *buf, size_t cap, const ledger_account *a);
int wire_render_transfer(char *buf, size_t cap, const ledger_transfer_rec *t);
int wire_render_key(char *buf, size_t cap, const ledger_key *k);

/* Where a page is rendered: append len bytes, 0 or negative on failure. */
typedef int (*wire_sink)(void *ud, const void *data, size_t len);
/* {"transfers":[...],"next":"cursor"|null} through sink.  0 or the sink's
 * (or -1 for a render) failure. */
int wire_render_page(const ledger_page *p, wire_sink sink, void *ud);

#ifdef __cplusplus
}
#endif
#endif /* LEDGERD_WIRE_H */
