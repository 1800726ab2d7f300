/*
 * test_echo10k.c — an echo server on the runtime holding 10,000 concurrent
 * connections (SCALED), every byte echoed and checked.
 *
 * The server is this process: one goroutine per connection, reading and
 * echoing.  The client is a child process (the open-files limit is per
 * process), a plain program with one epoll thread: it opens all the
 * connections, then runs ROUNDS rounds in which every connection sends a
 * 64-byte message unique to (connection, round) and checks the echo.
 *
 * Between the first round and the rest everything is idle; the server then
 * reports the memory each idle connection costs (VmRSS growth / N: the
 * goroutine's stack, the connection, the libuv handle) and checks that
 * holding idle connections costs no CPU (its CPU time over one second).
 */
#include "net_test_util.h"

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define MSG 64
#define ROUNDS 5

/* ============================================================ the client */

static void fill_msg(char *m, long id, int round) {
    int n = snprintf(m, MSG, "conn %ld round %d ", id, round);
    for (int i = n; i < MSG; i++) m[i] = (char)('a' + (id * 31 + round * 7 + i) % 26);
}

static int die(const char *what) {
    fprintf(stderr, "echo10k client: %s: %s\n", what, strerror(errno));
    return 1;
}

static int client_main(void) {
    int port = atoi(getenv("NTU_PORT"));
    long n = atol(getenv("NTU_N"));
    int *fds = calloc((size_t)n, sizeof *fds);
    int *got = calloc((size_t)n, sizeof *got);
    char (*buf)[MSG] = calloc((size_t)n, MSG);
    int ep = epoll_create1(0);
    if (!fds || !got || !buf || ep < 0) return die("setup");
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)port) };
    for (long i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0) return die("socket");
        if (connect(fds[i], (struct sockaddr *)&a, sizeof a) != 0) return die("connect");
        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)i };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0) return die("epoll_ctl");
    }
    struct epoll_event evs[256];
    for (int round = 0; round < ROUNDS; round++) {
        if (round == 1) {   /* let the server measure itself idle */
            printf("idle\n");
            fflush(stdout);
            char line[16];
            if (!fgets(line, sizeof line, stdin)) return die("stdin");
        }
        for (long i = 0; i < n; i++) {
            char m[MSG];
            fill_msg(m, i, round);
            if (write(fds[i], m, MSG) != MSG) return die("write");
            got[i] = 0;
        }
        long done = 0;
        while (done < n) {
            int k = epoll_wait(ep, evs, 256, 60000);
            if (k == 0) {
                fprintf(stderr, "echo10k client: round %d: %ld of %ld echoes after 60 s\n", round,
                        done, n);
                return 1;
            }
            if (k < 0) {
                if (errno == EINTR) continue;
                return die("epoll_wait");
            }
            for (int e = 0; e < k; e++) {
                long i = (long)evs[e].data.u64;
                ssize_t r = read(fds[i], buf[i] + got[i], (size_t)(MSG - got[i]));
                if (r <= 0) {
                    fprintf(stderr, "echo10k client: conn %ld: read %zd\n", i, r);
                    return 1;
                }
                got[i] += (int)r;
                if (got[i] == MSG) {
                    char m[MSG];
                    fill_msg(m, i, round);
                    if (memcmp(m, buf[i], MSG) != 0) {
                        fprintf(stderr, "echo10k client: conn %ld round %d: wrong echo\n", i, round);
                        return 1;
                    }
                    done++;
                }
            }
        }
    }
    for (long i = 0; i < n; i++) close(fds[i]);
    close(ep);
    free(fds);
    free(got);
    free(buf);
    printf("done %ld\n", n * ROUNDS);
    fflush(stdout);
    return 0;
}

/* ============================================================ the server */

#ifdef RT_HAVE_NETPOLL

static struct {
    rt_listener *l;
    long n;
    rt_waitgroup wg;
    _Atomic long accepted, bytes, closed_ok;
} sv;

static void echo_conn(void *arg) {
    rt_conn *c = arg;
    char buf[512];
    for (;;) {
        int64_t r = rt_conn_read(c, buf, sizeof buf);
        if (r <= 0) {
            if (r == 0) atomic_fetch_add(&sv.closed_ok, 1);
            else fprintf(stderr, "server read: %s\n", rt_strerror((int)r));
            break;
        }
        atomic_fetch_add(&sv.bytes, r);   /* before the echo: the client may report at once */
        CHECK_EQ(rt_conn_write(c, buf, (size_t)r), RT_OK);
    }
    rt_conn_close(c);
    rt_waitgroup_done(&sv.wg);
}

