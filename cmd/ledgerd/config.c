/*
 * config.c — ledgerd's settings from defaults, a config file, LEDGERD_*
 * environment variables and flags (contract in config.h).
 *
 * Design
 *   One table (keys[]) describes every setting once: its name, its type
 *   (which parser), where it lives in struct config (offsetof), its range
 *   and its help line.  The file, the environment and the flags all go
 *   through the same setter (set_value), which only differs in how it names
 *   the source in an error message — so a key cannot be valid in one form
 *   and not in another, and the help text cannot miss a key.
 *
 *   The layers are applied lowest first (defaults, file, environment,
 *   flags), each overwriting what the previous one set, and src[] records
 *   which layer won (for --check-config and for gomaxprocs, whose file and
 *   environment values yield to a GOMAXPROCS variable while the flag does
 *   not).  The file's name must be known before the file is read, so the
 *   flags are scanned twice: first for --config / --help / --version only,
 *   then, after the file and the environment, for everything.
 *
 * Invariants
 *   config_parse never touches the process: no getenv (envp is passed in),
 *   no exit, no output.  A failed parse leaves a message naming the source
 *   (file:line: key 'k' / --flag / LEDGERD_VAR) and the offending value.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum value_type {
    T_LISTEN, T_PATH, T_SECRET, T_LOG_FORMAT, T_LOG_LEVEL, T_BOOL, T_SYNC, T_INT, T_DURATION,
} value_type;

typedef struct key_def {
    config_key id;
    const char *name;         /* file key; the flag and variable derive from it */
    value_type type;
    size_t offset;            /* into struct config */
    size_t size;              /* buffer size for strings */
    int64_t min, max;         /* ints; durations in ns */
    const char *help;
} key_def;

#define F(field) offsetof(config, field), sizeof(((config *)0)->field)
#define SEC INT64_C(1000000000)
#define MS INT64_C(1000000)

