/*
 * conn.c — one connection: read, parse with llhttp, call the handler, write.
 *
 * Runs on the connection's own goroutine (httpd_conn_main).  The loop:
 *
 *     while the read buffer has bytes: llhttp_execute on them
 *         message complete -> llhttp pauses (on_message_complete returns
 *         HPE_PAUSED), we dispatch: handler, serialize the response into
 *         `out`, then resume parsing where it stopped
 *     buffer dry -> write `out` (all pipelined responses in one write),
 *         arm the read deadline for the phase we are in, read more
 *
 * So the handler never runs inside llhttp_execute, and responses to
 * pipelined requests already buffered go out in one rt_conn_write (the write
 * happens when the buffer runs dry, or earlier past HTTPD_OUT_FLUSH bytes).
 * on_done runs after the write for the response that ends a batch (the
 * usual, unpipelined case), and right after queueing for the ones before it
 * in the batch (the request's copies are reused by the next request).
 *
 * Copies.  The llhttp callbacks copy the URL and header names/values into a
 * per-connection arena (NUL-terminated, values trimmed) and the body into a
 * per-connection body buffer; pointers for the handler are made at dispatch,
 * because the arena may move while it grows.  The read buffer is therefore
 * free for the next read at any time, and a request may straddle any number
 * of reads.  All buffers are kept across requests: no allocation per request
 * once a connection has seen its largest request.
 *
 * Phases and deadlines (all absolute, armed only when a read would block):
 *     IDLE  nothing of the next request yet: first request on a connection
 *           header_timeout from accept; later ones idle_timeout from the
 *           previous response.  Timing out here closes silently.
 *     HEAD  first byte .. end of head: first byte + min(header, read) timeout
 *     BODY  end of head .. end of body: first byte + read_timeout
 * Timing out in HEAD/BODY answers 408 request_timeout and closes.  A read
 * deadline already set is kept when it is within 1/16 of the timeout of the
 * wanted one (never later than wanted), which saves re-arming it on every
 * request of a busy keep-alive connection; the write deadline likewise is
 * re-armed only when less than half of write_timeout remains.
 *
 * Limits.  The head is counted the way Go's reference counts it (request
 * line + "name: value\r\n" per header) as the callbacks deliver it, so an
 * oversized head is refused as soon as it passes max_header_bytes (431); raw
 * bytes consumed while the head is incomplete are a backstop for input the
 * callbacks do not see (whitespace).  Content-Length above max_body_bytes is
 * refused in on_headers_complete (413) before any body byte is read; a
 * chunked body is refused as soon as its decoded size passes the limit.
 *
 * Errors the server answers itself (400, 408, 413, 431) close the
 * connection: the error response is written, the write side shut down, and
 * unread input drained for a short while (HTTPD_LINGER_*) so the close does
 * not become a RST that would destroy the response before the client reads
 * it.  An error response from a handler is an ordinary response.
 *
 * Shutdown interplay: `busy` is 0 only while the loop waits for the first
 * byte of a request.  The loop stores busy = 0 and then reads `draining`;
 * httpd_shutdown stores draining and then reads busy (both seq_cst), so an
 * idle connection is either closed by shutdown or sees draining itself.
 */
#define _GNU_SOURCE
#include "httpd_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static inline httpd_conn *conn_of(llhttp_t *p) { return p->data; }

/* ------------------------------------------------------ llhttp callbacks */

/* Record why the input is refused; the callback then returns an error. */
static int reject(httpd_conn *c, int status, const char *code, const char *msg) {
    c->fail_status = status;
    c->fail_code = code;
    c->fail_msg = msg;
    return HPE_USER;
}

static int reject_too_large_head(httpd_conn *c) {
    return reject(c, 431, "headers_too_large", "request head exceeds the header limit");
}

static int arena_put(httpd_conn *c, const char *at, size_t len) {
    c->head_count += len;
    if (c->head_count > c->srv->opts.max_header_bytes) return reject_too_large_head(c);
    if (hbuf_append(&c->arena, at, len))
        return reject(c, 503, "overloaded", "out of memory reading the request");
    return 0;
}

static int arena_nul(httpd_conn *c) {
    if (hbuf_append(&c->arena, "", 1))
        return reject(c, 503, "overloaded", "out of memory reading the request");
    return 0;
}

