/*
 * httpd.h — ledgerd's HTTP/1.1 server on the goroutine runtime (the only
 * public header of internal/httpd).
 *
 * Model (Go's net/http): one goroutine accepts; every connection gets its own
 * goroutine, which reads requests with llhttp, calls the handler on that same
 * goroutine, and writes the response.  A handler may block in any runtime
 * call (channels, mutexes, the ledger): only its goroutine parks.
 *
 * Protocol
 *   - HTTP/1.1 keep-alive and pipelining: requests on one connection are
 *     answered in order; responses to pipelined requests that are already
 *     buffered are written together.  HTTP/1.0 closes unless keep-alive was
 *     asked for.
 *   - Request bodies: Content-Length or chunked (llhttp decodes it), at most
 *     max_body_bytes.  A declared Content-Length above the limit is answered
 *     413 at once, without waiting for the body, and the connection closes.
 *   - Request head (request line + headers) at most max_header_bytes: 431.
 *   - Malformed HTTP: 400 and the connection is closed.
 *   - Every response carries Content-Length, Content-Type, Date and
 *     X-Request-Id.  The request id is the client's X-Request-Id when it is 1
 *     to 128 characters of [A-Za-z0-9._-], else a fresh unique id.
 *   - Errors the server produces itself (400, 413, 431, 408-style timeouts,
 *     503 over the connection cap) have the API's error body:
 *     {"error":{"code":"...","message":"...","request_id":"..."}}.
 *
 * Limits and timeouts (slowloris)
 *   header_timeout: from the first byte of a request to the end of its head;
 *   read_timeout: from the first byte to the end of the body;
 *   idle_timeout: a keep-alive connection waiting for its next request;
 *   write_timeout: writing one batch of responses;
 *   max_conns: connections open at once; one more is answered 503
 *   `overloaded` (Retry-After: 1) and closed, without reading its request.
 *
 * Shutdown
 *   httpd_shutdown stops accepting, closes idle connections, lets requests
 *   in flight finish (their responses carry Connection: close), waits up to
 *   a timeout, then closes whatever is left.
 *
 * Errors are negative rt_error codes (rt_strerror names them).
 */
#ifndef LEDGERD_HTTPD_H
#define LEDGERD_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HTTPD_REQUEST_ID_MAX 128

typedef struct httpd_header {
    const char *name;       /* as sent; NUL-terminated */
    size_t name_len;
    const char *value;      /* leading/trailing blanks trimmed; NUL-terminated */
    size_t value_len;
} httpd_header;

/* One parsed request.  Every pointer is valid only during the handler call. */
typedef struct httpd_request {
    const char *method;     /* "GET", "POST", ... NUL-terminated */
    const char *target;     /* the raw request target, NUL-terminated */
    const char *path;       /* target up to '?', not percent-decoded */
    size_t path_len;
    const char *query;      /* after '?', not decoded; NULL if none */
    size_t query_len;
    const httpd_header *headers;
    size_t nheaders;
    const char *body;       /* decoded body (chunked or not); NUL-terminated */
    size_t body_len;
    bool chunked;           /* the body came with Transfer-Encoding: chunked */
    const char *request_id; /* see the top; NUL-terminated */
    int64_t start_ns;       /* rt_nanotime() when the head was complete */
    char peer[64];          /* "ip:port" of the client */
} httpd_request;

/* The first header named `name` (case-insensitive), or NULL. */
const httpd_header *httpd_find_header(const httpd_request *req, const char *name);

/* The response a handler fills in.  The server owns the buffers and reuses
 * them across requests on a connection. */
typedef struct httpd_response httpd_response;

void httpd_set_status(httpd_response *resp, int status);
/* Default "application/json".  The string must outlive the handler call
 * (a literal). */
void httpd_set_content_type(httpd_response *resp, const char *content_type);
/* Add a header (name and value copied).  Content-Length, Date,
 * Content-Type, X-Request-Id and Connection are the server's own.
 * RT_ELIMIT past 16 extra headers or 4 KiB of them. */
int httpd_add_header(httpd_response *resp, const char *name, const char *value);
/* Append to the body.  RT_ENOMEM if it cannot grow. */
int httpd_body_append(httpd_response *resp, const void *data, size_t len);
int httpd_body_printf(httpd_response *resp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Drop what the body holds so far (to replace it with an error). */
void httpd_body_reset(httpd_response *resp);
/* Close the connection after this response. */
void httpd_set_close(httpd_response *resp);
/* Status + the API's error body {"error":{"code","message","request_id"}},
 * replacing any body; message is JSON-escaped. */
void httpd_respond_error(httpd_response *resp, int status, const char *code,
                         const char *message);

/* Called on the connection's goroutine for every complete request.  It sets
 * at least the status (default 200) and usually a body. */
typedef void (*httpd_handler)(void *ud, const httpd_request *req, httpd_response *resp);

/* Called after each response was written (or failed to be), on the
 * connection's goroutine: logging and metrics.  req may be a partial request
 * (method "" or path "") when the request was malformed; status is what was
 * sent; duration from start_ns (or the first byte) to the end of the write. */
typedef void (*httpd_done_fn)(void *ud, const httpd_request *req, int status,
                              int64_t duration_ns);

typedef struct httpd_options {
    const char *host;            /* IPv4/IPv6 literal; NULL: "127.0.0.1" */
    int port;                    /* 0: pick a free one (httpd_port) */
    int backlog;                 /* 0: 1024 */
    int max_conns;               /* 0: 10000 */
    size_t max_header_bytes;     /* 0: 16384 */
    size_t max_body_bytes;       /* 0: 65536 */
    int64_t header_timeout_ns;   /* 0: 10 s */
    int64_t read_timeout_ns;     /* 0: 30 s */
    int64_t idle_timeout_ns;     /* 0: 120 s */
    int64_t write_timeout_ns;    /* 0: 30 s */
    httpd_handler handler;       /* required */
    httpd_done_fn on_done;       /* may be NULL */
    void *ud;                    /* passed to both */
} httpd_options;

typedef struct httpd_server httpd_server;

typedef struct httpd_stats {
    int64_t conns_open;          /* now */
    uint64_t conns_accepted;     /* since start */
    uint64_t conns_rejected;     /* over max_conns */
    uint64_t requests;           /* responses written */
    uint64_t protocol_errors;    /* 400/413/431 and timeouts from the server itself */
} httpd_stats;

/* Bind and listen (no goroutine yet).  RT_EADDRINUSE, RT_EINVAL, RT_ESYS,
 * RT_ENOMEM.  errmsg (may be NULL) gets a one-line reason. */
int httpd_listen(const httpd_options *opts, httpd_server **out, char *errmsg, size_t errlen);
/* The bound port. */
int httpd_port(httpd_server *s);
/* Start the accept goroutine; returns at once. */
int httpd_start(httpd_server *s);
/* Stop accepting, drain (see the top) for at most timeout_ns, then close
 * every connection.  Returns RT_OK when every connection finished on its
 * own, RT_ETIMEDOUT when some had to be cut.  Call once, from a goroutine. */
int httpd_shutdown(httpd_server *s, int64_t timeout_ns);
/* True once httpd_shutdown began (handlers answer 503 `draining`). */
bool httpd_draining(httpd_server *s);
void httpd_get_stats(httpd_server *s, httpd_stats *out);
/* Free a server that was shut down (or never started).  NULL ok. */
void httpd_free(httpd_server *s);

#ifdef __cplusplus
}
#endif
#endif /* LEDGERD_HTTPD_H */
