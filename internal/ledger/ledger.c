/*
 * ledger.c — the ledger's public calls: open and close, validation, the
 * idempotency protocol, and handing requests to the committer (writes) and
 * the readers (SQLite reads).  Balances and accounts are answered from
 * memory, under the mutex.
 *
 * Visibility
 *   Readers see committed state only.  An account's `balance` changes when
 *   the committer publishes a durable group (commit.c), before any request
 *   of the group is answered, so a caller that got LEDGER_OK for a transfer
 *   sees it in every later read (balances, ledger_get_transfer, history).
 *   Accounts and keys created by a group in flight are invisible
 *   (ENOTFOUND / EUNAUTHORIZED) until it commits.
 *
 * Idempotency: the states of a key (scope + key)
 *   free       no record, no claim.  A request claims it (in memory, under
 *              mu) and goes on; the claim lives in the request itself.
 *   in flight  claimed: another request with the key gets EIDEM_IN_USE at
 *              once, whatever its body.
 *   recorded   a durable record (same transaction as the transfer) holding
 *              the request hash and the outcome.  Same hash: the outcome is
 *              replayed (*replayed = true), nothing moves.  Other hash:
 *              EIDEM_REUSED.
 *   expired    a record older than idem_ttl_ms: treated as absent (the next
 *              request appends a new record; the table is append-only),
 *              deleted by the committer's sweep.
 *
 *   The claim is taken before the record is looked up, and released by the
 *   committer in the same critical section that publishes the record's
 *   group (or drops it), so for one key at most one request is ever between
 *   "looked up" and "answered": two concurrent requests can never both
 *   move money.  The lookup reads SQLite through a reader (a durable record
 *   is visible to it as soon as its group committed, i.e. before the claim
 *   goes away).  Claims are memory only: after a crash every key whose
 *   request had not committed is free again, and the ones that committed
 *   have their record in the same transaction as their transfer.
 *
 *   The index (l->idem, idemset.c) lets most requests skip that lookup,
 *   and tells the others where to look: it maps a fingerprint of every
 *   recorded key within the TTL to its record's rowid (loaded at open;
 *   added by the committer in the critical section that releases the key's
 *   claim).  In the critical section that takes the claim, no live entry
 *   proves there is no record — any earlier request with the key has
 *   released its claim, so its entry is in, and while we hold the claim
 *   nobody else can record the key — and the request goes straight to the
 *   committer.  Otherwise the candidate rowids (the key's records, or
 *   64-bit collisions) are copied out under mu and a reader fetches those
 *   rows, compares the full scope/key and age, and the newest match is the
 *   record; the request hash then decides replay or EIDEM_REUSED.  The
 *   index can cost a lookup, never change an outcome.  When it cannot
 *   answer (lossy after an allocation failure, or more candidates than
 *   IDEM_CANDIDATES_MAX) the reader scans the table for the key instead.
 *
 * Request hash: when the caller gives none, BLAKE2b-256 over a canonical
 * encoding of (from, to, amount, currency, memo), so JSON layout and field
 * order do not make two identical transfers "different bodies".
 */
#include "ledger_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ADMIN_KEY_MAX 1024

static int map_rt(int rc) {
    switch (rc) {
    case RT_OK: return LEDGER_OK;
    case RT_ETIMEDOUT: return LEDGER_ETIMEDOUT;
    case RT_ECANCELED: return LEDGER_ECANCELED;
    case RT_ENOMEM: return LEDGER_ENOMEM;
    default: return LEDGER_EIO;
    }
}

/* ------------------------------------------------------------- open/close */

static void free_acct(hent *e) { free(container_of(e, lacct, node)); }
static void free_key(hent *e) { free(container_of(e, lkey, node)); }

/* Stop the goroutines (if any), then free everything. */
static void destroy(ledger *l) {
    rt_rwmutex_lock(&l->close_mu);
    bool was_closed = l->closed;
    l->closed = true;
    rt_rwmutex_unlock(&l->close_mu);
    if (!was_closed) {
        /* No sender can be inside a send now (they hold close_mu's read
         * side across it): closing cannot make a send fatal. */
        if (l->wq) rt_chan_close(l->wq);
        if (l->rq) rt_chan_close(l->rq);
    }
    rt_waitgroup_wait(&l->workers);
    for (int i = 0; i < l->nreaders; i++) free(l->readers[i]);
    free(l->readers);
    htab_destroy(&l->accounts, free_acct);
    htab_destroy(&l->keys, free_key);
    htab_destroy(&l->claims, NULL);   /* claims live in their requests */
    idemset_destroy(&l->idem);
    if (l->wq) rt_chan_release(l->wq);
    if (l->rq) rt_chan_release(l->rq);
    if (l->ckq) rt_chan_release(l->ckq);
    if (l->ready) rt_chan_release(l->ready);
    if (l->lock_fd >= 0) close(l->lock_fd);   /* drops the flock */
    free(l->path);
    free(l->lock_path);
    free(l->admin_key_file);
    free(l);
}

