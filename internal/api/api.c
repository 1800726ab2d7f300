/*
 * api.c — routes, handlers, metrics and request logs of ledgerd's HTTP API
 * (/work/shared/API.md; include/api.h).
 *
 * Routing
 *   A path is resolved to a resource first (healthz, /v1/accounts/{id}, ...)
 *   and the method checked second, so a known path with the wrong method is
 *   405 with an Allow header and an unknown path is 404, whatever the
 *   method.  /healthz is tested first and answered with a constant: it is
 *   the liveness probe and the cheapest benchmark path.
 *
 * Order of checks on /v1 (the e2e suite's reading of API.md):
 *   draining (503) -> authentication (401) -> then per route:
 *     admin-only routes (POST /v1/accounts, POST /v1/keys, reading @world):
 *       403 for an account key before the body is looked at — the caller
 *       may not make this call at all, whatever it sends;
 *     POST /v1/transfers: 400 (body, Idempotency-Key) before 403, because
 *       who may send it depends on the body's `from` (the pipeline's auth
 *       stage does all four in that order);
 *     reads of an account: 403 (not the key's account) before 404, so an
 *       account key cannot probe which ids exist;
 *     GET /v1/transfers/{id}: 404 before 403 — who may read a transfer
 *       depends on its parties, known only once it is found.
 *
 * Metrics without locks
 *   Counters are fixed arrays of relaxed atomics indexed by route x method
 *   x status (a closed set of statuses plus "other") and a duration
 *   histogram per route.  /metrics reads a snapshot of each array; a
 *   histogram's _count is the sum of its buckets' snapshot, so buckets, +Inf
 *   and _count always agree even while requests finish concurrently.
 *
 * Request logs: one log_info record per request from api_on_done (a single
 * write in internal/log), unless api_options.log_requests is false.
 */
#include "api.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "wire.h"

#define API_TIMEOUT_DEFAULT_NS (5 * RT_SECOND)

/* ------------------------------------------------------------- labels */

enum { M_GET, M_POST, M_PUT, M_DELETE, M_PATCH, M_HEAD, M_OPTIONS, M_OTHER, M_COUNT };
static const char *const method_names[M_COUNT] = { "GET", "POST", "PUT", "DELETE",
                                                    "PATCH", "HEAD", "OPTIONS", "OTHER" };

static const int known_statuses[] = { 200, 201, 400, 401, 403, 404, 405, 408, 409,
                                      413, 414, 422, 429, 431, 500, 503, 504 };
#define N_STATUS ((int)(sizeof known_statuses / sizeof *known_statuses) + 1)   /* + other */

/* Upper bounds of the duration histogram, seconds. */
static const double bucket_le[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,    0.25,  0.5,    1,     2.5,  5,     10 };
#define N_BUCKETS ((int)(sizeof bucket_le / sizeof *bucket_le))

static const char *const route_names[API_ROUTE_COUNT] = {
    [API_ROUTE_HEALTHZ] = "/healthz",
    [API_ROUTE_READYZ] = "/readyz",
    [API_ROUTE_METRICS] = "/metrics",
    [API_ROUTE_CREATE_ACCOUNT] = "/v1/accounts",
    [API_ROUTE_GET_ACCOUNT] = "/v1/accounts/{id}",
    [API_ROUTE_LIST_TRANSFERS] = "/v1/accounts/{id}/transfers",
    [API_ROUTE_CREATE_KEY] = "/v1/keys",
    [API_ROUTE_CREATE_TRANSFER] = "/v1/transfers",
    [API_ROUTE_GET_TRANSFER] = "/v1/transfers/{id}",
    [API_ROUTE_OTHER] = "other",
};

struct api_server {
    ledger *l;
    pipeline *p;
    _Atomic(httpd_server *) http;
    bool log_requests;
    int64_t timeout_ns;
    _Atomic bool draining;

    _Atomic uint64_t requests[API_ROUTE_COUNT][M_COUNT][N_STATUS];
    _Atomic uint64_t buckets[API_ROUTE_COUNT][N_BUCKETS + 1];   /* last: above every bound */
    _Atomic uint64_t duration_ns_sum[API_ROUTE_COUNT];
};

const char *api_route_name(api_route r) {
    return (unsigned)r < API_ROUTE_COUNT ? route_names[r] : route_names[API_ROUTE_OTHER];
}

