/*
 * pipeline.h — the transfer pipeline of ledgerd (the only public header of
 * internal/pipeline).
 *
 * POST /v1/transfers is not handled on the connection's goroutine alone: the
 * connection goroutine packs the request (bearer secret, body, idempotency
 * key, request id) into a pipeline_request and submits it; three stages of
 * goroutines, connected by bounded channels, carry it through:
 *
 *   submit ──try_send──> [auth queue] ──> auth stage (pool)
 *                         authenticate the bearer secret (401), parse and
 *                         validate the JSON body (400), validate the
 *                         Idempotency-Key (400), authorize: admin or owner
 *                         of `from` (403)
 *          ──send──> [check queue] ──> balance-check stage (pool)
 *                         accounts exist (404), same account (422),
 *                         currencies match (422), funds look sufficient (422)
 *                         — on committed balances, without the ledger's
 *                         commit path; skipped for requests that carry an
 *                         Idempotency-Key, whose recorded outcome (replay,
 *                         409) must win over a fresh check
 *          ──send──> [transfer queue] ──> transfer stage (pool)
 *                         ledger_transfer: re-checks and applies under the
 *                         ledger's mutex, group-commits, returns once durable
 *          ──> the request's own reply channel ──> the connection goroutine
 *
 * Load shedding: submission never waits for room in the first queue; when
 * it is full the request is refused at once with 503 `overloaded` (and the
 * handler adds Retry-After).  Later queues are bounded too; a stage that
 * cannot hand on waits, bounded by the request's deadline.
 *
 * Deadlines: every request carries an rt_context with a deadline (default
 * 5 s).  A stage that receives a request whose context is done answers 504
 * `deadline_exceeded` without passing it on; the ledger itself drops a
 * request whose context ends before it is applied.  Either way no money
 * moved.  Once a transfer is in a commit group it is waited for (one commit),
 * so a 201 is never lost to a deadline.
 *
 * Every function returns 0 or a negative rt_error code.
 */
#ifndef LEDGERD_PIPELINE_H
#define LEDGERD_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger.h"
#include "rt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pipeline_options {
    int auth_workers;        /* goroutines per stage; 0: 4 */
    int check_workers;       /* 0: 4 */
    int transfer_workers;    /* 0: 64 (they wait on group commits) */
    int queue_cap;           /* capacity of each stage's queue; 0: 1024 */
    int64_t deadline_ns;     /* per request; 0: 5 s */
} pipeline_options;

/* What the connection goroutine hands in.  Pointers must stay valid until
 * pipeline_submit returns (it waits for the reply). */
typedef struct pipeline_request {
    const char *secret;      /* bearer secret, NULL if no/garbled Authorization */
    size_t secret_len;
    const char *body;        /* the request body (JSON) */
    size_t body_len;
    const char *idem_key;    /* Idempotency-Key header value, NULL if absent */
    size_t idem_key_len;
    const char *request_id;
    bool idem_key_dup;       /* more than one Idempotency-Key header: 400 (after 401) */
} pipeline_request;

/* The outcome.  status 201: rec holds the transfer (replayed: true when the
 * Idempotency-Key replayed an earlier 201).  Any other status: code and
 * message as in API.md's error table (code a static string). */
typedef struct pipeline_result {
    int status;
    const char *code;        /* NULL on success */
    char message[256];
    bool replayed;
    ledger_transfer_rec rec;
} pipeline_result;

typedef struct pipeline pipeline;

typedef struct pipeline_stats {
    int64_t auth_queue, check_queue, transfer_queue;   /* depth now */
    int queue_cap;
    uint64_t submitted, shed, expired;                 /* 503s; 504s */
} pipeline_stats;

/* Start the stages' goroutines on ledger l.  From a goroutine. */
int pipeline_start(ledger *l, const pipeline_options *opts, pipeline **out);
/* Submit and wait for the outcome (parks the calling goroutine only). */
void pipeline_submit(pipeline *p, const pipeline_request *req, pipeline_result *out);
void pipeline_get_stats(pipeline *p, pipeline_stats *out);
/* Let queued requests finish, stop the goroutines, free.  Call after the
 * HTTP server stopped submitting.  NULL ok. */
void pipeline_stop(pipeline *p);

#ifdef __cplusplus
}
#endif
#endif /* LEDGERD_PIPELINE_H */
