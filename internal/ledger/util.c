/*
 * util.c — small pieces the ledger's files share: error strings, the hash
 * table, wall-clock time in RFC 3339, identifier syntax, ULIDs, encodings.
 *
 * Hash table.  Chained, power-of-two buckets, intrusive entries (the hent
 * lives inside the account / key / claim it indexes, so an insert allocates
 * nothing but an occasional bigger bucket array).  Keys are hashed with
 * SipHash-2-4 (libsodium's crypto_shorthash) under a random key per table:
 * ids and idempotency keys are chosen by clients, and a fixed hash would let
 * one client pile every key into one bucket.  Load factor <= 1.
 *
 * Transfer ids are ULIDs: 48 bits of Unix milliseconds and 80 random bits
 * (libsodium's CSPRNG), 26 characters of Crockford base32.  Within one
 * millisecond the committer increments the random part instead of drawing
 * a new one (the ULID spec's monotonic mode), so ids sort in commit order
 * and stay unique.  Only the committer makes them (state in ledger).
 *
 * Cursors are the transfer's commit sequence number in lower-case hex.
 * Clients must treat them as opaque; they are stable because sequence
 * numbers are assigned in commit order and never reused.
 */
#include "ledger_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- errors */

const char *ledger_strerror(int code) {
    switch (code) {
    case LEDGER_OK: return "ok";
    case LEDGER_EINVAL: return "invalid argument";
    case LEDGER_ENOTFOUND: return "not found";
    case LEDGER_EEXISTS: return "account already exists";
    case LEDGER_ESAME_ACCOUNT: return "from and to are the same account";
    case LEDGER_ECURRENCY: return "currency does not match the account's currency";
    case LEDGER_EFUNDS: return "insufficient funds";
    case LEDGER_ELIMIT: return "balance limit exceeded";
    case LEDGER_EIDEM_REUSED: return "idempotency key reused with a different request";
    case LEDGER_EIDEM_IN_USE: return "idempotency key in use by a request in flight";
    case LEDGER_EUNAUTHORIZED: return "unauthorized";
    case LEDGER_ECANCELED: return "canceled";
    case LEDGER_ETIMEDOUT: return "deadline exceeded";
    case LEDGER_ECLOSED: return "ledger closed";
    case LEDGER_EIO: return "storage error (nothing was changed)";
    case LEDGER_EFAILED: return "storage failed at commit (outcome unknown; reopen required)";
    case LEDGER_ECORRUPT: return "ledger invariant violated in the database";
    case LEDGER_EBUSY: return "database in use by another ledger";
    case LEDGER_ENOMEM: return "out of memory";
    default: return "unknown ledger error";
    }
}

