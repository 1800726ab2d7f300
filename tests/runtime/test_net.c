/*
 * test_net.c — the goroutine-blocking TCP API (netpoll.c).
 *
 * What is checked: listen/dial/accept over IPv4 and IPv6 loopback (port 0,
 * addresses), byte-exact echo with many goroutines, connect to a closed port
 * (RT_ECONNREFUSED), a reset by the peer (RT_ECONNRESET on read and write),
 * half-close, read and write deadlines (firing within bounds, extension while
 * parked, past deadlines, the connection staying usable), a 16 MiB write to a
 * slow reader (the poller's write path and flow control on both sides), close
 * waking a blocked reader and a blocked writer with RT_ECLOSED, listener
 * close waking a blocked accept, context cancellation and timeouts of read,
 * write, accept and dial, and that goroutines parked only on the network
 * (woken by a thread that is not an M) are not reported as a deadlock.
 *
 * "Blocked" is established from the goroutine dump ("I/O wait"), not by
 * sleeping and hoping (chan_test_util.h).
 */
#include "chan_test_util.h"
#include "net_test_util.h"

#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#ifdef RT_HAVE_NETPOLL

static void go(rt_func fn, void *arg) { CHECK_EQ(rt_go(fn, arg), RT_OK); }

static uint32_t fastrand_test(void) {
    static _Atomic uint64_t state = 0x9E3779B97F4A7C15u;
    uint64_t x = atomic_fetch_add(&state, 0x9E3779B97F4A7C15u);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdu;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* A bound on how long a deadline may overshoot: generous (a shared 2-core
 * machine), and more so under sanitizers or an emulator (scale < 1). */
#define SLACK (rt_test_scale() < 1 ? 3 * RT_SECOND : 1 * RT_SECOND)

/* ============================================================== basics */

static void test_listen_dial_accept_v4(void) {
    rt_listener *l = NULL;
    CHECK_EQ(rt_listen(&l, "127.0.0.1", 0, 0), RT_OK);
    int port = rt_listener_port(l);
    CHECK(port > 0 && port < 65536);
    rt_conn *c = NULL, *s = NULL;
    CHECK_EQ(rt_dial(&c, "127.0.0.1", port), RT_OK);
    CHECK_EQ(rt_accept(l, &s), RT_OK);

    char la[64], pa[64], want[64];
    CHECK_EQ(rt_conn_peer_addr(c, pa, sizeof pa), RT_OK);
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    CHECK(strcmp(pa, want) == 0);
    CHECK_EQ(rt_conn_local_addr(s, la, sizeof la), RT_OK);
    CHECK(strcmp(la, want) == 0);
    CHECK_EQ(rt_conn_local_addr(c, la, sizeof la), RT_OK);
    CHECK_EQ(rt_conn_peer_addr(s, pa, sizeof pa), RT_OK);
    CHECK(strcmp(la, pa) == 0);
    CHECK_EQ(rt_conn_peer_addr(c, pa, 4), RT_EINVAL);   /* does not fit */

    CHECK_EQ(rt_conn_write(c, "hello", 5), RT_OK);
    char buf[16];
    ntu_read_full(s, buf, 5);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK_EQ(rt_conn_write(s, "world!", 6), RT_OK);
    ntu_read_full(c, buf, 6);
    CHECK(memcmp(buf, "world!", 6) == 0);
    CHECK_EQ(rt_conn_close(c), RT_OK);
    CHECK_EQ(rt_conn_read(s, buf, sizeof buf), 0);   /* EOF */
    CHECK_EQ(rt_conn_read(s, buf, sizeof buf), 0);   /* and again */
    CHECK_EQ(rt_conn_close(s), RT_OK);
    CHECK_EQ(rt_listener_close(l), RT_OK);
}

static void test_bad_arguments(void) {
    rt_listener *l = NULL;
    rt_conn *c = NULL;
    CHECK_EQ(rt_listen(&l, "not-an-ip", 0, 0), RT_EINVAL);
    CHECK_EQ(rt_listen(&l, "127.0.0.1", 70000, 0), RT_EINVAL);
    CHECK_EQ(rt_dial(&c, "127.0.0.1", 0), RT_EINVAL);
    CHECK_EQ(rt_dial(&c, "localhost", 80), RT_EINVAL);   /* literals only */
    CHECK(c == NULL);
}

static void test_addr_in_use(void) {
    rt_listener *a = NULL, *b = NULL;
    CHECK_EQ(rt_listen(&a, "127.0.0.1", 0, 0), RT_OK);
    CHECK_EQ(rt_listen(&b, "127.0.0.1", rt_listener_port(a), 0), RT_EADDRINUSE);
    CHECK(b == NULL);
    CHECK_EQ(rt_listener_close(a), RT_OK);
}

/* A port nothing listens on: bound (so nobody else takes it) but not
 * listening, so a connect is refused. */
static int unlistened_port(int *fd_out) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    CHECK_EQ(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    CHECK_EQ(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *fd_out = fd;
    return ntohs(a.sin_port);
}

static void test_connect_refused(void) {
    int fd;
    int port = unlistened_port(&fd);
    rt_conn *c = (rt_conn *)1;
    CHECK_EQ(rt_dial(&c, "127.0.0.1", port), RT_ECONNREFUSED);
    CHECK(c == NULL);
    close(fd);
}

static void test_ipv6_loopback(void) {
    rt_listener *l = NULL;
    int rc = rt_listen(&l, "::1", 0, 0);
    if (rc != RT_OK) {
        fprintf(stderr, "      (skipped: no IPv6 loopback here: %s)\n", rt_strerror(rc));
        return;
    }
    int port = rt_listener_port(l);
    rt_conn *c = NULL, *s = NULL;
    CHECK_EQ(rt_dial(&c, "::1", port), RT_OK);
    CHECK_EQ(rt_accept(l, &s), RT_OK);
    char pa[80], want[80];
    CHECK_EQ(rt_conn_peer_addr(c, pa, sizeof pa), RT_OK);
    snprintf(want, sizeof want, "[::1]:%d", port);
    CHECK(strcmp(pa, want) == 0);
    CHECK_EQ(rt_conn_write(c, "v6", 2), RT_OK);
    char buf[2];
    ntu_read_full(s, buf, 2);
    CHECK(memcmp(buf, "v6", 2) == 0);
    rt_conn_close(c);
    rt_conn_close(s);
    rt_listener_close(l);

    /* "::" is dual-stack: an IPv4 client reaches it. */
    CHECK_EQ(rt_listen(&l, "::", 0, 0), RT_OK);
    port = rt_listener_port(l);
    CHECK_EQ(rt_dial(&c, "127.0.0.1", port), RT_OK);
    CHECK_EQ(rt_accept(l, &s), RT_OK);
    CHECK_EQ(rt_conn_write(s, "4", 1), RT_OK);
    ntu_read_full(c, buf, 1);
    CHECK_EQ(buf[0], '4');
    rt_conn_close(c);
    rt_conn_close(s);
    rt_listener_close(l);
}

/* ======================================================= many goroutines */

static struct {
    rt_listener *l;
    int nconns;
    int rounds;
    rt_waitgroup wg;
    _Atomic long bytes_echoed;
    _Atomic long verified;
} em;

static void echo_conn(void *arg) {
    rt_conn *s = arg;
    char buf[4096];
    for (;;) {
        int64_t n = rt_conn_read(s, buf, sizeof buf);
        if (n <= 0) {
            CHECK_EQ(n, 0);
            break;
        }
        CHECK_EQ(rt_conn_write(s, buf, (size_t)n), RT_OK);
        atomic_fetch_add(&em.bytes_echoed, n);
    }
    rt_conn_close(s);
    rt_waitgroup_done(&em.wg);
}

static void echo_acceptor(void *arg) {
    (void)arg;
    for (int i = 0; i < em.nconns; i++) {
        rt_conn *s = NULL;
        CHECK_EQ(rt_accept(em.l, &s), RT_OK);
        go(echo_conn, s);
    }
    rt_waitgroup_done(&em.wg);
}

static void echo_client(void *arg) {
    long id = (long)(intptr_t)arg;
    rt_conn *c = NULL;
    CHECK_EQ(rt_dial(&c, "127.0.0.1", rt_listener_port(em.l)), RT_OK);
    for (int r = 0; r < em.rounds; r++) {
        char msg[200], back[200];
        size_t len = 1 + (size_t)((id * 7 + r * 13) % (int)sizeof msg);
        for (size_t i = 0; i < len; i++) msg[i] = (char)(id + r + (long)i);
        CHECK_EQ(rt_conn_write(c, msg, len), RT_OK);
        ntu_read_full(c, back, len);
        CHECK(memcmp(msg, back, len) == 0);
        atomic_fetch_add(&em.verified, 1);
    }
    CHECK_EQ(rt_conn_close(c), RT_OK);
    rt_waitgroup_done(&em.wg);
}

static void test_echo_many(void) {
    em.nconns = (int)SCALED(500);
    em.rounds = 20;
    CHECK_EQ(rt_listen(&em.l, "127.0.0.1", 0, 0), RT_OK);
    rt_waitgroup_add(&em.wg, 1 + 2 * em.nconns);
    go(echo_acceptor, NULL);
    for (long i = 0; i < em.nconns; i++) go(echo_client, (void *)(intptr_t)i);
    rt_waitgroup_wait(&em.wg);
    CHECK_EQ(atomic_load(&em.verified), (long)em.nconns * em.rounds);
    CHECK_EQ(rt_listener_close(em.l), RT_OK);
}

/* ================================================================= reset */

static void test_peer_reset(void) {
    rt_listener *l = NULL;
    CHECK_EQ(rt_listen(&l, "127.0.0.1", 0, 0), RT_OK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)rt_listener_port(l)) };
    CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);   /* loopback: immediate */
    rt_conn *s = NULL;
    CHECK_EQ(rt_accept(l, &s), RT_OK);
    CHECK_EQ(write(fd, "x", 1), 1);
    char buf[8];
    ntu_read_full(s, buf, 1);
    struct linger lg = { 1, 0 };
    CHECK_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);   /* RST */
    CHECK_EQ(rt_conn_read(s, buf, sizeof buf), RT_ECONNRESET);
    CHECK_EQ(rt_conn_read(s, buf, sizeof buf), RT_ECONNRESET);   /* sticky */
    int rc = rt_conn_write(s, "y", 1);
    CHECK(rc == RT_ECONNRESET);
    CHECK_EQ(rt_conn_close(s), RT_OK);
    CHECK_EQ(rt_listener_close(l), RT_OK);
}