static int method_index(const char *m) {
    for (int i = 0; i < M_OTHER; i++)
        if (strcmp(m, method_names[i]) == 0) return i;
    return M_OTHER;
}

static int status_index(int status) {
    for (int i = 0; i < N_STATUS - 1; i++)
        if (known_statuses[i] == status) return i;
    return N_STATUS - 1;
}

/* ------------------------------------------------------------ routing */

/* What a path names, before the method is looked at. */
typedef enum resource {
    R_NONE, R_HEALTHZ, R_READYZ, R_METRICS, R_ACCOUNTS, R_ACCOUNT, R_HISTORY, R_KEYS,
    R_TRANSFERS, R_TRANSFER,
} resource;

typedef struct match {
    resource res;
    const char *id;     /* {id} segment, raw (not decoded) */
    size_t id_len;
} match;

static bool path_is(const char *p, size_t n, const char *lit) {
    size_t l = strlen(lit);
    return n == l && memcmp(p, lit, l) == 0;
}

static bool has_prefix(const char *p, size_t n, const char *lit) {
    size_t l = strlen(lit);
    return n >= l && memcmp(p, lit, l) == 0;
}

static match resolve(const char *p, size_t n) {
    match m = { R_NONE, NULL, 0 };
    if (path_is(p, n, "/healthz")) m.res = R_HEALTHZ;
    else if (path_is(p, n, "/readyz")) m.res = R_READYZ;
    else if (path_is(p, n, "/metrics")) m.res = R_METRICS;
    else if (path_is(p, n, "/v1/accounts")) m.res = R_ACCOUNTS;
    else if (path_is(p, n, "/v1/keys")) m.res = R_KEYS;
    else if (path_is(p, n, "/v1/transfers")) m.res = R_TRANSFERS;
    else if (has_prefix(p, n, "/v1/accounts/")) {
        const char *id = p + 13;
        size_t rest = n - 13;
        const char *slash = memchr(id, '/', rest);
        size_t id_len = slash ? (size_t)(slash - id) : rest;
        if (id_len == 0) return m;
        if (slash == NULL) m.res = R_ACCOUNT;
        else if (path_is(slash, rest - id_len, "/transfers")) m.res = R_HISTORY;
        else return m;
        m.id = id;
        m.id_len = id_len;
    } else if (has_prefix(p, n, "/v1/transfers/")) {
        const char *id = p + 14;
        size_t id_len = n - 14;
        if (id_len == 0 || memchr(id, '/', id_len)) return m;
        m.res = R_TRANSFER;
        m.id = id;
        m.id_len = id_len;
    }
    return m;
}

/* The one method each resource allows, and its route. */
static const struct { const char *method; api_route route; } allowed[] = {
    [R_NONE] = { NULL, API_ROUTE_OTHER },
    [R_HEALTHZ] = { "GET", API_ROUTE_HEALTHZ },
    [R_READYZ] = { "GET", API_ROUTE_READYZ },
    [R_METRICS] = { "GET", API_ROUTE_METRICS },
    [R_ACCOUNTS] = { "POST", API_ROUTE_CREATE_ACCOUNT },
    [R_ACCOUNT] = { "GET", API_ROUTE_GET_ACCOUNT },
    [R_HISTORY] = { "GET", API_ROUTE_LIST_TRANSFERS },
    [R_KEYS] = { "POST", API_ROUTE_CREATE_KEY },
    [R_TRANSFERS] = { "POST", API_ROUTE_CREATE_TRANSFER },
    [R_TRANSFER] = { "GET", API_ROUTE_GET_TRANSFER },
};

api_route api_route_of(const char *method, const char *path, size_t path_len) {
    if (method == NULL || path == NULL) return API_ROUTE_OTHER;
    match m = resolve(path, path_len);
    if (m.res == R_NONE || strcmp(method, allowed[m.res].method) != 0) return API_ROUTE_OTHER;
    return allowed[m.res].route;
}

/* Percent-decode a path segment ('+' is literal in paths).  false if
 * malformed or longer than cap-1. */
static bool decode_segment(const char *s, size_t n, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            char hex[3] = { 0 };
            if (i + 2 >= n) return false;
            hex[0] = s[i + 1];
            hex[1] = s[i + 2];
            char *end;
            long v = strtol(hex, &end, 16);
            if (end != hex + 2 || v == 0) return false;
            c = (char)v;
            i += 2;
        }
        if (k + 1 >= cap) return false;
        out[k++] = c;
    }
    out[k] = 0;
    return true;
}

