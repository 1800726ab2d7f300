/*
 * response.c — the handler-facing response API, and turning a response into
 * bytes on the wire.
 *
 * A response lives in its connection and is reused: the body and the extra
 * headers are growable buffers whose memory stays with the connection, so a
 * keep-alive connection allocates nothing per request once warmed up.
 * httpd_response_serialize appends head and body to the connection's output
 * buffer in one piece (one rt_conn_write per batch, see conn.c).
 *
 * Extra headers are kept preformatted ("Name: value\r\n"); names and values
 * with CR, LF or NUL are refused (RT_EINVAL) so a handler cannot be tricked
 * into response splitting, and the server's own headers (Content-Length,
 * Date, Content-Type, X-Request-Id, Connection) are refused too.
 *
 * Date.  Each connection caches the formatted Date for the current second
 * (httpd_date_cache): the clock is read with CLOCK_REALTIME_COARSE (a vDSO
 * read, no syscall) and the text rebuilt only when the second changes.  No
 * shared state, so no lock and no cache-line traffic between connections;
 * the civil-date conversion is done here (days-to-civil) because glibc's
 * gmtime_r takes the timezone lock.
 *
 * Request ids.  A client's X-Request-Id is kept when it is 1..128 bytes of
 * [A-Za-z0-9._-]; otherwise the id is the server's random prefix (16 hex
 * digits from libsodium at httpd_listen) '-' a counter in hex.  Connections
 * take counter values in blocks of HTTPD_ID_BLOCK from the server's atomic,
 * so ids are unique per server and the atomic is touched once per block.
 */
#define _GNU_SOURCE
#include "httpd_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------- buffers */

int hbuf_reserve(hbuf *b, size_t extra) {
    if (b->cap - b->len >= extra) return RT_OK;
    size_t need = b->len + extra;
    if (need < b->len) return RT_ENOMEM;   /* overflow */
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return RT_ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) return RT_ENOMEM;
    b->p = p;
    b->cap = cap;
    return RT_OK;
}

int hbuf_append(hbuf *b, const void *data, size_t len) {
    int rc = hbuf_reserve(b, len);
    if (rc) return rc;
    if (len) memcpy(b->p + b->len, data, len);
    b->len += len;
    return RT_OK;
}

void hbuf_free(hbuf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------- the response API */

void httpd_response_init(httpd_response *r) {
    memset(r, 0, sizeof *r);
    httpd_response_reset(r);
}

void httpd_response_reset(httpd_response *r) {
    r->status = 200;
    r->content_type = "application/json";
    r->close = false;
    r->nextra = 0;
    r->extra.len = 0;
    r->body.len = 0;
}

void httpd_response_free(httpd_response *r) {
    hbuf_free(&r->extra);
    hbuf_free(&r->body);
}

void httpd_set_status(httpd_response *resp, int status) {
    if (status >= 100 && status <= 999) resp->status = status;
}

void httpd_set_content_type(httpd_response *resp, const char *content_type) {
    if (content_type) resp->content_type = content_type;
}

static bool header_text_ok(const char *s) {
    for (; *s; s++)
        if (*s == '\r' || *s == '\n') return false;
    return true;
}

static bool header_name_ok(const char *name) {
    static const char *const reserved[] = {"Content-Length", "Date", "Content-Type",
                                           "X-Request-Id", "Connection",
                                           "Transfer-Encoding"};
    if (!*name || !header_text_ok(name) || strchr(name, ':') || strchr(name, ' '))
        return false;
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcasecmp(name, reserved[i]) == 0) return false;
    return true;
}

