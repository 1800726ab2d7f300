/*
 * commit.c — the committer goroutine: group commit.
 *
 * Every write request (transfer, account, API key) goes through one
 * goroutine that owns the SQLite write connection.  Callers send a pointer
 * to their request (on their own stack) on the queue l->wq and wait on the
 * request's own `done` channel.  The committer loops:
 *
 *   1. Receive one request (parked until there is one), then take every
 *      other request already queued, up to max_batch, without waiting.
 *      Requests that arrive while a commit is in flight queue up meanwhile
 *      and form the next group; the size of a group adapts to the load and
 *      the fsync latency by itself, and an idle ledger commits a lone
 *      request immediately (no timer, no added latency).
 *
 *   2. Assemble (mu held, memory only).  For each request in order: drop it
 *      if its context is already done (it was never applied: ECANCELED /
 *      ETIMEDOUT); otherwise check it against the balances *including the
 *      changes reserved by the requests before it in this group* — each
 *      account's `pending` — and if it passes, reserve its changes
 *      (pending -= / +=), give it a sequence number and a ULID.  Funds
 *      checks are exact: the group behaves as if its requests ran one after
 *      another, in queue order.  A credit reserved earlier in the group may
 *      fund a later debit, because the group commits or fails as a whole.
 *      Readers keep seeing `balance`, the committed value: pending changes
 *      are invisible.
 *
 *   3. Write (mu released, inside rt_blocking): BEGIN IMMEDIATE; insert the
 *      group's new accounts, transfers, idempotency records and keys; set
 *      each touched account's balance to balance + pending (one UPDATE per
 *      account, not per transfer); COMMIT, which with synchronous=FULL
 *      fsyncs the WAL.  The mutex is not held here, so reads go on while
 *      the disk works; and nothing else can change `pending` or assign
 *      sequence numbers, because only the committer does that.
 *
 *   4. Publish or roll back (mu held).  Success: balance += pending for
 *      every touched account, new accounts and keys become visible.
 *      Failure: pending is dropped, accounts and keys created by the group
 *      are removed, sequence numbers are reused; every request of the group
 *      fails (no transfer is ever half applied, and no money is lost).
 *      Either way the group's idempotency claims are released here, in the
 *      same critical section, so a retry of the same key sees either the
 *      durable record or a free key, never a gap.  On success the same
 *      critical section adds an entry (fingerprint -> rowid) for every
 *      idempotency record the group appended to the index (l->idem): a
 *      request that claims the key after this release finds the entry and
 *      fetches that row; one that skips the lookup (no entry) is provably
 *      first.  A rolled-back group wrote no record and adds nothing.
 *
 *   5. Answer every request (send on its done channel).  A request is
 *      therefore acknowledged only once its group is durable, and its
 *      effects are visible to readers before its caller learns of them
 *      (read-your-writes for the caller).
 *
 * Failure modes
 *   A statement failing before COMMIT (disk full, I/O error, ...): ROLLBACK,
 *   the group fails with LEDGER_EIO, the store carries on.  COMMIT itself
 *   failing is different: with fsync errors the WAL frames may or may not
 *   reach the disk (the kernel may drop dirty pages after a failed fsync),
 *   so whether the group is on disk is unknown.  The group is rolled back in
 *   memory, its requests fail with LEDGER_EFAILED, and the store refuses all
 *   further writes (`failed`, /readyz 503): only a reopen, which rebuilds
 *   memory from what the disk actually holds, can be trusted.  Clients
 *   retry with their idempotency keys after the restart: replayed if the
 *   group did land, executed once if it did not.
 *
 * The sweep of expired idempotency records also runs here, between groups,
 * on a ticker (a chunk of rows per transaction, so writes never wait long);
 * it also drops the expired entries from the index (store_sweep).
 */
#include "ledger_internal.h"

#include <stdlib.h>
#include <string.h>

static lacct *find(ledger *l, const char *key) {
    hent *e = htab_get(&l->accounts, key, strlen(key));
    return e ? container_of(e, lacct, node) : NULL;
}

static void touch(ledger *l, lacct *a) {
    if (a->touched) return;
    a->touched = true;
    a->touched_next = l->touched;
    l->touched = a;
}

/* Reserve amount from -> to, as the next transfer of the group. */
static void reserve_transfer(ledger *l, lreq *r, lacct *from, lacct *to) {
    touch(l, from);
    touch(l, to);
    from->pending -= r->amount;
    to->pending += r->amount;
    r->from_acct = from;
    r->to_acct = to;
    r->seq = l->next_seq++;
    ledger_new_ulid(l, r->now_ms, r->transfer_id);
    r->writes_transfer = true;
}

