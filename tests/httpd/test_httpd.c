/*
 * test_httpd.c — internal/httpd over real loopback sockets.
 *
 * Each case starts a server on port 0 inside rt_main with the test handler
 * below (and, where it matters, short timeouts or a small connection cap),
 * talks to it with the runtime's own client sockets (rt_dial: every wait is
 * bounded by a read deadline, so a server bug fails a CHECK instead of
 * hanging), and shuts it down.
 *
 * Covered: GET, POST echo (Content-Length and chunked, NUL-terminated
 * bodies), query/path split, header trimming and duplicates, keep-alive
 * (many requests, stats), pipelining (order, ids), X-Request-Id echo and
 * fresh ids, Date/Content-Length/Content-Type on every response, HEAD,
 * HTTP/1.0 with and without keep-alive, Connection: close, Expect:
 * 100-continue, handler errors keeping the connection, extra response
 * headers, 431, 413 (declared, answered without the body; chunked over the
 * limit), 400 + close on garbage, CL + TE, garbage after a good request,
 * the connection cap (503 overloaded, Retry-After), header and body
 * timeouts (408), a silent connection closed at the header timeout, the
 * idle timeout, shutdown draining an in-flight request (RT_OK) and closing
 * idle ones, shutdown cutting a stuck handler (RT_ETIMEDOUT), and listen
 * errors (address in use, bad options).
 */
#include "rt_test.h"

#include "httpd.h"

#include <ctype.h>
#include <strings.h>

/* ------------------------------------------------------------ handler */

static _Atomic int handler_calls;
static _Atomic int slow_started;
static _Atomic int done_calls;
static _Atomic int done_last_status;
static _Atomic(httpd_server *) cur_server;   /* read by handler goroutines */

static const char *query_param(const httpd_request *req, const char *name, char *buf, size_t n) {
    if (!req->query) return NULL;
    size_t nl = strlen(name);
    const char *q = req->query;
    while (q && *q) {
        if (strncmp(q, name, nl) == 0 && q[nl] == '=') {
            const char *v = q + nl + 1;
            size_t len = strcspn(v, "&");
            if (len >= n) len = n - 1;
            memcpy(buf, v, len);
            buf[len] = 0;
            return buf;
        }
        q = strchr(q, '&');
        if (q) q++;
    }
    return NULL;
}

static bool path_is(const httpd_request *req, const char *p) {
    return req->path_len == strlen(p) && strcmp(req->path, p) == 0;
}

static void test_handler(void *ud, const httpd_request *req, httpd_response *resp) {
    (void)ud;
    atomic_fetch_add(&handler_calls, 1);
    char buf[64];
    if (path_is(req, "/hello")) {
        httpd_body_append(resp, "{\"status\":\"ok\"}", 15);
    } else if (path_is(req, "/echo")) {
        /* the body must be NUL-terminated at body_len */
        CHECK(req->body[req->body_len] == 0);
        httpd_set_content_type(resp, "text/plain");
        httpd_add_header(resp, "X-Chunked", req->chunked ? "yes" : "no");
        httpd_body_append(resp, req->body, req->body_len);
    } else if (path_is(req, "/info")) {
        const httpd_header *h = httpd_find_header(req, "x-foo");
        int nfoo = 0;
        for (size_t i = 0; i < req->nheaders; i++)
            if (strcasecmp(req->headers[i].name, "X-Foo") == 0) nfoo++;
        httpd_body_printf(resp, "%s|%s|%s|%s|%d|%zu", req->method, req->path,
                          req->query ? req->query : "(none)", h ? h->value : "(none)", nfoo,
                          h ? h->value_len : 0);
    } else if (path_is(req, "/error")) {
        httpd_body_append(resp, "partial", 7);
        httpd_respond_error(resp, 404, "not_found", "no \"such\" thing");
    } else if (path_is(req, "/status")) {
        const char *v = query_param(req, "code", buf, sizeof buf);
        httpd_set_status(resp, v ? atoi(v) : 200);
        httpd_body_append(resp, "{}", 2);
    } else if (path_is(req, "/slow")) {
        const char *v = query_param(req, "ms", buf, sizeof buf);
        atomic_fetch_add(&slow_started, 1);
        rt_sleep((v ? atoi(v) : 100) * RT_MILLISECOND);
        httpd_body_printf(resp, "{\"draining\":%s}",
                          atomic_load(&cur_server) && httpd_draining(atomic_load(&cur_server))
                              ? "true" : "false");
    } else if (path_is(req, "/close")) {
        httpd_set_close(resp);
        httpd_body_append(resp, "{}", 2);
    } else if (path_is(req, "/headers")) {
        CHECK_EQ(httpd_add_header(resp, "X-One", "1"), RT_OK);
        CHECK_EQ(httpd_add_header(resp, "Content-Length", "5"), RT_EINVAL);
        CHECK_EQ(httpd_add_header(resp, "X-Bad", "a\r\nInjected: yes"), RT_EINVAL);
        int rc = RT_OK, n = 1;
        while (rc == RT_OK && n < 100) {
            char name[32];
            snprintf(name, sizeof name, "X-Fill-%d", n++);
            rc = httpd_add_header(resp, name, "v");
        }
        CHECK_EQ(rc, RT_ELIMIT);
        CHECK_EQ(n - 1, 16);   /* X-One + 15 fills = 16 extra headers, then RT_ELIMIT */
        httpd_body_append(resp, "{}", 2);
    } else {
        httpd_respond_error(resp, 404, "not_found", "no route");
    }
}