/* A write into a connection the peer has closed fails (first write may still
 * be accepted by the kernel; a following one gets the RST). */
static void test_write_to_closed_peer(void) {
    rt_conn *c, *s;
    ntu_pair("127.0.0.1", &c, &s);
    CHECK_EQ(rt_conn_close(s), RT_OK);
    char buf[4];
    CHECK_EQ(rt_conn_read(c, buf, sizeof buf), 0);   /* FIN seen */
    int rc = RT_OK;
    for (int i = 0; i < 100 && rc == RT_OK; i++) {
        rc = rt_conn_write(c, "data", 4);
        if (rc == RT_OK) rt_sleep(RT_MILLISECOND);
    }
    CHECK_EQ(rc, RT_ECONNRESET);
    CHECK_EQ(rt_conn_write(c, "data", 4), RT_ECONNRESET);   /* sticky */
    CHECK_EQ(rt_conn_close(c), RT_OK);
}

/* ============================================================ half-close */

static void test_half_close(void) {
    rt_conn *c, *s;
    ntu_pair("127.0.0.1", &c, &s);
    CHECK_EQ(rt_conn_write(c, "ping", 4), RT_OK);
    CHECK_EQ(rt_conn_shutdown_write(c), RT_OK);
    CHECK_EQ(rt_conn_shutdown_write(c), RT_OK);        /* idempotent */
    CHECK_EQ(rt_conn_write(c, "more", 4), RT_ECLOSED);  /* write side is shut */
    char buf[16];
    ntu_read_full(s, buf, 4);
    CHECK(memcmp(buf, "ping", 4) == 0);
    CHECK_EQ(rt_conn_read(s, buf, sizeof buf), 0);      /* the peer sees EOF */
    CHECK_EQ(rt_conn_write(s, "pong", 4), RT_OK);       /* and can still answer */
    CHECK_EQ(rt_conn_close(s), RT_OK);
    ntu_read_full(c, buf, 4);
    CHECK(memcmp(buf, "pong", 4) == 0);
    CHECK_EQ(rt_conn_read(c, buf, sizeof buf), 0);
    CHECK_EQ(rt_conn_close(c), RT_OK);
}