static char *concat(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s", a, b);
    return s;
}

int ledger_open(const char *path, const ledger_options *opts, ledger **out,
                char *errmsg, size_t errlen) {
    if (errmsg && errlen) errmsg[0] = 0;
    if (!path || !*path || !out) {
        ledger_errf(errmsg, errlen, "ledger_open: path and out are required");
        return LEDGER_EINVAL;
    }
    *out = NULL;
    ledger_options o = opts ? *opts : (ledger_options){ 0 };
    if ((o.sync != LEDGER_SYNC_FULL && o.sync != LEDGER_SYNC_NORMAL) || o.max_batch < 0 || o.readers < 0 || o.readers > 64 || o.queue_cap < 0 ||
        o.idem_ttl_ms < 0 || o.idem_sweep_ms < 0 ||
        (o.admin_key && (!*o.admin_key || strlen(o.admin_key) > ADMIN_KEY_MAX))) {
        ledger_errf(errmsg, errlen, "ledger_open: invalid options");
        return LEDGER_EINVAL;
    }
    if (o.max_batch == 0) o.max_batch = 256;
    if (o.readers == 0) o.readers = 2;
    if (o.queue_cap == 0) o.queue_cap = 4096;
    if (o.idem_ttl_ms == 0) o.idem_ttl_ms = 24LL * 3600 * 1000;
    if (o.idem_sweep_ms == 0) o.idem_sweep_ms = 60 * 1000;
    if (sodium_init() < 0) {
        ledger_errf(errmsg, errlen, "libsodium failed to initialise");
        return LEDGER_EIO;
    }

    ledger *l = calloc(1, sizeof *l);
    if (!l) return LEDGER_ENOMEM;
    l->lock_fd = -1;
    l->opts = o;
    l->path = strdup(path);
    l->lock_path = concat(path, ".lock");
    l->admin_key_file = o.admin_key_file ? strdup(o.admin_key_file) : concat(path, ".admin-key");
    l->opts.admin_key_file = NULL;
    int rc = LEDGER_ENOMEM;
    if (!l->path || !l->lock_path || !l->admin_key_file ||
        htab_init(&l->accounts, 1024) || htab_init(&l->keys, 64) || htab_init(&l->claims, 256) ||
        idemset_init(&l->idem, 1024) ||
        rt_chan_make(&l->wq, sizeof(lreq *), (size_t)o.queue_cap) != RT_OK ||
        rt_chan_make(&l->rq, sizeof(rreq *), 1024) != RT_OK ||
        rt_chan_make(&l->ckq, 0, 1) != RT_OK ||
        rt_chan_make(&l->ready, sizeof(int), (size_t)o.readers + 2) != RT_OK)
        goto fail;

    /* The committer opens the store (schema, rebuild, verification) on its
     * own large stack, then serves. */
    rt_spawn_opts so = { .stack_size = LEDGER_SQL_STACK };
    rt_waitgroup_add(&l->workers, 1);
    if (rt_go_opts(committer_main, l, &so) != RT_OK) {
        rt_waitgroup_done(&l->workers);
        goto fail;
    }
    rt_chan_recv(l->ready, &rc);
    if (rc == LEDGER_OK) rc = store_start_readers(l);
    if (rc == LEDGER_OK && o.checkpointer) rc = store_start_checkpointer(l);
    if (rc != LEDGER_OK) goto fail;
    l->opts.admin_key = NULL;   /* the caller's string: only its hash is kept */
    *out = l;
    return LEDGER_OK;

fail:
    if (l->open_err[0]) ledger_errf(errmsg, errlen, "%s", l->open_err);
    else ledger_errf(errmsg, errlen, "%s", ledger_strerror(rc));
    destroy(l);
    return rc;
}

void ledger_close(ledger *l) {
    if (l) destroy(l);
}

const char *ledger_admin_key_file(ledger *l) {
    return l && l->admin_generated ? l->admin_key_file : NULL;
}

bool ledger_healthy(ledger *l) {
    return l && !atomic_load(&l->failed);
}