static void test_on_done(void *ud, const httpd_request *req, int status, int64_t dur) {
    (void)ud;
    CHECK(req != NULL && req->method != NULL && req->path != NULL && req->request_id != NULL);
    CHECK(dur >= 0);
    atomic_store(&done_last_status, status);
    atomic_fetch_add(&done_calls, 1);
}

static httpd_options default_opts(void) {
    return (httpd_options){.handler = test_handler, .on_done = test_on_done};
}

static httpd_server *start_server(httpd_options o) {
    httpd_server *s = NULL;
    char err[128];
    CHECK_EQ(httpd_listen(&o, &s, err, sizeof err), RT_OK);
    CHECK(httpd_port(s) > 0);
    CHECK_EQ(httpd_start(s), RT_OK);
    cur_server = s;
    return s;
}

static void stop_server(httpd_server *s) {
    CHECK_EQ(httpd_shutdown(s, 2 * RT_SECOND), RT_OK);
    cur_server = NULL;
    httpd_free(s);
}

/* ------------------------------------------------------------- client */

typedef struct client {
    rt_conn *c;
    size_t len;
    char buf[1 << 17];
} client;

typedef struct response {
    int status;
    char head[8192];
    char *body;
    size_t body_len;
} response;

static client *dial(httpd_server *s) {
    client *cl = calloc(1, sizeof *cl);
    CHECK(cl != NULL);
    CHECK_EQ(rt_dial(&cl->c, "127.0.0.1", httpd_port(s)), RT_OK);
    return cl;
}

static void hangup(client *cl) {
    rt_conn_close(cl->c);
    free(cl);
}

static void send_str(client *cl, const char *s) {
    CHECK_EQ(rt_conn_write(cl->c, s, strlen(s)), RT_OK);
}

/* More bytes into the buffer; false at EOF/error/timeout. */
static bool fill(client *cl, int64_t timeout) {
    CHECK(cl->len < sizeof cl->buf);
    rt_conn_set_read_deadline(cl->c, rt_nanotime() + TIMING_BOUND(timeout));
    int64_t n = rt_conn_read(cl->c, cl->buf + cl->len, sizeof cl->buf - cl->len);
    if (n <= 0) return false;
    cl->len += (size_t)n;
    return true;
}

/* The value of header `name` in r (NUL-terminated copy into out), or NULL. */
static const char *header(const response *r, const char *name, char *out, size_t n) {
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2] != '\r' && p[2]) {
        const char *line = p + 2;
        const char *end = strstr(line, "\r\n");
        if (!end) break;
        if ((size_t)(end - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ') v++;
            size_t len = (size_t)(end - v);
            if (len >= n) len = n - 1;
            memcpy(out, v, len);
            out[len] = 0;
            return out;
        }
        p = end;
    }
    return NULL;
}

/* Read one response (interim 100 responses are returned like any other). */
static bool read_response(client *cl, response *r) {
    char *end;
    while (!(end = memmem(cl->buf, cl->len, "\r\n\r\n", 4)))
        if (!fill(cl, 3 * RT_SECOND)) return false;
    size_t head_len = (size_t)(end - cl->buf) + 4;
    CHECK(head_len < sizeof r->head);
    memcpy(r->head, cl->buf, head_len);
    r->head[head_len] = 0;
    CHECK(strncmp(r->head, "HTTP/1.1 ", 9) == 0);
    r->status = atoi(r->head + 9);
    char v[32];
    size_t blen = 0;
    if (header(r, "Content-Length", v, sizeof v)) blen = (size_t)atol(v);
    while (cl->len < head_len + blen)
        if (!fill(cl, 3 * RT_SECOND)) return false;
    free(r->body);
    r->body = malloc(blen + 1);
    CHECK(r->body != NULL);
    memcpy(r->body, cl->buf + head_len, blen);
    r->body[blen] = 0;
    r->body_len = blen;
    memmove(cl->buf, cl->buf + head_len + blen, cl->len - head_len - blen);
    cl->len -= head_len + blen;
    return true;
}