/* ============================================================= deadlines */

static void test_read_deadline(void) {
    rt_conn *c, *s;
    ntu_pair("127.0.0.1", &c, &s);
    char buf[8];

    /* Fires, within bounds. */
    int64_t t0 = rt_nanotime();
    CHECK_EQ(rt_conn_set_read_deadline(c, t0 + 50 * RT_MILLISECOND), RT_OK);
    CHECK_EQ(rt_conn_read(c, buf, sizeof buf), RT_ETIMEDOUT);
    int64_t took = rt_nanotime() - t0;
    CHECK(took >= 50 * RT_MILLISECOND);
    CHECK(took < 50 * RT_MILLISECOND + SLACK);
    /* Still past: fails at once, even with data waiting (as Go does). */
    CHECK_EQ(rt_conn_write(s, "abc", 3), RT_OK);
    rt_sleep(10 * RT_MILLISECOND);
    CHECK_EQ(rt_conn_read(c, buf, sizeof buf), RT_ETIMEDOUT);

    /* Cleared: the connection is usable and the data is intact. */
    CHECK_EQ(rt_conn_set_read_deadline(c, 0), RT_OK);
    ntu_read_full(c, buf, 3);
    CHECK(memcmp(buf, "abc", 3) == 0);

    /* A deadline in the future does not disturb a read that gets data. */
    CHECK_EQ(rt_conn_set_read_deadline(c, rt_nanotime() + 10 * RT_SECOND), RT_OK);
    CHECK_EQ(rt_conn_write(s, "d", 1), RT_OK);
    ntu_read_full(c, buf, 1);
    CHECK_EQ(buf[0], 'd');
    CHECK_EQ(rt_conn_set_read_deadline(c, 0), RT_OK);

    rt_conn_close(c);
    rt_conn_close(s);
}

static struct {
    rt_conn *c;
    int64_t result;
    int64_t took;
    rt_waitgroup wg;
    _Atomic uint64_t goid;
} dl;

