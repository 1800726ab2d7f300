/*
 * main.c — the ledgerd daemon: configuration, logging, signals, start-up and
 * graceful shutdown of the ledger, the transfer pipeline, the API and the
 * HTTP server.
 *
 * Start-up, in this order, and why
 *   1. config_parse (flags > LEDGERD_* > file > defaults); errors exit 2.
 *   2. Paths made absolute (a daemon chdirs to /), GOMAXPROCS exported
 *      (the runtime reads it in rt_main), logging configured.
 *   3. --daemon: detach (daemon.c) — before any thread exists, since fork()
 *      in a threaded process leaves the child with one thread and whatever
 *      locks the others held.  The pidfile is taken after detaching, so it
 *      names the final pid and its lock belongs to the daemon.
 *   4. SIGTERM, SIGINT and SIGHUP are blocked in this thread before rt_main,
 *      so every runtime thread inherits the mask and none of them can take
 *      the signal; one plain pthread takes them with sigwait().  (SIGQUIT is
 *      left to the runtime, whose handler dumps the goroutines.)  SIGPIPE is
 *      ignored: a peer that vanished is an EPIPE, not a dead daemon.
 *   5. rt_main(run): open the ledger (refusing a busy or corrupt database),
 *      start the pipeline, the API and the listener, log one "listening"
 *      line, then report readiness (the waiting parent of a daemon exits 0).
 *
 * Shutdown
 *   The signal thread may not touch goroutine state directly, but rt_go is
 *   callable from any thread: on the first SIGTERM/SIGINT it spawns a
 *   goroutine that closes the stop channel the main goroutine waits on.  The
 *   main goroutine then drains: the API answers 503 draining, httpd stops
 *   accepting and waits up to shutdown_timeout for requests in flight, the
 *   pipeline finishes what was queued, the ledger commits and closes, the
 *   pidfile is removed; exit 0.  A second signal exits at once (status 1),
 *   as an operator who presses ^C twice expects.  SIGHUP reopens log_file.
 *
 * Global state (documented): `d`, the daemon's settings and handles, written
 * before the signal thread starts and afterwards only by the main goroutine;
 * the signal thread reads only d.cfg, and stop_signals (atomic).
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "api.h"
#include "config.h"
#include "daemon.h"
#include "httpd.h"
#include "ledger.h"
#include "log.h"
#include "pipeline.h"
#include "rt.h"

extern char **environ;

static struct {
    config cfg;
    int ready_fd;           /* daemon readiness pipe, -1 in the foreground */
    int pidfile_fd;         /* -1: no pidfile */
    bool stderr_is_log;     /* daemon with log_file: keep fd 2 on the log */
    rt_chan *stop;          /* closed on the first SIGTERM/SIGINT */
    const char *admin_key_source;
} d = { .ready_fd = -1, .pidfile_fd = -1 };

static atomic_int stop_signals;

/* ------------------------------------------------------------- signals */

static void close_stop(void *arg) {
    (void)arg;
    rt_chan_close(d.stop);
}

static void reopen_log(void) {
    int rc = log_reopen();
    if (rc == 0 && d.stderr_is_log) dup2(log_fd(), STDERR_FILENO);
    if (rc == 0)
        log_info("log reopened", LOG_STR("log_file", d.cfg.log_file[0] ? d.cfg.log_file : "stderr"));
    else
        log_error("cannot reopen the log", LOG_STR("log_file", d.cfg.log_file),
                  LOG_STR("error", strerror(-rc)));
}

static void *signal_thread(void *arg) {
    sigset_t *set = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0) continue;
        if (sig == SIGHUP) {
            reopen_log();
            continue;
        }
        if (atomic_fetch_add(&stop_signals, 1) == 0) {
            log_info("shutdown requested", LOG_STR("signal", sigabbrev_np(sig)));
            if (rt_go(close_stop, NULL) != RT_OK) {
                log_error("cannot start the shutdown; exiting now");
                _exit(1);
            }
        } else {
            log_warn("second signal: exiting without draining", LOG_STR("signal", sigabbrev_np(sig)));
            _exit(1);
        }
    }
    return NULL;
}

static int start_signal_thread(char *err, size_t errlen) {
    static sigset_t set;   /* read by the thread for its lifetime */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc == 0) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&t, &attr, signal_thread, &set);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) snprintf(err, errlen, "signal thread: %s", strerror(rc));
    signal(SIGPIPE, SIG_IGN);
    return rc == 0 ? 0 : -1;
}