static const key_def keys[CONFIG_KEY_COUNT] = {
    { CK_LISTEN, "listen", T_LISTEN, F(listen), 0, 0,
      "address to listen on: host:port, [v6]:port or :port (all IPv4); port 0 picks a free one" },
    { CK_DB, "db", T_PATH, F(db), 0, 0, "SQLite database file (created if missing)" },
    { CK_ADMIN_KEY, "admin_key", T_SECRET, F(admin_key), 0, 0,
      "the admin API key (as a flag it shows in ps until ledgerd has started and "
      "blanked it: prefer LEDGERD_ADMIN_KEY or admin_key_file)" },
    { CK_ADMIN_KEY_FILE, "admin_key_file", T_PATH, F(admin_key_file), 0, 0,
      "file holding the admin key; if it does not exist, the key generated on first start "
      "is written there (default <db>.admin-key)" },
    { CK_LOG_FORMAT, "log_format", T_LOG_FORMAT, F(log_format), 0, 0, "json or text" },
    { CK_LOG_LEVEL, "log_level", T_LOG_LEVEL, F(log_level), 0, 0, "debug, info, warn or error" },
    { CK_LOG_FILE, "log_file", T_PATH, F(log_file), 0, 0,
      "append logs to this file instead of stderr (reopened on SIGHUP)" },
    { CK_LOG_REQUESTS, "log_requests", T_BOOL, F(log_requests), 0, 0,
      "one log line per HTTP request (true/false)" },
    { CK_SYNC, "sync", T_SYNC, F(sync), 0, 0,
      "full: fsync every commit (survives power loss); normal: survives a crash only" },
    { CK_MAX_BATCH, "max_batch", T_INT, F(max_batch), 1, 100000,
      "most writes per group commit (1: no grouping)" },
    { CK_PIPELINE_AUTH_WORKERS, "pipeline_auth_workers", T_INT, F(auth_workers), 1, 4096,
      "goroutines authenticating and validating transfers" },
    { CK_PIPELINE_CHECK_WORKERS, "pipeline_check_workers", T_INT, F(check_workers), 1, 4096,
      "goroutines checking balances of transfers" },
    { CK_PIPELINE_TRANSFER_WORKERS, "pipeline_transfer_workers", T_INT, F(transfer_workers), 1,
      65536, "goroutines waiting on transfer commits" },
    { CK_PIPELINE_QUEUE, "pipeline_queue", T_INT, F(pipeline_queue), 1, 1 << 20,
      "capacity of each pipeline queue (a full first queue answers 503 overloaded)" },
    { CK_REQUEST_TIMEOUT, "request_timeout", T_DURATION, F(request_timeout_ns),
      MS, 3600 * SEC, "deadline of a transfer request (504 past it)" },
    { CK_HEADER_TIMEOUT, "header_timeout", T_DURATION, F(header_timeout_ns), MS,
      3600 * SEC, "first byte to end of a request's head" },
    { CK_READ_TIMEOUT, "read_timeout", T_DURATION, F(read_timeout_ns), MS,
      3600 * SEC, "first byte to end of a request's body" },
    { CK_IDLE_TIMEOUT, "idle_timeout", T_DURATION, F(idle_timeout_ns), MS,
      24 * 3600 * SEC, "keep-alive connection waiting for its next request" },
    { CK_WRITE_TIMEOUT, "write_timeout", T_DURATION, F(write_timeout_ns), MS,
      3600 * SEC, "writing one batch of responses" },
    { CK_MAX_CONNS, "max_conns", T_INT, F(max_conns), 1, 1000000,
      "connections open at once (one more is answered 503)" },
    { CK_SHUTDOWN_TIMEOUT, "shutdown_timeout", T_DURATION, F(shutdown_timeout_ns), 0,
      3600 * SEC, "on SIGTERM, how long requests in flight may take to finish" },
    { CK_GOMAXPROCS, "gomaxprocs", T_INT, F(gomaxprocs), 0, 1024,
      "runtime processors (0: GOMAXPROCS variable, else the CPUs); a GOMAXPROCS "
      "variable beats the file and LEDGERD_GOMAXPROCS, the flag beats it" },
    { CK_DAEMON, "daemon", T_BOOL, F(daemon), 0, 0,
      "detach (double fork, setsid, chdir /); the parent exits 0 once listening" },
    { CK_PIDFILE, "pidfile", T_PATH, F(pidfile), 0, 0,
      "write the pid here, locked while running; refuse to start if it is held" },
};

/* ------------------------------------------------------------ messages */

typedef struct source {
    config_source kind;
    const char *file;         /* CONFIG_SRC_FILE */
    int line;
    const char *name;         /* the flag or variable as the user wrote it */
} source;

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) {
    if (errbuf == NULL || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

/* "file:12: key 'k': " / "--flag: " / "LEDGERD_K: " */
static void source_prefix(const source *src, const key_def *k, char *buf, size_t len) {
    if (src->kind == CONFIG_SRC_FILE)
        snprintf(buf, len, "%s:%d: key '%s'", src->file, src->line, k->name);
    else
        snprintf(buf, len, "%s", src->name);
}

static void value_err(char *errbuf, size_t errlen, const source *src, const key_def *k,
                      const char *what, const char *value) {
    char pre[PATH_MAX + 96];
    source_prefix(src, k, pre, sizeof pre);
    set_err(errbuf, errlen, "%s: %s: \"%.200s\"", pre, what, value);
}

/* -------------------------------------------------------------- values */

static bool parse_int(const char *s, int64_t *out) {
    if (*s == '\0' || isspace((unsigned char)*s)) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out) {
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) { *out = true; return true; }
        if (strcasecmp(s, no[i]) == 0) { *out = false; return true; }
    }
    return false;
}

static int64_t unit_ns(const char *u, size_t n) {
    static const struct { const char *name; int64_t ns; } units[] = {
        { "ns", 1 }, { "us", 1000 }, { "µs", 1000 }, { "ms", 1000000 },
        { "s", SEC }, { "m", 60 * SEC }, { "h", 3600 * SEC },
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0) return units[i].ns;
    }
    return 0;
}