int httpd_add_header(httpd_response *resp, const char *name, const char *value) {
    if (!name || !value || !header_name_ok(name) || !header_text_ok(value)) return RT_EINVAL;
    size_t nl = strlen(name), vl = strlen(value);
    size_t need = nl + 2 + vl + 2;
    if (resp->nextra >= HTTPD_EXTRA_HEADERS_MAX || resp->extra.len + need > HTTPD_EXTRA_BYTES_MAX)
        return RT_ELIMIT;
    int rc = hbuf_reserve(&resp->extra, need);
    if (rc) return rc;
    char *p = resp->extra.p + resp->extra.len;
    memcpy(p, name, nl);
    p += nl;
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, value, vl);
    p += vl;
    *p++ = '\r';
    *p++ = '\n';
    resp->extra.len += need;
    resp->nextra++;
    return RT_OK;
}

int httpd_body_append(httpd_response *resp, const void *data, size_t len) {
    if (!data && len) return RT_EINVAL;
    return hbuf_append(&resp->body, data, len);
}

int httpd_body_printf(httpd_response *resp, const char *fmt, ...) {
    va_list ap;
    size_t room = resp->body.cap - resp->body.len;
    va_start(ap, fmt);
    int n = vsnprintf(room ? resp->body.p + resp->body.len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) return RT_EINVAL;
    if ((size_t)n >= room) {   /* did not fit: grow and format again */
        int rc = hbuf_reserve(&resp->body, (size_t)n + 1);
        if (rc) return rc;
        va_start(ap, fmt);
        vsnprintf(resp->body.p + resp->body.len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    resp->body.len += (size_t)n;
    return RT_OK;
}

void httpd_body_reset(httpd_response *resp) { resp->body.len = 0; }

void httpd_set_close(httpd_response *resp) { resp->close = true; }

/* Append s as the inside of a JSON string (quotes not included). */
static int json_escape_append(hbuf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    int rc = hbuf_reserve(b, strlen(s) * 6);
    if (rc) return rc;
    char *p = b->p + b->len;
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (*u == '"' || *u == '\\') {
            *p++ = '\\';
            *p++ = (char)*u;
        } else if (*u < 0x20 || *u == 0x7f) {
            memcpy(p, "\\u00", 4);
            p[4] = hex[*u >> 4];
            p[5] = hex[*u & 15];
            p += 6;
        } else {
            *p++ = (char)*u;
        }
    }
    b->len = (size_t)(p - b->p);
    return RT_OK;
}

static int error_body(httpd_response *resp, const char *code, const char *message,
                      const char *request_id) {
    resp->body.len = 0;
    int rc = hbuf_append(&resp->body, "{\"error\":{\"code\":\"", 18);
    if (!rc) rc = json_escape_append(&resp->body, code ? code : "");
    if (!rc) rc = hbuf_append(&resp->body, "\",\"message\":\"", 13);
    if (!rc) rc = json_escape_append(&resp->body, message ? message : "");
    if (!rc) rc = hbuf_append(&resp->body, "\",\"request_id\":\"", 16);
    if (!rc) rc = json_escape_append(&resp->body, request_id ? request_id : "");
    if (!rc) rc = hbuf_append(&resp->body, "\"}}", 3);
    if (rc) resp->body.len = 0;
    return rc;
}

void httpd_respond_error(httpd_response *resp, int status, const char *code,
                         const char *message) {
    /* The response is embedded in its connection, which knows the id. */
    httpd_conn *c = (httpd_conn *)((char *)resp - offsetof(httpd_conn, resp));
    httpd_set_status(resp, status);
    resp->content_type = "application/json";
    error_body(resp, code, message, c->rid);
}

/* ------------------------------------------------------------ the head */

const char *httpd_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

/* Days since 1970-01-01 to y/m/d (Howard Hinnant's days_from_civil inverse). */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

static void date_refresh(httpd_date_cache *dc) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec == dc->sec && dc->len) return;
    static const char wd[7][4] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
    static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    int64_t t = ts.tv_sec, days = t / 86400, sod = t % 86400;
    if (sod < 0) { sod += 86400; days--; }
    int y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    int64_t w = days % 7;
    if (w < 0) w += 7;
    int n = snprintf(dc->text, sizeof dc->text, "%s, %02u %s %04d %02d:%02d:%02d GMT",
                     wd[w], d, mon[m - 1], y, (int)(sod / 3600), (int)(sod / 60 % 60),
                     (int)(sod % 60));
    dc->len = n > 0 && (size_t)n < sizeof dc->text ? (size_t)n : 0;
    dc->sec = ts.tv_sec;
}