/* -------------------------------------------------------------- run */

/* Log a start-up failure, tell a waiting parent, release the pidfile. */
static int fail_startup(const char *what, const char *detail) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s: %.900s", what, detail);
    log_error(what, LOG_STR("error", detail));
    daemon_report(&d.ready_fd, msg);
    pidfile_release(d.cfg.pidfile, d.pidfile_fd);
    d.pidfile_fd = -1;
    return 1;
}

/* Where the admin key lives, for the "listening" line. */
static const char *admin_key_file_for_log(ledger *l) {
    const char *gen = ledger_admin_key_file(l);
    if (gen != NULL) return gen;
    if (d.cfg.admin_key_file[0] != '\0') return d.cfg.admin_key_file;
    return "";
}

static ledger *open_ledger(void) {
    const config *c = &d.cfg;
    ledger_options lo = {
        .sync = c->sync,
        .max_batch = c->max_batch,
        .admin_key = c->admin_key[0] ? c->admin_key : NULL,
        .admin_key_file = c->admin_key_file[0] ? c->admin_key_file : NULL,
    };
    char err[512] = "";
    ledger *l = NULL;
    int rc = ledger_open(c->db, &lo, &l, err, sizeof err);
    if (rc != LEDGER_OK) {
        char detail[PATH_MAX + 1200];
        snprintf(detail, sizeof detail, "%s: %s (%s)", c->db, err[0] ? err : ledger_strerror(rc),
                 ledger_strerror(rc));
        fail_startup(rc == LEDGER_ECORRUPT ? "database failed its integrity check; refusing to serve"
                                           : "cannot open the database",
                     detail);
        return NULL;
    }
    const char *gen = ledger_admin_key_file(l);
    if (gen != NULL) {
        d.admin_key_source = "generated";
        log_warn("generated an admin key: read it from this file, then keep it safe",
                 LOG_STR("admin_key_file", gen));
    }
    return l;
}

static void log_listening(ledger *l, httpd_server *srv) {
    const config *c = &d.cfg;
    log_info("listening", LOG_STR("addr", c->host), LOG_INT("port", httpd_port(srv)),
             LOG_STR("db", c->db), LOG_STR("admin_key_file", admin_key_file_for_log(l)),
             LOG_STR("admin_key", d.admin_key_source), LOG_INT("gomaxprocs", rt_gomaxprocs()),
             LOG_STR("sync", c->sync == LEDGER_SYNC_FULL ? "full" : "normal"),
             LOG_INT("pid", getpid()), LOG_STR("version", LEDGERD_VERSION));
}

/* After httpd_shutdown cut connections: wait a little (1 s) for their
 * goroutines, which may be inside a handler, to end. */
static bool handlers_finished(httpd_server *srv) {
    for (int i = 0; i < 100; i++) {
        httpd_stats st;
        httpd_get_stats(srv, &st);
        if (st.conns_open == 0) return true;
        rt_sleep(10 * RT_MILLISECOND);
    }
    return false;
}

static void drain_and_stop(ledger *l, pipeline *p, api_server *api, httpd_server *srv) {
    const config *c = &d.cfg;
    log_info("draining", LOG_INT("shutdown_timeout_ms", c->shutdown_timeout_ns / RT_MILLISECOND));
    api_set_draining(api);
    int64_t t0 = rt_nanotime();
    int rc = httpd_shutdown(srv, c->shutdown_timeout_ns);
    if (rc == RT_ETIMEDOUT && !handlers_finished(srv)) {
        /* A handler still runs (its connection was closed under it) and may
         * be inside the api, the pipeline or the ledger: freeing them now
         * would pull memory from under it.  Exit without closing instead —
         * everything acknowledged is already durable (ledger.h), which is
         * what makes kill -9 safe too. */
        log_warn("drain timed out with handlers still running: exiting without closing the store",
                 LOG_INT("drain_ms", (rt_nanotime() - t0) / RT_MILLISECOND));
        log_info("stopped", LOG_INT("drain_ms", (rt_nanotime() - t0) / RT_MILLISECOND));
        return;
    }
    if (rc == RT_ETIMEDOUT) log_warn("drain timed out: remaining connections were closed");
    pipeline_stop(p);
    httpd_free(srv);
    api_free(api);
    ledger_close(l);
    log_info("stopped", LOG_INT("drain_ms", (rt_nanotime() - t0) / RT_MILLISECOND));
}

