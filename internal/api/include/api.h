/*
 * api.h — the HTTP API of ledgerd (../shared/API.md) on top of the ledger,
 * the transfer pipeline and the HTTP server (the only public header of
 * internal/api).
 *
 * api_handle is the httpd handler: it routes, authenticates, validates
 * (through internal/wire), calls the ledger for reads, accounts and keys, and
 * hands POST /v1/transfers to the pipeline.  api_on_done is the httpd
 * completion hook: one log line per request (method, path, status, duration,
 * request id) and the request metrics.  GET /metrics renders the Prometheus
 * text format from the api's own counters plus the httpd, pipeline, ledger
 * and runtime figures.
 */
#ifndef LEDGERD_API_H
#define LEDGERD_API_H

#include <stdbool.h>
#include <stdint.h>

#include "httpd.h"
#include "ledger.h"
#include "pipeline.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The routes, for metrics and logs. */
typedef enum api_route {
    API_ROUTE_HEALTHZ = 0,
    API_ROUTE_READYZ,
    API_ROUTE_METRICS,
    API_ROUTE_CREATE_ACCOUNT,      /* POST /v1/accounts */
    API_ROUTE_GET_ACCOUNT,         /* GET  /v1/accounts/{id} */
    API_ROUTE_LIST_TRANSFERS,      /* GET  /v1/accounts/{id}/transfers */
    API_ROUTE_CREATE_KEY,          /* POST /v1/keys */
    API_ROUTE_CREATE_TRANSFER,     /* POST /v1/transfers */
    API_ROUTE_GET_TRANSFER,        /* GET  /v1/transfers/{id} */
    API_ROUTE_OTHER,               /* 404 / 405 / malformed */
    API_ROUTE_COUNT
} api_route;

/* The metrics label of a route ("/v1/accounts/{id}", ...). */
const char *api_route_name(api_route r);
/* Which route a method + path is (API_ROUTE_OTHER if none). */
api_route api_route_of(const char *method, const char *path, size_t path_len);

typedef struct api_server api_server;

typedef struct api_options {
    ledger *ledger;          /* required */
    pipeline *pipeline;      /* required */
    bool log_requests;       /* one log line per request (default on in the daemon) */
    int64_t timeout_ns;      /* deadline of the ledger calls of one request
                                (accounts, keys, reads); 0: 5 s.  Transfers
                                use the pipeline's deadline_ns. */
} api_options;

int api_new(const api_options *opts, api_server **out);
/* The HTTP server, once listening: for draining state and /metrics. */
void api_set_http(api_server *a, httpd_server *http);
/* From now on /readyz is 503 `draining` and /v1 calls are 503 `draining`. */
void api_set_draining(api_server *a);
void api_free(api_server *a);

/* httpd_options.handler / .on_done with ud = the api_server. */
void api_handle(void *ud, const httpd_request *req, httpd_response *resp);
void api_on_done(void *ud, const httpd_request *req, int status, int64_t duration_ns);

#ifdef __cplusplus
}
#endif
#endif /* LEDGERD_API_H */
