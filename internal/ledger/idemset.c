/*
 * idemset.c — the in-memory filter of recorded idempotency keys.
 *
 * Why it exists
 *   Without it every keyed transfer first asks a reader goroutine whether
 *   SQLite holds a record for its key — a channel round trip and a query
 *   before the request even reaches the committer, and almost always the
 *   answer is "no" (clients send a fresh key per transfer; replays are
 *   retries, rare).  The set lets ledger_transfer answer "certainly not
 *   recorded" from memory, under ledger.mu, and go straight to the
 *   committer.  SQLite stays the source of truth for everything else.
 *
 * Why it is a filter, not an index
 *   It holds 64-bit fingerprints, not keys: fp = SipHash-2-4
 *   (crypto_shorthash) of "scope 0x1f key" under a random key drawn at each
 *   open, so clients cannot aim for collisions and nothing about the keys
 *   is kept in memory.  The only question it answers is "may this key have
 *   a record?":
 *     - absent  => no record within the TTL (the ledger adds a fingerprint
 *                  for every record it commits, in the critical section
 *                  that releases the key's claim, and loads all of them at
 *                  open), so the SQLite lookup can be skipped;
 *     - present => perhaps: the lookup runs as before.  A collision of two
 *                  keys' fingerprints (odds ~ n / 2^64 per fresh key) only
 *                  costs that lookup, which compares the stored row by its
 *                  full scope and key and then the request hash, so a
 *                  collision can never replay another request's outcome.
 *   A false negative would be a double execution, so anything that might
 *   make one (an allocation failure while growing) turns the set `lossy`:
 *   from then on it answers "present" for everything — every keyed
 *   transfer does the lookup, as before the filter existed — until the
 *   ledger is reopened.  Speed is lost, never correctness.
 *
 * Layout
 *   Open addressing, linear probing, power-of-two capacity, home slot =
 *   fp & (cap - 1) (SipHash output is uniform, so the low bits are as good
 *   as any).  fp 0 marks an empty slot; a real fingerprint 0 is stored as 1
 *   (one more, harmless, false-positive pair).  Grows x2 past 0.7 load.
 *   Deletion is by backward shift (no tombstones, so probe lengths never
 *   degrade with churn).  Each slot also keeps the record's created_ms (the
 *   newest, if two records share a fingerprint), so the sweep can drop
 *   fingerprints of expired records.
 *
 * Memory: a slot is 16 bytes (fingerprint + created_ms); the load stays
 *   between 0.35 and 0.7 after growth, i.e. 23-46 bytes per recorded key —
 *   about 1.5-3 MB per 65 536 keys within the TTL (24 h in the daemon).
 *   After a sweep the table shrinks if it became 1/8 full.
 *
 * Not thread-safe: the ledger guards it with ledger.mu.  The SipHash key
 *   is written once at init and never again, so idemset_fingerprint may be
 *   called without the lock.
 */
#include "ledger_internal.h"

#include <stdlib.h>
#include <string.h>

#define IDEMSET_MIN_CAP 8

static uint64_t norm(uint64_t fp) { return fp ? fp : 1; }

static size_t home(const idemset *s, uint64_t fp) { return (size_t)fp & (s->cap - 1); }

/* The smallest power of two >= IDEMSET_MIN_CAP that holds n at <= 0.7 load. */
static size_t cap_for(size_t n) {
    size_t cap = IDEMSET_MIN_CAP;
    while (cap * 7 < n * 10) cap *= 2;
    return cap;
}

int idemset_init(idemset *s, size_t hint) {
    memset(s, 0, sizeof *s);
    s->cap = cap_for(hint);
    s->slots = calloc(s->cap, sizeof *s->slots);
    if (!s->slots) return LEDGER_ENOMEM;
    randombytes_buf(s->key, sizeof s->key);
    return LEDGER_OK;
}

void idemset_destroy(idemset *s) {
    free(s->slots);
    s->slots = NULL;
    s->cap = s->count = 0;
}