static void deadline_reader(void *arg) {
    (void)arg;
    dl.goid = rt_goid();
    char buf[8];
    int64_t t0 = rt_nanotime();
    dl.result = rt_conn_read(dl.c, buf, sizeof buf);
    dl.took = rt_nanotime() - t0;
    rt_waitgroup_done(&dl.wg);
}

/* Changing the deadline of a parked reader takes effect (Go semantics). */
static void test_read_deadline_changed_while_parked(void) {
    rt_conn *s;
    ntu_pair("127.0.0.1", &dl.c, &s);
    /* Extend: 100 ms, then (while parked) 400 ms.  The first deadline
     * leaves room for a loaded machine to run the extension in time. */
    CHECK_EQ(rt_conn_set_read_deadline(dl.c, rt_nanotime() + 100 * RT_MILLISECOND), RT_OK);
    rt_waitgroup_add(&dl.wg, 1);
    int64_t t0 = rt_nanotime();
    go(deadline_reader, NULL);
    rt_sleep(5 * RT_MILLISECOND);
    CHECK_EQ(rt_conn_set_read_deadline(dl.c, t0 + 400 * RT_MILLISECOND), RT_OK);
    rt_waitgroup_wait(&dl.wg);
    CHECK_EQ(dl.result, RT_ETIMEDOUT);
    CHECK(rt_nanotime() - t0 >= 400 * RT_MILLISECOND);

    /* Shorten: none, then (while parked) now. */
    CHECK_EQ(rt_conn_set_read_deadline(dl.c, 0), RT_OK);
    rt_waitgroup_add(&dl.wg, 1);
    dl.goid = 0;
    go(deadline_reader, NULL);
    while (!dl.goid) rt_sleep(RT_MILLISECOND);
    ctu_wait_parked(dl.goid, "I/O wait");
    CHECK_EQ(rt_conn_set_read_deadline(dl.c, rt_nanotime()), RT_OK);
    rt_waitgroup_wait(&dl.wg);
    CHECK_EQ(dl.result, RT_ETIMEDOUT);

    /* Cleared while parked: the read waits for data. */
    CHECK_EQ(rt_conn_set_read_deadline(dl.c, rt_nanotime() + 20 * RT_MILLISECOND), RT_OK);
    rt_waitgroup_add(&dl.wg, 1);
    dl.goid = 0;
    go(deadline_reader, NULL);
    while (!dl.goid) rt_sleep(RT_MILLISECOND);
    ctu_wait_parked(dl.goid, "I/O wait");
    CHECK_EQ(rt_conn_set_read_deadline(dl.c, 0), RT_OK);
    rt_sleep(60 * RT_MILLISECOND);
    CHECK_EQ(rt_conn_write(s, "late", 4), RT_OK);
    rt_waitgroup_wait(&dl.wg);
    CHECK_EQ(dl.result, 4);
    CHECK(dl.took >= 60 * RT_MILLISECOND);

    rt_conn_close(dl.c);
    rt_conn_close(s);
}

static void test_write_deadline(void) {
    rt_conn *c, *s;
    ntu_pair("127.0.0.1", &c, &s);
    size_t big = 32u << 20;   /* far more than the socket buffers hold */
    char *buf = calloc(1, big);
    CHECK(buf != NULL);
    int64_t t0 = rt_nanotime();
    CHECK_EQ(rt_conn_set_write_deadline(c, t0 + 100 * RT_MILLISECOND), RT_OK);
    CHECK_EQ(rt_conn_write(c, buf, big), RT_ETIMEDOUT);
    int64_t took = rt_nanotime() - t0;
    CHECK(took >= 100 * RT_MILLISECOND);
    fprintf(stderr, "      write deadline: %.1f ms\n", (double)took / 1e6);
    CHECK(took < 100 * RT_MILLISECOND + SLACK);
    CHECK_EQ(rt_conn_write(c, buf, 1), RT_ETIMEDOUT);   /* still past */
    free(buf);
    rt_conn_close(c);
    rt_conn_close(s);
}

/* A write that timed out may leave a chunk with the poller; the next write
 * must follow it, not overtake it: the stream stays a prefix of what was
 * written, in order. */
static const unsigned char order_marker[5] = { 0xff, 0xfe, 0xfd, 0xfc, 0xfb };

static struct {
    rt_conn *s;
    size_t got, mk;
    rt_waitgroup wg;
} wo;

static void order_reader(void *arg) {
    (void)arg;
    static unsigned char rb[65536];
    for (;;) {
        int64_t n = rt_conn_read(wo.s, rb, sizeof rb);
        CHECK(n >= 0);
        if (n == 0) break;
        for (int64_t i = 0; i < n; i++) {
            if (wo.mk == 0 && rb[i] < 251) {   /* marker bytes never occur in the pattern */
                CHECK_EQ(rb[i], wo.got % 251);
                wo.got++;
            } else {
                CHECK(wo.mk < sizeof order_marker);
                CHECK_EQ(rb[i], order_marker[wo.mk]);
                wo.mk++;
            }
        }
    }
    rt_waitgroup_done(&wo.wg);
}