/* Decimal digits of v into p; returns the count. */
static size_t put_u64(char *p, uint64_t v) {
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) p[i] = tmp[n - 1 - i];
    return n;
}

#define PUT_LIT(p, s) (memcpy((p), (s), sizeof(s) - 1), (p) += sizeof(s) - 1)

static void put_str(char **pp, const char *s, size_t n) {
    memcpy(*pp, s, n);
    *pp += n;
}

int httpd_response_serialize(hbuf *out, httpd_response *r, const char *request_id,
                             httpd_date_cache *date, bool head_only,
                             bool http10_keepalive) {
    date_refresh(date);
    int status = r->status;
    /* 1xx, 204 and 304 carry no body (RFC 9110 §6.4.1). */
    bool no_body = status < 200 || status == 204 || status == 304;
    size_t body_len = no_body ? 0 : r->body.len;
    const char *reason = httpd_reason(status);
    size_t rid_len = strlen(request_id), ct_len = strlen(r->content_type);
    size_t head_max = 64 + strlen(reason) + 16 + ct_len + 40 + date->len + 16 + rid_len +
                      24 + 26 + r->extra.len + 2;
    int rc = hbuf_reserve(out, head_max + (head_only ? 0 : body_len));
    if (rc) return rc;
    char *p = out->p + out->len;
    PUT_LIT(p, "HTTP/1.1 ");
    p += put_u64(p, (uint64_t)status);
    *p++ = ' ';
    put_str(&p, reason, strlen(reason));
    PUT_LIT(p, "\r\nContent-Type: ");
    put_str(&p, r->content_type, ct_len);
    if (status != 204 && status >= 200) {
        PUT_LIT(p, "\r\nContent-Length: ");
        p += put_u64(p, body_len);
    }
    PUT_LIT(p, "\r\nDate: ");
    put_str(&p, date->text, date->len);
    PUT_LIT(p, "\r\nX-Request-Id: ");
    put_str(&p, request_id, rid_len);
    if (r->close) PUT_LIT(p, "\r\nConnection: close");
    else if (http10_keepalive) PUT_LIT(p, "\r\nConnection: keep-alive");
    PUT_LIT(p, "\r\n");
    if (r->extra.len) put_str(&p, r->extra.p, r->extra.len);
    PUT_LIT(p, "\r\n");
    if (body_len && !head_only) put_str(&p, r->body.p, body_len);
    out->len = (size_t)(p - out->p);
    return RT_OK;
}

/* ---------------------------------------------------------- request ids */

bool httpd_request_id_valid(const char *s, size_t len) {
    if (len < 1 || len > HTTPD_REQUEST_ID_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
        if (!ok) return false;
    }
    return true;
}

void httpd_request_id_fresh(httpd_server *s, uint64_t *next, uint64_t *end, char *buf) {
    static const char hex[] = "0123456789abcdef";
    if (*next == *end) {
        *next = atomic_fetch_add_explicit(&s->id_counter, HTTPD_ID_BLOCK, memory_order_relaxed);
        *end = *next + HTTPD_ID_BLOCK;
    }
    uint64_t v = (*next)++;
    memcpy(buf, s->id_prefix, 16);
    buf[16] = '-';
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = hex[v & 15];
        v >>= 4;
    } while (v);
    for (size_t i = 0; i < n; i++) buf[17 + i] = tmp[n - 1 - i];
    buf[17 + n] = 0;
}

int httpd_error_body_for(httpd_response *resp, int status, const char *code,
                         const char *message, const char *request_id) {
    httpd_set_status(resp, status);
    resp->content_type = "application/json";
    return error_body(resp, code, message, request_id);
}
