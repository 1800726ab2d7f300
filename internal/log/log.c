/*
 * log.c — ledgerd's structured logger (see include/log.h for the contract).
 *
 * Design
 *   A record is formatted into a fixed buffer on the caller's stack
 *   (LOG_LINE_MAX bytes) and handed to the sink with one write(2), so lines
 *   from concurrent goroutines and threads never interleave (O_APPEND files
 *   and pipes up to PIPE_BUF write a record atomically).  No allocation, no
 *   lock on the hot path: the logger works from a signal-waiting thread, from
 *   goroutines, and before or after the runtime runs.
 *
 * Truncation
 *   The buffer keeps LOG_RESERVE bytes back for the record's end.  A field
 *   whose key or scalar value does not fit is dropped whole; a string value
 *   that does not fit is cut at a character boundary (never inside a UTF-8
 *   sequence or an escape).  Once anything was cut, no further field is
 *   written, the open string (if any) is closed, and the record ends with the
 *   marker field truncated=true — so a truncated JSON record is still one
 *   valid JSON object, and says that it was cut.
 *
 * Escaping (json, and quoted text values)
 *   '"' and '\' are backslash-escaped; \n \r \t \b \f by name; every other
 *   byte below 0x20 and 0x7f as \u00XX.  Valid UTF-8 (shortest form, no
 *   surrogates, at most U+10FFFF) passes through unchanged.  A byte that is
 *   not part of a valid UTF-8 sequence is written as \u00XX, XX being the
 *   byte: the record stays valid UTF-8/JSON and the original byte value can
 *   still be read off the log (a reader decodes it as U+00XX).  Text format
 *   quotes a value (and the message) when it is empty or holds anything but
 *   printable ASCII other than '"', '=' and '\'; quoted text uses the same
 *   escapes, unquoted text needs none.
 *
 * Global state (documented, as the header says): the format and minimum
 * level (atomics, set at start-up), the sink descriptor (atomic; stderr until
 * log_open_file) and the file's path (guarded by file_lock, which serialises
 * log_open_file and log_reopen).  log_reopen opens the file anew and dup2()s
 * the new descriptor over the sink's number, so a writer that loaded the
 * number concurrently writes to the old or the new file, never to a closed
 * descriptor.
 */
#define _GNU_SOURCE 1   /* dup3 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096     /* one record, newline included */
#define LOG_RESERVE 32        /* room kept for: '"' ,"truncated":true} '\n' */

static _Atomic int g_format = LOG_FORMAT_JSON;
static _Atomic int g_level = LOG_INFO;
static _Atomic int g_fd = STDERR_FILENO;

static pthread_mutex_t file_lock = PTHREAD_MUTEX_INITIALIZER;
static char file_path[PATH_MAX];     /* "" while logging to stderr */
static bool file_open;

/* ------------------------------------------------------------ settings */

void log_set_format(log_format f) { atomic_store(&g_format, (int)f); }
log_format log_get_format(void) { return (log_format)atomic_load(&g_format); }
void log_set_level(log_level min) { atomic_store(&g_level, (int)min); }
int log_fd(void) { return atomic_load(&g_fd); }

int log_parse_format(const char *s, log_format *out) {
    if (s == NULL || out == NULL) return -EINVAL;
    if (strcmp(s, "json") == 0) *out = LOG_FORMAT_JSON;
    else if (strcmp(s, "text") == 0) *out = LOG_FORMAT_TEXT;
    else return -EINVAL;
    return 0;
}

int log_parse_level(const char *s, log_level *out) {
    static const char *const names[] = { "debug", "info", "warn", "error" };
    if (s == NULL || out == NULL) return -EINVAL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

static const char *level_name(log_level l) {
    switch (l) {
    case LOG_DEBUG: return "debug";
    case LOG_INFO: return "info";
    case LOG_WARN: return "warn";
    case LOG_ERROR: return "error";
    case LOG_FATAL: return "fatal";
    }
    return "unknown";
}

/* ---------------------------------------------------------------- sink */

static int open_log_file(const char *path) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    return fd < 0 ? -errno : fd;
}