static void test_write_timeout_keeps_order(void) {
    rt_conn *c;
    ntu_pair("127.0.0.1", &c, &wo.s);
    size_t big = 32u << 20;
    unsigned char *buf = malloc(big);
    CHECK(buf != NULL);
    for (size_t i = 0; i < big; i++) buf[i] = (unsigned char)(i % 251);
    CHECK_EQ(rt_conn_set_write_deadline(c, rt_nanotime() + 50 * RT_MILLISECOND), RT_OK);
    CHECK_EQ(rt_conn_write(c, buf, big), RT_ETIMEDOUT);
    CHECK_EQ(rt_conn_set_write_deadline(c, 0), RT_OK);
    /* The first write's fate is unknown (as in Go): some prefix of buf went
     * out, maybe with a chunk still queued.  A marker written now must come
     * after all of it. */
    rt_waitgroup_add(&wo.wg, 1);
    go(order_reader, NULL);
    CHECK_EQ(rt_conn_write(c, order_marker, sizeof order_marker), RT_OK);
    CHECK_EQ(rt_conn_shutdown_write(c), RT_OK);
    rt_waitgroup_wait(&wo.wg);
    CHECK_EQ(wo.mk, sizeof order_marker);
    CHECK(wo.got > 0 && wo.got < big);
    fprintf(stderr, "      %zu of %zu bytes went out before the deadline, in order\n", wo.got, big);
    free(buf);
    rt_conn_close(c);
    rt_conn_close(wo.s);
}

/* ================================================== large write, slow reader */

static struct {
    rt_conn *c, *s;
    size_t size;
    int write_rc;
    rt_waitgroup wg;
} lw;

static inline uint8_t pattern_at(size_t i) { return (uint8_t)((i * 2654435761u) >> 13); }

static void large_writer(void *arg) {
    (void)arg;
    uint8_t *buf = malloc(lw.size);
    CHECK(buf != NULL);
    for (size_t i = 0; i < lw.size; i++) buf[i] = pattern_at(i);
    lw.write_rc = rt_conn_write(lw.c, buf, lw.size);
    free(buf);
    rt_waitgroup_done(&lw.wg);
}

static void test_large_write_slow_reader(void) {
    ntu_pair("127.0.0.1", &lw.c, &lw.s);
    lw.size = (size_t)SCALED(16L << 20);
    rt_waitgroup_add(&lw.wg, 1);
    go(large_writer, NULL);
    size_t got = 0;
    long reads = 0;
    uint8_t buf[32768];
    int64_t t0 = rt_nanotime();
    while (got < lw.size) {
        /* Slow: a small read now and then, with sleeps, for the first
         * quarter (the writer blocks on a full socket buffer); then as fast
         * as possible. */
        size_t want = got < lw.size / 4 ? 8192 : sizeof buf;
        int64_t n = rt_conn_read(lw.s, buf, want);
        CHECK(n > 0);
        for (int64_t i = 0; i < n; i++)
            if (buf[i] != pattern_at(got + (size_t)i)) {
                fprintf(stderr, "mismatch at byte %zu\n", got + (size_t)i);
                CHECK(0);
            }
        got += (size_t)n;
        if (got < lw.size / 4 && ++reads % 16 == 0) rt_sleep(RT_MILLISECOND);
    }
    rt_waitgroup_wait(&lw.wg);
    CHECK_EQ(lw.write_rc, RT_OK);
    double secs = (double)(rt_nanotime() - t0) / 1e9;
    fprintf(stderr, "      %zu MiB verified in %.2f s\n", lw.size >> 20, secs);
    CHECK_EQ(rt_conn_close(lw.c), RT_OK);
    char b;
    CHECK_EQ(rt_conn_read(lw.s, &b, 1), 0);
    CHECK_EQ(rt_conn_close(lw.s), RT_OK);
}

/* ================================================================ close */

static struct {
    rt_conn *c;
    int64_t read_rc;
    int write_rc;
    _Atomic uint64_t reader, writer;
    rt_waitgroup wg;
} cw;

static void blocked_reader(void *arg) {
    (void)arg;
    cw.reader = rt_goid();
    char buf[16];
    cw.read_rc = rt_conn_read(cw.c, buf, sizeof buf);
    rt_waitgroup_done(&cw.wg);
}

static void blocked_writer(void *arg) {
    (void)arg;
    cw.writer = rt_goid();
    size_t big = 32u << 20;
    char *buf = calloc(1, big);
    cw.write_rc = rt_conn_write(cw.c, buf, big);
    free(buf);
    rt_waitgroup_done(&cw.wg);
}