/* Forget the previous request's copies (memory kept). */
static void reset_request(httpd_conn *c) {
    c->head_count = c->head_raw = 0;
    c->arena.len = 0;
    c->url_off = c->url_len = 0;
    c->path_off = c->path_len = 0;
    c->has_query = false;
    c->url_done = false;
    c->nspans = 0;
    c->hstate = 0;
    c->body.len = 0;
    c->upgrade = false;
}

static int on_message_begin(llhttp_t *p) {
    httpd_conn *c = conn_of(p);
    c->phase = PHASE_HEAD;
    c->req_first_ns = c->read_ns;
    reset_request(c);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
    httpd_conn *c = conn_of(p);
    if (c->url_len == 0) c->url_off = (uint32_t)c->arena.len;
    c->url_len += (uint32_t)len;
    return arena_put(c, at, len);
}

/* NUL-terminate the target; when it has a query, also keep a NUL-terminated
 * copy of the path so handlers may treat it as a C string. */
static int on_url_complete(llhttp_t *p) {
    httpd_conn *c = conn_of(p);
    if (c->url_len == 0) c->url_off = (uint32_t)c->arena.len;
    c->head_count += 16;   /* method, spaces, version, CRLF */
    if (c->head_count > c->srv->opts.max_header_bytes) return reject_too_large_head(c);
    int rc = arena_nul(c);
    if (rc) return rc;
    const char *url = c->arena.p + c->url_off;
    const char *q = memchr(url, '?', c->url_len);
    c->path_off = c->url_off;
    c->path_len = c->url_len;
    if (q) {
        c->has_query = true;
        c->path_len = (uint32_t)(q - url);
        c->path_off = (uint32_t)c->arena.len;
        if (hbuf_reserve(&c->arena, c->path_len + 1))
            return reject(c, 503, "overloaded", "out of memory reading the request");
        /* reserve may move the arena: recompute url */
        memcpy(c->arena.p + c->arena.len, c->arena.p + c->url_off, c->path_len);
        c->arena.len += c->path_len;
        c->arena.p[c->arena.len++] = 0;
    }
    c->url_done = true;
    return 0;
}

/* RFC 9110 token characters: header names must be made of them.  llhttp's
 * non-strict build lets some through (a space, "Bad Name"), so they are
 * checked here, against request smuggling through odd names. */
static bool is_tchar(unsigned char ch) {
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && memchr(extra, ch, sizeof extra - 1));
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    httpd_conn *c = conn_of(p);
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)at[i]))
            return reject(c, 400, "invalid_request", "malformed HTTP request: invalid header name");
    if (c->hstate != 1) {   /* a new header begins */
        if (c->nspans == c->spans_cap) {
            size_t ncap = c->spans_cap ? c->spans_cap * 2 : 16;
            hdr_span *ns = realloc(c->spans, ncap * sizeof *ns);
            if (!ns) return reject(c, 503, "overloaded", "out of memory reading the request");
            c->spans = ns;
            c->spans_cap = ncap;
        }
        hdr_span *h = &c->spans[c->nspans++];
        h->name_off = (uint32_t)c->arena.len;
        h->name_len = h->value_off = h->value_len = 0;
        c->hstate = 1;
    }
    c->spans[c->nspans - 1].name_len += (uint32_t)len;
    return arena_put(c, at, len);
}

static int on_header_field_complete(llhttp_t *p) {
    httpd_conn *c = conn_of(p);
    c->head_count += 4;   /* ": " and CRLF */
    if (c->head_count > c->srv->opts.max_header_bytes) return reject_too_large_head(c);
    int rc = arena_nul(c);
    if (rc) return rc;
    hdr_span *h = &c->spans[c->nspans - 1];
    h->value_off = (uint32_t)c->arena.len;
    h->value_len = 0;
    c->hstate = 2;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    httpd_conn *c = conn_of(p);
    for (size_t i = 0; i < len; i++) {   /* no control characters but HTAB */
        unsigned char ch = (unsigned char)at[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return reject(c, 400, "invalid_request", "malformed HTTP request: invalid header value");
    }
    c->spans[c->nspans - 1].value_len += (uint32_t)len;
    return arena_put(c, at, len);
}

/* Trim blanks off the value and NUL-terminate it. */
static int finish_header_value(httpd_conn *c) {
    hdr_span *h = &c->spans[c->nspans - 1];
    const char *v = c->arena.p + h->value_off;
    while (h->value_len && (v[h->value_len - 1] == ' ' || v[h->value_len - 1] == '\t'))
        h->value_len--;
    while (h->value_len && (*v == ' ' || *v == '\t')) {
        v++;
        h->value_off++;
        h->value_len--;
    }
    c->hstate = 0;
    size_t end = h->value_off + h->value_len;
    if (end == c->arena.len) return arena_nul(c);
    c->arena.p[end] = 0;
    return 0;
}

static int on_header_value_complete(llhttp_t *p) {
    httpd_conn *c = conn_of(p);
    if (c->hstate != 2) return 0;
    return finish_header_value(c);
}

static const hdr_span *find_span(const httpd_conn *c, const char *name, size_t complete) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < complete; i++) {
        const hdr_span *h = &c->spans[i];
        if (h->name_len == nl && strncasecmp(c->arena.p + h->name_off, name, nl) == 0) return h;
    }
    return NULL;
}