static void acceptor(void *arg) {
    (void)arg;
    for (long i = 0; i < sv.n; i++) {
        rt_conn *c = NULL;
        int rc = rt_accept(sv.l, &c);
        if (rc != RT_OK) fprintf(stderr, "accept: %s\n", rt_strerror(rc));
        CHECK_EQ(rc, RT_OK);
        atomic_fetch_add(&sv.accepted, 1);
        CHECK_EQ(rt_go(echo_conn, c), RT_OK);
    }
    rt_waitgroup_done(&sv.wg);
}

static void test_echo_10k(void) {
    sv.n = SCALED(10000);
    CHECK_EQ(rt_listen(&sv.l, "127.0.0.1", 0, 0), RT_OK);
    long rss0 = ntu_rss_kib();
    char portenv[32], nenv[32];
    snprintf(portenv, sizeof portenv, "NTU_PORT=%d", rt_listener_port(sv.l));
    snprintf(nenv, sizeof nenv, "NTU_N=%ld", sv.n);
    const char *extra[] = { portenv, nenv, NULL };
    ntu_child ch;
    int64_t t0 = rt_nanotime();
    rt_waitgroup_add(&sv.wg, (int)sv.n + 1);
    CHECK_EQ(rt_go(acceptor, NULL), RT_OK);
    CHECK_EQ(ntu_spawn(&ch, "echo10k", extra), 0);

    char line[64];
    CHECK(ntu_read_line(ch.from_child, line, sizeof line) > 0);
    CHECK(strcmp(line, "idle\n") == 0);
    int64_t t1 = rt_nanotime();
    CHECK_EQ(atomic_load(&sv.accepted), sv.n);
    CHECK_EQ(atomic_load(&sv.bytes), sv.n * MSG);
    rt_sleep(100 * RT_MILLISECOND);   /* settle */
    long rss1 = ntu_rss_kib();
    int64_t cpu0 = ntu_cpu_ns();
    rt_sleep(RT_SECOND);
    int64_t idle_cpu = ntu_cpu_ns() - cpu0;
    fprintf(stderr,
            "      %ld connections up and echoed once in %.2f s\n"
            "      memory per idle connection: %.2f KiB (VmRSS %ld -> %ld KiB)\n"
            "      CPU while %ld connections idle for 1 s: %.2f ms\n",
            sv.n, (double)(t1 - t0) / 1e9, (double)(rss1 - rss0) / (double)sv.n, rss0, rss1,
            sv.n, (double)idle_cpu / 1e6);
    CHECK(idle_cpu < 50 * RT_MILLISECOND);

    CHECK_EQ(write(ch.to_child, "go\n", 3), 3);
    CHECK(ntu_read_line(ch.from_child, line, sizeof line) > 0);
    char want[64];
    snprintf(want, sizeof want, "done %ld\n", sv.n * ROUNDS);
    CHECK(strcmp(line, want) == 0);
    int st = ntu_wait(&ch);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    rt_waitgroup_wait(&sv.wg);   /* every server goroutine saw EOF */
    CHECK_EQ(atomic_load(&sv.bytes), sv.n * MSG * ROUNDS);
    CHECK_EQ(atomic_load(&sv.closed_ok), sv.n);
    fprintf(stderr, "      %ld echoes verified in %.2f s\n", sv.n * ROUNDS,
            (double)(rt_nanotime() - t0) / 1e9);
    CHECK_EQ(rt_listener_close(sv.l), RT_OK);
}

static int run(void *arg) {
    (void)arg;
    RUN(test_echo_10k);
    return rt_test_done();
}

#endif

int main(int argc, char **argv) {
    const char *child = getenv("RT_NET_CHILD");
    if (child && strcmp(child, "echo10k") == 0) return client_main();
#ifdef RT_HAVE_NETPOLL
    return rt_test_main(argc, argv, run);
#else
    (void)argc, (void)argv;
    fprintf(stderr, "test_echo10k: skipped (runtime built without a netpoller)\n");
    return 0;
#endif
}