/*
 * Can amount move from -> to on top of what the group reserved so far?
 * balance + pending stays within +-LEDGER_BALANCE_MAX for every account at
 * every step, so these sums cannot overflow.
 */
static int check_funds(const lacct *from, const lacct *to, int64_t amount) {
    int64_t fa = from->balance + from->pending;
    if (!from->world && fa < amount) return LEDGER_EFUNDS;
    if (from->world && fa - amount < -LEDGER_BALANCE_MAX) return LEDGER_ELIMIT;
    int64_t ta = to->balance + to->pending;
    if (ta > LEDGER_BALANCE_MAX - amount) return LEDGER_ELIMIT;
    return LEDGER_OK;
}

static void plan_transfer(ledger *l, lreq *r) {
    lacct *from = find(l, r->from_key), *to = find(l, r->to_key);
    if (!from || !to) r->rc = LEDGER_ENOTFOUND;
    else if (strcmp(from->currency, r->currency) != 0 || strcmp(to->currency, r->currency) != 0)
        r->rc = LEDGER_ECURRENCY;
    else r->rc = check_funds(from, to, r->amount);
    if (r->rc == LEDGER_OK) reserve_transfer(l, r, from, to);
    /* The ledger's own decisions are recorded under the idempotency key
     * (with the transfer when it succeeds); see ledger.h. */
    r->writes_idem = r->has_idem;
}

static void plan_account(ledger *l, lreq *r) {
    if (find(l, r->account_id)) {
        r->rc = LEDGER_EEXISTS;
        return;
    }
    char wkey[LEDGER_ACCOUNT_ID_MAX + 1];
    ledger_account_key(LEDGER_WORLD, r->currency, wkey);
    lacct *world = find(l, wkey);
    if (world && r->amount > 0 && world->balance + world->pending - r->amount < -LEDGER_BALANCE_MAX) {
        r->rc = LEDGER_ELIMIT;
        return;
    }
    if (!world) {
        /* The first account of a currency brings its @world (balance 0, so
         * any funding up to LEDGER_AMOUNT_MAX fits). */
        world = acct_new(wkey, LEDGER_WORLD, r->currency, true);
        if (!world || htab_put(&l->accounts, &world->node) != LEDGER_OK) {
            free(world);
            r->rc = LEDGER_ENOMEM;
            return;
        }
        memcpy(world->created_at, r->created_at, sizeof world->created_at);
        r->new_world = world;
    }
    lacct *a = acct_new(r->account_id, r->account_id, r->currency, false);
    if (!a || htab_put(&l->accounts, &a->node) != LEDGER_OK) {
        free(a);
        if (r->new_world) {
            htab_del(&l->accounts, r->new_world->key, r->new_world->node.klen);
            free(r->new_world);
            r->new_world = NULL;
        }
        r->rc = LEDGER_ENOMEM;
        return;
    }
    memcpy(a->created_at, r->created_at, sizeof a->created_at);
    r->new_acct = a;
    touch(l, a);   /* its row is inserted with 0 and set with the others */
    if (r->amount > 0) {
        snprintf(r->from_key, sizeof r->from_key, "%s", wkey);
        snprintf(r->to_key, sizeof r->to_key, "%s", a->key);
        reserve_transfer(l, r, world, a);
    }
}

static void plan_key(ledger *l, lreq *r) {
    lacct *a = find(l, r->account_id);
    if (!a || a->world) {
        r->rc = LEDGER_ENOTFOUND;
        return;
    }
    lkey *k = calloc(1, sizeof *k);
    if (!k) {
        r->rc = LEDGER_ENOMEM;
        return;
    }
    snprintf(k->account, sizeof k->account, "%s", a->id);
    do auth_make_key(k, r->secret);   /* 96-bit ids: a clash is only theoretical */
    while (htab_get(&l->keys, k->id, LEDGER_KEY_ID_LEN));
    if (htab_put(&l->keys, &k->node) != LEDGER_OK) {
        sodium_memzero(r->secret, sizeof r->secret);
        free(k);
        r->rc = LEDGER_ENOMEM;
        return;
    }
    r->new_key = k;
}

/* ------------------------------------------------------------------ write */

static int run(sqlite3_stmt *st) {
    int s = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return s == SQLITE_DONE || s == SQLITE_ROW ? SQLITE_OK : s;
}

