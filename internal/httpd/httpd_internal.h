/*
 * httpd_internal.h — what server.c, conn.c and response.c share.  Nothing
 * here is part of the module's interface (that is include/httpd.h).
 *
 * Ownership summary (details in server.c's design note):
 *   httpd_server  reference counted (refs): the owner (httpd_listen ..
 *                 httpd_free), the accept goroutine, and every connection
 *                 goroutine hold one, so a handler stuck past shutdown never
 *                 touches freed memory.
 *   httpd_conn    owned by its goroutine, which frees it on exit after
 *                 unlinking it from the registry under reg_mu.
 *   rt_conn       two references per registered connection: the goroutine's
 *                 (from rt_accept) and the registry's (reg_ref), which
 *                 httpd_shutdown uses to close it from another goroutine.
 */
#ifndef LEDGERD_HTTPD_INTERNAL_H
#define LEDGERD_HTTPD_INTERNAL_H

#include "httpd.h"
#include "llhttp.h"

#include <stdatomic.h>
#include <time.h>

/* Size of each connection's read buffer (the parser copies what it keeps, so
 * this bounds only the size of one read, not of a request). */
#define HTTPD_READBUF 8192
/* Extra headers a handler may add (httpd_add_header). */
#define HTTPD_EXTRA_HEADERS_MAX 16
#define HTTPD_EXTRA_BYTES_MAX 4096
/* Pipelined responses are batched into one write, but never more than this
 * much before writing (a client that pipelines without reading must not grow
 * the buffer without bound). */
#define HTTPD_OUT_FLUSH 65536
/* Buffers that grew past this for one big request or response are freed
 * after it rather than kept for the connection's lifetime. */
#define HTTPD_KEEP_BYTES ((size_t)256 * 1024)
/* After an error that closes the connection, unread input is drained for at
 * most this long / this much before the close, so the kernel does not turn
 * the close into a RST that destroys the error response in flight. */
#define HTTPD_LINGER_NS (500 * RT_MILLISECOND)
#define HTTPD_LINGER_BYTES ((size_t)256 * 1024)
/* Request ids are taken from the server's counter in blocks, so connections
 * do not contend on one cache line per request. */
#define HTTPD_ID_BLOCK 256

/* A growable byte buffer, reused across requests (len reset, memory kept). */
typedef struct hbuf {
    char *p;
    size_t len, cap;
} hbuf;

int hbuf_reserve(hbuf *b, size_t extra);   /* room for `extra` more bytes */
int hbuf_append(hbuf *b, const void *data, size_t len);
void hbuf_free(hbuf *b);

/* Date header text for one second, per connection (see response.c). */
typedef struct httpd_date_cache {
    time_t sec;
    char text[32];   /* "Tue, 01 Dec 2026 20:21:19 GMT" */
    size_t len;
} httpd_date_cache;

struct httpd_response {
    int status;
    const char *content_type;
    bool close;
    int nextra;
    hbuf extra;      /* "Name: value\r\n"... (lazily allocated) */
    hbuf body;
};

typedef struct httpd_server httpd_server;

/* Where a header's name and value live in the head arena, while parsing
 * (the arena may move when it grows; pointers are made at dispatch). */
typedef struct hdr_span {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
} hdr_span;

typedef enum conn_phase {
    PHASE_IDLE,      /* between requests: nothing of the next one seen */
    PHASE_HEAD,      /* request begun, head incomplete */
    PHASE_BODY,      /* head complete, body incomplete */
    PHASE_DONE,      /* message complete, waiting for dispatch */
} conn_phase;