uint64_t idemset_fingerprint(const idemset *s, const char *key, size_t len) {
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const unsigned char *)key, len, s->key);
    uint64_t fp;
    memcpy(&fp, h, sizeof fp);
    return norm(fp);
}

/* The slot holding fp, or the empty slot where the probe for it ends. */
static size_t probe(const idemset *s, uint64_t fp) {
    size_t mask = s->cap - 1, i = home(s, fp);
    while (s->slots[i].fp != 0 && s->slots[i].fp != fp) i = (i + 1) & mask;
    return i;
}

/* Rehash into a table of newcap slots (newcap holds count at <= 0.7). */
static int resize(idemset *s, size_t newcap) {
    idemset_slot *old = s->slots;
    size_t oldcap = s->cap;
    idemset_slot *slots = calloc(newcap, sizeof *slots);
    if (!slots) return LEDGER_ENOMEM;
    s->slots = slots;
    s->cap = newcap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].fp) s->slots[probe(s, old[i].fp)] = old[i];
    free(old);
    return LEDGER_OK;
}

bool idemset_maybe_contains(const idemset *s, uint64_t fp) {
    if (s->lossy) return true;
    return s->slots[probe(s, norm(fp))].fp != 0;
}

int idemset_add(idemset *s, uint64_t fp, int64_t created_ms) {
    fp = norm(fp);
    size_t i = probe(s, fp);
    if (s->slots[i].fp == fp) {
        /* A record replaced (its predecessor had expired), or another key
         * with this fingerprint: keep the newest time, so the fingerprint
         * outlives every record it stands for. */
        if (created_ms > s->slots[i].created_ms) s->slots[i].created_ms = created_ms;
        return LEDGER_OK;
    }
    if ((s->count + 1) * 10 > s->cap * 7) {
        if (resize(s, s->cap * 2) != LEDGER_OK) {
            s->lossy = true;   /* see the top: "maybe" for everything from now on */
            return LEDGER_ENOMEM;
        }
        i = probe(s, fp);
    }
    s->slots[i].fp = fp;
    s->slots[i].created_ms = created_ms;
    s->count++;
    return LEDGER_OK;
}

/*
 * Empty slot i by backward shift: walk the cluster after i and move back
 * into the hole every entry whose home is not in (hole, j] cyclically — it
 * would no longer be reachable from its home across the hole.  Entries
 * only ever move backwards, within the cluster that contained i.
 */
static void delete_at(idemset *s, size_t i) {
    size_t mask = s->cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (s->slots[j].fp == 0) break;
        size_t k = home(s, s->slots[j].fp);
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }
    s->slots[i].fp = 0;
    s->slots[i].created_ms = 0;
    s->count--;
}

bool idemset_remove(idemset *s, uint64_t fp) {
    fp = norm(fp);
    size_t i = probe(s, fp);
    if (s->slots[i].fp != fp) return false;
    delete_at(s, i);
    return true;
}

/*
 * Drop every fingerprint whose newest record is older than cutoff_ms.
 * The scan starts just after an empty slot and goes once round: a
 * deletion at i only pulls entries back from later in i's cluster, which
 * ends before that empty slot, so every entry is seen once, and after a
 * deletion slot i is looked at again (it may hold a pulled-back entry).
 */
size_t idemset_expire(idemset *s, int64_t cutoff_ms) {
    if (s->count == 0) return 0;
    size_t mask = s->cap - 1, start = 0, removed = 0;
    while (s->slots[start].fp != 0) start++;   /* load <= 0.7: one exists */
    for (size_t step = 1; step < s->cap; step++) {
        size_t i = (start + step) & mask;
        while (s->slots[i].fp != 0 && s->slots[i].created_ms < cutoff_ms) {
            delete_at(s, i);
            removed++;
        }
    }
    /* Give memory back after a big expiry (best effort: on failure the
     * larger table stays, which is still correct). */
    size_t want = cap_for(s->count * 2);
    if (want * 2 <= s->cap && s->count * 8 < s->cap) (void)resize(s, want);
    return removed;
}
