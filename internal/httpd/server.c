/*
 * server.c — ledgerd's HTTP/1.1 server: listening, accepting, the
 * connection registry, graceful shutdown, statistics.
 *
 * DESIGN
 *
 * Goroutines.  One accept goroutine (accept_main) and one goroutine per
 * connection (conn.c: httpd_conn_main), which reads, parses with llhttp,
 * runs the handler and writes, Go net/http style.  A handler that blocks
 * parks only its connection's goroutine.  Connections over max_conns get a
 * short-lived goroutine that answers 503 `overloaded` (Retry-After: 1),
 * without reading the request, and closes (httpd_reject_main).
 *
 * Files.  server.c: lifetime, registry, shutdown, stats.  conn.c: the
 * per-connection loop, the llhttp callbacks, limits and timeouts.
 * response.c: the handler-facing response API, serialization, the Date
 * cache and request ids.
 *
 * Hot path (a keep-alive GET): no allocation per request (every buffer is
 * per connection and reused), one read, one llhttp_execute, the handler, one
 * response serialized head + body into one buffer, one rt_conn_write.  The
 * Date text is cached per connection per second; request ids come from a
 * per-connection block of the server's counter; the requests counter is
 * bumped once per write batch.  Deadlines are re-armed only when they drift
 * (conn.c).
 *
 * Lifetime and references.
 *   - httpd_server is reference counted (refs): the owner's reference runs
 *     from httpd_listen to httpd_free; the accept goroutine and each
 *     connection (or reject) goroutine hold one.  So a handler still stuck
 *     after httpd_shutdown gave up on it, or after httpd_free, never touches
 *     freed memory: the last goroutine out frees the server.
 *   - The listener: the server's reference (closed by shutdown, or by free
 *     if never shut down) and the accept goroutine's own (rt.h: a goroutine
 *     that may call into an object another goroutine closes holds its own).
 *   - Each served rt_conn: the connection goroutine's reference (from
 *     rt_accept) and the registry's (reg_ref), which httpd_shutdown spends
 *     to close the connection from its goroutine, waking a blocked read or
 *     write with RT_ECLOSED.  The goroutine drops the registry's reference
 *     itself if shutdown never used it.
 *
 * Registry.  reg_mu guards the doubly linked list of live connections,
 * their reg_ref flags, nconns and the `drained` channel.  A connection is
 * linked before its goroutine starts and unlinked when it ends (one lock per
 * connection, none per request).  Registering fails once draining is set, so
 * a connection accepted in the instant shutdown closes the listener is
 * closed rather than served.
 *
 * Shutdown (httpd_shutdown): set draining; close the listener (the accept
 * goroutine sees RT_ECLOSED and ends); close every connection whose `busy`
 * is 0 (waiting for its next request; see conn.c for why the busy/draining
 * handshake cannot miss one); connections with a request in flight finish
 * it, answer with Connection: close and end.  The last connection to
 * unregister while draining closes `drained`; shutdown waits on it in an
 * rt_select against an rt_after timer (no polling), and on timeout closes
 * whatever is still registered and returns RT_ETIMEDOUT.
 *
 * Statistics are relaxed atomics on their own cache line.  conns_accepted
 * counts every accepted socket, including those then rejected over the cap
 * (conns_rejected); conns_open counts served connections (incremented by
 * the accept goroutine before the cap check of the next accept, so the cap
 * is exact); requests counts responses written successfully;
 * protocol_errors the server's own 400/408/413/431 answers.
 *
 * Global state: none.  The llhttp settings table in conn.c is constant.
 */
#define _GNU_SOURCE
#include "httpd_internal.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ lifetime */

static void server_ref(httpd_server *s) { atomic_fetch_add(&s->refs, 1); }

void httpd_server_unref(httpd_server *s) {
    if (atomic_fetch_sub(&s->refs, 1) != 1) return;
    if (s->listener) rt_listener_close(s->listener);
    rt_chan_release(s->drained);
    free(s);
}

static void set_errmsg(char *errmsg, size_t errlen, const char *fmt, const char *a,
                       int port, const char *why) {
    if (errmsg && errlen) snprintf(errmsg, errlen, fmt, a, port, why);
}