void ledger_get_stats(ledger *l, ledger_stats *out) {
    rt_mutex_lock(&l->mu);
    *out = l->stats;
    out->avg_group = l->stats.commits ? (double)l->grouped / (double)l->stats.commits : 0;
    out->commit_ns_avg = l->stats.commits ? (double)l->commit_ns_total / (double)l->stats.commits : 0;
    out->accounts = l->accounts.count;
    out->idem_keys = l->idem.count;
    rt_mutex_unlock(&l->mu);
    out->failed = atomic_load(&l->failed);
}

/* ------------------------------------------------------------ submission */

/*
 * Hand r to the committer and wait for its answer.  *handed tells whether
 * the committer took it (then it also released r's idempotency claim).
 */
static int submit_write(ledger *l, rt_context *ctx, lreq *r, bool *handed) {
    *handed = false;
    if (atomic_load(&l->failed)) return LEDGER_EFAILED;
    if (rt_chan_make(&r->done, 0, 1) != RT_OK) return LEDGER_ENOMEM;
    r->ctx = ctx;
    lreq *p = r;
    rt_rwmutex_rlock(&l->close_mu);
    int rc = l->closed ? LEDGER_ECLOSED : map_rt(rt_chan_send_ctx(ctx, l->wq, &p));
    rt_rwmutex_runlock(&l->close_mu);
    if (rc == LEDGER_OK) {
        *handed = true;
        /* Once queued, wait for the outcome whatever the context says: the
         * committer drops the request if the context ends before it is
         * applied, and otherwise its result is at most one commit away. */
        rt_chan_recv(r->done, NULL);
        rc = r->rc;
    }
    rt_chan_release(r->done);
    return rc;
}

static int submit_read(ledger *l, rt_context *ctx, rreq *q) {
    if (rt_chan_make(&q->done, 0, 1) != RT_OK) return LEDGER_ENOMEM;
    rreq *p = q;
    rt_rwmutex_rlock(&l->close_mu);
    int rc = l->closed ? LEDGER_ECLOSED : map_rt(rt_chan_send_ctx(ctx, l->rq, &p));
    rt_rwmutex_runlock(&l->close_mu);
    if (rc == LEDGER_OK) {
        rt_chan_recv(q->done, NULL);
        rc = q->rc;
    }
    rt_chan_release(q->done);
    return rc;
}

/* -------------------------------------------------------------- accounts */

int ledger_create_account(ledger *l, rt_context *ctx, const char *id,
                          const char *currency, int64_t initial_balance,
                          ledger_account *out) {
    if (!l || !ledger_valid_account_id(id) || !ledger_valid_currency(currency) ||
        initial_balance < 0 || initial_balance > LEDGER_AMOUNT_MAX)
        return LEDGER_EINVAL;
    lreq r;
    memset(&r, 0, sizeof r);
    r.kind = LREQ_CREATE_ACCOUNT;
    snprintf(r.account_id, sizeof r.account_id, "%s", id);
    memcpy(r.currency, currency, 4);
    r.amount = initial_balance;
    r.out_account = out;
    bool handed;
    return submit_write(l, ctx, &r, &handed);
}

int ledger_get_account(ledger *l, const char *id, const char *currency, ledger_account *out) {
    char key[LEDGER_ACCOUNT_ID_MAX + 1];
    if (!l || !out || !ledger_account_key(id, currency, key)) return LEDGER_ENOTFOUND;
    int rc = LEDGER_ENOTFOUND;
    rt_mutex_lock(&l->mu);
    hent *e = htab_get(&l->accounts, key, strlen(key));
    if (e) {
        lacct *a = container_of(e, lacct, node);
        if (a->committed) {
            memset(out, 0, sizeof *out);
            memcpy(out->id, a->id, sizeof out->id);
            memcpy(out->currency, a->currency, sizeof out->currency);
            out->balance = a->balance;
            memcpy(out->created_at, a->created_at, sizeof out->created_at);
            rc = LEDGER_OK;
        }
    }
    rt_mutex_unlock(&l->mu);
    return rc;
}

/* ------------------------------------------------------------- transfers */