/* Put fd's file under the sink's descriptor number (held under file_lock). */
static int install_sink_locked(int fd) {
    if (!file_open) {
        atomic_store(&g_fd, fd);
        file_open = true;
        return 0;
    }
    int sink = atomic_load(&g_fd);
    int rc = 0;
    while (dup3(fd, sink, O_CLOEXEC) < 0) {
        if (errno != EINTR && errno != EBUSY) {
            rc = -errno;
            break;
        }
    }
    close(fd);
    return rc;
}

int log_open_file(const char *path) {
    if (path == NULL || path[0] == '\0') return -EINVAL;
    if (strlen(path) >= sizeof file_path) return -ENAMETOOLONG;
    int fd = open_log_file(path);
    if (fd < 0) return fd;
    pthread_mutex_lock(&file_lock);
    int rc = install_sink_locked(fd);
    if (rc == 0) snprintf(file_path, sizeof file_path, "%s", path);
    pthread_mutex_unlock(&file_lock);
    return rc;
}

int log_reopen(void) {
    pthread_mutex_lock(&file_lock);
    int rc = 0;
    if (file_open) {
        int fd = open_log_file(file_path);
        rc = fd < 0 ? fd : install_sink_locked(fd);
    }
    pthread_mutex_unlock(&file_lock);
    return rc;
}

/* Write the whole record; a short write (a pipe past PIPE_BUF) continues.
 * Errors are dropped: there is nowhere left to report them. */
static void sink_write(const char *p, size_t n) {
    int fd = atomic_load(&g_fd);
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* -------------------------------------------------------------- buffer */

typedef struct lbuf {
    size_t len;
    size_t limit;        /* LOG_LINE_MAX - LOG_RESERVE */
    bool truncated;      /* something was cut: write no more fields */
    bool in_string;      /* a quoted value is open (close it on truncation) */
    char d[LOG_LINE_MAX];
} lbuf;

/* Append n bytes, all or nothing. */
static bool put(lbuf *b, const char *s, size_t n) {
    if (b->truncated) return false;
    if (n > b->limit - b->len) {
        b->truncated = true;
        return false;
    }
    memcpy(b->d + b->len, s, n);
    b->len += n;
    return true;
}

static bool puts_(lbuf *b, const char *s) { return put(b, s, strlen(s)); }

/* Appending past the reserve: only the record's end uses this. */
static void put_tail(lbuf *b, const char *s) {
    size_t n = strlen(s);
    if (n > sizeof b->d - b->len) n = sizeof b->d - b->len;
    memcpy(b->d + b->len, s, n);
    b->len += n;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) return 0;
    return len;
}

/* Append s escaped (see the top); stops (truncated) at the last whole
 * character that fits. */
static void put_escaped(lbuf *b, const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        char esc[8];
        const char *out = esc;
        size_t outlen;
        size_t consumed = 1;
        if (c == '"') { out = "\\\""; outlen = 2; }
        else if (c == '\\') { out = "\\\\"; outlen = 2; }
        else if (c == '\n') { out = "\\n"; outlen = 2; }
        else if (c == '\r') { out = "\\r"; outlen = 2; }
        else if (c == '\t') { out = "\\t"; outlen = 2; }
        else if (c == '\b') { out = "\\b"; outlen = 2; }
        else if (c == '\f') { out = "\\f"; outlen = 2; }
        else if (c < 0x20 || c == 0x7f) {
            outlen = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
        } else if (c < 0x80) {
            out = (const char *)s + i;
            outlen = 1;
        } else {
            size_t seq = utf8_seq_len(s + i, n - i);
            if (seq == 0) {
                outlen = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
            } else {
                out = (const char *)s + i;
                outlen = seq;
                consumed = seq;
            }
        }
        if (!put(b, out, outlen)) return;
        i += consumed;
    }
}