static int write_request(ledger *l, lreq *r) {
    sqlite3_stmt *st;
    int s = SQLITE_OK;
    lacct *news[2] = { r->new_world, r->new_acct };
    for (int i = 0; i < 2 && s == SQLITE_OK; i++) {
        if (!news[i]) continue;
        st = l->wst[WST_INS_ACCOUNT];
        sqlite3_bind_text(st, 1, news[i]->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, news[i]->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, news[i]->currency, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, news[i]->created_at, -1, SQLITE_STATIC);
        s = run(st);
    }
    if (s == SQLITE_OK && r->writes_transfer) {
        st = l->wst[WST_INS_TRANSFER];
        sqlite3_bind_int64(st, 1, r->seq);
        sqlite3_bind_text(st, 2, r->transfer_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, r->from_key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, r->to_key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, r->amount);
        sqlite3_bind_text(st, 6, r->currency, -1, SQLITE_STATIC);
        if (r->has_memo) sqlite3_bind_text(st, 7, r->memo ? r->memo : "", (int)r->memo_len, SQLITE_STATIC);
        else sqlite3_bind_null(st, 7);
        sqlite3_bind_text(st, 8, r->created_at, -1, SQLITE_STATIC);
        s = run(st);
    }
    if (s == SQLITE_OK && r->writes_idem) {
        st = l->wst[WST_INS_IDEM];
        sqlite3_bind_text(st, 1, r->scope, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r->idem_key, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, r->req_hash, LEDGER_HASH_BYTES, SQLITE_STATIC);
        sqlite3_bind_int(st, 4, r->rc);
        if (r->rc == LEDGER_OK) sqlite3_bind_text(st, 5, r->transfer_id, -1, SQLITE_STATIC);
        else sqlite3_bind_null(st, 5);
        sqlite3_bind_int64(st, 6, r->now_ms);
        s = run(st);
        /* Appended: the index entry added at publish points at this row. */
        if (s == SQLITE_OK) r->idem_rowid = sqlite3_last_insert_rowid(l->wdb);
    }
    if (s == SQLITE_OK && r->new_key) {
        st = l->wst[WST_INS_KEY];
        sqlite3_bind_text(st, 1, r->new_key->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r->new_key->account, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, r->new_key->salt, LEDGER_SALT_BYTES, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, r->new_key->hash, LEDGER_HASH_BYTES, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, r->created_at, -1, SQLITE_STATIC);
        s = run(st);
    }
    return s;
}

typedef struct write_result {
    int rc;                /* LEDGER_OK, LEDGER_EIO/ENOMEM (rolled back), LEDGER_EFAILED */
    int64_t commit_ns;
} write_result;

/* Step 3: the group's one SQLite transaction.  Runs as a blocking call. */
static write_result write_batch(ledger *l, lreq **batch, int n) {
    write_result res = { LEDGER_OK, 0 };
    rt_blocking_enter();
    int s = run(l->wst[WST_BEGIN]);
    for (int i = 0; i < n && s == SQLITE_OK; i++)
        if (batch[i]->rc == LEDGER_OK || batch[i]->writes_idem) s = write_request(l, batch[i]);
    for (lacct *a = l->touched; a && s == SQLITE_OK; a = a->touched_next) {
        sqlite3_stmt *st = l->wst[WST_UPD_BALANCE];
        sqlite3_bind_text(st, 1, a->key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, a->balance + a->pending);
        s = run(st);
    }
    if (s == SQLITE_OK) {
        int64_t t0 = rt_nanotime();
        s = run(l->wst[WST_COMMIT]);
        res.commit_ns = rt_nanotime() - t0;
        if (s != SQLITE_OK) res.rc = LEDGER_EFAILED;
    } else {
        res.rc = ledger_sqlite_rc(s) == LEDGER_ENOMEM ? LEDGER_ENOMEM : LEDGER_EIO;
    }
    if (s != SQLITE_OK && !sqlite3_get_autocommit(l->wdb)) {
        /* Still inside the transaction (a failed statement, or a COMMIT
         * that returned BUSY): roll it back.  If even that fails, memory
         * and disk can no longer be reconciled here: fail the store. */
        if (run(l->wst[WST_ROLLBACK]) != SQLITE_OK && !sqlite3_get_autocommit(l->wdb))
            res.rc = LEDGER_EFAILED;
    }
    rt_blocking_exit();
    return res;
}

/* ---------------------------------------------------------- publish / undo */

static void fill_transfer(const lreq *r, ledger_transfer_rec *t) {
    memset(t, 0, sizeof *t);
    memcpy(t->id, r->transfer_id, sizeof t->id);
    ledger_key_to_id(r->from_key, t->from);
    ledger_key_to_id(r->to_key, t->to);
    t->amount = r->amount;
    memcpy(t->currency, r->currency, sizeof t->currency);
    t->has_memo = r->has_memo;
    t->memo_len = r->has_memo ? r->memo_len : 0;
    if (t->memo_len) memcpy(t->memo, r->memo, t->memo_len);
    memcpy(t->created_at, r->created_at, sizeof t->created_at);
}