static void apply_defaults(httpd_options *o) {
    if (!o->host) o->host = "127.0.0.1";
    if (o->backlog <= 0) o->backlog = 1024;
    if (o->max_conns <= 0) o->max_conns = 10000;
    if (!o->max_header_bytes) o->max_header_bytes = 16384;
    if (!o->max_body_bytes) o->max_body_bytes = 65536;
    if (o->header_timeout_ns <= 0) o->header_timeout_ns = 10 * RT_SECOND;
    if (o->read_timeout_ns <= 0) o->read_timeout_ns = 30 * RT_SECOND;
    if (o->idle_timeout_ns <= 0) o->idle_timeout_ns = 120 * RT_SECOND;
    if (o->write_timeout_ns <= 0) o->write_timeout_ns = 30 * RT_SECOND;
}

int httpd_listen(const httpd_options *opts, httpd_server **out, char *errmsg, size_t errlen) {
    if (errmsg && errlen) errmsg[0] = 0;
    if (!out) return RT_EINVAL;
    *out = NULL;
    if (!opts || !opts->handler || opts->port < 0 || opts->port > 65535) {
        if (errmsg && errlen) snprintf(errmsg, errlen, "listen: invalid options");
        return RT_EINVAL;
    }
    /* the parser keeps offsets in 32 bits */
    if (opts->max_header_bytes > ((size_t)1 << 30) || opts->max_body_bytes > ((size_t)1 << 40)) {
        if (errmsg && errlen) snprintf(errmsg, errlen, "listen: limits too large");
        return RT_EINVAL;
    }
    if (sodium_init() < 0) {
        if (errmsg && errlen) snprintf(errmsg, errlen, "listen: libsodium failed to initialise");
        return RT_ESYS;
    }
    httpd_server *s = calloc(1, sizeof *s);
    if (!s) return RT_ENOMEM;
    s->opts = *opts;
    apply_defaults(&s->opts);
    if (strlen(s->opts.host) >= sizeof s->host) {
        free(s);
        if (errmsg && errlen) snprintf(errmsg, errlen, "listen: host too long");
        return RT_EINVAL;
    }
    strcpy(s->host, s->opts.host);
    s->opts.host = s->host;
    unsigned char rnd[8];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(s->id_prefix, sizeof s->id_prefix, rnd, sizeof rnd);
    atomic_init(&s->refs, 1);
    int rc = rt_chan_make(&s->drained, 0, 0);
    if (rc) {
        free(s);
        return rc;
    }
    rc = rt_listen(&s->listener, s->host, s->opts.port, s->opts.backlog);
    if (rc) {
        set_errmsg(errmsg, errlen, "listen %s:%d: %s", s->host, s->opts.port, rt_strerror(rc));
        s->listener = NULL;
        httpd_server_unref(s);
        return rc;
    }
    s->port = rt_listener_port(s->listener);
    *out = s;
    return RT_OK;
}

int httpd_port(httpd_server *s) { return s ? s->port : -1; }

bool httpd_draining(httpd_server *s) { return s && atomic_load(&s->draining); }

void httpd_get_stats(httpd_server *s, httpd_stats *out) {
    if (!s || !out) return;
    out->conns_open = atomic_load_explicit(&s->st.conns_open, memory_order_relaxed);
    out->conns_accepted = atomic_load_explicit(&s->st.conns_accepted, memory_order_relaxed);
    out->conns_rejected = atomic_load_explicit(&s->st.conns_rejected, memory_order_relaxed);
    out->requests = atomic_load_explicit(&s->st.requests, memory_order_relaxed);
    out->protocol_errors = atomic_load_explicit(&s->st.protocol_errors, memory_order_relaxed);
}

void httpd_free(httpd_server *s) {
    if (!s) return;
    if (s->listener) {   /* never shut down: stop accepting at least */
        rt_listener_close(s->listener);
        s->listener = NULL;
    }
    httpd_server_unref(s);
}

/* ------------------------------------------------------------ registry */

bool httpd_register(httpd_server *s, httpd_conn *c) {
    rt_mutex_lock(&s->reg_mu);
    bool ok = !atomic_load(&s->draining);
    if (ok) {
        rt_conn_retain(c->conn);
        c->reg_ref = true;
        c->prev = NULL;
        c->next = s->conns;
        if (s->conns) s->conns->prev = c;
        s->conns = c;
        s->nconns++;
    }
    rt_mutex_unlock(&s->reg_mu);
    return ok;
}

/* Under reg_mu: the last connection out while draining wakes shutdown. */
static void signal_if_drained_locked(httpd_server *s) {
    if (atomic_load(&s->draining) && s->nconns == 0 && !s->drained_closed) {
        s->drained_closed = true;
        rt_chan_close(s->drained);
    }
}

void httpd_unregister(httpd_server *s, httpd_conn *c) {
    rt_mutex_lock(&s->reg_mu);
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    if (c->reg_ref) {
        c->reg_ref = false;
        rt_conn_release(c->conn);
    }
    signal_if_drained_locked(s);
    rt_mutex_unlock(&s->reg_mu);
}