/* ------------------------------------------------------------ helpers */

static void respond_json(httpd_response *resp, int status, const char *buf, int n) {
    if (n < 0) {
        httpd_respond_error(resp, 500, "internal", "could not render the response");
        return;
    }
    httpd_set_status(resp, status);
    if (httpd_body_append(resp, buf, (size_t)n) != 0)
        httpd_respond_error(resp, 500, "internal", "out of memory");
}

static void respond_ledger_error(httpd_response *resp, int rc, const char *what) {
    int status;
    const char *code;
    wire_ledger_status(rc, &status, &code);
    char msg[WIRE_MESSAGE_MAX];
    snprintf(msg, sizeof msg, "%s: %s", what, ledger_strerror(rc));
    httpd_respond_error(resp, status, code, msg);
}

/* The bearer secret of "Authorization: Bearer <secret>" (scheme
 * case-insensitive), or false. */
static bool bearer_secret(const httpd_request *req, const char **secret, size_t *len) {
    const httpd_header *h = httpd_find_header(req, "Authorization");
    if (h == NULL || h->value_len < 7 || strncasecmp(h->value, "Bearer ", 7) != 0) return false;
    const char *s = h->value + 7;
    size_t n = h->value_len - 7;
    while (n > 0 && (*s == ' ' || *s == '\t')) s++, n--;
    if (n == 0) return false;
    *secret = s;
    *len = n;
    return true;
}

/* 401 unless the request carries a valid key. */
static bool authenticate(api_server *a, const httpd_request *req, httpd_response *resp,
                         ledger_principal *who) {
    const char *secret;
    size_t len;
    if (bearer_secret(req, &secret, &len) && ledger_authenticate(a->l, secret, len, who) == LEDGER_OK)
        return true;
    httpd_respond_error(resp, 401, "unauthorized",
                        "missing or unknown API key (Authorization: Bearer <secret>)");
    return false;
}

static bool require_admin(const ledger_principal *who, httpd_response *resp) {
    if (who->kind == LEDGER_PRINCIPAL_ADMIN) return true;
    httpd_respond_error(resp, 403, "forbidden", "this call needs the admin key");
    return false;
}

static bool may_act_for(const ledger_principal *who, const char *account) {
    return who->kind == LEDGER_PRINCIPAL_ADMIN || strcmp(who->account, account) == 0;
}

static void respond_wire_error(httpd_response *resp, const wire_error *e) {
    httpd_respond_error(resp, e->status, e->code, e->message);
}

static bool is_draining(api_server *a) {
    if (atomic_load_explicit(&a->draining, memory_order_relaxed)) return true;
    httpd_server *h = atomic_load_explicit(&a->http, memory_order_acquire);
    return h != NULL && httpd_draining(h);
}

/* A context bounded by the api's timeout for ledger calls that may wait;
 * NULL (no deadline) if it cannot be made. */
static rt_context *request_ctx(api_server *a) {
    rt_context *ctx = NULL;
    if (rt_context_with_timeout(NULL, a->timeout_ns, &ctx) != RT_OK) return NULL;
    return ctx;
}

/* ----------------------------------------------------------- handlers */

static void handle_readyz(api_server *a, httpd_response *resp) {
    if (is_draining(a)) {
        httpd_respond_error(resp, 503, "draining", "the server is draining");
    } else if (!ledger_healthy(a->l)) {
        httpd_respond_error(resp, 503, "storage_unavailable",
                            "the ledger store failed a commit; restart the daemon");
    } else {
        static const char body[] = "{\"status\":\"ready\"}";
        respond_json(resp, 200, body, (int)sizeof body - 1);
    }
}

static void handle_create_account(api_server *a, const httpd_request *req, httpd_response *resp,
                                  const ledger_principal *who) {
    if (!require_admin(who, resp)) return;
    wire_account in;
    wire_error we;
    if (wire_parse_account(req->body, req->body_len, &in, &we) != 0) {
        respond_wire_error(resp, &we);
        return;
    }
    ledger_account acct;
    rt_context *ctx = request_ctx(a);
    int rc = ledger_create_account(a->l, ctx, in.id, in.currency, in.initial_balance, &acct);
    rt_context_release(ctx);
    if (rc == LEDGER_EEXISTS) {
        char msg[WIRE_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "account %s already exists", in.id);
        httpd_respond_error(resp, 409, "account_exists", msg);
        return;
    }
    if (rc == LEDGER_EINVAL) {
        httpd_respond_error(resp, 400, "invalid_field", "id/currency/initial_balance: rejected by the ledger");
        return;
    }
    if (rc != LEDGER_OK) {
        respond_ledger_error(resp, rc, "create account");
        return;
    }
    char buf[WIRE_ACCOUNT_JSON_MAX];
    respond_json(resp, 201, buf, wire_render_account(buf, sizeof buf, &acct));
}