static void test_close_wakes_reader_and_writer(void) {
    rt_conn *s;
    ntu_pair("127.0.0.1", &cw.c, &s);
    rt_waitgroup_add(&cw.wg, 2);
    go(blocked_reader, NULL);
    go(blocked_writer, NULL);
    while (!cw.reader || !cw.writer) rt_sleep(RT_MILLISECOND);
    ctu_wait_parked(cw.reader, "I/O wait");
    ctu_wait_parked(cw.writer, "I/O wait");
    CHECK_EQ(rt_conn_close(cw.c), RT_OK);
    rt_waitgroup_wait(&cw.wg);
    CHECK_EQ(cw.read_rc, RT_ECLOSED);
    CHECK_EQ(cw.write_rc, RT_ECLOSED);
    CHECK_EQ(rt_conn_close(s), RT_OK);
}

static struct {
    rt_listener *l;
    int rc;
    _Atomic uint64_t goid;
    rt_waitgroup wg;
} la;

static void blocked_acceptor(void *arg) {
    (void)arg;
    la.goid = rt_goid();
    rt_conn *c = (rt_conn *)1;
    la.rc = rt_accept(la.l, &c);
    CHECK(c == NULL);
    rt_waitgroup_done(&la.wg);
}

static void test_listener_close_wakes_accept(void) {
    CHECK_EQ(rt_listen(&la.l, "127.0.0.1", 0, 0), RT_OK);
    int port = rt_listener_port(la.l);
    rt_waitgroup_add(&la.wg, 1);
    go(blocked_acceptor, NULL);
    while (!la.goid) rt_sleep(RT_MILLISECOND);
    ctu_wait_parked(la.goid, "I/O wait");
    CHECK_EQ(rt_listener_close(la.l), RT_OK);
    rt_waitgroup_wait(&la.wg);
    CHECK_EQ(la.rc, RT_ECLOSED);
    /* The port is released: connecting is refused (soon: the close is
     * asynchronous). */
    int rc = RT_OK;
    for (int i = 0; i < 1000; i++) {
        rt_conn *c = NULL;
        rc = rt_dial(&c, "127.0.0.1", port);
        if (rc != RT_OK) break;
        rt_conn_close(c);
        rt_sleep(RT_MILLISECOND);
    }
    CHECK_EQ(rc, RT_ECONNREFUSED);
}

/* A listener's connections that were never accepted are closed with it. */
static void test_listener_close_with_pending(void) {
    rt_listener *l = NULL;
    CHECK_EQ(rt_listen(&l, "127.0.0.1", 0, 0), RT_OK);
    rt_conn *c[4];
    for (int i = 0; i < 4; i++) CHECK_EQ(rt_dial(&c[i], "127.0.0.1", rt_listener_port(l)), RT_OK);
    rt_sleep(20 * RT_MILLISECOND);   /* let the poller accept them */
    CHECK_EQ(rt_listener_close(l), RT_OK);
    for (int i = 0; i < 4; i++) {
        char b;
        int64_t n = rt_conn_read(c[i], &b, 1);
        CHECK(n == 0 || n == RT_ECONNRESET);
        rt_conn_close(c[i]);
    }
}

/* ============================================================== contexts */

static struct {
    rt_context *ctx;
    rt_conn *c;
    int64_t rc;
    _Atomic uint64_t goid;
    rt_waitgroup wg;
} cx;

static void ctx_reader(void *arg) {
    (void)arg;
    cx.goid = rt_goid();
    char buf[8];
    cx.rc = rt_conn_read_ctx(cx.ctx, cx.c, buf, sizeof buf);
    rt_waitgroup_done(&cx.wg);
}

static void test_ctx_read(void) {
    rt_conn *s;
    ntu_pair("127.0.0.1", &cx.c, &s);
    /* Cancelled while parked. */
    CHECK_EQ(rt_context_with_cancel(NULL, &cx.ctx), RT_OK);
    rt_waitgroup_add(&cx.wg, 1);
    cx.goid = 0;
    go(ctx_reader, NULL);
    while (!cx.goid) rt_sleep(RT_MILLISECOND);
    ctu_wait_parked(cx.goid, "I/O wait");
    rt_context_cancel(cx.ctx);
    rt_waitgroup_wait(&cx.wg);
    CHECK_EQ(cx.rc, RT_ECANCELED);
    /* Already cancelled: fails at once, even with data available. */
    CHECK_EQ(rt_conn_write(s, "xy", 2), RT_OK);
    rt_sleep(5 * RT_MILLISECOND);
    char buf[8];
    CHECK_EQ(rt_conn_read_ctx(cx.ctx, cx.c, buf, sizeof buf), RT_ECANCELED);
    rt_context_release(cx.ctx);
    /* The connection is intact. */
    ntu_read_full(cx.c, buf, 2);
    CHECK(memcmp(buf, "xy", 2) == 0);

    /* A timeout context. */
    CHECK_EQ(rt_context_with_timeout(NULL, 30 * RT_MILLISECOND, &cx.ctx), RT_OK);
    int64_t t0 = rt_nanotime();
    CHECK_EQ(rt_conn_read_ctx(cx.ctx, cx.c, buf, sizeof buf), RT_ETIMEDOUT);
    CHECK(rt_nanotime() - t0 >= 30 * RT_MILLISECOND - RT_MILLISECOND);
    rt_context_release(cx.ctx);

    /* A live context does not disturb a read that gets data. */
    CHECK_EQ(rt_context_with_cancel(NULL, &cx.ctx), RT_OK);
    CHECK_EQ(rt_conn_write(s, "z", 1), RT_OK);
    CHECK_EQ(rt_conn_read_ctx(cx.ctx, cx.c, buf, 1), 1);
    CHECK_EQ(rt_conn_read_ctx(rt_context_background(), cx.c, buf, 0), 0);
    rt_context_release(cx.ctx);

    rt_conn_close(cx.c);
    rt_conn_close(s);
}