static int flush_out(httpd_conn *c);

/* RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host (as Go's
 * net/http, whose 400 the reference server answers with). */
static bool host_ok(const httpd_conn *c) {
    int n = 0;
    for (size_t i = 0; i < c->nspans; i++) {
        const hdr_span *h = &c->spans[i];
        if (h->name_len == 4 && strncasecmp(c->arena.p + h->name_off, "Host", 4) == 0) n++;
    }
    return n == 1;
}

/* "Expect: 100-continue" with a body to come: tell the client to send it
 * (after any responses queued before this request, to keep the order). */
static int send_continue(httpd_conn *c) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (hbuf_append(&c->out, cont, sizeof cont - 1))
        return reject(c, 503, "overloaded", "out of memory");
    if (flush_out(c)) {
        c->fail_status = -1;   /* the connection is gone: no answer */
        return -1;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p) {
    httpd_conn *c = conn_of(p);
    if (c->hstate == 2 && finish_header_value(c)) return -1;
    c->hstate = 0;
    c->phase = PHASE_BODY;
    c->req.start_ns = c->read_ns;   /* when the bytes completing the head arrived */
    c->head_count += 2;
    if (c->head_count > c->srv->opts.max_header_bytes) {
        reject_too_large_head(c);
        return -1;
    }
    if (p->http_major == 1 && p->http_minor >= 1 && !host_ok(c)) {
        reject(c, 400, "invalid_request", "malformed HTTP request: an HTTP/1.1 request needs exactly one Host header");
        return -1;
    }
    bool has_cl = (p->flags & F_CONTENT_LENGTH) != 0;
    if (has_cl && p->content_length > c->srv->opts.max_body_bytes) {
        reject(c, 413, "body_too_large", "request body exceeds the body limit");
        return -1;
    }
    c->upgrade = p->upgrade != 0;
    bool body_expected = (has_cl && p->content_length > 0) || (p->flags & F_CHUNKED);
    if (body_expected && p->http_major == 1 && p->http_minor >= 1) {
        const hdr_span *e = find_span(c, "Expect", c->nspans);
        if (e && e->value_len == 12 && strncasecmp(c->arena.p + e->value_off, "100-continue", 12) == 0 &&
            send_continue(c))
            return -1;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    httpd_conn *c = conn_of(p);
    if (c->body.len + len > c->srv->opts.max_body_bytes)
        return reject(c, 413, "body_too_large", "request body exceeds the body limit");
    /* +1: room for the NUL the handler gets */
    if (hbuf_reserve(&c->body, len + 1))
        return reject(c, 503, "overloaded", "out of memory reading the request");
    memcpy(c->body.p + c->body.len, at, len);
    c->body.len += len;
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    httpd_conn *c = conn_of(p);
    c->keep_alive = llhttp_should_keep_alive(p) != 0;
    c->phase = PHASE_DONE;
    return HPE_PAUSED;   /* dispatch outside llhttp_execute */
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------------- helpers */

static void request_id_for(httpd_conn *c, size_t complete_headers) {
    const hdr_span *h = find_span(c, "X-Request-Id", complete_headers);
    if (h && httpd_request_id_valid(c->arena.p + h->value_off, h->value_len)) {
        memcpy(c->rid, c->arena.p + h->value_off, h->value_len);
        c->rid[h->value_len] = 0;
    } else {
        httpd_request_id_fresh(c->srv, &c->id_next, &c->id_end, c->rid);
    }
}

/* Point the handler's view at the copies (complete: a finished request;
 * otherwise whatever of a malformed one was parsed). */
static void build_request(httpd_conn *c, bool complete) {
    httpd_request *r = &c->req;
    const char *a = c->arena.p;
    if (c->url_done) {
        r->method = llhttp_method_name((llhttp_method_t)c->parser.method);
        r->target = a + c->url_off;
        r->path = a + c->path_off;
        r->path_len = c->path_len;
        r->query = c->has_query ? a + c->url_off + c->path_len + 1 : NULL;
        r->query_len = c->has_query ? c->url_len - c->path_len - 1 : 0;
    } else {
        r->method = r->target = r->path = "";
        r->path_len = 0;
        r->query = NULL;
        r->query_len = 0;
    }
    size_t n = complete ? c->nspans : (c->nspans && c->hstate != 0 ? c->nspans - 1 : c->nspans);
    if (n > c->hdrs_cap) {
        httpd_header *nh = realloc(c->hdrs, n * sizeof *nh);
        if (nh) {
            c->hdrs = nh;
            c->hdrs_cap = n;
        } else {
            n = c->hdrs_cap;   /* out of memory: the handler sees fewer */
        }
    }
    for (size_t i = 0; i < n; i++) {
        const hdr_span *s = &c->spans[i];
        c->hdrs[i] = (httpd_header){a + s->name_off, s->name_len, a + s->value_off, s->value_len};
    }
    r->headers = c->hdrs;
    r->nheaders = n;
    if (c->body.cap > c->body.len) c->body.p[c->body.len] = 0;
    r->body = c->body.len ? c->body.p : "";
    r->body_len = c->body.len;
    r->chunked = complete && (c->parser.flags & F_CHUNKED);
    if (!complete) r->start_ns = c->req_first_ns ? c->req_first_ns : rt_nanotime();
    request_id_for(c, n);
    r->request_id = c->rid;
}

static void arm_read_deadline(httpd_conn *c, int64_t want, int64_t timeout) {
    int64_t cur = c->rdeadline;
    if (cur && cur <= want && want - cur <= timeout / 16) return;
    rt_conn_set_read_deadline(c->conn, want);
    c->rdeadline = want;
}

static int flush_out(httpd_conn *c) {
    if (!c->out.len) return RT_OK;
    httpd_server *s = c->srv;
    int64_t now = rt_nanotime(), wt = s->opts.write_timeout_ns;
    if (c->wdeadline == 0 || c->wdeadline - now < wt / 2) {
        c->wdeadline = now + wt;
        rt_conn_set_write_deadline(c->conn, c->wdeadline);
    }
    int rc = rt_conn_write(c->conn, c->out.p, c->out.len);
    c->out.len = 0;
    if (c->out.cap > HTTPD_KEEP_BYTES) hbuf_free(&c->out);   /* a rare big batch */
    if (rc == RT_OK && c->batch_n)
        atomic_fetch_add_explicit(&s->st.requests, c->batch_n, memory_order_relaxed);
    c->batch_n = 0;
    c->idle_since = now;   /* the idle timeout runs from the last write */
    return rc;
}

/* Drain unread input for a moment after an error, then let the caller close
 * (see the top: avoids a RST eating the error response). */
static void linger(httpd_conn *c) {
    if (rt_conn_shutdown_write(c->conn) != RT_OK) return;
    rt_conn_set_read_deadline(c->conn, rt_nanotime() + HTTPD_LINGER_NS);
    size_t total = 0;
    while (total < HTTPD_LINGER_BYTES) {
        int64_t n = rt_conn_read(c->conn, c->rbuf, sizeof c->rbuf);
        if (n <= 0) break;
        total += (size_t)n;
    }
}

static void call_on_done(httpd_conn *c, int status) {
    httpd_server *s = c->srv;
    if (s->opts.on_done)
        s->opts.on_done(s->opts.ud, &c->req, status, rt_nanotime() - c->req.start_ns);
}

/* Answer an error the server produces itself and close. */
static void respond_protocol_error(httpd_conn *c, int status, const char *code, const char *msg) {
    httpd_server *s = c->srv;
    atomic_fetch_add_explicit(&s->st.protocol_errors, 1, memory_order_relaxed);
    build_request(c, false);
    httpd_response *r = &c->resp;
    httpd_response_reset(r);
    httpd_error_body_for(r, status, code, msg, c->rid);
    r->close = true;
    int rc = httpd_response_serialize(&c->out, r, c->rid, &c->date, false, false);
    if (rc == RT_OK) {
        c->batch_n++;
        rc = flush_out(c);
    }
    call_on_done(c, status);
    if (rc == RT_OK) linger(c);
}

/* The message is complete: run the handler and queue (or write) its
 * response.  Returns false when the connection must close. */
static bool dispatch(httpd_conn *c, bool more_buffered) {
    httpd_server *s = c->srv;
    build_request(c, true);
    httpd_response *r = &c->resp;
    httpd_response_reset(r);
    s->opts.handler(s->opts.ud, &c->req, r);
    bool draining = atomic_load(&s->draining);
    if (!c->keep_alive || c->upgrade || draining) r->close = true;
    bool http10 = c->parser.http_major == 1 && c->parser.http_minor == 0;
    bool head_only = c->parser.method == HTTP_HEAD;
    int rc = httpd_response_serialize(&c->out, r, c->rid, &c->date, head_only,
                                      http10 && !r->close);
    if (rc != RT_OK) {   /* out of memory: nothing sensible can be sent */
        call_on_done(c, r->status);
        return false;
    }
    c->batch_n++;
    c->phase = PHASE_IDLE;
    if (!more_buffered || r->close || c->out.len >= HTTPD_OUT_FLUSH) rc = flush_out(c);
    call_on_done(c, r->status);
    if (r->body.cap > HTTPD_KEEP_BYTES) hbuf_free(&r->body);   /* a rare big body */
    reset_request(c);
    return rc == RT_OK && !r->close;
}

/* A read returned n <= 0: end the connection, answering 408 when a request
 * was under way and its deadline passed. */
static void read_ended(httpd_conn *c, int64_t n) {
    if (n == RT_ETIMEDOUT && (c->phase == PHASE_HEAD || c->phase == PHASE_BODY))
        respond_protocol_error(c, 408, "request_timeout",
                               "the request was not received in time");
}

/* The deadline a read in the current phase waits for, and its timeout. */
static int64_t phase_deadline(const httpd_conn *c, int64_t *timeout) {
    const httpd_options *o = &c->srv->opts;
    switch (c->phase) {
    case PHASE_HEAD: {
        int64_t t = o->header_timeout_ns < o->read_timeout_ns ? o->header_timeout_ns
                                                              : o->read_timeout_ns;
        *timeout = t;
        return c->req_first_ns + t;
    }
    case PHASE_BODY:
        *timeout = o->read_timeout_ns;
        return c->req_first_ns + o->read_timeout_ns;
    default:
        if (c->served == 0) {   /* first request: bounded by header_timeout */
            *timeout = o->header_timeout_ns;
            return c->idle_since + o->header_timeout_ns;
        }
        *timeout = o->idle_timeout_ns;
        return c->idle_since + o->idle_timeout_ns;
    }
}

/* Parse what the read buffer holds; dispatch complete requests.  Returns
 * false when the connection must close. */
static bool parse_buffered(httpd_conn *c, size_t *rpos, size_t rlen) {
    httpd_server *s = c->srv;
    while (*rpos < rlen) {
        const char *start = c->rbuf + *rpos;
        size_t len = rlen - *rpos;
        llhttp_errno_t err = llhttp_execute(&c->parser, start, len);
        if (err == HPE_OK) {
            *rpos = rlen;
            if (c->phase == PHASE_HEAD) {
                c->head_raw += len;
                if (c->head_raw > 2 * s->opts.max_header_bytes) {
                    respond_protocol_error(c, 431, "headers_too_large",
                                           "request head exceeds the header limit");
                    return false;
                }
            }
            return true;
        }
        if (err == HPE_PAUSED && c->phase == PHASE_DONE) {
            *rpos += (size_t)(llhttp_get_error_pos(&c->parser) - start);
            llhttp_resume(&c->parser);
            c->served++;
            if (!dispatch(c, *rpos < rlen)) return false;
            continue;
        }
        if (err == HPE_PAUSED_UPGRADE) return false;   /* answered; close */
        if (c->fail_status < 0) return false;          /* connection lost */
        if (c->fail_status) {
            respond_protocol_error(c, c->fail_status, c->fail_code, c->fail_msg);
        } else {
            char msg[160];
            const char *why = llhttp_get_error_reason(&c->parser);
            snprintf(msg, sizeof msg, "malformed HTTP request: %s",
                     why ? why : llhttp_errno_name(err));
            respond_protocol_error(c, 400, "invalid_request", msg);
        }
        return false;
    }
    return true;
}

static void conn_serve(httpd_conn *c) {
    httpd_server *s = c->srv;
    size_t rpos = 0, rlen = 0;
    for (;;) {
        if (!parse_buffered(c, &rpos, rlen)) return;
        if (c->out.len && flush_out(c) != RT_OK) return;
        if (c->phase == PHASE_IDLE) {
            atomic_store(&c->busy, 0);
            if (atomic_load(&s->draining)) return;
        }
        int64_t timeout;
        int64_t dl = phase_deadline(c, &timeout);
        arm_read_deadline(c, dl, timeout);
        int64_t n = rt_conn_read(c->conn, c->rbuf, sizeof c->rbuf);
        c->read_ns = rt_nanotime();
        if (n <= 0) {
            read_ended(c, n);
            return;
        }
        if (c->phase == PHASE_IDLE) atomic_store(&c->busy, 1);
        rpos = 0;
        rlen = (size_t)n;
    }
}

/* --------------------------------------------------- connection lifetime */

httpd_conn *httpd_conn_new(httpd_server *s, rt_conn *conn) {
    httpd_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->srv = s;
    c->conn = conn;
    atomic_init(&c->busy, 0);
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    httpd_response_init(&c->resp);
    if (rt_conn_peer_addr(conn, c->req.peer, sizeof c->req.peer) != RT_OK) c->req.peer[0] = 0;
    c->req.method = c->req.target = c->req.path = "";
    c->req.body = "";
    c->req.request_id = c->rid;
    c->idle_since = rt_nanotime();
    return c;
}

void httpd_conn_free(httpd_conn *c) {
    hbuf_free(&c->arena);
    hbuf_free(&c->body);
    hbuf_free(&c->out);
    httpd_response_free(&c->resp);
    free(c->spans);
    free(c->hdrs);
    free(c);
}

void httpd_conn_main(void *arg) {
    httpd_conn *c = arg;
    httpd_server *s = c->srv;
    conn_serve(c);
    rt_conn_close(c->conn);   /* the goroutine's own reference */
    atomic_fetch_sub_explicit(&s->st.conns_open, 1, memory_order_relaxed);
    httpd_unregister(s, c);
    httpd_conn_free(c);
    httpd_server_unref(s);
}

/* ------------------------------------------------------- over the cap */

void httpd_reject_main(void *arg) {
    httpd_reject *rj = arg;
    httpd_server *s = rj->srv;
    rt_conn *conn = rj->conn;
    free(rj);
    httpd_response r;
    httpd_response_init(&r);
    hbuf out = {0};
    httpd_date_cache date = {0};
    char rid[48];
    uint64_t next = 0, end = 0;
    httpd_request_id_fresh(s, &next, &end, rid);
    httpd_error_body_for(&r, 503, "overloaded", "too many connections", rid);
    httpd_add_header(&r, "Retry-After", "1");
    r.close = true;
    int64_t now = rt_nanotime();
    if (httpd_response_serialize(&out, &r, rid, &date, false, false) == RT_OK) {
        rt_conn_set_write_deadline(conn, now + RT_SECOND);
        if (rt_conn_write(conn, out.p, out.len) == RT_OK &&
            rt_conn_shutdown_write(conn) == RT_OK) {
            /* let the client's request arrive and be discarded, so the
             * close does not reset the connection under the 503 */
            char buf[2048];
            rt_conn_set_read_deadline(conn, rt_nanotime() + HTTPD_LINGER_NS);
            for (size_t total = 0; total < HTTPD_LINGER_BYTES;) {
                int64_t n = rt_conn_read(conn, buf, sizeof buf);
                if (n <= 0) break;
                total += (size_t)n;
            }
        }
    }
    if (s->opts.on_done) {
        httpd_request req = {.method = "", .target = "", .path = "", .body = "",
                             .request_id = rid, .start_ns = now};
        if (rt_conn_peer_addr(conn, req.peer, sizeof req.peer) != RT_OK) req.peer[0] = 0;
        s->opts.on_done(s->opts.ud, &req, 503, rt_nanotime() - now);
    }
    hbuf_free(&out);
    httpd_response_free(&r);
    rt_conn_close(conn);
    httpd_server_unref(s);
}

/* ------------------------------------------------------------- lookup */

const httpd_header *httpd_find_header(const httpd_request *req, const char *name) {
    if (!req || !name) return NULL;
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->nheaders; i++) {
        const httpd_header *h = &req->headers[i];
        if (h->name_len == nl && strcasecmp(h->name, name) == 0) return h;
    }
    return NULL;
}