static void fill_account(const lacct *a, ledger_account *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->id, sizeof out->id, "%s", a->id);
    memcpy(out->currency, a->currency, sizeof out->currency);
    out->balance = a->balance;
    memcpy(out->created_at, a->created_at, sizeof out->created_at);
}

/* Step 4, success.  mu held. */
static void publish(ledger *l, lreq **batch, int n) {
    for (lacct *a = l->touched; a; a = a->touched_next) {
        a->balance += a->pending;
        a->pending = 0;
        a->touched = false;
        a->committed = true;   /* new accounts are on the list too */
    }
    l->touched = NULL;
    for (int i = 0; i < n; i++) {
        lreq *r = batch[i];
        if (r->rc != LEDGER_OK) continue;
        if (r->new_world) r->new_world->committed = true;
        switch (r->kind) {
        case LREQ_TRANSFER:
            if (r->out_transfer) fill_transfer(r, r->out_transfer);
            l->stats.transfers++;
            break;
        case LREQ_CREATE_ACCOUNT:
            if (r->out_account) fill_account(r->new_acct, r->out_account);
            if (r->writes_transfer) l->stats.transfers++;
            break;
        case LREQ_CREATE_KEY:
            r->new_key->committed = true;
            if (r->out_key) {
                ledger_key *k = r->out_key;
                memset(k, 0, sizeof *k);
                memcpy(k->id, r->new_key->id, sizeof k->id);
                memcpy(k->account, r->new_key->account, sizeof k->account);
                memcpy(k->secret, r->secret, sizeof k->secret);
                memcpy(k->created_at, r->created_at, sizeof k->created_at);
            }
            sodium_memzero(r->secret, sizeof r->secret);
            break;
        }
    }
}

/*
 * Step 4, success: (fingerprint, rowid, created_ms) of the group's new
 * idempotency records into the index.  mu held, in the critical section
 * that then releases the claims (see the top).  A failed growth leaves the
 * index lossy (every key scanned for from then on), never missing a record.
 */
static void remember_keys(ledger *l, lreq **batch, int n) {
    for (int i = 0; i < n; i++)
        if (batch[i]->writes_idem)
            (void)idemset_add(&l->idem, batch[i]->idem_fp, batch[i]->idem_rowid, batch[i]->now_ms);
}

/* Step 4, failure: undo everything the group reserved.  mu held. */
static void roll_back(ledger *l, lreq **batch, int n, int64_t seq0, int rc) {
    for (lacct *a = l->touched; a; a = a->touched_next) {
        a->pending = 0;
        a->touched = false;
    }
    l->touched = NULL;
    l->next_seq = seq0;
    for (int i = 0; i < n; i++) {
        lreq *r = batch[i];
        if (r->rc == LEDGER_ECANCELED || r->rc == LEDGER_ETIMEDOUT) continue;  /* never applied */
        if (r->new_acct) {
            htab_del(&l->accounts, r->new_acct->key, r->new_acct->node.klen);
            free(r->new_acct);
            r->new_acct = NULL;
        }
        if (r->new_world) {
            htab_del(&l->accounts, r->new_world->key, r->new_world->node.klen);
            free(r->new_world);
            r->new_world = NULL;
        }
        if (r->new_key) {
            htab_del(&l->keys, r->new_key->id, LEDGER_KEY_ID_LEN);
            free(r->new_key);
            r->new_key = NULL;
            sodium_memzero(r->secret, sizeof r->secret);
        }
        /* Every request of a failed group fails, whatever it would have
         * been: its decision was taken against reservations that are gone. */
        r->rc = rc;
    }
}

static int ctx_error(rt_context *ctx) {
    int e = ctx ? rt_context_err(ctx) : 0;
    if (e == 0) return LEDGER_OK;
    return e == RT_ETIMEDOUT ? LEDGER_ETIMEDOUT : LEDGER_ECANCELED;
}