static void request_hash(const lreq *r, uint8_t out[LEDGER_HASH_BYTES]) {
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, LEDGER_HASH_BYTES);
    uint8_t num[8];
    crypto_generichash_update(&st, (const uint8_t *)"ledger-transfer-v1", 19);
    crypto_generichash_update(&st, (const uint8_t *)r->from_key, strlen(r->from_key) + 1);
    crypto_generichash_update(&st, (const uint8_t *)r->to_key, strlen(r->to_key) + 1);
    for (int i = 0; i < 8; i++) num[i] = (uint8_t)((uint64_t)r->amount >> (8 * i));
    crypto_generichash_update(&st, num, 8);
    crypto_generichash_update(&st, (const uint8_t *)r->currency, 4);
    uint8_t has = r->has_memo;
    crypto_generichash_update(&st, &has, 1);
    for (int i = 0; i < 8; i++) num[i] = (uint8_t)((uint64_t)r->memo_len >> (8 * i));
    crypto_generichash_update(&st, num, 8);
    if (r->has_memo && r->memo_len) crypto_generichash_update(&st, (const uint8_t *)r->memo, r->memo_len);
    crypto_generichash_final(&st, out, LEDGER_HASH_BYTES);
}

static void release_claim(ledger *l, lreq *r) {
    rt_mutex_lock(&l->mu);
    htab_del(&l->claims, r->claim.key, r->claim.klen);
    rt_mutex_unlock(&l->mu);
}

/*
 * Claim r's key (EIDEM_IN_USE if another request holds it) and, in the same
 * critical section, take from the index the rowids that may be the key's
 * live record into q (see "The index" at the top).
 */
static int claim_key(ledger *l, lreq *r, rreq *q, bool *maybe_recorded) {
    *maybe_recorded = false;
    rt_mutex_lock(&l->mu);
    int rc = LEDGER_EIDEM_IN_USE;
    if (!htab_get(&l->claims, r->claim.key, r->claim.klen)) rc = htab_put(&l->claims, &r->claim.node);
    if (rc == LEDGER_OK) {
        /* The candidates are final once we hold the claim: only a request
         * holding it can add a record of this key. */
        size_t n = idemset_candidates(&l->idem, r->idem_fp, q->min_ms, q->cand, IDEM_CANDIDATES_MAX);
        q->scan = l->idem.lossy || n > IDEM_CANDIDATES_MAX;
        q->ncand = n > IDEM_CANDIDATES_MAX ? 0 : n;
        *maybe_recorded = q->scan || n > 0;
        if (*maybe_recorded) l->stats.idem_lookups++;
        else l->stats.idem_lookups_skipped++;
    }
    rt_mutex_unlock(&l->mu);
    return rc;
}

/*
 * Look r's key up in SQLite (r holds the claim).  true: the request is
 * answered from the record (or the lookup failed), *rc says how, and the
 * claim is released; false: no live record, the request goes on.
 */
static bool answer_from_record(ledger *l, rt_context *ctx, lreq *r, rreq *qp, ledger_transfer_rec *out,
                               bool *replayed, int *rc) {
    ledger_transfer_rec stored;
    rreq q = *qp;
    q.out = &stored;
    *rc = submit_read(l, ctx, &q);
    if (*rc == LEDGER_OK && !q.found) return false;
    release_claim(l, r);
    if (*rc != LEDGER_OK) return true;
    if (sodium_memcmp(q.hash, r->req_hash, LEDGER_HASH_BYTES) != 0) {
        *rc = LEDGER_EIDEM_REUSED;
        return true;
    }
    if (replayed) *replayed = true;
    if (q.result == LEDGER_OK && out) *out = stored;
    *rc = q.result;
    return true;
}