/* Text format: does this string need quotes? */
static bool text_needs_quotes(const char *s) {
    if (s[0] == '\0') return true;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '=' || *p == '\\') return true;
    }
    return false;
}

static void put_string_value(lbuf *b, const char *s, bool json) {
    if (s == NULL) {
        puts_(b, "null");
        return;
    }
    bool quote = json || text_needs_quotes(s);
    if (quote) {
        if (!put(b, "\"", 1)) return;
        b->in_string = true;
    }
    put_escaped(b, s);
    if (quote && !b->truncated) {
        put(b, "\"", 1);
        b->in_string = false;
    }
}

static void put_scalar(lbuf *b, const log_field *f, bool json) {
    char num[64];
    int n = 0;
    switch (f->type) {
    case LOG_F_INT:
        n = snprintf(num, sizeof num, "%" PRId64, f->v.i);
        break;
    case LOG_F_FLOAT:
        /* JSON has no NaN or infinities. */
        if (!isfinite(f->v.f)) n = snprintf(num, sizeof num, "%s", json ? "null" : "NaN");
        else n = snprintf(num, sizeof num, "%.15g", f->v.f);
        break;
    case LOG_F_BOOL:
        n = snprintf(num, sizeof num, "%s", f->v.b ? "true" : "false");
        break;
    default:
        n = snprintf(num, sizeof num, "null");
        break;
    }
    put(b, num, (size_t)n);
}

/* One field; a field whose key or scalar does not fit is rolled back whole. */
static void put_field(lbuf *b, const log_field *f, bool json) {
    if (b->truncated || f->key == NULL) return;
    size_t mark = b->len;
    if (json) {
        put(b, ",\"", 2);
        put_escaped(b, f->key);
        put(b, "\":", 2);
    } else {
        put(b, " ", 1);
        put_escaped(b, f->key);
        put(b, "=", 1);
    }
    if (!b->truncated && f->type == LOG_F_STR) {
        size_t value_start = b->len;
        put_string_value(b, f->v.s, json);
        /* A cut string stays (cut); a value that could not even begin
         * (its opening quote did not fit) takes its key with it. */
        if (b->truncated && (b->len == value_start || (json && !b->in_string))) b->len = mark;
        return;
    }
    if (!b->truncated) put_scalar(b, f, json);
    if (b->truncated) b->len = mark;
}

static void put_timestamp(lbuf *b) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char t[40];
    int n = snprintf(t, sizeof t, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000);
    put(b, t, (size_t)n);
}

static void finish(lbuf *b, bool json) {
    if (b->truncated) {
        if (b->in_string) put_tail(b, "\"");
        put_tail(b, json ? ",\"truncated\":true" : " truncated=true");
    }
    if (json) put_tail(b, "}");
    put_tail(b, "\n");
}

void log_write(log_level level, const char *msg, const log_field *fields, size_t n) {
    if (level < LOG_FATAL && (int)level < atomic_load(&g_level)) return;
    bool json = atomic_load(&g_format) == LOG_FORMAT_JSON;
    lbuf b;
    b.len = 0;
    b.limit = sizeof b.d - LOG_RESERVE;
    b.truncated = false;
    b.in_string = false;
    if (msg == NULL) msg = "";

    if (json) {
        put(&b, "{\"ts\":\"", 7);
        put_timestamp(&b);
        put(&b, "\",\"level\":\"", 11);
        puts_(&b, level_name(level));
        put(&b, "\",\"msg\":", 8);
    } else {
        put_timestamp(&b);
        put(&b, " ", 1);
        puts_(&b, level_name(level));
        put(&b, " ", 1);
    }
    put_string_value(&b, msg, json);
    for (size_t i = 0; i < n && fields != NULL; i++) put_field(&b, &fields[i], json);
    finish(&b, json);
    sink_write(b.d, b.len);
}