static void process_batch(ledger *l, lreq **batch, int n) {
    int64_t now = ledger_now_ms();
    char now_str[LEDGER_TIME_LEN + 1];
    ledger_format_time(now, now_str);
    bool failed = atomic_load(&l->failed);
    int64_t seq0 = l->next_seq;
    int writers = 0;

    /* Step 2: assemble and reserve, in queue order. */
    rt_mutex_lock(&l->mu);
    for (int i = 0; i < n; i++) {
        lreq *r = batch[i];
        r->now_ms = now;
        memcpy(r->created_at, now_str, sizeof r->created_at);
        r->rc = failed ? LEDGER_EFAILED : ctx_error(r->ctx);
        if (r->rc != LEDGER_OK) continue;
        switch (r->kind) {
        case LREQ_TRANSFER: plan_transfer(l, r); break;
        case LREQ_CREATE_ACCOUNT: plan_account(l, r); break;
        case LREQ_CREATE_KEY: plan_key(l, r); break;
        }
        if (r->rc == LEDGER_OK || r->writes_idem) writers++;
    }
    rt_mutex_unlock(&l->mu);

    /* Step 3: one transaction for the group, without the mutex. */
    write_result wr = { LEDGER_OK, 0 };
    if (writers > 0) wr = write_batch(l, batch, n);

    /* Step 4: publish or roll back; release the idempotency claims. */
    rt_mutex_lock(&l->mu);
    if (wr.rc == LEDGER_OK) {
        publish(l, batch, n);
        remember_keys(l, batch, n);
        if (writers > 0) {
            l->stats.commits++;
            l->grouped += (uint64_t)n;
            if ((uint64_t)n > l->stats.max_group) l->stats.max_group = (uint64_t)n;
            l->stats.commit_ns_last = wr.commit_ns;
            l->commit_ns_total += wr.commit_ns;
            if (wr.commit_ns > l->stats.commit_ns_max) l->stats.commit_ns_max = wr.commit_ns;
        }
    } else {
        roll_back(l, batch, n, seq0, wr.rc);
        l->stats.commit_failures++;
        if (wr.rc == LEDGER_EFAILED) atomic_store(&l->failed, true);
    }
    for (int i = 0; i < n; i++)
        if (batch[i]->has_idem) htab_del(&l->claims, batch[i]->claim.key, batch[i]->claim.klen);
    l->stats.requests += (uint64_t)n;
    rt_mutex_unlock(&l->mu);

    /* Step 5: answer.  After this send the request belongs to its caller. */
    for (int i = 0; i < n; i++) rt_chan_send(batch[i]->done, NULL);
}

void committer_main(void *arg) {
    ledger *l = arg;
    rt_blocking_enter();
    int rc = store_open_writer(l);
    if (rc != LEDGER_OK) store_close_writer(l);
    rt_blocking_exit();
    lreq **batch = NULL;
    rt_timer *tick = NULL;
    if (rc == LEDGER_OK) {
        batch = malloc((size_t)l->opts.max_batch * sizeof *batch);
        if (!batch || rt_ticker_new(&tick, l->opts.idem_sweep_ms * RT_MILLISECOND) != RT_OK) {
            ledger_errf(l->open_err, sizeof l->open_err, "committer: out of memory");
            rc = LEDGER_ENOMEM;
            rt_blocking_enter();
            store_close_writer(l);
            rt_blocking_exit();
        }
    }
    rt_chan_send(l->ready, &rc);
    if (rc != LEDGER_OK) {
        free(batch);
        rt_waitgroup_done(&l->workers);
        return;
    }

    l->sweep_more = true;   /* records that expired while the store was closed */
    for (;;) {
        lreq *r = NULL;
        bool ok = true;
        if (l->sweep_more) {
            /* A backlog of expired records: sweep a chunk whenever no
             * write is waiting. */
            if (!rt_chan_try_recv(l->wq, &r, &ok)) {
                store_sweep(l);
                continue;
            }
        } else {
            int64_t when;
            rt_select_case cs[2] = { RT_RECV_CASE(l->wq, &r), RT_RECV_CASE(rt_timer_chan(tick), &when) };
            if (rt_select(cs, 2, false) == 1) {
                store_sweep(l);
                continue;
            }
            ok = cs[0].recv_ok;
        }
        if (!ok) break;   /* closed and drained: ledger_close */
        int n = 1;
        batch[0] = r;
        while (n < l->opts.max_batch && rt_chan_try_recv(l->wq, &batch[n], &ok) && ok) n++;
        process_batch(l, batch, n);
        store_after_commit(l);
        /* Answers may have readied the callers on this processor; let them
         * run (and queue their next requests) before the next group. */
        rt_yield();
    }
    rt_timer_free(tick);
    free(batch);
    rt_blocking_enter();
    store_close_writer(l);
    rt_blocking_exit();
    /* No more frames: the checkpointer truncates the WAL and exits. */
    rt_chan_close(l->ckq);
    rt_waitgroup_done(&l->workers);
}