/* The decoded {id} of an account path, or false after answering. */
static bool account_path_id(const match *m, char *id, size_t cap) {
    return decode_segment(m->id, m->id_len, id, cap);
}

/* @world (admin only, ?currency=XXX) or a regular account. */
static bool resolve_account_target(const httpd_request *req, httpd_response *resp,
                                   const ledger_principal *who, const char *id, char currency[4],
                                   bool *world) {
    *world = strcmp(id, LEDGER_WORLD) == 0;
    currency[0] = 0;
    if (*world) {
        if (!require_admin(who, resp)) return false;
        size_t n = 0;
        int rc = wire_query_param(req->query, req->query_len, "currency", currency, 4, &n);
        if (rc != 1 || !wire_valid_currency(currency, n)) {
            httpd_respond_error(resp, 400, "invalid_field",
                                "currency: the query parameter must be a 3-letter upper-case code "
                                "(GET /v1/accounts/@world?currency=USD)");
            return false;
        }
        return true;
    }
    if (!may_act_for(who, id)) {
        httpd_respond_error(resp, 403, "forbidden", "this key may not act for that account");
        return false;
    }
    if (!wire_valid_account_id(id, strlen(id))) {
        httpd_respond_error(resp, 404, "not_found", "no such account");
        return false;
    }
    return true;
}

static void handle_get_account(api_server *a, const httpd_request *req, httpd_response *resp,
                               const ledger_principal *who, const match *m) {
    char id[LEDGER_ACCOUNT_ID_MAX + 2], currency[4];
    bool world;
    if (!account_path_id(m, id, sizeof id)) {
        if (who->kind == LEDGER_PRINCIPAL_ADMIN) httpd_respond_error(resp, 404, "not_found", "no such account");
        else httpd_respond_error(resp, 403, "forbidden", "this key may not act for that account");
        return;
    }
    if (!resolve_account_target(req, resp, who, id, currency, &world)) return;
    ledger_account acct;
    int rc = ledger_get_account(a->l, id, world ? currency : NULL, &acct);
    if (rc != LEDGER_OK) {
        char msg[WIRE_MESSAGE_MAX];
        if (world) snprintf(msg, sizeof msg, "no @world account for %s (no account in that currency yet)", currency);
        else snprintf(msg, sizeof msg, "account %s not found", id);
        httpd_respond_error(resp, 404, "not_found", msg);
        return;
    }
    char buf[WIRE_ACCOUNT_JSON_MAX];
    respond_json(resp, 200, buf, wire_render_account(buf, sizeof buf, &acct));
}

static int body_sink(void *ud, const void *data, size_t len) {
    return httpd_body_append((httpd_response *)ud, data, len);
}

static void handle_history(api_server *a, const httpd_request *req, httpd_response *resp,
                           const ledger_principal *who, const match *m) {
    char id[LEDGER_ACCOUNT_ID_MAX + 2], currency[4];
    bool world;
    if (!account_path_id(m, id, sizeof id)) {
        if (who->kind == LEDGER_PRINCIPAL_ADMIN) httpd_respond_error(resp, 404, "not_found", "no such account");
        else httpd_respond_error(resp, 403, "forbidden", "this key may not act for that account");
        return;
    }
    if (!resolve_account_target(req, resp, who, id, currency, &world)) return;
    wire_page_query q;
    wire_error we;
    if (wire_parse_page_query(req->query, req->query_len, &q, &we) != 0) {
        respond_wire_error(resp, &we);
        return;
    }
    ledger_page page;
    rt_context *ctx = request_ctx(a);
    int rc = ledger_list_transfers(a->l, ctx, id, world ? currency : NULL, q.limit,
                                   q.has_before ? q.before : NULL, &page);
    rt_context_release(ctx);
    if (rc == LEDGER_EINVAL) {
        httpd_respond_error(resp, 400, "invalid_field", "before: is not a cursor this server returned");
        return;
    }
    if (rc == LEDGER_ENOTFOUND) {
        char msg[WIRE_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "account %s not found", id);
        httpd_respond_error(resp, 404, "not_found", msg);
        return;
    }
    if (rc != LEDGER_OK) {
        respond_ledger_error(resp, rc, "list transfers");
        return;
    }
    httpd_set_status(resp, 200);
    if (wire_render_page(&page, body_sink, resp) != 0)
        httpd_respond_error(resp, 500, "internal", "could not render the page");
    ledger_page_free(&page);
}