void ledger_errf(char *buf, size_t len, const char *fmt, ...) {
    if (!buf || len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ hash table */

static uint64_t htab_hash(const htab *t, const char *key, size_t klen) {
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, (const unsigned char *)key, klen, t->seed);
    uint64_t h;
    memcpy(&h, out, sizeof h);
    return h;
}

int htab_init(htab *t, size_t hint) {
    size_t n = 16;
    while (n < hint) n <<= 1;
    t->buckets = calloc(n, sizeof *t->buckets);
    if (!t->buckets) return LEDGER_ENOMEM;
    t->nbuckets = n;
    t->count = 0;
    randombytes_buf(t->seed, sizeof t->seed);
    return LEDGER_OK;
}

void htab_destroy(htab *t, void (*free_entry)(hent *e)) {
    if (!t->buckets) return;
    if (free_entry) {
        for (size_t i = 0; i < t->nbuckets; i++) {
            hent *e = t->buckets[i];
            while (e) {
                hent *next = e->next;
                free_entry(e);
                e = next;
            }
        }
    }
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->count = 0;
}

hent *htab_get(const htab *t, const char *key, size_t klen) {
    uint64_t h = htab_hash(t, key, klen);
    for (hent *e = t->buckets[h & (t->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) return e;
    return NULL;
}

static int htab_grow(htab *t) {
    size_t n = t->nbuckets * 2;
    hent **b = calloc(n, sizeof *b);
    if (!b) return LEDGER_ENOMEM;
    for (size_t i = 0; i < t->nbuckets; i++) {
        hent *e = t->buckets[i];
        while (e) {
            hent *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return LEDGER_OK;
}

int htab_put(htab *t, hent *e) {
    /* Grow first, so a failure leaves the table (and the caller's state)
     * unchanged. */
    if (t->count + 1 > t->nbuckets && htab_grow(t) != LEDGER_OK) return LEDGER_ENOMEM;
    e->hash = htab_hash(t, e->key, e->klen);
    hent **slot = &t->buckets[e->hash & (t->nbuckets - 1)];
    e->next = *slot;
    *slot = e;
    t->count++;
    return LEDGER_OK;
}

hent *htab_del(htab *t, const char *key, size_t klen) {
    uint64_t h = htab_hash(t, key, klen);
    for (hent **pp = &t->buckets[h & (t->nbuckets - 1)]; *pp; pp = &(*pp)->next) {
        hent *e = *pp;
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) {
            *pp = e->next;
            t->count--;
            return e;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ time */

int64_t ledger_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ledger_format_time(int64_t unix_ms, char out[LEDGER_TIME_LEN + 1]) {
    if (unix_ms < 0) unix_ms = 0;
    time_t secs = (time_t)(unix_ms / 1000);
    unsigned ms = (unsigned)(unix_ms % 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char date[64];
    size_t n = strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n != 19) {   /* years past 9999: not before the heat death of this code */
        memcpy(out, "9999-12-31T23:59:59.999Z", LEDGER_TIME_LEN + 1);
        return;
    }
    memcpy(out, date, 19);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = 0;
}

/* ------------------------------------------------------------- syntax */

bool ledger_valid_account_id(const char *id) {
    if (!id) return false;
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!ok || n >= LEDGER_ACCOUNT_ID_MAX) return false;
    }
    return n >= 1;
}

bool ledger_valid_currency(const char *cur) {
    if (!cur) return false;
    for (int i = 0; i < 3; i++)
        if (cur[i] < 'A' || cur[i] > 'Z') return false;
    return cur[3] == 0;
}

bool ledger_valid_printable(const char *s, size_t min, size_t max) {
    if (!s) return false;
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e || n >= max) return false;
    return n >= min;
}

bool ledger_account_key(const char *id, const char *currency, char out[LEDGER_ACCOUNT_ID_MAX + 1]) {
    if (id && strcmp(id, LEDGER_WORLD) == 0) {
        if (!ledger_valid_currency(currency)) return false;
        snprintf(out, LEDGER_ACCOUNT_ID_MAX + 1, "%s:%s", LEDGER_WORLD, currency);
        return true;
    }
    if (!ledger_valid_account_id(id)) return false;
    snprintf(out, LEDGER_ACCOUNT_ID_MAX + 1, "%s", id);
    return true;
}

void ledger_key_to_id(const char *key, char out[LEDGER_ACCOUNT_ID_MAX + 1]) {
    if (key[0] == '@') snprintf(out, LEDGER_ACCOUNT_ID_MAX + 1, "%s", LEDGER_WORLD);
    else snprintf(out, LEDGER_ACCOUNT_ID_MAX + 1, "%s", key);
}

/* ------------------------------------------------------------------ ULID */

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void ledger_new_ulid(ledger *l, int64_t now_ms, char out[LEDGER_TRANSFER_ID_LEN + 1]) {
    if (now_ms > l->ulid_ms) {
        l->ulid_ms = now_ms;
        randombytes_buf(l->ulid_rand, sizeof l->ulid_rand);
    } else {
        /* Same (or an earlier: the clock stepped back) millisecond: keep
         * the last time and add one to the 80-bit random part. */
        int i = (int)sizeof l->ulid_rand - 1;
        while (i >= 0 && ++l->ulid_rand[i] == 0) i--;
        if (i < 0) {   /* 2^80 ids in one ms: move to the next ms */
            l->ulid_ms++;
            randombytes_buf(l->ulid_rand, sizeof l->ulid_rand);
        }
    }
    unsigned __int128 v = (unsigned __int128)(uint64_t)(l->ulid_ms & 0xffffffffffffULL) << 80;
    for (size_t i = 0; i < sizeof l->ulid_rand; i++)
        v |= (unsigned __int128)l->ulid_rand[i] << (8 * (sizeof l->ulid_rand - 1 - i));
    for (int i = LEDGER_TRANSFER_ID_LEN - 1; i >= 0; i--) {
        out[i] = crockford[(unsigned)(v & 31)];
        v >>= 5;
    }
    out[LEDGER_TRANSFER_ID_LEN] = 0;
}

bool ledger_valid_ulid(const char *s) {
    if (!s) return false;
    for (int i = 0; i < LEDGER_TRANSFER_ID_LEN; i++)
        if (!s[i] || !strchr(crockford, s[i])) return false;
    return s[LEDGER_TRANSFER_ID_LEN] == 0 && s[0] <= '7';
}

/* ------------------------------------------------------------ encodings */

void ledger_hex(const uint8_t *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = 0;
}

void ledger_b64url(const uint8_t *in, size_t n, char *out, size_t outlen) {
    sodium_bin2base64(out, outlen, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

void ledger_cursor_encode(int64_t seq, char out[LEDGER_CURSOR_MAX + 1]) {
    snprintf(out, LEDGER_CURSOR_MAX + 1, "%" PRIx64, (uint64_t)seq);
}

bool ledger_cursor_decode(const char *s, int64_t *seq) {
    if (!s || !*s) return false;
    uint64_t v = 0;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else return false;
        if (n >= 15) return false;   /* < 2^60: plenty, and no overflow */
        v = v * 16 + d;
    }
    if (v == 0) return false;
    *seq = (int64_t)v;
    return true;
}
