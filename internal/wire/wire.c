/*
 * wire.c — API.md's body and field rules, and the JSON the API answers with.
 *
 * Parsing
 *   jansson does the JSON: json_loadb with JSON_REJECT_DUPLICATES (a
 *   duplicated key is ambiguous money: which "amount" did the client mean?)
 *   and without JSON_DISABLE_EOF_CHECK, so anything but whitespace after the
 *   object — a second object, garbage, a NUL byte — is invalid_json.
 *   JSON_ALLOW_NUL lets "\u0000" through the decoder; every string is then
 *   handled by its length (json_string_length), never by strlen, so an id
 *   like "a\u0000b" fails the id charset instead of being cut to "a".
 *   Field rules are checked in a fixed order (the order of the fields in
 *   API.md's examples), and the first failure is reported, so a client gets
 *   one precise message per request.
 *
 *   Amounts: jansson decodes integer literals as json_integer (int64) and
 *   anything with a fraction or exponent as json_real, so "1e3" and "100.0"
 *   are reals and refused, as API.md wants: an amount is an integer literal.
 *   Integer literals beyond int64 make jansson fail the whole parse
 *   (invalid_json, which the e2e suite accepts for those).
 *
 * Rendering
 *   snprintf of fixed shapes.  Only the memo can hold characters that need
 *   escaping; it goes through jansson (json_stringn_nocheck + json_dumpb),
 *   which escapes '"', '\\', control characters and NUL and leaves other
 *   UTF-8 as is.  The memo came in through jansson's UTF-8 check, so the
 *   bytes are valid UTF-8.
 */
#include "wire.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define WIRE_JSON_FLAGS (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)