int config_parse_duration(const char *s, int64_t *out_ns) {
    if (s == NULL || *s == '\0') return -1;
    if (strcmp(s, "0") == 0) {     /* as Go's time.ParseDuration */
        *out_ns = 0;
        return 0;
    }
    double total = 0;
    const char *p = s;
    while (*p) {
        if (!isdigit((unsigned char)*p) && *p != '.') return -1;
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (errno != 0 || end == p || !isfinite(v)) return -1;
        p = end;
        const char *u = p;
        while (*p && !isdigit((unsigned char)*p) && *p != '.') p++;
        int64_t mult = unit_ns(u, (size_t)(p - u));
        if (mult == 0) return -1;   /* missing or unknown unit */
        total += v * (double)mult;
        if (total > (double)INT64_MAX / 2) return -1;
    }
    *out_ns = (int64_t)llround(total);
    return 0;
}

/* Split host:port / [v6]:port / :port and check the host is an IP literal. */
static const char *parse_listen(const char *s, char *host, size_t hostlen, int *port) {
    const char *colon;
    char h[300];
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':') return "expected [ipv6]:port";
        size_t n = (size_t)(rb - s - 1);
        if (n >= sizeof h) return "host too long";
        memcpy(h, s + 1, n);
        h[n] = '\0';
        colon = rb + 1;
        struct in6_addr a6;
        if (inet_pton(AF_INET6, h, &a6) != 1) return "not an IPv6 address";
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) return "expected host:port";
        size_t n = (size_t)(colon - s);
        if (n >= sizeof h) return "host too long";
        memcpy(h, s, n);
        h[n] = '\0';
        if (n == 0) snprintf(h, sizeof h, "0.0.0.0");
        else if (strcmp(h, "localhost") == 0) snprintf(h, sizeof h, "127.0.0.1");
        struct in_addr a4;
        if (strchr(h, ':') != NULL) return "an IPv6 address needs brackets: [::1]:8080";
        if (inet_pton(AF_INET, h, &a4) != 1) return "host must be an IP address (or localhost)";
    }
    int64_t p;
    if (!parse_int(colon + 1, &p) || p < 0 || p > 65535) return "port must be 0..65535";
    if (strlen(h) >= hostlen) return "host too long";
    snprintf(host, hostlen, "%s", h);
    *port = (int)p;
    return NULL;
}

static int set_string(char *dst, size_t size, const char *value, const source *src,
                      const key_def *k, char *errbuf, size_t errlen) {
    if (strlen(value) >= size) {
        value_err(errbuf, errlen, src, k, "too long", value);
        return -1;
    }
    memcpy(dst, value, strlen(value) + 1);
    return 0;
}

/* Validate value for key k and store it in cfg: the one setter of every
 * source. */
