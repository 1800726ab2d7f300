/*
 * idemset.c — the in-memory index of recorded idempotency keys.
 *
 * Why it exists
 *   Without it every keyed transfer first asks a reader goroutine whether
 *   SQLite holds a record for its key — a channel round trip and a query
 *   before the request even reaches the committer, and almost always the
 *   answer is "no" (clients send a fresh key per transfer; replays are
 *   retries, rare).  The set lets ledger_transfer answer "certainly not
 *   recorded" from memory, under ledger.mu, and go straight to the
 *   committer.  And since the idempotency table has no index on its keys
 *   (it is append-only so that recording a key dirties only the table's
 *   last page, see store.c), the set is also how a replay finds its row:
 *   each entry maps a fingerprint to the rowid (and created_ms) of one
 *   record.  SQLite stays the source of truth for everything else.
 *
 * Fingerprints, not keys
 *   fp = SipHash-2-4 (crypto_shorthash) of "scope 0x1f key" under a random
 *   key drawn at each open, so clients cannot aim for collisions and no key
 *   is kept in memory.  The set answers "which records may be this key's?":
 *     - none     => no record within the TTL (the ledger adds an entry for
 *                   every record it commits, in the critical section that
 *                   releases the key's claim, and loads all of them at
 *                   open), so the SQLite lookup is skipped;
 *     - rowids   => candidates: the reader fetches each row by rowid and
 *                   compares its full scope and key (and age), so a
 *                   collision can never replay another request's outcome.
 *   Several entries may share a fingerprint — two keys that collide, or a
 *   key recorded again after its first record expired — and each keeps its
 *   own rowid: a collision must never hide a record (that would execute a
 *   retried transfer twice), so entries are never merged.
 *   A missing entry would be a double execution, so anything that might
 *   lose one (an allocation failure while growing) turns the set `lossy`:
 *   from then on the ledger looks every keyed request up by a scan of the
 *   table (slow, O(records), but exact) until it is reopened.  Speed is
 *   lost, never correctness.
 *
 * Layout
 *   Open addressing, linear probing, power-of-two capacity, home slot =
 *   fp & (cap - 1) (SipHash output is uniform, so the low bits are as good
 *   as any).  fp 0 marks an empty slot; a real fingerprint 0 is stored as 1
 *   (one more, harmless, false-positive pair).  Equal fingerprints simply
 *   occupy several slots of the same cluster; a lookup walks the cluster
 *   from the home slot to the first empty slot and collects them all (every
 *   entry lies between its home and the next empty slot — the invariant of
 *   linear probing, kept by backward-shift deletion).  Grows x2 past 0.7
 *   load.  No tombstones, so probe lengths never degrade with churn.
 *
 * Memory: a slot is 24 bytes (fingerprint, rowid, created_ms); the load
 *   stays between 0.35 and 0.7 after growth, i.e. 34-69 bytes per recorded
 *   key — about 2.2-4.5 MB per 65 536 keys within the TTL (24 h in the
 *   daemon).  After a sweep the table shrinks if it became 1/8 full.
 *
 * Not thread-safe: the ledger guards it with ledger.mu.  The SipHash key
 *   (and the test-only `fixed_fp`) is written at init, before the ledger
 *   serves, and never again, so idemset_fingerprint may be called without
 *   the lock.
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
    if (s->fixed_fp) return norm(s->fixed_fp);   /* tests: every key collides */
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const unsigned char *)key, len, s->key);
    uint64_t fp;
    memcpy(&fp, h, sizeof fp);
    return norm(fp);
}

/* The first empty slot of the probe from fp's home (load <= 0.7: one exists). */
static size_t probe_empty(const idemset *s, uint64_t fp) {
    size_t mask = s->cap - 1, i = home(s, fp);
    while (s->slots[i].fp != 0) i = (i + 1) & mask;
    return i;
}

/* The slot holding (fp, rowid), or cap if there is none. */
static size_t find_entry(const idemset *s, uint64_t fp, int64_t rowid) {
    size_t mask = s->cap - 1;
    for (size_t i = home(s, fp); s->slots[i].fp != 0; i = (i + 1) & mask)
        if (s->slots[i].fp == fp && s->slots[i].rowid == rowid) return i;
    return s->cap;
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
        if (old[i].fp) s->slots[probe_empty(s, old[i].fp)] = old[i];
    free(old);
    return LEDGER_OK;
}

bool idemset_maybe_contains(const idemset *s, uint64_t fp) {
    if (s->lossy) return true;
    fp = norm(fp);
    size_t mask = s->cap - 1;
    for (size_t i = home(s, fp); s->slots[i].fp != 0; i = (i + 1) & mask)
        if (s->slots[i].fp == fp) return true;
    return false;
}

size_t idemset_candidates(const idemset *s, uint64_t fp, int64_t min_ms, int64_t *rowids, size_t max) {
    fp = norm(fp);
    size_t mask = s->cap - 1, n = 0;
    for (size_t i = home(s, fp); s->slots[i].fp != 0; i = (i + 1) & mask) {
        if (s->slots[i].fp != fp || s->slots[i].created_ms < min_ms) continue;
        if (n < max) rowids[n] = s->slots[i].rowid;
        n++;
    }
    return n;
}

int idemset_add(idemset *s, uint64_t fp, int64_t rowid, int64_t created_ms) {
    fp = norm(fp);
    if ((s->count + 1) * 10 > s->cap * 7 && resize(s, s->cap * 2) != LEDGER_OK) {
        s->lossy = true;   /* see the top: every lookup scans the table from now on */
        return LEDGER_ENOMEM;
    }
    /* Always a new slot, even if fp is present: see "Fingerprints" above. */
    size_t i = probe_empty(s, fp);
    s->slots[i].fp = fp;
    s->slots[i].rowid = rowid;
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
    memset(&s->slots[i], 0, sizeof s->slots[i]);
    s->count--;
}

bool idemset_remove(idemset *s, uint64_t fp, int64_t rowid) {
    size_t i = find_entry(s, norm(fp), rowid);
    if (i == s->cap) return false;
    delete_at(s, i);
    return true;
}

/*
 * Drop every entry whose record is older than cutoff_ms.
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