static int run(void *arg) {
    (void)arg;
    const config *c = &d.cfg;
    ledger *l = open_ledger();
    if (l == NULL) return 1;

    pipeline_options po = {
        .auth_workers = c->auth_workers,
        .check_workers = c->check_workers,
        .transfer_workers = c->transfer_workers,
        .queue_cap = c->pipeline_queue,
        .deadline_ns = c->request_timeout_ns,
    };
    pipeline *p = NULL;
    int rc = pipeline_start(l, &po, &p);
    if (rc != RT_OK) {
        ledger_close(l);
        return fail_startup("cannot start the transfer pipeline", rt_strerror(rc));
    }
    api_options ao = { .ledger = l, .pipeline = p, .log_requests = c->log_requests };
    api_server *api = NULL;
    rc = api_new(&ao, &api);
    if (rc != RT_OK) {
        pipeline_stop(p);
        ledger_close(l);
        return fail_startup("cannot start the API", rt_strerror(rc));
    }
    httpd_options ho = {
        .host = c->host,
        .port = c->port,
        .max_conns = c->max_conns,
        .header_timeout_ns = c->header_timeout_ns,
        .read_timeout_ns = c->read_timeout_ns,
        .idle_timeout_ns = c->idle_timeout_ns,
        .write_timeout_ns = c->write_timeout_ns,
        .handler = api_handle,
        .on_done = api_on_done,
        .ud = api,
    };
    httpd_server *srv = NULL;
    char err[256] = "";
    rc = httpd_listen(&ho, &srv, err, sizeof err);
    if (rc == RT_OK) {
        api_set_http(api, srv);
        rc = httpd_start(srv);
        if (rc != RT_OK) snprintf(err, sizeof err, "start: %s", rt_strerror(rc));
    }
    if (rc != RT_OK) {
        char detail[sizeof err + sizeof c->listen + 4];   /* "listen: err", never truncated */
        snprintf(detail, sizeof detail, "%s: %s", c->listen, err[0] ? err : rt_strerror(rc));
        httpd_free(srv);
        api_free(api);
        pipeline_stop(p);
        ledger_close(l);
        return fail_startup("cannot listen", detail);
    }
    log_listening(l, srv);
    daemon_report(&d.ready_fd, NULL);

    rt_chan_recv(d.stop, NULL);   /* until SIGTERM / SIGINT */
    drain_and_stop(l, p, api, srv);
    pidfile_release(c->pidfile, d.pidfile_fd);
    d.pidfile_fd = -1;
    return 0;
}

/* -------------------------------------------------------- healthcheck */

/* GET /healthz on the configured listen address (0.0.0.0 -> 127.0.0.1,
 * :: -> ::1) with plain blocking sockets and a 3 s timeout: for container
 * HEALTHCHECKs, where curl is not installed.  0 if the answer is 200. */
static int healthcheck(const config *c) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    const char *host = c->host;
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)c->port);
        if (strcmp(host, "::") == 0) host = "::1";
        inet_pton(AF_INET6, host, &s6->sin6_addr);
        sl = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)c->port);
        if (strcmp(host, "0.0.0.0") == 0) host = "127.0.0.1";
        inet_pton(AF_INET, host, &s4->sin_addr);
        sl = sizeof *s4;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "healthcheck: socket: %s\n", strerror(errno));
        return 1;
    }
    struct timeval tv = { .tv_sec = 3 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0) {
        fprintf(stderr, "healthcheck: connect %s port %d: %s\n", host, c->port, strerror(errno));
        close(fd);
        return 1;
    }
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    char resp[256] = "";
    ssize_t n = -1;
    if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof req - 1))
        n = recv(fd, resp, sizeof resp - 1, 0);
    close(fd);
    if (n > 0) resp[n] = '\0';
    if (n > 12 && strncmp(resp, "HTTP/1.", 7) == 0 && strncmp(resp + 8, " 200", 4) == 0) {
        printf("healthy\n");
        return 0;
    }
    resp[strcspn(resp, "\r\n")] = '\0';
    fprintf(stderr, "healthcheck: unhealthy: %s\n", n > 0 ? resp : "no answer");
    return 1;
}