static int set_value(config *cfg, const key_def *k, const char *value, const source *src,
                     char *errbuf, size_t errlen) {
    char *field = (char *)cfg + k->offset;
    int64_t iv;
    bool bv;
    switch (k->type) {
    case T_LISTEN: {
        const char *why = parse_listen(value, cfg->host, sizeof cfg->host, &cfg->port);
        if (why != NULL) {
            value_err(errbuf, errlen, src, k, why, value);
            return -1;
        }
        if (set_string(field, k->size, value, src, k, errbuf, errlen) < 0) return -1;
        break;
    }
    case T_PATH:
    case T_SECRET:
        if (value[0] == '\0' && k->type == T_SECRET) {
            char pre[PATH_MAX + 96];
            source_prefix(src, k, pre, sizeof pre);
            set_err(errbuf, errlen, "%s: must not be empty", pre);
            return -1;
        }
        if (k->type == T_SECRET && strlen(value) >= k->size) {
            char pre[PATH_MAX + 96];
            source_prefix(src, k, pre, sizeof pre);
            /* never echo a secret */
            set_err(errbuf, errlen, "%s: longer than %d bytes", pre, CONFIG_SECRET_MAX);
            return -1;
        }
        if (set_string(field, k->size, value, src, k, errbuf, errlen) < 0) return -1;
        break;
    case T_LOG_FORMAT:
        if (log_parse_format(value, (log_format *)field) != 0) {
            value_err(errbuf, errlen, src, k, "must be json or text", value);
            return -1;
        }
        break;
    case T_LOG_LEVEL:
        if (log_parse_level(value, (log_level *)field) != 0) {
            value_err(errbuf, errlen, src, k, "must be debug, info, warn or error", value);
            return -1;
        }
        break;
    case T_BOOL:
        if (!parse_bool(value, &bv)) {
            value_err(errbuf, errlen, src, k, "not a boolean (true/false)", value);
            return -1;
        }
        *(bool *)field = bv;
        break;
    case T_SYNC:
        if (strcmp(value, "full") == 0) *(ledger_sync *)field = LEDGER_SYNC_FULL;
        else if (strcmp(value, "normal") == 0) *(ledger_sync *)field = LEDGER_SYNC_NORMAL;
        else {
            value_err(errbuf, errlen, src, k, "must be full or normal", value);
            return -1;
        }
        break;
    case T_INT:
        if (!parse_int(value, &iv)) {
            value_err(errbuf, errlen, src, k, "not an integer", value);
            return -1;
        }
        if (iv < k->min || iv > k->max) {
            char what[96];
            snprintf(what, sizeof what, "out of range %lld..%lld", (long long)k->min,
                     (long long)k->max);
            value_err(errbuf, errlen, src, k, what, value);
            return -1;
        }
        *(int *)field = (int)iv;
        break;
    case T_DURATION:
        if (config_parse_duration(value, &iv) != 0) {
            value_err(errbuf, errlen, src, k,
                      "not a duration (a number and a unit: 250ms, 5s, 2m, 1h)", value);
            return -1;
        }
        if (iv < k->min || iv > k->max) {
            value_err(errbuf, errlen, src, k,
                      k->min > 0 ? "out of range (1ms..1h)" : "out of range (0..1h)", value);
            return -1;
        }
        *(int64_t *)field = iv;
        break;
    }
    cfg->src[k->id] = src->kind;
    return 0;
}

/* ------------------------------------------------------------- lookups */

static const key_def *key_by_name(const char *name, size_t n) {
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++) {
        if (strlen(keys[i].name) == n && memcmp(keys[i].name, name, n) == 0) return &keys[i];
    }
    return NULL;
}

