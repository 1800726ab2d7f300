/*
 * test_api.c — internal/api behind a real httpd on loopback (label "api"):
 * routing (404, 405 with Allow), /healthz, /readyz, the order 401 -> 400
 * -> 403, @world rules, keys, history paging, idempotent replay headers,
 * Retry-After on overload is covered by test_pipeline (the status) and
 * here by the header path being the same; /metrics' shape (HELP/TYPE,
 * cumulative histogram with +Inf == _count); draining (503 on /v1 and
 * /readyz).  The full black-box suite is tests/e2e.
 */
#include "ledger_test.h"
#include "api.h"
#include "httpd.h"
#include "log.h"
#include "pipeline.h"

#define ADMIN "admin-secret-for-api-tests"

static int g_port;

typedef struct resp {
    int status;
    char head[4096];
    char body[65536];
    size_t body_len;
} resp;

/* One request on a fresh connection (Connection: close), whole response. */
static void http(const char *method, const char *target, const char *auth, const char *extra_headers,
                 const char *body, resp *out) {
    rt_conn *c;
    CHECK_EQ(rt_dial(&c, "127.0.0.1", g_port), RT_OK);
    char req[8192];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s%s%s%sContent-Length: %zu\r\n\r\n%s",
                     method, target, auth ? "Authorization: Bearer " : "", auth ? auth : "", auth ? "\r\n" : "",
                     extra_headers ? extra_headers : "", blen, body ? body : "");
    CHECK_EQ(rt_conn_write(c, req, (size_t)n), RT_OK);
    static char buf[sizeof out->head + sizeof out->body];
    size_t got = 0;
    for (;;) {
        int64_t r = rt_conn_read(c, buf + got, sizeof buf - 1 - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    rt_conn_close(c);
    buf[got] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    CHECK(sep != NULL);
    size_t hl = (size_t)(sep - buf);
    CHECK(hl < sizeof out->head);
    memcpy(out->head, buf, hl);
    out->head[hl] = 0;
    out->body_len = got - hl - 4;
    memcpy(out->body, sep + 4, out->body_len);
    out->body[out->body_len] = 0;
    CHECK(sscanf(buf, "HTTP/1.1 %d", &out->status) == 1);
}

static bool has_header(const resp *r, const char *line) { return strcasestr(r->head, line) != NULL; }

static bool body_has_code(const resp *r, const char *code) {
    if (code == NULL) return true;
    char want[96];
    snprintf(want, sizeof want, "\"code\":\"%s\"", code);
    return strstr(r->body, want) != NULL;
}

#define EXPECT(r, st, code)                                                                  \
    do {                                                                                     \
        const char *code_ = (code);                                                          \
        if ((r).status != (st) || !body_has_code(&(r), code_)) {                             \
            fprintf(stderr, "%s:%d: got %d %s, want %d %s\n", __FILE__, __LINE__, (r).status, \
                    (r).body, (st), code_ ? code_ : "");                                     \
            _exit(1);                                                                        \
        }                                                                                    \
        atomic_fetch_add(&rt_test_checks, 1);                                                \
    } while (0)

static void test_routing(void) {
    static resp r;
    http("GET", "/healthz", NULL, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
    CHECK(strcmp(r.body, "{\"status\":\"ok\"}") == 0);
    http("GET", "/readyz", NULL, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
    const char *missing[] = { "/", "/nope", "/healthz/x", "/v1/nope", "/v1/accounts/x/y/z", "/v1/accounts/x/history",
                              "/v1/accounts/", "/v1/transfers/a/b" };
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++) {
        http("GET", missing[i], ADMIN, NULL, NULL, &r);
        EXPECT(r, 404, "not_found");
    }
    struct { const char *m, *p, *allow; } wrong[] = {
        { "POST", "/healthz", "Allow: GET" }, { "DELETE", "/readyz", "Allow: GET" }, { "PUT", "/metrics", "Allow: GET" },
        { "GET", "/v1/accounts", "Allow: POST" }, { "POST", "/v1/accounts/a", "Allow: GET" },
        { "POST", "/v1/accounts/a/transfers", "Allow: GET" }, { "GET", "/v1/keys", "Allow: POST" },
        { "GET", "/v1/transfers", "Allow: POST" }, { "DELETE", "/v1/transfers/x", "Allow: GET" },
    };
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++) {
        http(wrong[i].m, wrong[i].p, ADMIN, NULL, "{}", &r);
        EXPECT(r, 405, "method_not_allowed");
        CHECK(has_header(&r, wrong[i].allow));
    }
    CHECK_EQ(api_route_of("GET", "/v1/accounts/a/transfers", 24), API_ROUTE_LIST_TRANSFERS);
    CHECK_EQ(api_route_of("POST", "/v1/accounts/a/transfers", 24), API_ROUTE_OTHER);
    CHECK(strcmp(api_route_name(API_ROUTE_GET_TRANSFER), "/v1/transfers/{id}") == 0);
}

static void test_v1(void) {
    static resp r;
    /* 401 first, whatever the body or route */
    http("POST", "/v1/transfers", NULL, NULL, "{garbage", &r);
    EXPECT(r, 401, "unauthorized");
    http("POST", "/v1/accounts", "wrong", NULL, "{garbage", &r);
    EXPECT(r, 401, "unauthorized");
    http("GET", "/v1/accounts/ghost", NULL, NULL, NULL, &r);
    EXPECT(r, 401, "unauthorized");

    http("POST", "/v1/accounts", ADMIN, NULL, "{\"id\":\"alice\",\"currency\":\"USD\",\"initial_balance\":1000}", &r);
    EXPECT(r, 201, NULL);
    CHECK(strstr(r.body, "\"balance\":1000") != NULL);
    http("POST", "/v1/accounts", ADMIN, NULL, "{\"id\":\"alice\",\"currency\":\"USD\"}", &r);
    EXPECT(r, 409, "account_exists");
    http("POST", "/v1/accounts", ADMIN, NULL, "{\"id\":\"bob\",\"currency\":\"USD\"}", &r);
    EXPECT(r, 201, NULL);
    http("POST", "/v1/accounts", ADMIN, NULL, "{\"id\":\"x\",\"currency\":\"USD\",\"initial_balance\":1.5}", &r);
    EXPECT(r, 400, "invalid_field");
    CHECK(strstr(r.body, "initial_balance") != NULL);

    http("POST", "/v1/keys", ADMIN, NULL, "{\"account\":\"alice\"}", &r);
    EXPECT(r, 201, NULL);
    char *s = strstr(r.body, "\"secret\":\"");
    CHECK(s != NULL);
    char key[256];
    CHECK(sscanf(s + 10, "%255[^\"]", key) == 1);
    http("POST", "/v1/keys", key, NULL, "{\"account\":\"alice\"}", &r);
    EXPECT(r, 403, "forbidden");
    http("POST", "/v1/keys", ADMIN, NULL, "{\"account\":\"ghost\"}", &r);
    EXPECT(r, 404, "not_found");

    /* account key: own account yes, others 403, @world 403 */
    http("GET", "/v1/accounts/alice", key, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
    http("GET", "/v1/accounts/bob", key, NULL, NULL, &r);
    EXPECT(r, 403, "forbidden");
    http("GET", "/v1/accounts/@world?currency=USD", key, NULL, NULL, &r);
    EXPECT(r, 403, "forbidden");
    http("GET", "/v1/accounts/@world?currency=USD", ADMIN, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
    CHECK(strstr(r.body, "\"balance\":-1000") != NULL);
    http("GET", "/v1/accounts/%40world?currency=USD", ADMIN, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
    http("GET", "/v1/accounts/@world?currency=usd", ADMIN, NULL, NULL, &r);
    EXPECT(r, 400, "invalid_field");
    http("GET", "/v1/accounts/@world", ADMIN, NULL, NULL, &r);
    EXPECT(r, 400, "invalid_field");
    http("GET", "/v1/accounts/a.b", ADMIN, NULL, NULL, &r);
    EXPECT(r, 404, "not_found");

    /* transfers: 400 before 403, replay header */
    http("POST", "/v1/transfers", key, NULL, "{\"from\":\"bob\",\"to\":\"alice\",\"amount\":0,\"currency\":\"USD\"}", &r);
    EXPECT(r, 400, "invalid_field");
    http("POST", "/v1/transfers", key, NULL, "{\"from\":\"bob\",\"to\":\"alice\",\"amount\":1,\"currency\":\"USD\"}", &r);
    EXPECT(r, 403, "forbidden");
    const char *tb = "{\"from\":\"alice\",\"to\":\"bob\",\"amount\":10,\"currency\":\"USD\",\"memo\":\"q\\\"\"}";
    http("POST", "/v1/transfers", key, "Idempotency-Key: k1\r\n", tb, &r);
    EXPECT(r, 201, NULL);
    CHECK(!has_header(&r, "Idempotent-Replayed"));
    CHECK(strstr(r.body, "\"memo\":\"q\\\"\"") != NULL);
    char id[64];
    CHECK(sscanf(strstr(r.body, "\"id\":\"") + 6, "%63[^\"]", id) == 1);
    http("POST", "/v1/transfers", key, "Idempotency-Key: k1\r\n", tb, &r);
    EXPECT(r, 201, NULL);
    CHECK(has_header(&r, "Idempotent-Replayed: true"));
    CHECK(strstr(r.body, id) != NULL);
    http("POST", "/v1/transfers", key, "Idempotency-Key: k1\r\nIdempotency-Key: k2\r\n", tb, &r);
    EXPECT(r, 400, "invalid_field");
    http("POST", "/v1/transfers", key, "Idempotency-Key: \r\n", tb, &r);
    EXPECT(r, 400, "invalid_field");

    char path[128];
    snprintf(path, sizeof path, "/v1/transfers/%s", id);
    http("GET", path, key, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
    http("GET", "/v1/transfers/nope", ADMIN, NULL, NULL, &r);
    EXPECT(r, 404, "not_found");

    /* history: funding + one transfer, newest first; paging */
    http("GET", "/v1/accounts/alice/transfers?limit=1", key, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
    CHECK(strstr(r.body, id) != NULL);
    char next[32];
    char *np = strstr(r.body, "\"next\":\"");
    CHECK(np && sscanf(np + 8, "%31[^\"]", next) == 1);
    snprintf(path, sizeof path, "/v1/accounts/alice/transfers?limit=1&before=%s", next);
    http("GET", path, key, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
    CHECK(strstr(r.body, "\"from\":\"@world\"") != NULL);
    CHECK(strstr(r.body, "\"next\":null") != NULL);
    http("GET", "/v1/accounts/alice/transfers?limit=0", key, NULL, NULL, &r);
    EXPECT(r, 400, "invalid_field");
    http("GET", "/v1/accounts/alice/transfers?before=!!!", key, NULL, NULL, &r);
    EXPECT(r, 400, "invalid_field");
    CHECK(strstr(r.body, "before") != NULL);
    http("GET", "/v1/accounts/ghost/transfers", ADMIN, NULL, NULL, &r);
    EXPECT(r, 404, "not_found");
    http("GET", "/v1/accounts/@world/transfers?currency=USD", ADMIN, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
}

/* Sum of the +Inf buckets and the _count lines of the duration histogram
 * agree, HELP/TYPE precede samples. */
static void test_metrics(void) {
    static resp r;
    http("GET", "/metrics", NULL, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
    CHECK(has_header(&r, "Content-Type: text/plain; version=0.0.4"));
    CHECK(r.body_len > 0 && r.body[r.body_len - 1] == '\n');
    const char *must[] = { "# TYPE ledgerd_http_requests_total counter",
                           "# TYPE ledgerd_http_request_duration_seconds histogram",
                           "ledgerd_http_requests_total{route=\"/v1/transfers\",method=\"POST\",status=\"201\"} 2",
                           "ledgerd_pipeline_queue_depth{stage=\"auth\"} 0", "ledgerd_pipeline_shed_total 0",
                           "ledgerd_goroutines ", "ledgerd_gomaxprocs ", "ledgerd_commit_group_size{stat=\"max\"}",
                           "ledgerd_fsync_seconds{stat=\"avg\"}", "ledgerd_http_connections_open " };
    for (size_t i = 0; i < sizeof must / sizeof *must; i++) {
        if (!strstr(r.body, must[i])) fprintf(stderr, "missing %s\n", must[i]);
        CHECK(strstr(r.body, must[i]) != NULL);
    }
    /* per route: +Inf bucket == _count, buckets cumulative */
    char *save = NULL, *line;
    unsigned long long last = 0, inf = 0;
    char route[64] = "";
    for (line = strtok_r(r.body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char rt[64], le[32];
        unsigned long long v;
        if (sscanf(line, "ledgerd_http_request_duration_seconds_bucket{route=\"%63[^\"]\",le=\"%31[^\"]\"} %llu", rt, le, &v) == 3) {
            if (strcmp(rt, route) != 0) {
                snprintf(route, sizeof route, "%s", rt);
                last = 0;
            }
            CHECK(v >= last);
            last = v;
            if (strcmp(le, "+Inf") == 0) inf = v;
        } else if (sscanf(line, "ledgerd_http_request_duration_seconds_count{route=\"%63[^\"]\"} %llu", rt, &v) == 2) {
            CHECK(strcmp(rt, route) == 0);
            CHECK_EQ(v, inf);
        }
    }
}

static void test_draining(api_server *a) {
    static resp r;
    api_set_draining(a);
    http("GET", "/readyz", NULL, NULL, NULL, &r);
    EXPECT(r, 503, "draining");
    http("GET", "/v1/accounts/alice", ADMIN, NULL, NULL, &r);
    EXPECT(r, 503, "draining");
    http("POST", "/v1/transfers", ADMIN, NULL, "{}", &r);
    EXPECT(r, 503, "draining");
    http("GET", "/healthz", NULL, NULL, NULL, &r);
    EXPECT(r, 200, NULL);
}

static int run(void *arg) {
    (void)arg;
    char *dir = lt_tmpdir("api");
    char *db = lt_path(dir, "db.sqlite");
    char err[256];
    ledger *l;
    ledger_options lo = { .sync = LEDGER_SYNC_NORMAL, .admin_key = ADMIN };
    CHECK_OK(ledger_open(db, &lo, &l, err, sizeof err));
    pipeline *p;
    CHECK_EQ(pipeline_start(l, NULL, &p), RT_OK);
    api_server *a;
    CHECK_EQ(api_new(&(api_options){ .ledger = l, .pipeline = p, .log_requests = false }, &a), RT_OK);
    httpd_server *h;
    httpd_options ho = { .host = "127.0.0.1", .handler = api_handle, .on_done = api_on_done, .ud = a };
    CHECK_EQ(httpd_listen(&ho, &h, err, sizeof err), RT_OK);
    api_set_http(a, h);
    g_port = httpd_port(h);
    CHECK_EQ(httpd_start(h), RT_OK);
    RUN(test_routing);
    RUN(test_v1);
    RUN(test_metrics);
    test_draining(a);
    httpd_shutdown(h, RT_SECOND);
    httpd_free(h);
    pipeline_stop(p);
    api_free(a);
    ledger_close(l);
    lt_rmrf(dir);
    free(db);
    free(dir);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