static void handle_create_key(api_server *a, const httpd_request *req, httpd_response *resp,
                              const ledger_principal *who) {
    if (!require_admin(who, resp)) return;
    wire_key in;
    wire_error we;
    if (wire_parse_key(req->body, req->body_len, &in, &we) != 0) {
        respond_wire_error(resp, &we);
        return;
    }
    ledger_key key;
    rt_context *ctx = request_ctx(a);
    int rc = ledger_create_key(a->l, ctx, in.account, &key);
    rt_context_release(ctx);
    if (rc == LEDGER_ENOTFOUND) {
        char msg[WIRE_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "account %s not found", in.account);
        httpd_respond_error(resp, 404, "not_found", msg);
        return;
    }
    if (rc == LEDGER_EINVAL) {
        httpd_respond_error(resp, 400, "invalid_field", "account: keys are only for regular accounts");
        return;
    }
    if (rc != LEDGER_OK) {
        respond_ledger_error(resp, rc, "create key");
        return;
    }
    char buf[WIRE_KEY_JSON_MAX];
    respond_json(resp, 201, buf, wire_render_key(buf, sizeof buf, &key));
}

/* Authentication, validation and authorization happen in the pipeline's
 * auth stage (in that order), so this handler only packs the request. */
static void handle_create_transfer(api_server *a, const httpd_request *req, httpd_response *resp) {
    pipeline_request pr = { .body = req->body, .body_len = req->body_len, .request_id = req->request_id };
    const char *secret;
    size_t len;
    if (bearer_secret(req, &secret, &len)) {
        pr.secret = secret;
        pr.secret_len = len;
    }
    for (size_t i = 0; i < req->nheaders; i++) {
        const httpd_header *h = &req->headers[i];
        if (h->name_len != 15 || strcasecmp(h->name, "Idempotency-Key") != 0) continue;
        if (pr.idem_key != NULL) {
            pr.idem_key_dup = true;
            break;
        }
        pr.idem_key = h->value;
        pr.idem_key_len = h->value_len;
    }
    pipeline_result r;
    pipeline_submit(a->p, &pr, &r);
    if (r.replayed) httpd_add_header(resp, "Idempotent-Replayed", "true");
    if (r.status == 201) {
        char buf[WIRE_TRANSFER_JSON_MAX];
        respond_json(resp, 201, buf, wire_render_transfer(buf, sizeof buf, &r.rec));
        return;
    }
    if (r.status == 503 && r.code && strcmp(r.code, "overloaded") == 0)
        httpd_add_header(resp, "Retry-After", "1");
    httpd_respond_error(resp, r.status, r.code ? r.code : "internal", r.message);
}

static void handle_get_transfer(api_server *a, httpd_response *resp, const ledger_principal *who,
                                const match *m) {
    char id[LEDGER_TRANSFER_ID_LEN + 2];
    ledger_transfer_rec t;
    int rc = LEDGER_ENOTFOUND;
    if (decode_segment(m->id, m->id_len, id, sizeof id)) {
        rt_context *ctx = request_ctx(a);
        rc = ledger_get_transfer(a->l, ctx, id, &t);
        rt_context_release(ctx);
    }
    if (rc == LEDGER_ENOTFOUND) {
        httpd_respond_error(resp, 404, "not_found", "no such transfer");
        return;
    }
    if (rc != LEDGER_OK) {
        respond_ledger_error(resp, rc, "get transfer");
        return;
    }
    if (!may_act_for(who, t.from) && !may_act_for(who, t.to)) {
        httpd_respond_error(resp, 403, "forbidden", "this key may not read that transfer");
        return;
    }
    char buf[WIRE_TRANSFER_JSON_MAX];
    respond_json(resp, 200, buf, wire_render_transfer(buf, sizeof buf, &t));
}