/* "--max-conns" names key "max_conns". */
static const key_def *key_by_flag(const char *flag, size_t n) {
    char name[64];
    if (n >= sizeof name) return NULL;
    for (size_t i = 0; i < n; i++) name[i] = flag[i] == '-' ? '_' : flag[i];
    name[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (flag[i] == '_') return NULL;   /* flags are spelled with dashes */
    return key_by_name(name, n);
}

static void env_name(const key_def *k, char *buf, size_t len) {
    int n = snprintf(buf, len, "LEDGERD_");
    for (const char *p = k->name; *p && (size_t)n + 1 < len; p++)
        buf[n++] = (char)toupper((unsigned char)*p);
    buf[n] = '\0';
}

static const char *env_get(char *const envp[], const char *name) {
    if (envp == NULL) return NULL;
    size_t n = strlen(name);
    for (size_t i = 0; envp[i] != NULL; i++) {
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=') return envp[i] + n + 1;
    }
    return NULL;
}

/* ----------------------------------------------------------- defaults */

void config_defaults(config *c) {
    memset(c, 0, sizeof *c);
    c->action = CONFIG_RUN;
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:8080");
    snprintf(c->host, sizeof c->host, "127.0.0.1");
    c->port = 8080;
    snprintf(c->db, sizeof c->db, "./ledgerd.db");
    c->log_format = LOG_FORMAT_JSON;
    c->log_level = LOG_INFO;
    c->log_requests = true;
    c->sync = LEDGER_SYNC_FULL;
    c->max_batch = 256;
    c->auth_workers = 4;
    c->check_workers = 4;
    c->transfer_workers = 64;
    c->pipeline_queue = 1024;
    c->request_timeout_ns = 5 * SEC;
    c->header_timeout_ns = 10 * SEC;
    c->read_timeout_ns = 30 * SEC;
    c->idle_timeout_ns = 120 * SEC;
    c->write_timeout_ns = 30 * SEC;
    c->max_conns = 10000;
    c->shutdown_timeout_ns = 10 * SEC;
    c->gomaxprocs = 0;
}

/* --------------------------------------------------------------- file */

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

/* A value may be "double quoted" to keep blanks or a '#'. */
static int unquote(char *v) {
    size_t n = strlen(v);
    if (n == 0 || v[0] != '"') return 0;
    if (n < 2 || v[n - 1] != '"') return -1;
    memmove(v, v + 1, n - 2);
    v[n - 2] = '\0';
    return 0;
}

static int parse_file_line(config *cfg, char *line, const source *src, char *errbuf,
                           size_t errlen) {
    char *s = trim(line);
    if (*s == '\0' || *s == '#') return 0;
    char *eq = strchr(s, '=');
    if (eq == NULL) {
        set_err(errbuf, errlen, "%s:%d: expected key = value: \"%.100s\"", src->file, src->line, s);
        return -1;
    }
    *eq = '\0';
    char *key = trim(s);
    char *value = eq + 1;
    /* A '#' after the value starts a comment, unless the value is quoted. */
    value = trim(value);
    if (value[0] != '"') {
        char *hash = strchr(value, '#');
        if (hash != NULL) {
            *hash = '\0';
            value = trim(value);
        }
    }
    const key_def *k = key_by_name(key, strlen(key));
    if (k == NULL) {
        set_err(errbuf, errlen, "%s:%d: unknown key '%.64s'", src->file, src->line, key);
        return -1;
    }
    if (unquote(value) != 0) {
        set_err(errbuf, errlen, "%s:%d: key '%s': unterminated quote", src->file, src->line,
                k->name);
        return -1;
    }
    return set_value(cfg, k, value, src, errbuf, errlen);
}

static int load_file(config *cfg, const char *path, char *errbuf, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        set_err(errbuf, errlen, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[8192];
    source src = { .kind = CONFIG_SRC_FILE, .file = path, .line = 0 };
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
        src.line++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n' && !feof(f)) {
            set_err(errbuf, errlen, "%s:%d: line too long", path, src.line);
            rc = -1;
            break;
        }
        rc = parse_file_line(cfg, line, &src, errbuf, errlen);
    }
    if (rc == 0 && ferror(f)) {
        set_err(errbuf, errlen, "config file %s: read error", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}

/* -------------------------------------------------------- environment */

static int load_env(config *cfg, char *const envp[], char *errbuf, size_t errlen) {
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++) {
        char name[64];
        env_name(&keys[i], name, sizeof name);
        const char *v = env_get(envp, name);
        /* Empty is unset: compose and unit files pass VAR= for "not given". */
        if (v == NULL || v[0] == '\0') continue;
        source src = { .kind = CONFIG_SRC_ENV, .name = name };
        if (set_value(cfg, &keys[i], v, &src, errbuf, errlen) != 0) return -1;
    }
    return 0;
}

/* -------------------------------------------------------------- flags */

enum { FLAG_CONFIG = -2, FLAG_HELP = -3, FLAG_VERSION = -4, FLAG_CHECK = -5 };

/* The flag's name (after "--", before any '='), its inline value or NULL. */
typedef struct flag {
    const char *arg;          /* as written, for messages */
    const char *name;
    size_t name_len;
    const char *inline_value;
} flag;

static bool split_flag(const char *arg, flag *f) {
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') return false;
    f->arg = arg;
    f->name = arg + 2;
    const char *eq = strchr(f->name, '=');
    f->name_len = eq ? (size_t)(eq - f->name) : strlen(f->name);
    f->inline_value = eq ? eq + 1 : NULL;
    return true;
}

static bool flag_is(const flag *f, const char *name) {
    return strlen(name) == f->name_len && memcmp(f->name, name, f->name_len) == 0;
}

/* Pass 1: --config, --help, --version, --check-config only. */
static int scan_special_flags(int argc, char *const argv[], config *cfg, char *errbuf,
                              size_t errlen) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) break;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cfg->action = CONFIG_HELP;
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            cfg->action = CONFIG_VERSION;
            return 0;
        }
        if (strcmp(a, "--check-config") == 0) cfg->action = CONFIG_CHECK;
        if (strcmp(a, "--healthcheck") == 0) cfg->action = CONFIG_HEALTHCHECK;
        flag f;
        if (split_flag(a, &f) && flag_is(&f, "config")) {
            const char *v = f.inline_value;
            if (v == NULL) {
                if (i + 1 >= argc) {
                    set_err(errbuf, errlen, "--config: needs a file name");
                    return -1;
                }
                v = argv[++i];
            }
            if (v[0] == '\0' || strlen(v) >= sizeof cfg->config_file) {
                set_err(errbuf, errlen, "--config: bad file name \"%.200s\"", v);
                return -1;
            }
            snprintf(cfg->config_file, sizeof cfg->config_file, "%s", v);
        }
    }
    return 0;
}