static void test_ctx_write_accept_dial(void) {
    /* write: cancelled while blocked on a full socket buffer */
    rt_conn *c, *s;
    ntu_pair("127.0.0.1", &c, &s);
    rt_context *ctx;
    CHECK_EQ(rt_context_with_timeout(NULL, 50 * RT_MILLISECOND, &ctx), RT_OK);
    size_t big = 32u << 20;
    char *buf = calloc(1, big);
    CHECK_EQ(rt_conn_write_ctx(ctx, c, buf, big), RT_ETIMEDOUT);
    free(buf);
    rt_context_release(ctx);
    rt_conn_close(c);
    rt_conn_close(s);

    /* accept */
    rt_listener *l;
    CHECK_EQ(rt_listen(&l, "127.0.0.1", 0, 0), RT_OK);
    CHECK_EQ(rt_context_with_timeout(NULL, 20 * RT_MILLISECOND, &ctx), RT_OK);
    rt_conn *a = (rt_conn *)1;
    CHECK_EQ(rt_accept_ctx(ctx, l, &a), RT_ETIMEDOUT);
    CHECK(a == NULL);
    rt_context_release(ctx);
    /* the listener still works */
    CHECK_EQ(rt_dial(&c, "127.0.0.1", rt_listener_port(l)), RT_OK);
    CHECK_EQ(rt_accept_ctx(NULL, l, &a), RT_OK);
    rt_conn_close(c);
    rt_conn_close(a);
    rt_listener_close(l);

    /* dial with a done context */
    CHECK_EQ(rt_context_with_cancel(NULL, &ctx), RT_OK);
    rt_context_cancel(ctx);
    rt_conn *d = (rt_conn *)1;
    CHECK_EQ(rt_dial_ctx(ctx, &d, "127.0.0.1", 9), RT_ECANCELED);
    CHECK(d == NULL);
    rt_context_release(ctx);
}

/* ============================================================ races */

/* Close, deadlines and context cancellation racing data arrival and the
 * poller's write path, many times over: every goroutine must come back with
 * a result or an error, nothing may crash, hang or leak a wakeup. */
static struct {
    rt_conn *c, *s;
    rt_context *ctx;
    rt_waitgroup wg;
    _Atomic long errors, bytes;
    _Atomic bool closed;
} rc_;

static void race_reader(void *arg) {
    long mode = (long)(intptr_t)arg;
    char buf[1024];
    for (;;) {
        int64_t n = mode == 1 ? rt_conn_read_ctx(rc_.ctx, rc_.c, buf, sizeof buf)
                              : rt_conn_read(rc_.c, buf, sizeof buf);
        if (n == RT_ETIMEDOUT && mode == 0) {
            rt_conn_set_read_deadline(rc_.c, rt_nanotime() + (int64_t)(fastrand_test() % 200) * RT_MICROSECOND);
            continue;
        }
        if (n <= 0) {
            CHECK(n == 0 || n == RT_ECLOSED || n == RT_ECANCELED || n == RT_ETIMEDOUT ||
                  n == RT_ECONNRESET);
            atomic_fetch_add(&rc_.errors, 1);
            break;
        }
        atomic_fetch_add(&rc_.bytes, n);
    }
    /* Calls after the close (this goroutine holds a reference) fail. */
    while (!atomic_load(&rc_.closed)) rt_sleep(100 * RT_MICROSECOND);
    char b;
    CHECK_EQ(rt_conn_read(rc_.c, &b, 1), RT_ECLOSED);
    rt_conn_release(rc_.c);
    rt_waitgroup_done(&rc_.wg);
}

static void race_writer(void *arg) {
    long mode = (long)(intptr_t)arg;
    static char big[1 << 20];
    for (;;) {
        size_t len = 1 + fastrand_test() % sizeof big;
        int rc = mode == 1 ? rt_conn_write_ctx(rc_.ctx, rc_.c, big, len) : rt_conn_write(rc_.c, big, len);
        if (rc == RT_ETIMEDOUT && mode == 0) {
            rt_conn_set_write_deadline(rc_.c, rt_nanotime() + (int64_t)(fastrand_test() % 300) * RT_MICROSECOND);
            continue;
        }
        if (rc != RT_OK) {
            CHECK(rc == RT_ECLOSED || rc == RT_ECANCELED || rc == RT_ETIMEDOUT || rc == RT_ECONNRESET);
            break;
        }
    }
    rt_conn_release(rc_.c);
    rt_waitgroup_done(&rc_.wg);
}