static void handle_metrics(api_server *a, httpd_response *resp);

static void handle_v1(api_server *a, const httpd_request *req, httpd_response *resp, const match *m) {
    if (is_draining(a)) {
        httpd_respond_error(resp, 503, "draining", "the server is draining");
        return;
    }
    if (m->res == R_TRANSFERS) {
        handle_create_transfer(a, req, resp);
        return;
    }
    ledger_principal who;
    if (!authenticate(a, req, resp, &who)) return;
    switch (m->res) {
    case R_ACCOUNTS: handle_create_account(a, req, resp, &who); break;
    case R_ACCOUNT: handle_get_account(a, req, resp, &who, m); break;
    case R_HISTORY: handle_history(a, req, resp, &who, m); break;
    case R_KEYS: handle_create_key(a, req, resp, &who); break;
    case R_TRANSFER: handle_get_transfer(a, resp, &who, m); break;
    default: httpd_respond_error(resp, 404, "not_found", "no such route"); break;
    }
}

void api_handle(void *ud, const httpd_request *req, httpd_response *resp) {
    api_server *a = ud;
    /* The liveness probe first, and as cheap as it gets. */
    if (req->path_len == 8 && memcmp(req->path, "/healthz", 8) == 0 && strcmp(req->method, "GET") == 0) {
        static const char body[] = "{\"status\":\"ok\"}";
        httpd_body_append(resp, body, sizeof body - 1);
        return;
    }
    match m = resolve(req->path, req->path_len);
    if (m.res == R_NONE) {
        httpd_respond_error(resp, 404, "not_found", "no such route");
        return;
    }
    const char *want = allowed[m.res].method;
    if (strcmp(req->method, want) != 0) {
        httpd_add_header(resp, "Allow", want);
        char msg[WIRE_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "method not allowed here; use %s", want);
        httpd_respond_error(resp, 405, "method_not_allowed", msg);
        return;
    }
    switch (m.res) {
    case R_HEALTHZ: {
        static const char body[] = "{\"status\":\"ok\"}";
        respond_json(resp, 200, body, (int)sizeof body - 1);
        break;
    }
    case R_READYZ: handle_readyz(a, resp); break;
    case R_METRICS: handle_metrics(a, resp); break;
    default: handle_v1(a, req, resp, &m); break;
    }
}

/* ------------------------------------------------------------ metrics */

typedef struct mw {
    httpd_response *resp;
    int rc;
} mw;

static void mw_printf(mw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mw_printf(mw *w, const char *fmt, ...) {
    if (w->rc != 0) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        w->rc = -1;
        return;
    }
    w->rc = httpd_body_append(w->resp, buf, (size_t)n);
}