static int apply_flags(int argc, char *const argv[], config *cfg, char *errbuf, size_t errlen) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        flag f;
        if (!split_flag(a, &f)) {
            set_err(errbuf, errlen, "unexpected argument \"%.200s\" (see --help)", a);
            return -1;
        }
        if (flag_is(&f, "check-config") || flag_is(&f, "healthcheck")) {
            if (f.inline_value) {
                set_err(errbuf, errlen, "--%.*s takes no value", (int)f.name_len, f.name);
                return -1;
            }
            continue;
        }
        if (flag_is(&f, "config")) {
            if (f.inline_value == NULL) i++;   /* value checked in pass 1 */
            continue;
        }
        /* --no-daemon, --no-log-requests: booleans off */
        bool negated = false;
        const key_def *k = key_by_flag(f.name, f.name_len);
        if (k == NULL && f.name_len > 3 && memcmp(f.name, "no-", 3) == 0) {
            k = key_by_flag(f.name + 3, f.name_len - 3);
            if (k != NULL && k->type != T_BOOL) k = NULL;
            negated = k != NULL;
        }
        if (k == NULL) {
            set_err(errbuf, errlen, "unknown flag --%.*s (see --help)", (int)f.name_len, f.name);
            return -1;
        }
        char name[80];
        snprintf(name, sizeof name, "--%.*s", (int)f.name_len, f.name);
        source src = { .kind = CONFIG_SRC_FLAG, .name = name };
        const char *v = f.inline_value;
        if (k->type == T_BOOL && v == NULL) {
            v = negated ? "false" : "true";
        } else if (negated) {
            set_err(errbuf, errlen, "%s takes no value", name);
            return -1;
        } else if (v == NULL) {
            if (i + 1 >= argc) {
                set_err(errbuf, errlen, "%s: needs a value", name);
                return -1;
            }
            v = argv[++i];
        }
        if (set_value(cfg, k, v, &src, errbuf, errlen) != 0) return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- parse */

