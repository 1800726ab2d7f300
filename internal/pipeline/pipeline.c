/*
 * pipeline.c — POST /v1/transfers as three stages of goroutine pools
 * (include/pipeline.h has the picture).
 *
 * The job
 *   A request travels as a pointer to a `job` that lives on the submitting
 *   goroutine's stack: pipeline_submit does not return before the job's
 *   reply arrived, so the stack frame outlives every stage's use of it.
 *   Every path through the stages ends in exactly one finish(), which
 *   writes the result into the submitter's pipeline_result and then sends
 *   one signal on the job's reply channel; after that send no stage touches
 *   the job again (the submitter may already be gone).  A stage never drops
 *   a job: a hand-off that cannot happen before the deadline, a closed
 *   pipeline, an expired context — each still ends in finish().
 *
 * Reply channels
 *   One buffered (cap 1) signal channel per job, reused: a small free list
 *   under a mutex keeps them, so a request costs no channel allocation in
 *   the steady state.  A channel goes back to the list only after its one
 *   signal was received, so it is always empty when reused.
 *
 * Admission and shedding
 *   submit try_sends into the auth queue: full means 503 `overloaded` at
 *   once (the handler adds Retry-After).  The later queues are bounded too;
 *   a stage that finds the next one full waits with rt_chan_send_ctx,
 *   bounded by the request's deadline (then 504).  submit holds a read lock
 *   while it enqueues and pipeline_stop takes the write lock to mark the
 *   pipeline closed and close the first queue, so no submit can send on a
 *   closed channel (a fatal error in the runtime); later submits get 503
 *   `draining`.
 *
 * Deadlines
 *   Every job carries its own rt_context with the deadline.  Each stage
 *   looks at it when it takes the job: done means 504 `deadline_exceeded`
 *   without passing the job on.  The transfer stage hands the context to
 *   ledger_transfer, which drops a request whose context ends before it is
 *   applied; once taken into a commit group the ledger waits for it.  No
 *   path that answers 504 moved money.
 *
 * Why the balance check stage is skipped for Idempotency-Key requests
 *   A keyed request may be a retry whose first attempt already moved the
 *   money: its answer must be the recorded one (the original 201 with
 *   Idempotent-Replayed, or 409 reused/in use), which only the ledger
 *   knows.  A fresh check on today's balances would answer 422 or 404 for a
 *   retry that should replay.  The ledger re-checks everything anyway.
 *
 * Stopping
 *   pipeline_stop closes the auth queue, waits for the auth workers to
 *   drain it, then closes the check queue and waits, then the transfer
 *   queue: every queued job is still answered.
 */
#include "pipeline.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define DEFAULT_AUTH_WORKERS 4
#define DEFAULT_CHECK_WORKERS 4
#define DEFAULT_TRANSFER_WORKERS 64
#define DEFAULT_QUEUE_CAP 1024
#define DEFAULT_DEADLINE_NS (5 * RT_SECOND)
#define REPLY_POOL_MAX 4096

typedef struct job {
    const pipeline_request *req;
    pipeline_result *res;
    rt_context *ctx;
    rt_chan *reply;
    ledger_principal who;
    wire_transfer t;
} job;

typedef struct stage {
    rt_chan *queue;               /* of job * */
    rt_waitgroup wg;
    int workers;
} stage;

struct pipeline {
    ledger *l;
    int queue_cap;
    int64_t deadline_ns;
    stage auth, check, transfer;

    rt_rwmutex admit;             /* read: submit enqueues; write: stop closes */
    bool closed;                  /* under admit */

    rt_mutex pool_mu;             /* the reply channel free list */
    rt_chan **pool;
    int pool_len;

    _Atomic uint64_t submitted, shed, expired;
};

/* ------------------------------------------------------------ replies */

static rt_chan *reply_get(pipeline *p) {
    rt_chan *c = NULL;
    rt_mutex_lock(&p->pool_mu);
    if (p->pool_len > 0) c = p->pool[--p->pool_len];
    rt_mutex_unlock(&p->pool_mu);
    if (c == NULL && rt_chan_make(&c, 0, 1) != RT_OK) return NULL;
    return c;
}

static void reply_put(pipeline *p, rt_chan *c) {
    rt_mutex_lock(&p->pool_mu);
    if (p->pool_len < REPLY_POOL_MAX) {
        p->pool[p->pool_len++] = c;
        c = NULL;
    }
    rt_mutex_unlock(&p->pool_mu);
    if (c) rt_chan_release(c);
}

