/*
 * ledger_test.h — helpers shared by the ledger tests, on top of the
 * runtime's harness (tests/runtime/rt_test.h: CHECK, RUN, SCALED, children).
 *
 * Every test works in a fresh directory under LEDGER_TEST_DIR (set by CMake
 * to the build tree, so fsync hits a real disk; default /tmp), removed when
 * the program passes.  Raw SQLite access (to corrupt or inspect a database)
 * goes through lt_sql*, outside the ledger, like an operator with the
 * sqlite3 shell would.
 */
#ifndef LEDGERD_LEDGER_TEST_H
#define LEDGERD_LEDGER_TEST_H

#include "rt_test.h"
#include "ledger.h"

#include <dirent.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>

#define CHECK_OK(expr)                                                           \
    do {                                                                         \
        int rc_ = (expr);                                                        \
        if (rc_ != LEDGER_OK) {                                                  \
            fprintf(stderr, "%s:%d: %s failed: %s (%d)\n", __FILE__, __LINE__,   \
                    #expr, ledger_strerror(rc_), rc_);                           \
            fflush(stderr);                                                      \
            _exit(1);                                                            \
        }                                                                        \
        atomic_fetch_add(&rt_test_checks, 1);                                    \
    } while (0)

#define CHECK_RC(expr, want)                                                     \
    do {                                                                         \
        int rc_ = (expr), want_ = (want);                                        \
        if (rc_ != want_) {                                                      \
            fprintf(stderr, "%s:%d: %s: got %s (%d), want %s (%d)\n", __FILE__,  \
                    __LINE__, #expr, ledger_strerror(rc_), rc_,                  \
                    ledger_strerror(want_), want_);                              \
            fflush(stderr);                                                      \
            _exit(1);                                                            \
        }                                                                        \
        atomic_fetch_add(&rt_test_checks, 1);                                    \
    } while (0)

/* A fresh directory for one test; lt_path joins a name onto it. */
static inline char *lt_tmpdir(const char *tag) {
    const char *base = getenv("LEDGER_TEST_DIR");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0755);
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/ledger-%s-XXXXXX", base, tag);
    if (!mkdtemp(p)) {
        perror("mkdtemp");
        _exit(1);
    }
    return p;
}

static inline char *lt_path(const char *dir, const char *name) {
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/%s", dir, name);
    return p;
}

static inline void lt_rmrf(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static inline ledger *lt_open(const char *path, const ledger_options *opts) {
    ledger *l = NULL;
    char err[512];
    int rc = ledger_open(path, opts, &l, err, sizeof err);
    if (rc != LEDGER_OK) {
        fprintf(stderr, "ledger_open %s: %s: %s\n", path, ledger_strerror(rc), err);
        _exit(1);
    }
    return l;
}

/* Run SQL on the database directly (no ledger open on it, or a reader). */
static inline void lt_sql(const char *path, const char *sql) {
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "lt_sql %s: %s\n", sql, msg);
        _exit(1);
    }
    sqlite3_close(db);
}

/* The first column of the first row of a query, as an integer. */
static inline int64_t lt_sql_int(const char *path, const char *sql) {
    sqlite3 *db;
    sqlite3_stmt *st;
    CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "lt_sql_int %s: %s\n", sql, sqlite3_errmsg(db));
        _exit(1);
    }
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static inline ledger_transfer_req lt_xfer(const char *from, const char *to, int64_t amount,
                                          const char *currency) {
    ledger_transfer_req r;
    memset(&r, 0, sizeof r);
    r.from = from;
    r.to = to;
    r.amount = amount;
    r.currency = currency;
    return r;
}

static inline int64_t lt_balance(ledger *l, const char *id, const char *currency) {
    ledger_account a;
    int rc = ledger_get_account(l, id, currency, &a);
    if (rc != LEDGER_OK) {
        fprintf(stderr, "lt_balance %s: %s\n", id, ledger_strerror(rc));
        _exit(1);
    }
    return a.balance;
}

/* Spawn this test binary again with RT_TEST_CHILD=name plus extra
 * environment entries (NULL-terminated).  Returns the pid. */
static inline pid_t lt_spawn_child(const char *name, const char *const *extra_env) {
    pid_t pid;
    int rc = rt_test_spawn_self(&pid, "RT_TEST_CHILD", name, extra_env, NULL);
    CHECK(rc == 0);
    return pid;
}

static inline void *lt_waitpid_fn(void *arg) {
    pid_t *pid = arg;
    int status;
    while (waitpid(*pid, &status, 0) < 0)
        if (errno != EINTR) return (void *)(intptr_t)-1;
    return (void *)(intptr_t)status;
}

/* waitpid as a blocking call (other goroutines keep running). */
static inline int lt_waitpid(pid_t pid) {
    return (int)(intptr_t)rt_blocking(lt_waitpid_fn, &pid);
}

#endif /* LEDGERD_LEDGER_TEST_H */