int config_parse(int argc, char *const argv[], char *const envp[], config *out, char *errbuf,
                 size_t errlen) {
    if (errbuf && errlen) errbuf[0] = '\0';
    config_defaults(out);
    if (scan_special_flags(argc, argv, out, errbuf, errlen) != 0) return -1;
    if (out->action == CONFIG_HELP || out->action == CONFIG_VERSION) return 0;
    if (out->config_file[0] == '\0') {
        const char *v = env_get(envp, "LEDGERD_CONFIG");
        if (v != NULL && v[0] != '\0') {
            if (strlen(v) >= sizeof out->config_file) {
                set_err(errbuf, errlen, "LEDGERD_CONFIG: file name too long");
                return -1;
            }
            snprintf(out->config_file, sizeof out->config_file, "%s", v);
        }
    }
    if (out->config_file[0] != '\0' && load_file(out, out->config_file, errbuf, errlen) != 0)
        return -1;
    if (load_env(out, envp, errbuf, errlen) != 0) return -1;
    if (apply_flags(argc, argv, out, errbuf, errlen) != 0) return -1;
    if (out->db[0] == '\0') {
        set_err(errbuf, errlen, "db: must not be empty");
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------- admin key file */

int config_load_admin_key(config *cfg, char *errbuf, size_t errlen) {
    if (cfg->admin_key[0] != '\0' || cfg->admin_key_file[0] == '\0') return 0;
    FILE *f = fopen(cfg->admin_key_file, "r");
    if (f == NULL) {
        if (errno == ENOENT) return 0;   /* the ledger generates a key into it */
        set_err(errbuf, errlen, "admin_key_file %s: %s", cfg->admin_key_file, strerror(errno));
        return -1;
    }
    char line[CONFIG_SECRET_MAX + 2];
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    char *k = got ? trim(line) : NULL;
    if (k == NULL || *k == '\0') {
        set_err(errbuf, errlen, "admin_key_file %s: empty", cfg->admin_key_file);
        return -1;
    }
    if (strlen(k) > CONFIG_SECRET_MAX) {
        set_err(errbuf, errlen, "admin_key_file %s: key longer than %d bytes",
                cfg->admin_key_file, CONFIG_SECRET_MAX);
        return -1;
    }
    snprintf(cfg->admin_key, sizeof cfg->admin_key, "%s", k);
    return 0;
}

/* ----------------------------------------------------------- absolutize */

static int make_absolute(char *path, size_t size, const char *what, char *errbuf,
                         size_t errlen) {
    if (path[0] == '\0' || path[0] == '/') return 0;
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL) {
        set_err(errbuf, errlen, "%s: cannot resolve %s: %s", what, path, strerror(errno));
        return -1;
    }
    const char *rel = path;
    while (rel[0] == '.' && rel[1] == '/') rel += 2;   /* "./x" -> "x" */
    char abs[PATH_MAX * 2];
    int n = snprintf(abs, sizeof abs, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, rel);
    if (n < 0 || (size_t)n >= size) {
        set_err(errbuf, errlen, "%s: path too long", what);
        return -1;
    }
    memcpy(path, abs, (size_t)n + 1);
    return 0;
}

int config_absolutize(config *cfg, char *errbuf, size_t errlen) {
    if (make_absolute(cfg->db, sizeof cfg->db, "db", errbuf, errlen) != 0) return -1;
    if (make_absolute(cfg->log_file, sizeof cfg->log_file, "log_file", errbuf, errlen) != 0)
        return -1;
    if (make_absolute(cfg->pidfile, sizeof cfg->pidfile, "pidfile", errbuf, errlen) != 0)
        return -1;
    return make_absolute(cfg->admin_key_file, sizeof cfg->admin_key_file, "admin_key_file",
                         errbuf, errlen);
}

/* --------------------------------------------------------------- output */

static void format_duration(int64_t ns, char *buf, size_t len) {
    if (ns == 0) snprintf(buf, len, "0s");
    else if (ns % (3600 * SEC) == 0) snprintf(buf, len, "%lldh", (long long)(ns / (3600 * SEC)));
    else if (ns % (60 * SEC) == 0) snprintf(buf, len, "%lldm", (long long)(ns / (60 * SEC)));
    else if (ns % SEC == 0) snprintf(buf, len, "%llds", (long long)(ns / SEC));
    else if (ns % 1000000 == 0) snprintf(buf, len, "%lldms", (long long)(ns / 1000000));
    else if (ns % 1000 == 0) snprintf(buf, len, "%lldus", (long long)(ns / 1000));
    else snprintf(buf, len, "%lldns", (long long)ns);
}

static void format_value(const config *cfg, const key_def *k, char *buf, size_t len) {
    const char *field = (const char *)cfg + k->offset;
    switch (k->type) {
    case T_LISTEN:
    case T_PATH:
        snprintf(buf, len, "%s", field[0] ? field : "(none)");
        break;
    case T_SECRET:
        snprintf(buf, len, "%s", field[0] ? "(set)" : "(none)");
        break;
    case T_LOG_FORMAT:
        snprintf(buf, len, "%s", *(const log_format *)field == LOG_FORMAT_TEXT ? "text" : "json");
        break;
    case T_LOG_LEVEL: {
        static const char *const names[] = { "debug", "info", "warn", "error", "fatal" };
        int l = (int)*(const log_level *)field;
        snprintf(buf, len, "%s", l >= 0 && l <= 4 ? names[l] : "?");
        break;
    }
    case T_BOOL:
        snprintf(buf, len, "%s", *(const bool *)field ? "true" : "false");
        break;
    case T_SYNC:
        snprintf(buf, len, "%s", *(const ledger_sync *)field == LEDGER_SYNC_NORMAL ? "normal" : "full");
        break;
    case T_INT:
        snprintf(buf, len, "%d", *(const int *)field);
        break;
    case T_DURATION:
        format_duration(*(const int64_t *)field, buf, len);
        break;
    }
}

static const char *source_name(config_source s) {
    switch (s) {
    case CONFIG_SRC_DEFAULT: return "default";
    case CONFIG_SRC_FILE: return "file";
    case CONFIG_SRC_ENV: return "env";
    case CONFIG_SRC_FLAG: return "flag";
    }
    return "?";
}

void config_print(FILE *f, const config *cfg) {
    if (cfg->config_file[0]) fprintf(f, "# config file: %s\n", cfg->config_file);
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++) {
        char v[PATH_MAX + 16];
        format_value(cfg, &keys[i], v, sizeof v);
        fprintf(f, "%s = %s  # %s\n", keys[i].name, v, source_name(cfg->src[i]));
    }
}