/* Under reg_mu: close connections (all, or only those between requests)
 * with the registry's reference. */
static void close_conns_locked(httpd_server *s, bool idle_only) {
    for (httpd_conn *c = s->conns; c; c = c->next) {
        if (!c->reg_ref || (idle_only && atomic_load(&c->busy))) continue;
        c->reg_ref = false;
        rt_conn_close(c->conn);
    }
}

/* -------------------------------------------------------------- accept */

static void reject_conn(httpd_server *s, rt_conn *conn) {
    atomic_fetch_add_explicit(&s->st.conns_rejected, 1, memory_order_relaxed);
    httpd_reject *rj = malloc(sizeof *rj);
    if (!rj) {
        rt_conn_close(conn);
        return;
    }
    rj->srv = s;
    rj->conn = conn;
    server_ref(s);
    if (rt_go(httpd_reject_main, rj) != RT_OK) {
        free(rj);
        rt_conn_close(conn);
        httpd_server_unref(s);
    }
}

static void serve_conn(httpd_server *s, rt_conn *conn) {
    httpd_conn *c = httpd_conn_new(s, conn);
    if (!c) {
        rt_conn_close(conn);
        return;
    }
    if (!httpd_register(s, c)) {   /* shutdown began */
        rt_conn_close(conn);
        httpd_conn_free(c);
        return;
    }
    atomic_fetch_add_explicit(&s->st.conns_open, 1, memory_order_relaxed);
    server_ref(s);
    if (rt_go(httpd_conn_main, c) != RT_OK) {
        rt_conn_close(conn);
        atomic_fetch_sub_explicit(&s->st.conns_open, 1, memory_order_relaxed);
        httpd_unregister(s, c);
        httpd_conn_free(c);
        httpd_server_unref(s);
    }
}

static void accept_main(void *arg) {
    httpd_server *s = arg;
    rt_listener *l = s->accept_listener;
    int64_t backoff = 0;
    for (;;) {
        rt_conn *conn = NULL;
        int rc = rt_accept(l, &conn);
        if (rc == RT_ECLOSED) break;
        if (rc != RT_OK) {
            /* out of descriptors or memory: back off as Go's Serve does,
             * 5 ms doubling to 1 s, instead of spinning */
            backoff = backoff ? backoff * 2 : 5 * RT_MILLISECOND;
            if (backoff > RT_SECOND) backoff = RT_SECOND;
            rt_sleep(backoff);
            continue;
        }
        backoff = 0;
        atomic_fetch_add_explicit(&s->st.conns_accepted, 1, memory_order_relaxed);
        if (atomic_load_explicit(&s->st.conns_open, memory_order_relaxed) >= s->opts.max_conns)
            reject_conn(s, conn);
        else
            serve_conn(s, conn);
    }
    rt_listener_release(l);
    httpd_server_unref(s);
}

int httpd_start(httpd_server *s) {
    if (!s) return RT_EINVAL;
    if (s->started || !s->listener) return RT_ESTATE;
    s->started = true;
    s->accept_listener = s->listener;
    rt_listener_retain(s->accept_listener);
    server_ref(s);
    int rc = rt_go(accept_main, s);
    if (rc != RT_OK) {
        rt_listener_release(s->accept_listener);
        httpd_server_unref(s);
        s->started = false;
    }
    return rc;
}

/* ------------------------------------------------------------ shutdown */

int httpd_shutdown(httpd_server *s, int64_t timeout_ns) {
    if (!s) return RT_EINVAL;
    if (s->shut) return RT_ESTATE;
    s->shut = true;
    atomic_store(&s->draining, true);
    if (s->listener) {
        rt_listener_close(s->listener);
        s->listener = NULL;
    }
    rt_mutex_lock(&s->reg_mu);
    close_conns_locked(s, true);
    signal_if_drained_locked(s);
    rt_mutex_unlock(&s->reg_mu);

    rt_chan *timer = rt_after(timeout_ns > 0 ? timeout_ns : 0);
    if (!timer) return RT_ENOMEM;
    rt_select_case cases[2] = {RT_RECV_CASE(s->drained, NULL), RT_RECV_CASE(timer, NULL)};
    int which = rt_select(cases, 2, false);
    rt_chan_release(timer);
    if (which == 0) return RT_OK;

    rt_mutex_lock(&s->reg_mu);
    close_conns_locked(s, false);
    rt_mutex_unlock(&s->reg_mu);
    return RT_ETIMEDOUT;
}
