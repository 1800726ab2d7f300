/*
 * rt_test.h — the runtime tests' tiny harness.
 *
 * A test program runs its cases inside rt_main (so they run as goroutines),
 * counts its checks, and exits non-zero on the first failed check with the
 * file, line and expression.  Fatal-error behaviour (which exits the process)
 * is tested by re-running the test binary as a child with RT_TEST_CHILD=name
 * and checking its exit status and stderr.
 *
 * Usage:
 *     static void test_foo(void) { CHECK(1 + 1 == 2); CHECK_EQ(x, 3); }
 *     static int run(void *arg) { RUN(test_foo); return rt_test_done(); }
 *     int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
 *
 * Scale: RT_TEST_SCALE (environment, default 1.0) multiplies the sizes of the
 * stress tests via SCALED(n); the sanitizer and qemu runs set it below 1.
 */
#ifndef LEDGERD_RT_TEST_H
#define LEDGERD_RT_TEST_H

#define _GNU_SOURCE
#include "rt.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static _Atomic long rt_test_checks;
static const char *rt_test_program = "test";

#define CHECK(expr)                                                              \
    do {                                                                         \
        atomic_fetch_add(&rt_test_checks, 1);                                    \
        if (!(expr)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); \
            fflush(stderr);                                                      \
            _exit(1);                                                            \
        }                                                                        \
    } while (0)