/* ------------------------------------------------------------- main */

static void export_gomaxprocs(const config *c) {
    if (c->gomaxprocs <= 0) return;
    if (c->src[CK_GOMAXPROCS] != CONFIG_SRC_FLAG && getenv("GOMAXPROCS") != NULL) return;
    char v[16];
    snprintf(v, sizeof v, "%d", c->gomaxprocs);
    setenv("GOMAXPROCS", v, 1);
}

static const char *describe_admin_key_source(const config *c) {
    if (c->src[CK_ADMIN_KEY] != CONFIG_SRC_DEFAULT) {
        switch (c->src[CK_ADMIN_KEY]) {
        case CONFIG_SRC_FLAG: return "flag";
        case CONFIG_SRC_ENV: return "env";
        default: return "config file";
        }
    }
    if (c->admin_key[0] != '\0') return "admin_key_file";
    return "stored";   /* the hash of a key generated at an earlier start */
}

static int setup_logging(const config *c) {
    log_set_format(c->log_format);
    log_set_level(c->log_level);
    if (c->log_file[0] == '\0') return 0;
    int rc = log_open_file(c->log_file);
    if (rc != 0) {
        fprintf(stderr, "ledgerd: log_file %s: %s\n", c->log_file, strerror(-rc));
        return -1;
    }
    return 0;
}

/* Overwrite an --admin-key value in argv (the config holds its own copy),
 * so that ps and /proc/PID/cmdline no longer show it once we run. */
static void scrub_admin_key_arg(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *v = NULL;
        if (strcmp(argv[i], "--admin-key") == 0 && i + 1 < argc) v = argv[i + 1];
        else if (strncmp(argv[i], "--admin-key=", 12) == 0) v = argv[i] + 12;
        if (v != NULL) memset(v, 'x', strlen(v));
    }
}

int main(int argc, char **argv) {
    char err[1024];
    config *c = &d.cfg;
    if (config_parse(argc, argv, environ, c, err, sizeof err) != 0) {
        fprintf(stderr, "ledgerd: %s\n", err);
        return 2;
    }
    scrub_admin_key_arg(argc, argv);
    switch (c->action) {
    case CONFIG_HELP:
        config_print_help(stdout, "ledgerd");
        return 0;
    case CONFIG_VERSION:
        printf("ledgerd %s\n", LEDGERD_VERSION);
        return 0;
    case CONFIG_HEALTHCHECK:
        return healthcheck(c);
    default:
        break;
    }
    if (config_absolutize(c, err, sizeof err) != 0 || config_load_admin_key(c, err, sizeof err) != 0) {
        fprintf(stderr, "ledgerd: %s\n", err);
        return 2;
    }
    if (c->action == CONFIG_CHECK) {
        printf("config OK\n");
        config_print(stdout, c);
        return 0;
    }
    d.admin_key_source = describe_admin_key_source(c);
    export_gomaxprocs(c);
    if (setup_logging(c) != 0) return 1;

    if (c->daemon) {
        d.stderr_is_log = c->log_file[0] != '\0';
        if (!d.stderr_is_log)
            fprintf(stderr, "ledgerd: warning: --daemon without --log-file: the log goes to /dev/null\n");
        if (daemon_detach(d.stderr_is_log ? log_fd() : -1, &d.ready_fd, err, sizeof err) != 0) {
            fprintf(stderr, "ledgerd: %s\n", err);
            return 1;
        }
    }
    if (c->pidfile[0] != '\0') {
        d.pidfile_fd = pidfile_acquire(c->pidfile, err, sizeof err);
        if (d.pidfile_fd < 0) {
            log_error("cannot take the pidfile", LOG_STR("error", err));
            daemon_report(&d.ready_fd, err);
            return 1;
        }
    }
    int rc = rt_chan_make(&d.stop, 0, 0);
    if (rc == RT_OK) rc = start_signal_thread(err, sizeof err) == 0 ? RT_OK : RT_ESYS;
    else snprintf(err, sizeof err, "stop channel: %s", rt_strerror(rc));
    if (rc == RT_OK) {
        rc = rt_main(run, NULL);   /* returns only if the runtime cannot start */
        snprintf(err, sizeof err, "runtime: %s", rt_strerror(rc));
    }
    return fail_startup("cannot start", err);
}