typedef struct httpd_conn {
    httpd_server *srv;
    rt_conn *conn;
    /* registry links and state, under srv->reg_mu */
    struct httpd_conn *prev, *next;
    bool reg_ref;                 /* the registry still holds its rt_conn ref */
    _Atomic int busy;             /* 0 while waiting for a request (closable) */

    llhttp_t parser;
    conn_phase phase;
    int fail_status;              /* set by a callback that rejected the input */
    const char *fail_code, *fail_msg;
    int64_t read_ns;              /* when the bytes being parsed arrived */
    int64_t req_first_ns;         /* first byte of the current request */
    int64_t rdeadline;            /* read deadline currently set (0 none) */
    size_t head_count;            /* request line + headers, counted as Go does */
    size_t head_raw;              /* raw bytes fed while the head was incomplete */
    int hstate;                   /* 0 between headers, 1 in a name, 2 in a value */
    bool keep_alive;              /* llhttp_should_keep_alive at completion */
    bool upgrade;
    bool url_done, has_query;
    uint64_t served;              /* requests completed on this connection */
    int64_t idle_since;           /* accept, or the end of the last response */
    int64_t wdeadline;            /* write deadline currently set (0 none) */
    uint64_t batch_n;             /* responses in `out` not yet written */

    /* the request being parsed: copies in the head arena */
    hbuf arena;
    uint32_t url_off, url_len, path_off, path_len;
    hdr_span *spans;
    size_t nspans, spans_cap;
    httpd_header *hdrs;           /* made from spans at dispatch */
    size_t hdrs_cap;
    hbuf body;
    httpd_request req;

    httpd_response resp;
    hbuf out;                     /* responses waiting to be written */
    httpd_date_cache date;
    uint64_t id_next, id_end;     /* this connection's block of request ids */
    char rid[HTTPD_REQUEST_ID_MAX + 1];

    char rbuf[HTTPD_READBUF];
} httpd_conn;

struct httpd_server {
    httpd_options opts;           /* defaults filled in */
    char host[64];
    int port;
    rt_listener *listener;        /* NULL once shutdown closed it */
    rt_listener *accept_listener; /* the accept goroutine's own reference */
    _Atomic int refs;
    _Atomic bool draining;
    bool started;
    bool shut;
    char id_prefix[17];           /* 16 random hex digits, per process start */
    _Atomic uint64_t id_counter;

    rt_mutex reg_mu;              /* guards the registry below */
    httpd_conn *conns;            /* live registered connections */
    size_t nconns;
    rt_chan *drained;             /* closed when draining and nconns == 0 */
    bool drained_closed;

    /* statistics on their own cache line (written on every batch) */
    struct {
        _Atomic int64_t conns_open;
        _Atomic uint64_t conns_accepted;
        _Atomic uint64_t conns_rejected;
        _Atomic uint64_t requests;
        _Atomic uint64_t protocol_errors;
    } __attribute__((aligned(64))) st;
};

/* server.c */
void httpd_server_unref(httpd_server *s);
/* Register a new connection; false (and the caller closes it) when the
 * server is draining. */
bool httpd_register(httpd_server *s, httpd_conn *c);
void httpd_unregister(httpd_server *s, httpd_conn *c);

/* conn.c */
httpd_conn *httpd_conn_new(httpd_server *s, rt_conn *conn);   /* NULL: no memory */
void httpd_conn_free(httpd_conn *c);
void httpd_conn_main(void *arg);     /* goroutine: serve one connection */
/* A connection over max_conns (owns one rt_conn ref and one server ref). */
typedef struct httpd_reject {
    httpd_server *srv;
    rt_conn *conn;
} httpd_reject;
void httpd_reject_main(void *arg);   /* goroutine: 503 over the cap */

/* response.c */
void httpd_response_init(httpd_response *r);
void httpd_response_reset(httpd_response *r);
void httpd_response_free(httpd_response *r);
/* Append the complete response (head + body) to out.  head_only: a HEAD
 * request (no body bytes).  http10_keepalive: add "Connection: keep-alive". */
int httpd_response_serialize(hbuf *out, httpd_response *r, const char *request_id,
                             httpd_date_cache *date, bool head_only,
                             bool http10_keepalive);
bool httpd_request_id_valid(const char *s, size_t len);
/* A fresh id into buf (at least 40 bytes): "<prefix>-<hex counter>". */
void httpd_request_id_fresh(httpd_server *s, uint64_t *next, uint64_t *end, char *buf);
const char *httpd_reason(int status);
/* Status + the API's error body naming request_id (for the server's own
 * errors, which have no handler connection to take the id from). */
int httpd_error_body_for(httpd_response *resp, int status, const char *code,
                         const char *message, const char *request_id);

#endif /* LEDGERD_HTTPD_INTERNAL_H */