static void expect_response(client *cl, response *r, int status) {
    CHECK(read_response(cl, r));
    if (r->status != status) fprintf(stderr, "got:\n%s%s\n", r->head, r->body);
    CHECK_EQ(r->status, status);
}

/* True when the server closed the connection (EOF or reset) within timeout,
 * with no further bytes. */
static bool closed_by_peer(client *cl, int64_t timeout) {
    if (cl->len) return false;
    char b[256];
    rt_conn_set_read_deadline(cl->c, rt_nanotime() + TIMING_BOUND(timeout));
    int64_t n = rt_conn_read(cl->c, b, sizeof b);
    return n == 0 || n == RT_ECONNRESET;
}

static bool still_open(client *cl, int64_t wait) {
    char b[16];
    rt_conn_set_read_deadline(cl->c, rt_nanotime() + wait);
    return rt_conn_read(cl->c, b, sizeof b) == RT_ETIMEDOUT;
}

static void free_response(response *r) {
    free(r->body);
    r->body = NULL;
}

/* The server's error body carries code and request id. */
static void check_error_body(const response *r, const char *code) {
    char want[128], rid[200], idbuf[160];
    snprintf(want, sizeof want, "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    CHECK(strncmp(r->body, want, strlen(want)) == 0);
    CHECK(header(r, "X-Request-Id", idbuf, sizeof idbuf) != NULL);
    snprintf(rid, sizeof rid, "\"request_id\":\"%s\"}}", idbuf);
    CHECK(strstr(r->body, rid) != NULL);
    char ct[64];
    CHECK(header(r, "Content-Type", ct, sizeof ct) && strcmp(ct, "application/json") == 0);
}

static bool fresh_id_shape(const char *id) {
    /* 16 hex digits, '-', hex counter */
    if (strlen(id) < 18 || id[16] != '-') return false;
    for (size_t i = 0; id[i]; i++)
        if (i != 16 && !isxdigit((unsigned char)id[i])) return false;
    return true;
}

/* -------------------------------------------------------------- cases */

static void test_simple_get(void) {
    httpd_server *s = start_server(default_opts());
    client *cl = dial(s);
    response r = {0};
    send_str(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(strcmp(r.body, "{\"status\":\"ok\"}") == 0);
    char v[128];
    CHECK(header(&r, "Content-Type", v, sizeof v) && strcmp(v, "application/json") == 0);
    CHECK(header(&r, "Content-Length", v, sizeof v) && strcmp(v, "15") == 0);
    CHECK(header(&r, "Date", v, sizeof v) && strlen(v) == 29 && strcmp(v + 25, " GMT") == 0);
    CHECK(header(&r, "X-Request-Id", v, sizeof v) && fresh_id_shape(v));
    CHECK(header(&r, "Connection", v, sizeof v) == NULL);
    CHECK(strncmp(r.head, "HTTP/1.1 200 OK\r\n", 17) == 0);

    /* path, query, header trimming and duplicates */
    send_str(cl, "GET /info?a=1&b=2 HTTP/1.1\r\nHost: x\r\nX-Foo:   first value \t\r\n"
                 "x-foo: second\r\nX-Empty:\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(strcmp(r.body, "GET|/info|a=1&b=2|first value|2|11") == 0);
    send_str(cl, "DELETE /info HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(strcmp(r.body, "DELETE|/info|(none)|(none)|0|0") == 0);

    free_response(&r);
    hangup(cl);

    /* HEAD: the head (with the body's Content-Length), no body bytes: the
     * next response's status line follows the head directly */
    cl = dial(s);
    send_str(cl, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    char *end;
    while (!(end = memmem(cl->buf, cl->len, "\r\n\r\n", 4))) CHECK(fill(cl, RT_SECOND));
    /* right after the HEAD response's head comes the next status line */
    while (cl->len < (size_t)(end - cl->buf) + 4 + 8) CHECK(fill(cl, RT_SECOND));
    CHECK(strncmp(end + 4, "HTTP/1.1", 8) == 0);
    CHECK(memmem(cl->buf, (size_t)(end - cl->buf), "Content-Length: 15", 18) != NULL);
    hangup(cl);
    stop_server(s);
}

static void test_post_echo(void) {
    httpd_server *s = start_server(default_opts());
    client *cl = dial(s);
    response r = {0};
    send_str(cl, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    expect_response(cl, &r, 200);
    CHECK(strcmp(r.body, "hello world") == 0);
    char v[64];
    CHECK(header(&r, "Content-Type", v, sizeof v) && strcmp(v, "text/plain") == 0);
    CHECK(header(&r, "X-Chunked", v, sizeof v) && strcmp(v, "no") == 0);

    /* a body split over many writes */
    send_str(cl, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Le");
    rt_sleep(5 * RT_MILLISECOND);
    send_str(cl, "ngth: 6\r\n\r\nab");
    rt_sleep(5 * RT_MILLISECOND);
    send_str(cl, "cdef");
    expect_response(cl, &r, 200);
    CHECK(strcmp(r.body, "abcdef") == 0);

    /* chunked, with an extension and a trailer */
    send_str(cl, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(strcmp(r.body, "hello, world") == 0);
    CHECK(header(&r, "X-Chunked", v, sizeof v) && strcmp(v, "yes") == 0);

    /* a 64 KiB body (exactly the limit) is fine */
    size_t big = 65536;
    char *req = malloc(big + 128);
    int hl = snprintf(req, 128, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", big);
    for (size_t i = 0; i < big; i++) req[hl + i] = (char)('a' + i % 26);
    CHECK_EQ(rt_conn_write(cl->c, req, (size_t)hl + big), RT_OK);
    expect_response(cl, &r, 200);
    CHECK_EQ(r.body_len, big);
    CHECK(memcmp(r.body, req + hl, big) == 0);
    free(req);

    /* Expect: 100-continue: the interim response comes before the body is sent */
    send_str(cl, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    expect_response(cl, &r, 100);
    send_str(cl, "12345");
    expect_response(cl, &r, 200);
    CHECK(strcmp(r.body, "12345") == 0);
    free_response(&r);
    hangup(cl);
    stop_server(s);
}

static void test_keepalive_many(void) {
    httpd_server *s = start_server(default_opts());
    httpd_stats st0;
    httpd_get_stats(s, &st0);
    client *cl = dial(s);
    response r = {0};
    char req[128], v[160];
    int n = (int)SCALED(300);
    for (int i = 0; i < n; i++) {
        snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-Id: ka-%d\r\n\r\n", i);
        send_str(cl, req);
        expect_response(cl, &r, 200);
        snprintf(req, sizeof req, "ka-%d", i);
        CHECK(header(&r, "X-Request-Id", v, sizeof v) && strcmp(v, req) == 0);
    }
    CHECK(still_open(cl, 50 * RT_MILLISECOND));
    httpd_stats st;
    httpd_get_stats(s, &st);
    CHECK_EQ(st.requests - st0.requests, (uint64_t)n);
    CHECK_EQ(st.conns_open, 1);
    CHECK(st.conns_accepted >= 1);
    free_response(&r);
    hangup(cl);
    stop_server(s);
}

static void test_pipelining(void) {
    httpd_server *s = start_server(default_opts());
    client *cl = dial(s);
    response r = {0};
    char v[160];
    send_str(cl, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-Id: p-0\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: x\r\nX-Request-Id: p-1\r\nContent-Length: 3\r\n\r\nabc"
                 "GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-Id: p-2\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(header(&r, "X-Request-Id", v, sizeof v) && strcmp(v, "p-0") == 0);
    expect_response(cl, &r, 200);
    CHECK(header(&r, "X-Request-Id", v, sizeof v) && strcmp(v, "p-1") == 0);
    CHECK(strcmp(r.body, "abc") == 0);
    expect_response(cl, &r, 404);
    CHECK(header(&r, "X-Request-Id", v, sizeof v) && strcmp(v, "p-2") == 0);

    /* a burst of 200 in one write */
    int n = 200;
    char *burst = malloc((size_t)n * 64);
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)sprintf(burst + len, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-Id: b-%d\r\n\r\n", i);
    CHECK_EQ(rt_conn_write(cl->c, burst, len), RT_OK);
    for (int i = 0; i < n; i++) {
        char want[32];
        expect_response(cl, &r, 200);
        snprintf(want, sizeof want, "b-%d", i);
        CHECK(header(&r, "X-Request-Id", v, sizeof v) && strcmp(v, want) == 0);
    }
    free(burst);

    /* byte by byte */
    const char *two = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nxyGET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    for (const char *p = two; *p; p++) CHECK_EQ(rt_conn_write(cl->c, p, 1), RT_OK);
    expect_response(cl, &r, 200);
    CHECK(strcmp(r.body, "xy") == 0);
    expect_response(cl, &r, 200);
    CHECK(strcmp(r.body, "{\"status\":\"ok\"}") == 0);
    free_response(&r);
    hangup(cl);
    stop_server(s);
}

static void test_request_ids(void) {
    httpd_server *s = start_server(default_opts());
    client *cl = dial(s);
    response r = {0};
    char v[300], req[600], id1[300];
    /* valid ids are echoed, at the 128 limit too */
    char max_id[129];
    memset(max_id, 'A', 128);
    max_id[128] = 0;
    const char *valid[] = {"abc-123._X", "a", max_id};
    for (size_t i = 0; i < 3; i++) {
        snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n\r\n", valid[i]);
        send_str(cl, req);
        expect_response(cl, &r, 200);
        CHECK(header(&r, "X-Request-Id", v, sizeof v) && strcmp(v, valid[i]) == 0);
    }
    /* invalid ones are replaced with fresh, distinct ids */
    char long_id[130];
    memset(long_id, 'A', 129);
    long_id[129] = 0;
    const char *invalid[] = {long_id, "bad id!", "semi;colon", "slash/x", "\xc3\xa9t\xc3\xa9"};
    id1[0] = 0;
    for (size_t i = 0; i < 5; i++) {
        snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n\r\n", invalid[i]);
        send_str(cl, req);
        expect_response(cl, &r, 200);
        CHECK(header(&r, "X-Request-Id", v, sizeof v) && fresh_id_shape(v));
        CHECK(strcmp(v, id1) != 0);
        snprintf(id1, sizeof id1, "%s", v);
    }
    /* the error body names the request id */
    send_str(cl, "GET /error HTTP/1.1\r\nHost: x\r\nX-Request-Id: err-1\r\n\r\n");
    expect_response(cl, &r, 404);
    CHECK(strcmp(r.body, "{\"error\":{\"code\":\"not_found\",\"message\":\"no \\\"such\\\" thing\","
                         "\"request_id\":\"err-1\"}}") == 0);
    free_response(&r);
    hangup(cl);
    stop_server(s);
}

static void test_handler_error_keeps_connection(void) {
    httpd_server *s = start_server(default_opts());
    client *cl = dial(s);
    response r = {0};
    char v[64];
    int codes[] = {400, 401, 404, 409, 422, 500, 503};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        char req[128];
        snprintf(req, sizeof req, "GET /status?code=%d HTTP/1.1\r\nHost: x\r\n\r\n", codes[i]);
        send_str(cl, req);
        expect_response(cl, &r, codes[i]);
        CHECK(header(&r, "Connection", v, sizeof v) == NULL);
    }
    send_str(cl, "GET /error HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(cl, &r, 404);
    check_error_body(&r, "not_found");
    send_str(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(cl, &r, 200);
    /* extra headers, and their limits (checked in the handler) */
    send_str(cl, "GET /headers HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(header(&r, "X-One", v, sizeof v) && strcmp(v, "1") == 0);
    CHECK(header(&r, "X-Fill-15", v, sizeof v) != NULL);   /* 16 with X-One */
    CHECK(header(&r, "X-Fill-16", v, sizeof v) == NULL);
    CHECK(strstr(r.head, "Injected") == NULL);
    CHECK(still_open(cl, 50 * RT_MILLISECOND));
    free_response(&r);
    hangup(cl);
    stop_server(s);
}

static void test_connection_close_rules(void) {
    httpd_server *s = start_server(default_opts());
    response r = {0};
    char v[64];
    /* HTTP/1.0 without keep-alive: answered, then closed */
    client *cl = dial(s);
    send_str(cl, "GET /hello HTTP/1.0\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(closed_by_peer(cl, RT_SECOND));
    hangup(cl);
    /* HTTP/1.0 with keep-alive stays open and says so */
    cl = dial(s);
    send_str(cl, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(header(&r, "Connection", v, sizeof v) && strcasecmp(v, "keep-alive") == 0);
    send_str(cl, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(still_open(cl, 50 * RT_MILLISECOND));
    hangup(cl);
    /* Connection: close from the client */
    cl = dial(s);
    send_str(cl, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(header(&r, "Connection", v, sizeof v) && strcmp(v, "close") == 0);
    CHECK(closed_by_peer(cl, RT_SECOND));
    hangup(cl);
    /* httpd_set_close from the handler */
    cl = dial(s);
    send_str(cl, "GET /close HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(header(&r, "Connection", v, sizeof v) && strcmp(v, "close") == 0);
    CHECK(closed_by_peer(cl, RT_SECOND));
    hangup(cl);
    free_response(&r);
    stop_server(s);
}

static void expect_protocol_error(httpd_server *s, const char *req, size_t len, int status,
                                  const char *code) {
    client *cl = dial(s);
    response r = {0};
    char v[64];
    int wrc = rt_conn_write(cl->c, req, len);
    CHECK(wrc == RT_OK || wrc == RT_ECONNRESET);
    int64_t t0 = rt_nanotime();
    expect_response(cl, &r, status);
    CHECK(rt_nanotime() - t0 < TIMING_BOUND(RT_SECOND));
    check_error_body(&r, code);
    CHECK(header(&r, "Connection", v, sizeof v) && strcmp(v, "close") == 0);
    CHECK(closed_by_peer(cl, 2 * RT_SECOND));
    free_response(&r);
    hangup(cl);
}

static void test_malformed(void) {
    httpd_server *s = start_server(default_opts());
    httpd_stats st0, st;
    httpd_get_stats(s, &st0);
    const char *cases[] = {
        "THIS IS NOT HTTP\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello12",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "GET /heal thz HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nhello\r\n0\r\n\r\n",
        "\x01\x02\x03\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: x\r\nX\x7fY: v\r\n\r\n",
        "GET /hello HTTP/9.9\r\n\r\n",
        "GET /hello HTTP/1.1\r\n\r\n",                            /* no Host */
        "GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",      /* two */
    };
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) expect_protocol_error(s, cases[i], strlen(cases[i]), 400, "invalid_request");
    httpd_get_stats(s, &st);
    CHECK_EQ(st.protocol_errors - st0.protocol_errors, (uint64_t)n);
    CHECK_EQ(atomic_load(&done_last_status), 400);

    /* garbage after a good request: the good one is answered first */
    client *cl = dial(s);
    response r = {0};
    send_str(cl, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nokGARBAGE GARBAGE\r\n\r\n");
    expect_response(cl, &r, 200);
    CHECK(strcmp(r.body, "ok") == 0);
    expect_response(cl, &r, 400);
    CHECK(closed_by_peer(cl, 2 * RT_SECOND));
    free_response(&r);
    hangup(cl);
    stop_server(s);
}

static void test_limits(void) {
    httpd_server *s = start_server(default_opts());
    /* 17 KiB of headers: 431 */
    size_t cap = 32768;
    char *req = malloc(cap);
    size_t len = (size_t)sprintf(req, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 17; i++) {
        len += (size_t)sprintf(req + len, "X-Fill-%02d: ", i);
        memset(req + len, 'f', 1000);
        len += 1000;
        len += (size_t)sprintf(req + len, "\r\n");
    }
    len += (size_t)sprintf(req + len, "\r\n");
    expect_protocol_error(s, req, len, 431, "headers_too_large");
    /* one 17000-byte header, and a 20000-byte URI */
    len = (size_t)sprintf(req, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    memset(req + len, 'p', 17000);
    len += 17000;
    len += (size_t)sprintf(req + len, "\r\n\r\n");
    expect_protocol_error(s, req, len, 431, "headers_too_large");
    len = (size_t)sprintf(req, "GET /hello?pad=");
    memset(req + len, 'q', 20000);
    len += 20000;
    len += (size_t)sprintf(req + len, " HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_protocol_error(s, req, len, 431, "headers_too_large");
    /* 12 KiB of headers is fine */
    client *cl = dial(s);
    response r = {0};
    len = (size_t)sprintf(req, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 12; i++) {
        len += (size_t)sprintf(req + len, "X-Fill-%02d: ", i);
        memset(req + len, 'f', 1000);
        len += 1000;
        len += (size_t)sprintf(req + len, "\r\n");
    }
    len += (size_t)sprintf(req + len, "\r\n");
    CHECK_EQ(rt_conn_write(cl->c, req, len), RT_OK);
    expect_response(cl, &r, 200);
    hangup(cl);

    /* Content-Length: 70000, body not sent: 413 at once */
    const char *decl = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n{";
    expect_protocol_error(s, decl, strlen(decl), 413, "body_too_large");
    /* 65537 bytes actually sent */
    len = (size_t)sprintf(req, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n");
    char *big = malloc(len + 65537);
    memcpy(big, req, len);
    memset(big + len, 'b', 65537);
    expect_protocol_error(s, big, len + 65537, 413, "body_too_large");
    free(big);
    /* chunked over the limit */
    big = malloc(80000);
    len = (size_t)sprintf(big, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 9; i++) {
        len += (size_t)sprintf(big + len, "2000\r\n");
        memset(big + len, 'c', 8192);
        len += 8192;
        len += (size_t)sprintf(big + len, "\r\n");
    }
    len += (size_t)sprintf(big + len, "0\r\n\r\n");
    expect_protocol_error(s, big, len, 413, "body_too_large");
    free(big);
    free(req);
    free_response(&r);
    stop_server(s);
}

static void test_connection_cap(void) {
    httpd_options o = default_opts();
    o.max_conns = 2;
    httpd_server *s = start_server(o);
    response r = {0};
    char v[64];
    client *a = dial(s), *b = dial(s);
    send_str(a, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(a, &r, 200);
    send_str(b, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(b, &r, 200);
    client *c = dial(s);
    send_str(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(c, &r, 503);
    check_error_body(&r, "overloaded");
    CHECK(header(&r, "Retry-After", v, sizeof v) && strcmp(v, "1") == 0);
    CHECK(closed_by_peer(c, 2 * RT_SECOND));
    hangup(c);
    httpd_stats st;
    httpd_get_stats(s, &st);
    CHECK_EQ(st.conns_rejected, 1);
    CHECK_EQ(st.conns_open, 2);
    /* one leaves: a new one is served */
    hangup(a);
    int64_t t0 = rt_nanotime();
    for (;;) {
        httpd_get_stats(s, &st);
        if (st.conns_open == 1) break;
        CHECK(rt_nanotime() - t0 < TIMING_BOUND(2 * RT_SECOND));
        rt_sleep(RT_MILLISECOND);
    }
    c = dial(s);
    send_str(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(c, &r, 200);
    hangup(c);
    hangup(b);
    free_response(&r);
    stop_server(s);
}

static void test_timeouts(void) {
    httpd_options o = default_opts();
    o.header_timeout_ns = 200 * RT_MILLISECOND;
    o.read_timeout_ns = 400 * RT_MILLISECOND;
    o.idle_timeout_ns = 300 * RT_MILLISECOND;
    httpd_server *s = start_server(o);
    response r = {0};
    char v[64];

    /* slowloris: half a head, then nothing: 408 and close at ~header_timeout */
    client *cl = dial(s);
    int64_t t0 = rt_nanotime();
    send_str(cl, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    expect_response(cl, &r, 408);
    int64_t el = rt_nanotime() - t0;
    CHECK(el >= 150 * RT_MILLISECOND && el < TIMING_BOUND(RT_SECOND));
    check_error_body(&r, "request_timeout");
    CHECK(header(&r, "Connection", v, sizeof v) && strcmp(v, "close") == 0);
    CHECK(closed_by_peer(cl, 2 * RT_SECOND));
    hangup(cl);

    /* the head trickling in byte by byte does not extend the deadline */
    cl = dial(s);
    t0 = rt_nanotime();
    const char *head = "GET /hello HTTP/1.1\r\nHost: x\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    bool got = false;
    for (const char *p = head; *p && !got; p++) {
        if (rt_conn_write(cl->c, p, 1) != RT_OK) break;
        rt_sleep(20 * RT_MILLISECOND);
        char b[1];
        rt_conn_set_read_deadline(cl->c, rt_nanotime() + RT_MILLISECOND);
        int64_t n = rt_conn_read(cl->c, b, 1);
        if (n == 1) {
            cl->buf[cl->len++] = b[0];
            got = true;
        }
    }
    CHECK(got);
    expect_response(cl, &r, 408);
    el = rt_nanotime() - t0;
    CHECK(el < TIMING_BOUND(RT_SECOND));
    hangup(cl);

    /* body too slow: 408 at ~read_timeout */
    cl = dial(s);
    t0 = rt_nanotime();
    send_str(cl, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    expect_response(cl, &r, 408);
    el = rt_nanotime() - t0;
    CHECK(el >= 350 * RT_MILLISECOND && el < TIMING_BOUND(1500 * RT_MILLISECOND));
    hangup(cl);

    /* connected, never sends: closed silently at ~header_timeout */
    cl = dial(s);
    t0 = rt_nanotime();
    CHECK(closed_by_peer(cl, 2 * RT_SECOND));
    el = rt_nanotime() - t0;
    CHECK(el >= 150 * RT_MILLISECOND && el < TIMING_BOUND(RT_SECOND));
    hangup(cl);

    /* idle keep-alive: closed silently at ~idle_timeout after the response */
    cl = dial(s);
    send_str(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(cl, &r, 200);
    t0 = rt_nanotime();
    CHECK(closed_by_peer(cl, 2 * RT_SECOND));
    el = rt_nanotime() - t0;
    CHECK(el >= 250 * RT_MILLISECOND && el < TIMING_BOUND(RT_SECOND));
    hangup(cl);

    /* requests keep an active connection alive past the idle timeout */
    cl = dial(s);
    for (int i = 0; i < 5; i++) {
        send_str(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        expect_response(cl, &r, 200);
        rt_sleep(150 * RT_MILLISECOND);
    }
    hangup(cl);
    free_response(&r);
    stop_server(s);
}

static void test_shutdown_drains(void) {
    httpd_server *s = start_server(default_opts());
    response r = {0};
    char v[64];
    /* one idle keep-alive connection, one with a slow request in flight */
    client *idle = dial(s);
    send_str(idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(idle, &r, 200);
    client *busy = dial(s);
    atomic_store(&slow_started, 0);
    send_str(busy, "GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n");
    while (atomic_load(&slow_started) == 0) rt_sleep(RT_MILLISECOND);

    int64_t t0 = rt_nanotime();
    CHECK(httpd_draining(s) == false);
    CHECK_EQ(httpd_shutdown(s, 5 * RT_SECOND), RT_OK);
    int64_t el = rt_nanotime() - t0;
    CHECK(el >= 200 * RT_MILLISECOND && el < TIMING_BOUND(2 * RT_SECOND));
    CHECK(httpd_draining(s));
    /* the idle one was closed; the busy one got its answer, then close */
    CHECK(closed_by_peer(idle, RT_SECOND));
    expect_response(busy, &r, 200);
    CHECK(strcmp(r.body, "{\"draining\":true}") == 0);
    CHECK(header(&r, "Connection", v, sizeof v) && strcmp(v, "close") == 0);
    CHECK(closed_by_peer(busy, RT_SECOND));
    /* no longer accepting */
    rt_conn *c = NULL;
    int rc = rt_dial(&c, "127.0.0.1", httpd_port(s));
    if (rc == RT_OK) {
        char b[8];
        rt_conn_set_read_deadline(c, rt_nanotime() + RT_SECOND);
        int64_t n = rt_conn_read(c, b, sizeof b);
        CHECK(n == 0 || n == RT_ECONNRESET);
        rt_conn_close(c);
    } else {
        CHECK_EQ(rc, RT_ECONNREFUSED);
    }
    httpd_stats st;
    httpd_get_stats(s, &st);
    CHECK_EQ(st.conns_open, 0);
    CHECK_EQ(httpd_shutdown(s, RT_SECOND), RT_ESTATE);
    httpd_free(s);
    cur_server = NULL;
    hangup(idle);
    hangup(busy);
    free_response(&r);
}

static void test_shutdown_stuck_handler(void) {
    httpd_server *s = start_server(default_opts());
    client *cl = dial(s);
    atomic_store(&slow_started, 0);
    send_str(cl, "GET /slow?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n");
    while (atomic_load(&slow_started) == 0) rt_sleep(RT_MILLISECOND);
    int64_t t0 = rt_nanotime();
    CHECK_EQ(httpd_shutdown(s, 200 * RT_MILLISECOND), RT_ETIMEDOUT);
    int64_t el = rt_nanotime() - t0;
    CHECK(el >= 190 * RT_MILLISECOND && el < TIMING_BOUND(RT_SECOND));
    /* the connection was cut */
    CHECK(closed_by_peer(cl, RT_SECOND));
    hangup(cl);
    /* freeing while the handler still sleeps is safe: it holds the server */
    cur_server = NULL;
    httpd_free(s);
}

static void test_shutdown_unstarted_and_listen_errors(void) {
    httpd_options o = default_opts();
    httpd_server *s = NULL, *s2 = NULL;
    char err[128];
    CHECK_EQ(httpd_listen(&o, &s, err, sizeof err), RT_OK);
    o.port = httpd_port(s);
    CHECK_EQ(httpd_listen(&o, &s2, err, sizeof err), RT_EADDRINUSE);
    CHECK(s2 == NULL);
    char want[64];
    snprintf(want, sizeof want, "listen 127.0.0.1:%d: ", o.port);
    CHECK(strncmp(err, want, strlen(want)) == 0);
    CHECK(strstr(err, "in use") != NULL);
    CHECK_EQ(httpd_shutdown(s, RT_SECOND), RT_OK);   /* never started: nothing to drain */
    httpd_free(s);
    httpd_free(NULL);

    httpd_options bad = {0};
    CHECK_EQ(httpd_listen(&bad, &s, err, sizeof err), RT_EINVAL);
    bad.handler = test_handler;
    bad.port = 70000;
    CHECK_EQ(httpd_listen(&bad, &s, err, sizeof err), RT_EINVAL);
    bad.port = 0;
    bad.host = "not-an-ip";
    CHECK(httpd_listen(&bad, &s, err, sizeof err) < 0);
    CHECK(strlen(err) > 0);
}

static void test_on_done_counts(void) {
    httpd_server *s = start_server(default_opts());
    int before = atomic_load(&done_calls);
    client *cl = dial(s);
    response r = {0};
    send_str(cl, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(cl, &r, 200);
    expect_response(cl, &r, 404);
    hangup(cl);
    free_response(&r);
    stop_server(s);
    CHECK_EQ(atomic_load(&done_calls) - before, 2);
}

static int run(void *arg) {
    (void)arg;
    RUN(test_simple_get);
    RUN(test_post_echo);
    RUN(test_keepalive_many);
    RUN(test_pipelining);
    RUN(test_request_ids);
    RUN(test_handler_error_keeps_connection);
    RUN(test_connection_close_rules);
    RUN(test_malformed);
    RUN(test_limits);
    RUN(test_connection_cap);
    RUN(test_timeouts);
    RUN(test_shutdown_drains);
    RUN(test_shutdown_stuck_handler);
    RUN(test_shutdown_unstarted_and_listen_errors);
    RUN(test_on_done_counts);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
