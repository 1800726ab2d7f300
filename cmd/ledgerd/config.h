/*
 * config.h — ledgerd's settings: defaults, config file, LEDGERD_*
 * environment variables and command-line flags (internal to cmd/ledgerd).
 *
 * Precedence, highest first: flag (--max-conns 100, --max-conns=100) >
 * environment (LEDGERD_MAX_CONNS=100) > config file (--config FILE, else
 * LEDGERD_CONFIG; lines "key = value", '#' comments) > built-in default.
 * Every key exists in all three forms; an empty variable counts as unset
 * (compose and unit files write VAR= for "not given").  Unknown keys in the file and unknown
 * flags are errors; unknown LEDGERD_* variables are ignored (the test
 * harnesses use LEDGERD_BIN and friends).  Errors name their source:
 *   "ledgerd.conf:12: key 'max_conns': not an integer: \"ten\""
 *   "--max-conns: not an integer: \"ten\""
 *   "LEDGERD_MAX_CONNS: not an integer: \"ten\""
 */
#ifndef LEDGERD_CMD_CONFIG_H
#define LEDGERD_CMD_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ledger.h"
#include "log.h"

#define LEDGERD_VERSION "0.1.0"

typedef enum config_action {
    CONFIG_RUN = 0,
    CONFIG_HELP,
    CONFIG_VERSION,
    CONFIG_CHECK,          /* --check-config */
    CONFIG_HEALTHCHECK,    /* --healthcheck: GET /healthz on the listen address */
} config_action;

/* Where a setting's value came from. */
typedef enum config_source {
    CONFIG_SRC_DEFAULT = 0,
    CONFIG_SRC_FILE,
    CONFIG_SRC_ENV,
    CONFIG_SRC_FLAG,
} config_source;

#define CONFIG_SECRET_MAX 256

/* The keys, in help order.  CONFIG_KEY_COUNT sizes config.src. */
typedef enum config_key {
    CK_LISTEN, CK_DB, CK_ADMIN_KEY, CK_ADMIN_KEY_FILE,
    CK_LOG_FORMAT, CK_LOG_LEVEL, CK_LOG_FILE, CK_LOG_REQUESTS,
    CK_SYNC, CK_MAX_BATCH,
    CK_PIPELINE_AUTH_WORKERS, CK_PIPELINE_CHECK_WORKERS, CK_PIPELINE_TRANSFER_WORKERS,
    CK_PIPELINE_QUEUE,
    CK_REQUEST_TIMEOUT, CK_HEADER_TIMEOUT, CK_READ_TIMEOUT, CK_IDLE_TIMEOUT,
    CK_WRITE_TIMEOUT, CK_MAX_CONNS, CK_SHUTDOWN_TIMEOUT,
    CK_GOMAXPROCS, CK_DAEMON, CK_PIDFILE,
    CONFIG_KEY_COUNT
} config_key;

typedef struct config {
    config_action action;
    char config_file[PATH_MAX];             /* "" if none */

    char listen[300];                       /* as given */
    char host[64];                          /* IP literal */
    int port;                               /* 0: any free port */
    char db[PATH_MAX];
    char admin_key[CONFIG_SECRET_MAX + 1];  /* "" if not given */
    char admin_key_file[PATH_MAX];          /* "" if not given */
    log_format log_format;
    log_level log_level;
    char log_file[PATH_MAX];                /* "" : stderr */
    bool log_requests;
    ledger_sync sync;
    int max_batch;
    int auth_workers, check_workers, transfer_workers;
    int pipeline_queue;
    int64_t request_timeout_ns, header_timeout_ns, read_timeout_ns;
    int64_t idle_timeout_ns, write_timeout_ns, shutdown_timeout_ns;
    int max_conns;
    int gomaxprocs;                         /* 0: the runtime's choice */
    bool daemon;
    char pidfile[PATH_MAX];                 /* "" : none */

    config_source src[CONFIG_KEY_COUNT];
} config;

/* Fill *out with the defaults. */
void config_defaults(config *out);

/*
 * Build the configuration from argv (argv[0] is skipped), the environment
 * envp (NULL-terminated "NAME=value" strings; NULL: none) and the config
 * file they name.  Reads nothing else of the process (a pure function but
 * for the file).  Returns 0, or -1 with a one-line message in errbuf.
 * --help and --version set out->action and return 0 at once.
 */
int config_parse(int argc, char *const argv[], char *const envp[], config *out,
                 char *errbuf, size_t errlen);

/* Parse a duration ("5s", "250ms", "1m30s", "1.5h"; units ns us ms s m h).
 * 0 or -1 (bad syntax, no unit, overflow). */
int config_parse_duration(const char *s, int64_t *out_ns);

/* Read the admin key from cfg->admin_key_file into cfg->admin_key when no
 * admin key was given and the file exists (first line, blanks trimmed).
 * 0 (also when there is nothing to read), or -1 with a message. */
int config_load_admin_key(config *cfg, char *errbuf, size_t errlen);

/* Make db, log_file, pidfile and admin_key_file absolute (against the
 * current directory), before a daemon's chdir("/").  0 or -1. */
int config_absolutize(config *cfg, char *errbuf, size_t errlen);

/* The --help text. */
void config_print_help(FILE *f, const char *prog);
/* The effective settings, one "key = value  # source" per line; secrets
 * are shown as "(set)". */
void config_print(FILE *f, const config *cfg);

#endif /* LEDGERD_CMD_CONFIG_H */