int wire_fail(wire_error *e, int status, const char *code, const char *fmt, ...) {
    e->status = status;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* ------------------------------------------------------------- fields */

static bool is_id_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

bool wire_valid_account_id(const char *s, size_t len) {
    if (s == NULL || len < 1 || len > LEDGER_ACCOUNT_ID_MAX) return false;
    for (size_t i = 0; i < len; i++)
        if (!is_id_char((unsigned char)s[i])) return false;
    return true;
}

bool wire_valid_currency(const char *s, size_t len) {
    if (s == NULL || len != 3) return false;
    for (size_t i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z') return false;
    return true;
}

int wire_check_idem_key(const char *key, size_t len, wire_error *e) {
    if (key == NULL || len < 1 || len > LEDGER_IDEM_KEY_MAX)
        return wire_fail(e, 400, "invalid_field",
                         "Idempotency-Key: header must be 1 to %d printable ASCII characters",
                         LEDGER_IDEM_KEY_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c > 0x7e)
            return wire_fail(e, 400, "invalid_field",
                             "Idempotency-Key: header must be printable ASCII (0x20-0x7e)");
    }
    return 0;
}

/* ------------------------------------------------------------- bodies */

/* The body as a JSON object, or NULL with *e set (invalid_json). */
static json_t *load_object(const char *body, size_t len, wire_error *e) {
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", body ? len : 0, WIRE_JSON_FLAGS, &jerr);
    if (root == NULL) {
        if (len == 0) {
            wire_fail(e, 400, "invalid_json", "the request body is empty; a JSON object is required");
        } else {
            /* jansson's text names the problem ("duplicate object key",
             * "end of file expected", "too big integer", ...). */
            wire_fail(e, 400, "invalid_json", "the body is not valid JSON: %s (at byte %d)", jerr.text,
                      jerr.position);
        }
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        wire_fail(e, 400, "invalid_json", "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/* An account id field: required string of the id charset.  '@' ids
 * (reserved: @world) fail the charset, so they are invalid_field here. */
static int get_account_id(json_t *root, const char *field, char *out, wire_error *e) {
    json_t *v = json_object_get(root, field);
    if (v == NULL) return wire_fail(e, 400, "invalid_field", "%s: is required", field);
    if (!json_is_string(v))
        return wire_fail(e, 400, "invalid_field", "%s: must be a string (an account id)", field);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n > 0 && s[0] == '@')
        return wire_fail(e, 400, "invalid_field",
                         "%s: ids starting with '@' are reserved and cannot be used here", field);
    if (!wire_valid_account_id(s, n))
        return wire_fail(e, 400, "invalid_field", "%s: must match [A-Za-z0-9_-]{1,64}", field);
    memcpy(out, s, n + 1);
    return 0;
}

static int get_currency(json_t *root, const char *field, char *out, wire_error *e) {
    json_t *v = json_object_get(root, field);
    if (v == NULL) return wire_fail(e, 400, "invalid_field", "%s: is required", field);
    if (!json_is_string(v) || !wire_valid_currency(json_string_value(v), json_string_length(v)))
        return wire_fail(e, 400, "invalid_field",
                         "%s: must be a 3-letter upper-case currency code such as \"USD\"", field);
    memcpy(out, json_string_value(v), 4);
    return 0;
}

/* An amount in minor units: a JSON integer in [min, LEDGER_AMOUNT_MAX].
 * Absent: required ? error : *out = 0. */
static int get_amount(json_t *root, const char *field, bool required, int64_t min, int64_t *out,
                      wire_error *e) {
    json_t *v = json_object_get(root, field);
    if (v == NULL) {
        if (required) return wire_fail(e, 400, "invalid_field", "%s: is required", field);
        *out = 0;
        return 0;
    }
    if (!json_is_integer(v))
        return wire_fail(e, 400, "invalid_field",
                         "%s: must be an integer number of minor units (no fraction, exponent, "
                         "string, bool or null)",
                         field);
    json_int_t n = json_integer_value(v);
    if (n < min || n > LEDGER_AMOUNT_MAX)
        return wire_fail(e, 400, "invalid_field", "%s: must be an integer from %lld to %lld", field,
                         (long long)min, (long long)LEDGER_AMOUNT_MAX);
    *out = (int64_t)n;
    return 0;
}

static int get_memo(json_t *root, wire_transfer *out, wire_error *e) {
    json_t *v = json_object_get(root, "memo");
    out->has_memo = false;
    out->memo_len = 0;
    out->memo[0] = 0;
    if (v == NULL || json_is_null(v)) return 0;   /* null: no memo, as it is shown */
    if (!json_is_string(v)) return wire_fail(e, 400, "invalid_field", "memo: must be a string");
    size_t n = json_string_length(v);
    if (n > LEDGER_MEMO_MAX)
        return wire_fail(e, 400, "invalid_field", "memo: must be at most %d bytes (UTF-8), got %zu",
                         LEDGER_MEMO_MAX, n);
    memcpy(out->memo, json_string_value(v), n);
    out->memo[n] = 0;
    out->memo_len = n;
    out->has_memo = true;
    return 0;
}

int wire_parse_transfer(const char *body, size_t len, wire_transfer *out, wire_error *e) {
    json_t *root = load_object(body, len, e);
    if (root == NULL) return -1;
    int rc = get_account_id(root, "from", out->from, e);
    if (rc == 0) rc = get_account_id(root, "to", out->to, e);
    if (rc == 0) rc = get_amount(root, "amount", true, 1, &out->amount, e);
    if (rc == 0) rc = get_currency(root, "currency", out->currency, e);
    if (rc == 0) rc = get_memo(root, out, e);
    json_decref(root);
    return rc;
}

int wire_parse_account(const char *body, size_t len, wire_account *out, wire_error *e) {
    json_t *root = load_object(body, len, e);
    if (root == NULL) return -1;
    int rc = get_account_id(root, "id", out->id, e);
    if (rc == 0) rc = get_currency(root, "currency", out->currency, e);
    if (rc == 0) rc = get_amount(root, "initial_balance", false, 0, &out->initial_balance, e);
    json_decref(root);
    return rc;
}

int wire_parse_key(const char *body, size_t len, wire_key *out, wire_error *e) {
    json_t *root = load_object(body, len, e);
    if (root == NULL) return -1;
    int rc = get_account_id(root, "account", out->account, e);
    json_decref(root);
    return rc;
}

/* -------------------------------------------------------------- query */

static int hex_val(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into out; -1 if malformed, too long or NUL. */
static int percent_decode(const char *s, size_t n, char *out, size_t cap, size_t *out_len) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n) return -1;
            int hi = hex_val(s[i + 1]), lo = hex_val(s[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == 0 || k + 1 >= cap) return -1;
        out[k++] = c;
    }
    out[k] = 0;
    *out_len = k;
    return 0;
}

int wire_query_param(const char *query, size_t query_len, const char *name, char *out, size_t cap,
                     size_t *out_len) {
    if (query == NULL || cap == 0) return 0;
    size_t name_len = strlen(name);
    size_t i = 0;
    while (i <= query_len) {
        size_t end = i;
        while (end < query_len && query[end] != '&') end++;
        const char *pair = query + i;
        size_t plen = end - i;
        const char *eq = memchr(pair, '=', plen);
        size_t klen = eq ? (size_t)(eq - pair) : plen;
        if (klen == name_len && memcmp(pair, name, name_len) == 0) {
            const char *val = eq ? eq + 1 : pair + plen;
            size_t vlen = eq ? plen - klen - 1 : 0;
            return percent_decode(val, vlen, out, cap, out_len) == 0 ? 1 : -1;
        }
        i = end + 1;
    }
    return 0;
}

/* limit: plain decimal digits only ("+5", "1.5", "1e2", " 5" are refused). */
static int parse_limit(const char *s, size_t n, int *out) {
    if (n == 0 || n > 4) return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > LEDGER_PAGE_MAX) return -1;
    *out = v;
    return 0;
}

int wire_parse_page_query(const char *query, size_t query_len, wire_page_query *out, wire_error *e) {
    char buf[32];
    size_t n = 0;
    out->limit = WIRE_LIMIT_DEFAULT;
    out->has_before = false;
    out->before[0] = 0;
    int rc = wire_query_param(query, query_len, "limit", buf, sizeof buf, &n);
    if (rc < 0 || (rc == 1 && parse_limit(buf, n, &out->limit) != 0))
        return wire_fail(e, 400, "invalid_field", "limit: must be an integer from 1 to %d",
                         LEDGER_PAGE_MAX);
    rc = wire_query_param(query, query_len, "before", out->before, sizeof out->before, &n);
    if (rc < 0 || (rc == 1 && n == 0)) {
        out->before[0] = 0;
        return wire_fail(e, 400, "invalid_field", "before: is not a cursor this server returned");
    }
    for (size_t i = 0; rc == 1 && i < n; i++) {
        unsigned char c = (unsigned char)out->before[i];
        if (c <= 0x20 || c > 0x7e) {
            out->before[0] = 0;
            return wire_fail(e, 400, "invalid_field", "before: is not a cursor this server returned");
        }
    }
    out->has_before = rc == 1;
    return 0;
}

/* ------------------------------------------------------- ledger errors */

void wire_ledger_status(int rc, int *status, const char **code) {
    switch (rc) {
    case LEDGER_ENOTFOUND: *status = 404; *code = "not_found"; break;
    case LEDGER_EEXISTS: *status = 409; *code = "account_exists"; break;
    case LEDGER_ESAME_ACCOUNT: *status = 422; *code = "same_account"; break;
    case LEDGER_ECURRENCY: *status = 422; *code = "currency_mismatch"; break;
    case LEDGER_EFUNDS: *status = 422; *code = "insufficient_funds"; break;
    /* API.md has no code for it: a balance would leave +-(2^53-1), which
     * only huge test amounts reach.  422 like the other refusals. */
    case LEDGER_ELIMIT: *status = 422; *code = "balance_limit"; break;
    case LEDGER_EIDEM_REUSED: *status = 409; *code = "idempotency_key_reused"; break;
    case LEDGER_EIDEM_IN_USE: *status = 409; *code = "idempotency_key_in_use"; break;
    case LEDGER_EUNAUTHORIZED: *status = 401; *code = "unauthorized"; break;
    case LEDGER_EINVAL: *status = 400; *code = "invalid_field"; break;
    case LEDGER_ETIMEDOUT:
    case LEDGER_ECANCELED: *status = 504; *code = "deadline_exceeded"; break;
    case LEDGER_ECLOSED: *status = 503; *code = "draining"; break;
    /* The store cannot write (rolled back, or COMMIT failed and the store
     * refuses writes until restarted): a retry elsewhere or later may work,
     * so 503, not 500. */
    case LEDGER_EIO:
    case LEDGER_EFAILED: *status = 503; *code = "storage_unavailable"; break;
    default: *status = 500; *code = "internal"; break;
    }
}

/* ------------------------------------------------------------- output */

/* Checked snprintf: the length, or -1 if it did not fit. */
static int fit(int n, size_t cap) { return n < 0 || (size_t)n >= cap ? -1 : n; }

int wire_render_account(char *buf, size_t cap, const ledger_account *a) {
    return fit(snprintf(buf, cap, "{\"id\":\"%s\",\"currency\":\"%s\",\"balance\":%lld,\"created_at\":\"%s\"}",
                        a->id, a->currency, (long long)a->balance, a->created_at),
               cap);
}

/* The memo as a JSON string literal (or null) at buf; length or -1. */
static int render_memo(char *buf, size_t cap, const ledger_transfer_rec *t) {
    if (!t->has_memo) return fit(snprintf(buf, cap, "null"), cap);
    json_t *s = json_stringn_nocheck(t->memo, t->memo_len);
    if (s == NULL) return -1;
    size_t n = json_dumpb(s, buf, cap, JSON_ENCODE_ANY);
    json_decref(s);
    if (n == 0 || n >= cap) return -1;
    return (int)n;
}

int wire_render_transfer(char *buf, size_t cap, const ledger_transfer_rec *t) {
    int head = fit(snprintf(buf, cap,
                            "{\"id\":\"%s\",\"from\":\"%s\",\"to\":\"%s\",\"amount\":%lld,\"currency\":\"%s\","
                            "\"memo\":",
                            t->id, t->from, t->to, (long long)t->amount, t->currency),
                   cap);
    if (head < 0) return -1;
    int memo = render_memo(buf + head, cap - (size_t)head, t);
    if (memo < 0) return -1;
    size_t off = (size_t)head + (size_t)memo;
    int tail = fit(snprintf(buf + off, cap - off, ",\"status\":\"committed\",\"created_at\":\"%s\"}",
                            t->created_at),
                   cap - off);
    if (tail < 0) return -1;
    return (int)(off + (size_t)tail);
}

int wire_render_key(char *buf, size_t cap, const ledger_key *k) {
    return fit(snprintf(buf, cap, "{\"id\":\"%s\",\"account\":\"%s\",\"secret\":\"%s\",\"created_at\":\"%s\"}",
                        k->id, k->account, k->secret, k->created_at),
               cap);
}

int wire_render_page(const ledger_page *p, wire_sink sink, void *ud) {
    static const char open[] = "{\"transfers\":[";
    int rc = sink(ud, open, sizeof open - 1);
    char buf[WIRE_TRANSFER_JSON_MAX + 1];
    for (size_t i = 0; rc >= 0 && i < p->count; i++) {
        size_t off = 0;
        if (i > 0) buf[off++] = ',';
        int n = wire_render_transfer(buf + off, sizeof buf - off, &p->items[i]);
        if (n < 0) return -1;
        rc = sink(ud, buf, off + (size_t)n);
    }
    if (rc < 0) return rc;
    int n;
    if (p->has_next)
        n = fit(snprintf(buf, sizeof buf, "],\"next\":\"%s\"}", p->next), sizeof buf);
    else
        n = fit(snprintf(buf, sizeof buf, "],\"next\":null}"), sizeof buf);
    if (n < 0) return -1;
    rc = sink(ud, buf, (size_t)n);
    return rc < 0 ? rc : 0;
}