#define CHECK_EQ(a, b)                                                           \
    do {                                                                         \
        atomic_fetch_add(&rt_test_checks, 1);                                    \
        long long va_ = (long long)(a), vb_ = (long long)(b);                    \
        if (va_ != vb_) {                                                        \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n", \
                    __FILE__, __LINE__, #a, #b, va_, vb_);                       \
            fflush(stderr);                                                      \
            _exit(1);                                                            \
        }                                                                        \
    } while (0)

#define RUN(fn)                                                                  \
    do {                                                                         \
        int64_t t0_ = rt_nanotime();                                             \
        fn();                                                                    \
        fprintf(stderr, "  ok  %-40s %8.2f ms\n", #fn,                           \
                (double)(rt_nanotime() - t0_) / 1e6);                            \
    } while (0)

static inline double rt_test_scale(void) {
    const char *s = getenv("RT_TEST_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}
/* Timing bounds are for the normal build on an idle machine; sanitizer and
 * emulator runs (5-20x slower) widen them by RT_TEST_TIMING_SLACK. */
static inline double rt_test_timing_slack(void) {
    const char *s = getenv("RT_TEST_TIMING_SLACK");
    double v = s ? atof(s) : 1.0;
    return v >= 1.0 ? v : 1.0;
}
#define TIMING_BOUND(ns) ((int64_t)((double)(ns) * rt_test_timing_slack()))

#define SCALED(n) ((long)((double)(n) * rt_test_scale()) > 0 ? (long)((double)(n) * rt_test_scale()) : 1)

static inline int rt_test_done(void) {
    fprintf(stderr, "%s: %ld checks passed\n", rt_test_program,
            (long)atomic_load(&rt_test_checks));
    return 0;
}

/*
 * Start this test binary again as a child process: the environment is ours
 * minus any `marker=` entry, plus `marker=name` and the NULL-terminated
 * `extra` entries ("K=V"; may be NULL); file actions as given.  Under an
 * emulator (the aarch64 tests run under qemu-user, which cannot exec a
 * foreign binary without binfmt_misc) RT_TEST_EMULATOR holds its command
 * line, space-separated, and the child runs as `emulator... exe`.
 * Returns posix_spawn's result (0 on success), -1 if /proc/self/exe is
 * unreadable.
 */
static inline int rt_test_spawn_self(pid_t *pid, const char *marker, const char *name,
                                     const char *const *extra,
                                     const posix_spawn_file_actions_t *fa) {
    size_t marker_len = strlen(marker), n = 0, nx = 0;
    while (environ[n]) n++;
    while (extra && extra[nx]) nx++;
    char **env = calloc(n + nx + 2, sizeof *env);
    if (!env) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!(strncmp(environ[i], marker, marker_len) == 0 && environ[i][marker_len] == '='))
            env[k++] = environ[i];
    char markbuf[256];
    snprintf(markbuf, sizeof markbuf, "%s=%s", marker, name);
    env[k++] = markbuf;
    for (size_t i = 0; i < nx; i++) env[k++] = (char *)extra[i];
    env[k] = NULL;
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len < 0) {
        free(env);
        return -1;
    }
    exe[len] = 0;
    char *argv[16];
    size_t argc_ = 0;
    char emu[1024] = "";
    const char *emu_env = getenv("RT_TEST_EMULATOR");
    if (emu_env && *emu_env) {
        snprintf(emu, sizeof emu, "%s", emu_env);
        char *save = NULL;
        for (char *tok = strtok_r(emu, " ", &save); tok && argc_ < 14;
             tok = strtok_r(NULL, " ", &save))
            argv[argc_++] = tok;
    }
    argv[argc_++] = exe;
    argv[argc_] = NULL;
    int rc = posix_spawnp(pid, argv[0], fa, NULL, argv, env);
    free(env);
    return rc;
}

/*
 * Run this test binary again with RT_TEST_CHILD=name; capture stderr (up to
 * cap-1 bytes, NUL-terminated) and return the wait status (-1 on error).
 */
static inline int rt_test_run_child(const char *name, char *out, size_t cap) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pipefd[0]);
    pid_t pid;
    int rc = rt_test_spawn_self(&pid, "RT_TEST_CHILD", name, NULL, &fa);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (rc != 0) { close(pipefd[0]); return -1; }
    size_t used = 0;
    for (;;) {
        char buf[4096];
        ssize_t r = read(pipefd[0], buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        size_t take = (size_t)r;
        if (used + take > cap - 1) take = cap - 1 - used;
        memcpy(out + used, buf, take);
        used += take;
    }
    out[used] = 0;
    close(pipefd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return status;
}

/* Expect child `name` to die as a Go fatal error: exit 2 and `needle` in its
 * output. */
#define CHECK_CHILD_FATAL(name, needle)                                          \
    do {                                                                         \
        static char out_[65536];                                                 \
        int st_ = rt_test_run_child((name), out_, sizeof out_);                  \
        if (!(WIFEXITED(st_) && WEXITSTATUS(st_) == 2 && strstr(out_, (needle)))) { \
            fprintf(stderr, "child %s: status %d, output:\n%s\n", (name), st_, out_); \
        }                                                                        \
        CHECK(WIFEXITED(st_) && WEXITSTATUS(st_) == 2);                          \
        CHECK(strstr(out_, (needle)) != NULL);                                   \
    } while (0)

typedef struct rt_test_child {
    const char *name;
    int (*fn)(void *arg);
} rt_test_child;

/*
 * main(): if RT_TEST_CHILD names one of `children`, run that child as the
 * main goroutine instead of the tests.
 */
static inline int rt_test_main_with_children(int argc, char **argv, int (*run)(void *),
                                             const rt_test_child *children) {
    (void)argc;
    const char *slash = strrchr(argv[0], '/');
    rt_test_program = slash ? slash + 1 : argv[0];
    const char *child = getenv("RT_TEST_CHILD");
    if (child && children) {
        for (const rt_test_child *c = children; c->name; c++)
            if (strcmp(c->name, child) == 0) return rt_main(c->fn, NULL);
        fprintf(stderr, "unknown RT_TEST_CHILD %s\n", child);
        return 3;
    }
    int rc = rt_main(run, NULL);
    fprintf(stderr, "rt_main failed: %s\n", rt_strerror(rc));
    return 1;
}

static inline int rt_test_main(int argc, char **argv, int (*run)(void *)) {
    return rt_test_main_with_children(argc, argv, run, NULL);
}

#endif /* LEDGERD_RT_TEST_H */