int ledger_transfer(ledger *l, rt_context *ctx, const ledger_transfer_req *req,
                    ledger_transfer_rec *out, bool *replayed) {
    if (replayed) *replayed = false;
    if (!l || !req) return LEDGER_EINVAL;
    lreq r;
    memset(&r, 0, sizeof r);
    r.kind = LREQ_TRANSFER;
    if (!ledger_valid_currency(req->currency) ||
        !ledger_account_key(req->from, req->currency, r.from_key) ||
        !ledger_account_key(req->to, req->currency, r.to_key) ||
        req->amount < 1 || req->amount > LEDGER_AMOUNT_MAX ||
        (req->memo && req->memo_len > LEDGER_MEMO_MAX))
        return LEDGER_EINVAL;
    if (req->idem_key && (!ledger_valid_printable(req->idem_key, 1, LEDGER_IDEM_KEY_MAX) ||
                          !ledger_valid_printable(req->idem_scope, 1, LEDGER_SCOPE_MAX)))
        return LEDGER_EINVAL;
    if (strcmp(r.from_key, r.to_key) == 0) return LEDGER_ESAME_ACCOUNT;
    memcpy(r.currency, req->currency, 4);
    r.amount = req->amount;
    r.has_memo = req->memo != NULL;
    r.memo = req->memo;
    r.memo_len = req->memo ? req->memo_len : 0;
    r.out_transfer = out;

    if (req->idem_key) {
        if (atomic_load(&l->failed)) return LEDGER_EFAILED;
        r.has_idem = true;
        r.scope = req->idem_scope;
        r.idem_key = req->idem_key;
        if (req->request_hash) memcpy(r.req_hash, req->request_hash, LEDGER_HASH_BYTES);
        else request_hash(&r, r.req_hash);
        /* Scope and key are printable ASCII, so 0x1f separates them. */
        int n = snprintf(r.claim.key, sizeof r.claim.key, "%s\x1f%s", r.scope, r.idem_key);
        r.claim.klen = (size_t)n;
        r.claim.node.key = r.claim.key;
        r.claim.node.klen = r.claim.klen;
        r.idem_fp = idemset_fingerprint(&l->idem, r.claim.key, r.claim.klen);
        rreq q;
        memset(&q, 0, sizeof q);
        q.kind = RREQ_IDEM_LOOKUP;
        q.scope = r.scope;
        q.idem_key = r.idem_key;
        q.min_ms = ledger_now_ms() - l->opts.idem_ttl_ms;
        bool maybe_recorded;
        int rc = claim_key(l, &r, &q, &maybe_recorded);
        if (rc != LEDGER_OK) return rc;
        /* Claimed: nobody else can record this key until we are done. */
        if (maybe_recorded && answer_from_record(l, ctx, &r, &q, out, replayed, &rc)) return rc;
    }
    bool handed;
    int rc = submit_write(l, ctx, &r, &handed);
    if (!handed && r.has_idem) release_claim(l, &r);
    return rc;
}

int ledger_get_transfer(ledger *l, rt_context *ctx, const char *id, ledger_transfer_rec *out) {
    if (!l || !out || !ledger_valid_ulid(id)) return LEDGER_ENOTFOUND;
    rreq q;
    memset(&q, 0, sizeof q);
    q.kind = RREQ_GET_TRANSFER;
    q.transfer_id = id;
    q.out = out;
    return submit_read(l, ctx, &q);
}

int ledger_list_transfers(ledger *l, rt_context *ctx, const char *account,
                          const char *currency, int limit, const char *before,
                          ledger_page *out) {
    if (!l || !out) return LEDGER_EINVAL;
    memset(out, 0, sizeof *out);
    if (limit < 1 || limit > LEDGER_PAGE_MAX) return LEDGER_EINVAL;
    int64_t bound = INT64_MAX;
    if (before && *before && !ledger_cursor_decode(before, &bound)) return LEDGER_EINVAL;
    char key[LEDGER_ACCOUNT_ID_MAX + 1];
    if (!ledger_account_key(account, currency, key)) return LEDGER_ENOTFOUND;
    rt_mutex_lock(&l->mu);
    hent *e = htab_get(&l->accounts, key, strlen(key));
    bool exists = e && container_of(e, lacct, node)->committed;
    rt_mutex_unlock(&l->mu);
    if (!exists) return LEDGER_ENOTFOUND;

    rreq q;
    memset(&q, 0, sizeof q);
    q.kind = RREQ_LIST;
    q.acct_key = key;
    q.before = bound;
    q.limit = limit + 1;   /* one more tells whether there is a next page */
    q.items = malloc((size_t)q.limit * sizeof *q.items);
    q.seqs = malloc((size_t)q.limit * sizeof *q.seqs);
    int rc = q.items && q.seqs ? submit_read(l, ctx, &q) : LEDGER_ENOMEM;
    if (rc != LEDGER_OK) {
        free(q.items);
        free(q.seqs);
        return rc;
    }
    out->items = q.items;
    out->count = q.count;
    if (q.count > (size_t)limit) {
        out->count = (size_t)limit;
        out->has_next = true;
        ledger_cursor_encode(q.seqs[limit - 1], out->next);
    }
    free(q.seqs);
    return LEDGER_OK;
}

void ledger_page_free(ledger_page *page) {
    if (!page) return;
    free(page->items);
    page->items = NULL;
    page->count = 0;
}

/* ------------------------------------------------------------- API keys */

int ledger_create_key(ledger *l, rt_context *ctx, const char *account, ledger_key *out) {
    if (!l || !ledger_valid_account_id(account)) return LEDGER_EINVAL;
    lreq r;
    memset(&r, 0, sizeof r);
    r.kind = LREQ_CREATE_KEY;
    snprintf(r.account_id, sizeof r.account_id, "%s", account);
    r.out_key = out;
    bool handed;
    int rc = submit_write(l, ctx, &r, &handed);
    sodium_memzero(r.secret, sizeof r.secret);
    return rc;
}