/* text as lines of at most width columns, each indented by indent. */
static void print_wrapped(FILE *f, const char *text, int indent, int width) {
    const char *p = text;
    while (*p) {
        int room = width - indent;
        int len = (int)strlen(p);
        int cut = len;
        if (len > room) {
            cut = room;
            while (cut > 0 && p[cut] != ' ') cut--;
            if (cut == 0) cut = room;   /* one long word: break it */
        }
        fprintf(f, "%*s%.*s\n", indent, "", cut, p);
        p += cut;
        while (*p == ' ') p++;
    }
}

void config_print_help(FILE *f, const char *prog) {
    config d;
    config_defaults(&d);
    fprintf(f,
            "Usage: %s [--config FILE] [--KEY VALUE | --KEY=VALUE]...\n"
            "       %s --check-config [...]  validate, print the settings, exit\n"
            "       %s --healthcheck [...]   GET /healthz on the listen address:\n"
            "                                       exit 0 if it answers 200\n"
            "       %s --version | --help\n"
            "\n"
            "ledgerd %s: a double-entry ledger over HTTP (API: shared/API.md).\n"
            "\n"
            "Every setting KEY can be given, highest precedence first, as\n"
            "  a flag                 --max-conns 100   (booleans: --daemon, --no-daemon,\n"
            "                                            --log-requests=false)\n"
            "  an environment var     LEDGERD_MAX_CONNS=100   (empty: not set)\n"
            "  a config file line     max_conns = 100   (file: --config FILE or\n"
            "                                            LEDGERD_CONFIG; '#' comments)\n"
            "  else the default shown below.  Durations: 250ms, 5s, 2m, 1h, 1m30s.\n"
            "  Unknown keys and flags are errors (exit status 2).\n"
            "\n"
            "Settings (default in brackets):\n",
            prog, prog, prog, prog, LEDGERD_VERSION);
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++) {
        char flagname[64], envname[64], v[PATH_MAX + 16];
        snprintf(flagname, sizeof flagname, "--");
        for (size_t j = 0; keys[i].name[j] && j + 3 < sizeof flagname; j++) {
            flagname[j + 2] = keys[i].name[j] == '_' ? '-' : keys[i].name[j];
            flagname[j + 3] = '\0';
        }
        env_name(&keys[i], envname, sizeof envname);
        format_value(&d, &keys[i], v, sizeof v);
        fprintf(f, "  %-28s %s\n", flagname, envname);
        char text[PATH_MAX + 1024];
        snprintf(text, sizeof text, "%s [%s]", keys[i].help, v);
        print_wrapped(f, text, 6, 78);
    }
    fprintf(f,
            "\n"
            "Signals: SIGTERM/SIGINT drain (up to shutdown_timeout) and exit 0; a second\n"
            "one exits at once (status 1).  SIGHUP reopens log_file.  SIGQUIT dumps the\n"
            "goroutines to stderr.\n"
            "Exit status: 0 clean shutdown, 1 runtime failure (database busy or corrupt,\n"
            "address in use, ...), 2 configuration error.\n");
}