/* ------------------------------------------------------------ results */

static void set_errorv(pipeline_result *r, int status, const char *code, const char *fmt,
                       va_list ap) {
    r->status = status;
    r->code = code;
    vsnprintf(r->message, sizeof r->message, fmt, ap);
}

static void set_error(pipeline_result *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_error(pipeline_result *r, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_errorv(r, status, code, fmt, ap);
    va_end(ap);
}

/* The job's last act: after the signal the job belongs to its submitter. */
static void finish(job *j) { rt_chan_send(j->reply, NULL); }

/* set_error on the job's result, then finish. */
static void fail(job *j, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(job *j, int status, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_errorv(j->res, status, code, fmt, ap);
    va_end(ap);
    finish(j);
}

static void fail_expired(pipeline *p, job *j, const char *where) {
    atomic_fetch_add_explicit(&p->expired, 1, memory_order_relaxed);
    fail(j, 504, "deadline_exceeded", "the request's deadline passed %s; no money moved", where);
}

/* A ledger error as the API's status and code (wire's one table), with a
 * message about this transfer. */
static void map_ledger_error(pipeline_result *r, int rc, const wire_transfer *t) {
    wire_ledger_status(rc, &r->status, &r->code);
    switch (rc) {
    case LEDGER_ENOTFOUND:
        snprintf(r->message, sizeof r->message, "account %s or %s not found", t->from, t->to);
        break;
    case LEDGER_ECURRENCY:
        snprintf(r->message, sizeof r->message, "transfer currency %s does not match both accounts",
                 t->currency);
        break;
    case LEDGER_EFUNDS:
        snprintf(r->message, sizeof r->message, "account %s has insufficient funds", t->from);
        break;
    case LEDGER_ELIMIT:
        snprintf(r->message, sizeof r->message, "a balance would leave +-%lld minor units",
                 (long long)LEDGER_BALANCE_MAX);
        break;
    case LEDGER_EIDEM_REUSED:
        snprintf(r->message, sizeof r->message, "this Idempotency-Key was used with a different request");
        break;
    case LEDGER_EIDEM_IN_USE:
        snprintf(r->message, sizeof r->message, "a request with this Idempotency-Key is still in flight");
        break;
    case LEDGER_ETIMEDOUT:
    case LEDGER_ECANCELED:
        snprintf(r->message, sizeof r->message,
                 "the request's deadline passed before the ledger applied it; no money moved");
        break;
    case LEDGER_EINVAL:
        snprintf(r->message, sizeof r->message, "from/to/amount/currency/memo: rejected by the ledger");
        break;
    default:
        snprintf(r->message, sizeof r->message, "%s", ledger_strerror(rc));
        break;
    }
}

/* ------------------------------------------------------------- stages */

/* Pass j on to the next stage, waiting for room at most until its deadline. */
static void hand_on(pipeline *p, job *j, stage *next, const char *where) {
    if (rt_chan_try_send(next->queue, &j)) return;
    if (rt_chan_send_ctx(j->ctx, next->queue, &j) != RT_OK) fail_expired(p, j, where);
}

static bool expired(pipeline *p, job *j, const char *where) {
    if (rt_context_err(j->ctx) == 0) return false;
    fail_expired(p, j, where);
    return true;
}

/* 401, 400, 403 — in that order (authentication comes first, so a client
 * without a key learns nothing about the body's or the accounts' fate). */
static void auth_one(pipeline *p, job *j) {
    const pipeline_request *rq = j->req;
    if (expired(p, j, "waiting for authentication")) return;
    if (rq->secret == NULL || rq->secret_len == 0 ||
        ledger_authenticate(p->l, rq->secret, rq->secret_len, &j->who) != LEDGER_OK) {
        fail(j, 401, "unauthorized", "missing or unknown API key (Authorization: Bearer <secret>)");
        return;
    }
    wire_error we;
    if (wire_parse_transfer(rq->body, rq->body_len, &j->t, &we) != 0) {
        fail(j, we.status, we.code, "%s", we.message);
        return;
    }
    if (rq->idem_key_dup) {
        fail(j, 400, "invalid_field", "Idempotency-Key: header given more than once");
        return;
    }
    if (rq->idem_key != NULL && wire_check_idem_key(rq->idem_key, rq->idem_key_len, &we) != 0) {
        fail(j, we.status, we.code, "%s", we.message);
        return;
    }
    if (j->who.kind != LEDGER_PRINCIPAL_ADMIN && strcmp(j->who.account, j->t.from) != 0) {
        fail(j, 403, "forbidden", "this key may not move money from account %s", j->t.from);
        return;
    }
    /* See the top: a keyed request's recorded outcome must win. */
    hand_on(p, j, rq->idem_key != NULL ? &p->transfer : &p->check, "waiting for the next stage");
}

/* The cheap refusals, on committed state, off the ledger's commit path. */
static void check_one(pipeline *p, job *j) {
    if (expired(p, j, "waiting for the balance check")) return;
    const wire_transfer *t = &j->t;
    if (strcmp(t->from, t->to) == 0) {
        fail(j, 422, "same_account", "from and to are the same account");
        return;
    }
    ledger_account from, to;
    if (ledger_get_account(p->l, t->from, NULL, &from) != LEDGER_OK) {
        fail(j, 404, "not_found", "account %s not found", t->from);
        return;
    }
    if (ledger_get_account(p->l, t->to, NULL, &to) != LEDGER_OK) {
        fail(j, 404, "not_found", "account %s not found", t->to);
        return;
    }
    if (strcmp(from.currency, t->currency) != 0 || strcmp(to.currency, t->currency) != 0) {
        fail(j, 422, "currency_mismatch", "transfer currency %s does not match the accounts (%s, %s)",
             t->currency, from.currency, to.currency);
        return;
    }
    if (from.balance < t->amount) {
        fail(j, 422, "insufficient_funds", "account %s has insufficient funds", t->from);
        return;
    }
    hand_on(p, j, &p->transfer, "waiting for the transfer stage");
}

static void transfer_one(pipeline *p, job *j) {
    if (expired(p, j, "waiting for the transfer stage")) return;
    const wire_transfer *t = &j->t;
    const pipeline_request *rq = j->req;
    ledger_transfer_req lr = {
        .from = t->from,
        .to = t->to,
        .amount = t->amount,
        .currency = t->currency,
        .memo = t->has_memo ? t->memo : NULL,
        .memo_len = t->memo_len,
        .idem_scope = rq->idem_key ? j->who.key_id : NULL,
        .idem_key = rq->idem_key,
        .request_hash = NULL,       /* derived from the fields: JSON layout does not matter */
    };
    /* ledger_transfer wants a NUL-terminated key; the header value is one
     * (httpd), but copy to be independent of the caller's buffer. */
    char key[LEDGER_IDEM_KEY_MAX + 1];
    if (rq->idem_key) {
        memcpy(key, rq->idem_key, rq->idem_key_len);
        key[rq->idem_key_len] = 0;
        lr.idem_key = key;
    }
    pipeline_result *r = j->res;
    bool replayed = false;
    int rc = ledger_transfer(p->l, j->ctx, &lr, &r->rec, &replayed);
    r->replayed = replayed;
    if (rc == LEDGER_OK) {
        r->status = 201;
        r->code = NULL;
        r->message[0] = 0;
    } else {
        if (rc == LEDGER_ETIMEDOUT || rc == LEDGER_ECANCELED)
            atomic_fetch_add_explicit(&p->expired, 1, memory_order_relaxed);
        map_ledger_error(r, rc, t);
    }
    finish(j);
}

typedef struct worker_arg {
    pipeline *p;
    stage *s;
    void (*one)(pipeline *, job *);
} worker_arg;

static void worker(void *arg) {
    worker_arg w = *(worker_arg *)arg;
    free(arg);
    job *j;
    while (rt_chan_recv(w.s->queue, &j)) w.one(w.p, j);
    rt_waitgroup_done(&w.s->wg);
}

static int stage_start(pipeline *p, stage *s, int workers, void (*one)(pipeline *, job *)) {
    int rc = rt_chan_make(&s->queue, sizeof(job *), (size_t)p->queue_cap);
    if (rc != RT_OK) return rc;
    s->workers = 0;
    for (int i = 0; i < workers; i++) {
        worker_arg *w = malloc(sizeof *w);
        if (w == NULL) return RT_ENOMEM;
        *w = (worker_arg){ p, s, one };
        rt_waitgroup_add(&s->wg, 1);
        rc = rt_go(worker, w);
        if (rc != RT_OK) {
            rt_waitgroup_done(&s->wg);
            free(w);
            return rc;
        }
        s->workers++;
    }
    return RT_OK;
}

/* Close the stage's queue and wait for its workers to drain it. */
static void stage_stop(stage *s) {
    if (s->queue == NULL) return;
    rt_chan_close(s->queue);
    rt_waitgroup_wait(&s->wg);
    rt_chan_release(s->queue);
    s->queue = NULL;
}

/* ----------------------------------------------------------------- API */

static int or_default(int v, int def) { return v > 0 ? v : def; }

int pipeline_start(ledger *l, const pipeline_options *opts, pipeline **out) {
    if (l == NULL || out == NULL) return RT_EINVAL;
    pipeline_options o = opts ? *opts : (pipeline_options){ 0 };
    if (o.auth_workers < 0 || o.check_workers < 0 || o.transfer_workers < 0 || o.queue_cap < 0 ||
        o.deadline_ns < 0)
        return RT_EINVAL;
    pipeline *p = calloc(1, sizeof *p);
    if (p == NULL) return RT_ENOMEM;
    p->pool = calloc(REPLY_POOL_MAX, sizeof *p->pool);
    if (p->pool == NULL) {
        free(p);
        return RT_ENOMEM;
    }
    p->l = l;
    p->queue_cap = or_default(o.queue_cap, DEFAULT_QUEUE_CAP);
    p->deadline_ns = o.deadline_ns > 0 ? o.deadline_ns : DEFAULT_DEADLINE_NS;
    int rc = stage_start(p, &p->transfer, or_default(o.transfer_workers, DEFAULT_TRANSFER_WORKERS),
                         transfer_one);
    if (rc == RT_OK)
        rc = stage_start(p, &p->check, or_default(o.check_workers, DEFAULT_CHECK_WORKERS), check_one);
    if (rc == RT_OK)
        rc = stage_start(p, &p->auth, or_default(o.auth_workers, DEFAULT_AUTH_WORKERS), auth_one);
    if (rc != RT_OK) {
        pipeline_stop(p);
        return rc;
    }
    *out = p;
    return RT_OK;
}

void pipeline_submit(pipeline *p, const pipeline_request *req, pipeline_result *out) {
    memset(out, 0, sizeof *out);
    atomic_fetch_add_explicit(&p->submitted, 1, memory_order_relaxed);
    job j = { .req = req, .res = out };
    j.reply = reply_get(p);
    if (j.reply == NULL ||
        rt_context_with_timeout(NULL, p->deadline_ns, &j.ctx) != RT_OK) {
        if (j.reply) reply_put(p, j.reply);
        set_error(out, 500, "internal", "out of memory");
        return;
    }
    job *jp = &j;
    rt_rwmutex_rlock(&p->admit);
    bool closed = p->closed;
    bool queued = !closed && rt_chan_try_send(p->auth.queue, &jp);
    rt_rwmutex_runlock(&p->admit);
    if (queued) {
        rt_chan_recv(j.reply, NULL);   /* exactly one signal per job, see finish() */
    } else if (closed) {
        set_error(out, 503, "draining", "the server is shutting down");
    } else {
        atomic_fetch_add_explicit(&p->shed, 1, memory_order_relaxed);
        set_error(out, 503, "overloaded", "the transfer queue is full; retry later");
    }
    rt_context_release(j.ctx);
    reply_put(p, j.reply);
}

void pipeline_get_stats(pipeline *p, pipeline_stats *out) {
    memset(out, 0, sizeof *out);
    if (p == NULL) return;
    out->auth_queue = p->auth.queue ? (int64_t)rt_chan_len(p->auth.queue) : 0;
    out->check_queue = p->check.queue ? (int64_t)rt_chan_len(p->check.queue) : 0;
    out->transfer_queue = p->transfer.queue ? (int64_t)rt_chan_len(p->transfer.queue) : 0;
    out->queue_cap = p->queue_cap;
    out->submitted = atomic_load_explicit(&p->submitted, memory_order_relaxed);
    out->shed = atomic_load_explicit(&p->shed, memory_order_relaxed);
    out->expired = atomic_load_explicit(&p->expired, memory_order_relaxed);
}

void pipeline_stop(pipeline *p) {
    if (p == NULL) return;
    rt_rwmutex_lock(&p->admit);
    p->closed = true;
    rt_rwmutex_unlock(&p->admit);
    /* In flow order, so a job handed on by a draining stage still finds its
     * next queue open. */
    stage_stop(&p->auth);
    stage_stop(&p->check);
    stage_stop(&p->transfer);
    for (int i = 0; i < p->pool_len; i++) rt_chan_release(p->pool[i]);
    free(p->pool);
    free(p);
}