/* The far side: echoes a little, reads slowly, then goes away. */
static void race_peer(void *arg) {
    (void)arg;
    char buf[4096];
    for (int i = 0; i < 50; i++) {
        int64_t n = rt_conn_read(rc_.s, buf, sizeof buf);
        if (n <= 0) break;
        if (i % 3 == 0 && rt_conn_write(rc_.s, buf, (size_t)n) != RT_OK) break;
        if (i % 7 == 0) rt_sleep(100 * RT_MICROSECOND);
    }
    rt_conn_close(rc_.s);
    rt_waitgroup_done(&rc_.wg);
}

static void test_races(void) {
    long iters = SCALED(300);
    for (long it = 0; it < iters; it++) {
        ntu_pair("127.0.0.1", &rc_.c, &rc_.s);
        CHECK_EQ(rt_context_with_cancel(NULL, &rc_.ctx), RT_OK);
        long mode = it % 3;   /* 0: deadlines, 1: context, 2: plain */
        if (mode == 0) {
            rt_conn_set_read_deadline(rc_.c, rt_nanotime() + 100 * RT_MICROSECOND);
            rt_conn_set_write_deadline(rc_.c, rt_nanotime() + 200 * RT_MICROSECOND);
        }
        rt_waitgroup_add(&rc_.wg, 3);
        rt_conn_retain(rc_.c);   /* one each for the reader and the writer */
        rt_conn_retain(rc_.c);
        go(race_reader, (void *)(intptr_t)mode);
        go(race_writer, (void *)(intptr_t)mode);
        go(race_peer, NULL);
        rt_sleep((int64_t)(fastrand_test() % 2000) * RT_MICROSECOND);
        if (mode == 1 && it % 2) rt_context_cancel(rc_.ctx);
        if (mode == 0 && it % 2) {   /* a deadline that has passed */
            rt_conn_set_read_deadline(rc_.c, 1);
            rt_conn_set_write_deadline(rc_.c, 1);
        }
        CHECK_EQ(rt_conn_close(rc_.c), RT_OK);
        atomic_store(&rc_.closed, true);
        rt_waitgroup_wait(&rc_.wg);
        atomic_store(&rc_.closed, false);
        rt_context_release(rc_.ctx);
    }
    fprintf(stderr, "      %ld rounds, %ld KiB read\n", iters, atomic_load(&rc_.bytes) >> 10);
}

/* ================================================= not a deadlock */

/* Every goroutine is parked on the network and the only thing that will
 * wake them is a plain thread (not an M) writing after a while: the
 * runtime must not call that a deadlock. */
static int nd_fd;

static void *late_writer(void *arg) {
    (void)arg;
    struct timespec ts = { 1, 500000000 };
    nanosleep(&ts, NULL);
    CHECK_EQ(write(nd_fd, "!", 1), 1);
    return NULL;
}

static void test_parked_on_network_is_not_deadlock(void) {
    rt_listener *l = NULL;
    CHECK_EQ(rt_listen(&l, "127.0.0.1", 0, 0), RT_OK);
    nd_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)rt_listener_port(l)) };
    CHECK_EQ(connect(nd_fd, (struct sockaddr *)&a, sizeof a), 0);
    rt_conn *s = NULL;
    CHECK_EQ(rt_accept(l, &s), RT_OK);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, late_writer, NULL), 0);
    char b;
    CHECK_EQ(rt_conn_read(s, &b, 1), 1);   /* only this goroutine, parked */
    CHECK_EQ(b, '!');
    pthread_join(t, NULL);
    close(nd_fd);
    rt_conn_close(s);
    rt_listener_close(l);
}

static int run(void *arg) {
    (void)arg;
    RUN(test_listen_dial_accept_v4);
    RUN(test_bad_arguments);
    RUN(test_addr_in_use);
    RUN(test_connect_refused);
    RUN(test_ipv6_loopback);
    RUN(test_echo_many);
    RUN(test_peer_reset);
    RUN(test_write_to_closed_peer);
    RUN(test_half_close);
    RUN(test_read_deadline);
    RUN(test_read_deadline_changed_while_parked);
    RUN(test_write_deadline);
    RUN(test_write_timeout_keeps_order);
    RUN(test_large_write_slow_reader);
    RUN(test_close_wakes_reader_and_writer);
    RUN(test_listener_close_wakes_accept);
    RUN(test_listener_close_with_pending);
    RUN(test_ctx_read);
    RUN(test_ctx_write_accept_dial);
    RUN(test_races);
    RUN(test_parked_on_network_is_not_deadlock);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }

#else /* !RT_HAVE_NETPOLL */

int main(void) {
    fprintf(stderr, "test_net: skipped (runtime built without a netpoller: no libuv for the target)\n");
    return 0;
}

#endif