static void mw_family(mw *w, const char *name, const char *type, const char *help) {
    mw_printf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void mw_gauge(mw *w, const char *name, const char *help, double v) {
    mw_family(w, name, "gauge", help);
    mw_printf(w, "%s %.17g\n", name, v);
}

static void mw_counter(mw *w, const char *name, const char *help, uint64_t v) {
    mw_family(w, name, "counter", help);
    mw_printf(w, "%s %llu\n", name, (unsigned long long)v);
}

static uint64_t ld(_Atomic uint64_t *p) { return atomic_load_explicit(p, memory_order_relaxed); }

static void metrics_http(api_server *a, mw *w) {
    mw_family(w, "ledgerd_http_requests_total", "counter", "HTTP responses by route, method and status.");
    for (int r = 0; r < API_ROUTE_COUNT; r++)
        for (int m = 0; m < M_COUNT; m++)
            for (int s = 0; s < N_STATUS; s++) {
                uint64_t v = ld(&a->requests[r][m][s]);
                if (v == 0) continue;
                char status[8];
                if (s < N_STATUS - 1) snprintf(status, sizeof status, "%d", known_statuses[s]);
                else snprintf(status, sizeof status, "other");
                mw_printf(w, "ledgerd_http_requests_total{route=\"%s\",method=\"%s\",status=\"%s\"} %llu\n",
                          route_names[r], method_names[m], status, (unsigned long long)v);
            }
    mw_family(w, "ledgerd_http_request_duration_seconds", "histogram",
              "Time from the complete request head to the end of the response write, by route.");
    for (int r = 0; r < API_ROUTE_COUNT; r++) {
        uint64_t snap[N_BUCKETS + 1], cum = 0;
        for (int b = 0; b <= N_BUCKETS; b++) snap[b] = ld(&a->buckets[r][b]);
        uint64_t sum_ns = ld(&a->duration_ns_sum[r]);
        for (int b = 0; b < N_BUCKETS; b++) {
            cum += snap[b];
            mw_printf(w, "ledgerd_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                      route_names[r], bucket_le[b], (unsigned long long)cum);
        }
        cum += snap[N_BUCKETS];
        mw_printf(w, "ledgerd_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                  route_names[r], (unsigned long long)cum);
        mw_printf(w, "ledgerd_http_request_duration_seconds_sum{route=\"%s\"} %.9f\n", route_names[r],
                  (double)sum_ns / 1e9);
        mw_printf(w, "ledgerd_http_request_duration_seconds_count{route=\"%s\"} %llu\n", route_names[r],
                  (unsigned long long)cum);
    }
    httpd_server *h = atomic_load_explicit(&a->http, memory_order_acquire);
    if (h != NULL) {
        httpd_stats hs;
        httpd_get_stats(h, &hs);
        mw_gauge(w, "ledgerd_http_connections_open", "HTTP connections open now.", (double)hs.conns_open);
        mw_counter(w, "ledgerd_http_connections_accepted_total", "HTTP connections accepted.", hs.conns_accepted);
        mw_counter(w, "ledgerd_http_connections_rejected_total", "HTTP connections refused over max_conns.",
                   hs.conns_rejected);
        mw_counter(w, "ledgerd_http_protocol_errors_total", "Malformed, oversized or timed-out HTTP requests.",
                   hs.protocol_errors);
    }
    mw_gauge(w, "ledgerd_draining", "1 while the server drains for shutdown.", is_draining(a) ? 1 : 0);
}

static void metrics_pipeline(api_server *a, mw *w) {
    pipeline_stats ps;
    pipeline_get_stats(a->p, &ps);
    mw_family(w, "ledgerd_pipeline_queue_depth", "gauge", "Requests waiting in each pipeline stage's queue.");
    mw_printf(w, "ledgerd_pipeline_queue_depth{stage=\"auth\"} %lld\n", (long long)ps.auth_queue);
    mw_printf(w, "ledgerd_pipeline_queue_depth{stage=\"check\"} %lld\n", (long long)ps.check_queue);
    mw_printf(w, "ledgerd_pipeline_queue_depth{stage=\"transfer\"} %lld\n", (long long)ps.transfer_queue);
    mw_gauge(w, "ledgerd_pipeline_queue_capacity", "Capacity of each pipeline stage's queue.", ps.queue_cap);
    mw_counter(w, "ledgerd_pipeline_submitted_total", "Transfers submitted to the pipeline.", ps.submitted);
    mw_counter(w, "ledgerd_pipeline_shed_total", "Transfers refused with 503 overloaded (first queue full).",
               ps.shed);
    mw_counter(w, "ledgerd_pipeline_expired_total", "Transfers answered 504 deadline_exceeded.", ps.expired);
}

static void metrics_ledger(api_server *a, mw *w) {
    ledger_stats ls;
    ledger_get_stats(a->l, &ls);
    mw_counter(w, "ledgerd_commits_total", "SQLite transactions committed by the group committer.", ls.commits);
    mw_counter(w, "ledgerd_commit_failures_total", "Commit groups rolled back or failed at COMMIT.",
               ls.commit_failures);
    mw_counter(w, "ledgerd_ledger_requests_total", "Write requests answered by the committer.", ls.requests);
    mw_counter(w, "ledgerd_ledger_transfers_total", "Transfers made durable (fundings included).", ls.transfers);
    mw_family(w, "ledgerd_commit_group_size", "gauge", "Requests per commit group since start (avg, max).");
    mw_printf(w, "ledgerd_commit_group_size{stat=\"avg\"} %.6f\n", ls.avg_group);
    mw_printf(w, "ledgerd_commit_group_size{stat=\"max\"} %llu\n", (unsigned long long)ls.max_group);
    mw_family(w, "ledgerd_fsync_seconds", "gauge", "Duration of the COMMIT (WAL write + fsync): last, max, avg.");
    mw_printf(w, "ledgerd_fsync_seconds{stat=\"last\"} %.9f\n", (double)ls.commit_ns_last / 1e9);
    mw_printf(w, "ledgerd_fsync_seconds{stat=\"max\"} %.9f\n", (double)ls.commit_ns_max / 1e9);
    mw_printf(w, "ledgerd_fsync_seconds{stat=\"avg\"} %.9f\n", ls.commit_ns_avg / 1e9);
    mw_counter(w, "ledgerd_idempotency_swept_total", "Expired idempotency records deleted.", ls.idem_swept);
    mw_gauge(w, "ledgerd_idempotency_keys", "Recorded idempotency keys held in the in-memory filter.",
             (double)ls.idem_keys);
    mw_counter(w, "ledgerd_idempotency_lookups_total",
               "Keyed transfers whose key the filter could not rule out (looked up in SQLite).",
               ls.idem_lookups);
    mw_counter(w, "ledgerd_idempotency_lookups_skipped_total",
               "Keyed transfers whose key the filter proved fresh (no SQLite lookup).",
               ls.idem_lookups_skipped);
    mw_gauge(w, "ledgerd_accounts", "Accounts in the ledger, @world ones included.", (double)ls.accounts);
    mw_gauge(w, "ledgerd_ledger_healthy", "0 once a COMMIT failed (the store refuses writes).",
             ls.failed ? 0 : 1);
}

static void handle_metrics(api_server *a, httpd_response *resp) {
    mw w = { resp, 0 };
    httpd_set_content_type(resp, "text/plain; version=0.0.4; charset=utf-8");
    metrics_http(a, &w);
    metrics_pipeline(a, &w);
    metrics_ledger(a, &w);
    mw_gauge(&w, "ledgerd_goroutines", "Goroutines alive now.", (double)rt_num_goroutine());
    mw_gauge(&w, "ledgerd_gomaxprocs", "Processors the runtime schedules onto.", rt_gomaxprocs());
    if (w.rc != 0) {
        httpd_set_content_type(resp, "application/json");
        httpd_respond_error(resp, 500, "internal", "could not render the metrics");
        return;
    }
    httpd_set_status(resp, 200);
}

/* ------------------------------------------------------------ on done */

static int bucket_of(int64_t ns) {
    double s = (double)ns / 1e9;
    for (int b = 0; b < N_BUCKETS; b++)
        if (s <= bucket_le[b]) return b;
    return N_BUCKETS;
}

void api_on_done(void *ud, const httpd_request *req, int status, int64_t duration_ns) {
    api_server *a = ud;
    const char *method = req->method ? req->method : "";
    api_route r = api_route_of(method, req->path ? req->path : "", req->path ? req->path_len : 0);
    if (duration_ns < 0) duration_ns = 0;
    atomic_fetch_add_explicit(&a->requests[r][method_index(method)][status_index(status)], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&a->buckets[r][bucket_of(duration_ns)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&a->duration_ns_sum[r], (uint64_t)duration_ns, memory_order_relaxed);
    if (!a->log_requests) return;
    char path[256];
    size_t n = req->path ? req->path_len : 0;
    if (n >= sizeof path) n = sizeof path - 1;
    if (n) memcpy(path, req->path, n);
    path[n] = 0;
    log_info("request", LOG_STR("method", method), LOG_STR("path", path), LOG_INT("status", status),
             LOG_FLOAT("duration_ms", (double)duration_ns / 1e6),
             LOG_STR("request_id", req->request_id ? req->request_id : ""));
}

/* ---------------------------------------------------------- lifecycle */

int api_new(const api_options *opts, api_server **out) {
    if (opts == NULL || opts->ledger == NULL || opts->pipeline == NULL || out == NULL) return RT_EINVAL;
    if (opts->timeout_ns < 0) return RT_EINVAL;
    api_server *a = calloc(1, sizeof *a);
    if (a == NULL) return RT_ENOMEM;
    a->l = opts->ledger;
    a->p = opts->pipeline;
    a->log_requests = opts->log_requests;
    a->timeout_ns = opts->timeout_ns > 0 ? opts->timeout_ns : API_TIMEOUT_DEFAULT_NS;
    *out = a;
    return RT_OK;
}

void api_set_http(api_server *a, httpd_server *http) {
    atomic_store_explicit(&a->http, http, memory_order_release);
}

void api_set_draining(api_server *a) { atomic_store_explicit(&a->draining, true, memory_order_relaxed); }

void api_free(api_server *a) { free(a); }
