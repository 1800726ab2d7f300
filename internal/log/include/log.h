/*
 * log.h — ledgerd's structured logger (the only public header of
 * internal/log).
 *
 * One record is one line, written with a single write(2) so that lines from
 * concurrent goroutines never interleave:
 *   json:  {"ts":"2026-11-22T10:00:00.000Z","level":"info","msg":"...","k":v,...}
 *   text:  2026-11-22T10:00:00.000Z info msg k=v k="v with spaces" ...
 * Fields are typed (string, integer, float, bool); strings are JSON-escaped
 * (json) or quoted when they hold blanks or quotes (text).
 *
 * The sink is stderr by default, or a file opened O_APPEND (log_open_file);
 * log_reopen() reopens that file in place (SIGHUP, for logrotate) by
 * dup2-ing the new descriptor over the old one, so a concurrent write goes
 * to one file or the other, never nowhere.
 *
 * Global state: the format, the minimum level and the sink descriptor, set
 * at start-up before goroutines log (log_reopen may run at any time).
 * Every function returns 0 or -errno.
 */
#ifndef LEDGERD_LOG_H
#define LEDGERD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum log_format { LOG_FORMAT_JSON = 0, LOG_FORMAT_TEXT = 1 } log_format;
typedef enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_FATAL = 4 } log_level;

typedef enum log_field_type { LOG_F_STR = 1, LOG_F_INT, LOG_F_FLOAT, LOG_F_BOOL } log_field_type;
typedef struct log_field {
    const char *key;
    log_field_type type;
    union { const char *s; int64_t i; double f; bool b; } v;
} log_field;

#define LOG_STR(k, val)   ((log_field){ .key = (k), .type = LOG_F_STR, .v.s = (val) })
#define LOG_INT(k, val)   ((log_field){ .key = (k), .type = LOG_F_INT, .v.i = (int64_t)(val) })
#define LOG_FLOAT(k, val) ((log_field){ .key = (k), .type = LOG_F_FLOAT, .v.f = (double)(val) })
#define LOG_BOOL(k, val)  ((log_field){ .key = (k), .type = LOG_F_BOOL, .v.b = (val) })

void log_set_format(log_format f);
log_format log_get_format(void);
void log_set_level(log_level min);
/* Parse "json"/"text"; -EINVAL otherwise. */
int log_parse_format(const char *s, log_format *out);
/* Parse "debug"/"info"/"warn"/"error"; -EINVAL otherwise. */
int log_parse_level(const char *s, log_level *out);

/* Log to this file (created 0640, O_APPEND) instead of stderr. */
int log_open_file(const char *path);
/* Reopen the file given to log_open_file (no-op for stderr). */
int log_reopen(void);
/* The descriptor records go to (stderr's 2 by default). */
int log_fd(void);

/* Write one record with n fields.  Safe from any thread or goroutine. */
void log_write(log_level level, const char *msg, const log_field *fields, size_t n);

/* log_info("listening", LOG_STR("addr", a), LOG_INT("port", p)) */
#define LOG_FIELDS_(...) ((const log_field[]){ __VA_ARGS__ })
#define LOG_NFIELDS_(...) (sizeof(LOG_FIELDS_(__VA_ARGS__)) / sizeof(log_field))
#define log_info(msg, ...)  log_write(LOG_INFO, (msg), LOG_FIELDS_(__VA_ARGS__), LOG_NFIELDS_(__VA_ARGS__))
#define log_warn(msg, ...)  log_write(LOG_WARN, (msg), LOG_FIELDS_(__VA_ARGS__), LOG_NFIELDS_(__VA_ARGS__))
#define log_error(msg, ...) log_write(LOG_ERROR, (msg), LOG_FIELDS_(__VA_ARGS__), LOG_NFIELDS_(__VA_ARGS__))
#define log_debug(msg, ...) log_write(LOG_DEBUG, (msg), LOG_FIELDS_(__VA_ARGS__), LOG_NFIELDS_(__VA_ARGS__))
/* A record with no fields. */
#define log_msg(level, msg) log_write((level), (msg), NULL, 0)

#ifdef __cplusplus
}
#endif
#endif /* LEDGERD_LOG_H */
