/*
 * net_test_util.h — helpers for the network tests (test_net*.c, test_echo*.c).
 *
 *   ntu_pair        a connected pair of runtime connections over loopback
 *   ntu_spawn       re-run this test binary as a child process with
 *                   RT_NET_CHILD=name, its stdin/stdout on pipes (the child
 *                   is a plain program: main() dispatches before rt_main)
 *   ntu_rss_kib     this process's resident set (VmRSS)
 *   ntu_cpu_ns      this process's user+system CPU time
 *
 * Network tests skip (exit 0 with a message) where the runtime was built
 * without a netpoller (RT_HAVE_NETPOLL undefined: no target libuv).
 */
#ifndef LEDGERD_NET_TEST_UTIL_H
#define LEDGERD_NET_TEST_UTIL_H

#include "rt_test.h"

#include <sys/resource.h>

/* A connected pair over host (the listener is closed again). */
static inline void ntu_pair(const char *host, rt_conn **client, rt_conn **server) {
    rt_listener *l = NULL;
    CHECK_EQ(rt_listen(&l, host, 0, 16), RT_OK);
    int port = rt_listener_port(l);
    CHECK(port > 0);
    CHECK_EQ(rt_dial(client, host, port), RT_OK);
    CHECK_EQ(rt_accept(l, server), RT_OK);
    CHECK_EQ(rt_listener_close(l), RT_OK);
}

/* Read exactly len bytes (fails the test on EOF or error). */
static inline void ntu_read_full(rt_conn *c, void *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        int64_t n = rt_conn_read(c, (char *)buf + got, len - got);
        if (n <= 0) fprintf(stderr, "ntu_read_full: %lld (%s)\n", (long long)n,
                            n < 0 ? rt_strerror((int)n) : "EOF");
        CHECK(n > 0);
        got += (size_t)n;
    }
}

static inline long ntu_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

static inline int64_t ntu_cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * RT_SECOND +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * RT_MICROSECOND;
}

typedef struct ntu_child {
    pid_t pid;
    int to_child;     /* write end of the child's stdin */
    int from_child;   /* read end of the child's stdout */
} ntu_child;

/*
 * Spawn this binary with RT_NET_CHILD=name plus the given extra environment
 * entries ("K=V", NULL-terminated; may be NULL).  The child's stderr is ours.
 */
static inline int ntu_spawn(ntu_child *ch, const char *name, const char *const *extra) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0) return -1;
    if (pipe2(out, O_CLOEXEC) != 0) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    int rc = rt_test_spawn_self(&ch->pid, "RT_NET_CHILD", name, extra, &fa);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        return -1;
    }
    ch->to_child = in[1];
    ch->from_child = out[0];
    return 0;
}

/* Blocking helpers for use from goroutines (they run under rt_blocking). */
typedef struct ntu_io { int fd; char *buf; size_t len; ssize_t result; } ntu_io;

static inline void *ntu_read_line_fn(void *arg) {
    ntu_io *io = arg;
    size_t used = 0;
    while (used + 1 < io->len) {
        ssize_t r = read(io->fd, io->buf + used, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (io->buf[used++] == '\n') break;
    }
    io->buf[used] = 0;
    io->result = (ssize_t)used;
    return NULL;
}

/* Read one line from fd without blocking other goroutines. */
static inline ssize_t ntu_read_line(int fd, char *buf, size_t len) {
    ntu_io io = { fd, buf, len, 0 };
    rt_blocking(ntu_read_line_fn, &io);
    return io.result;
}

static inline void *ntu_waitpid_fn(void *arg) {
    pid_t *pid = arg;
    int status = -1;
    while (waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
    }
    return (void *)(intptr_t)status;
}

static inline int ntu_wait(ntu_child *ch) {
    close(ch->to_child);
    close(ch->from_child);
    return (int)(intptr_t)rt_blocking(ntu_waitpid_fn, &ch->pid);
}

#endif /* LEDGERD_NET_TEST_UTIL_H */
