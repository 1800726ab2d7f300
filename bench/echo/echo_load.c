/*
 * echo_load.c — load generator for the echo benchmark (bench/run-echo.sh).
 * A plain program (threads + epoll, no goroutine runtime), run as its own
 * process.
 *
 *   echo_load --port P [--host H] [--conns 64] [--size 64] [--secs 10]
 *             [--warmup 1] [--threads 1] [--impl NAME]
 *       Closed loop on every connection: send `size` bytes, wait for the
 *       whole echo (checked byte for byte), repeat.  After `warmup` seconds
 *       it measures for `secs` seconds and prints one JSON line: requests/s
 *       and the round-trip latency distribution.
 *
 *   echo_load --wake --port P [--count 2000] [--interval-us 1000] [--impl NAME]
 *       The hop-cost measurement: one connection; every interval (jittered
 *       ±50%) it writes its CLOCK_MONOTONIC time as 8 bytes.  The server
 *       (--mode wake) measures and prints.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST_US 100000   /* 1 µs buckets up to 100 ms, then one overflow bucket */

static const char *host = "127.0.0.1";
static int port, nconns = 64, size = 64, secs = 10, warmup = 1, nthreads = 1;
static const char *impl = "?";

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static _Noreturn void die(const char *what) {
    fprintf(stderr, "echo_load: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int dial(void) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        sl = sizeof *a6;
    } else {
        fprintf(stderr, "echo_load: bad host %s\n", host);
        exit(2);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

typedef struct conn {
    int fd;
    uint32_t seq;
    int got;
    int64_t sent_at;
    unsigned char *out, *in;
} conn;

typedef struct worker {
    pthread_t t;
    int first, count;
    uint64_t requests;
    uint64_t hist[HIST_US + 1];
} worker;

static conn *conns;
static _Atomic int measuring;   /* 0 warmup, 1 measuring, 2 stop */

static void fill(conn *c, int id) {
    for (int i = 0; i < size; i++) c->out[i] = (unsigned char)(id * 131 + c->seq * 7 + (uint32_t)i);
    if (size >= 8) {
        memcpy(c->out, &id, 4);
        memcpy(c->out + 4, &c->seq, 4);
    }
}

static void send_req(conn *c, int id) {
    fill(c, id);
    c->got = 0;
    c->sent_at = now_ns();
    ssize_t w = write(c->fd, c->out, (size_t)size);
    if (w != size) die("write (short or failed)");
}

static void *work(void *arg) {
    worker *w = arg;
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = w->first; i < w->first + w->count; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) != 0) die("epoll_ctl");
        send_req(&conns[i], i);
    }
    struct epoll_event evs[128];
    while (atomic_load_explicit(&measuring, memory_order_relaxed) != 2) {
        int n = epoll_wait(ep, evs, 128, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        int m = atomic_load_explicit(&measuring, memory_order_relaxed);
        int64_t t = n ? now_ns() : 0;
        for (int e = 0; e < n; e++) {
            int id = (int)evs[e].data.u32;
            conn *c = &conns[id];
            ssize_t r = read(c->fd, c->in + c->got, (size_t)(size - c->got));
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                fprintf(stderr, "echo_load: conn %d: read %zd (%s)\n", id, r, r ? strerror(errno) : "EOF");
                exit(1);
            }
            c->got += (int)r;
            if (c->got < size) continue;
            if (memcmp(c->in, c->out, (size_t)size) != 0) {
                fprintf(stderr, "echo_load: conn %d: echo differs\n", id);
                exit(1);
            }
            if (m == 1) {
                int64_t us = (t - c->sent_at) / 1000;
                w->hist[us < HIST_US ? us : HIST_US]++;
                w->requests++;
            }
            c->seq++;
            send_req(c, id);
        }
    }
    close(ep);
    return NULL;
}

static double pct(const uint64_t *h, uint64_t total, double q) {
    uint64_t want = (uint64_t)((double)total * q);
    uint64_t acc = 0;
    for (int i = 0; i <= HIST_US; i++) {
        acc += h[i];
        if (acc > want) return i + 0.5;
    }
    return HIST_US;
}

static int run_echo(void) {
    conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = dial();
        conns[i].out = malloc((size_t)size);
        conns[i].in = malloc((size_t)size);
    }
    worker *ws = calloc((size_t)nthreads, sizeof *ws);
    int per = nconns / nthreads, extra = nconns % nthreads, at = 0;
    for (int t = 0; t < nthreads; t++) {
        ws[t].first = at;
        ws[t].count = per + (t < extra);
        at += ws[t].count;
        if (pthread_create(&ws[t].t, NULL, work, &ws[t]) != 0) die("pthread_create");
    }
    struct timespec ts = { warmup, 0 };
    nanosleep(&ts, NULL);
    atomic_store(&measuring, 1);
    int64_t t0 = now_ns();
    ts.tv_sec = secs;
    nanosleep(&ts, NULL);
    atomic_store(&measuring, 2);
    int64_t t1 = now_ns();
    static uint64_t hist[HIST_US + 1];
    uint64_t total = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(ws[t].t, NULL);
        total += ws[t].requests;
        for (int i = 0; i <= HIST_US; i++) hist[i] += ws[t].hist[i];
    }
    double elapsed = (double)(t1 - t0) / 1e9;
    printf("{\"impl\":\"%s\",\"workload\":\"echo\",\"conns\":%d,\"size\":%d,\"secs\":%.2f,"
           "\"requests\":%llu,\"rps\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f}\n",
           impl, nconns, size, elapsed, (unsigned long long)total, (double)total / elapsed,
           pct(hist, total, 0.50), pct(hist, total, 0.99), pct(hist, total, 0.999));
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
    return total > 0 ? 0 : 1;
}

static int run_wake(int count, int interval_us) {
    int fd = dial();
    unsigned seed = 12345;
    for (int i = 0; i < count; i++) {
        int us = interval_us / 2 + (int)(rand_r(&seed) % (unsigned)(interval_us + 1));
        struct timespec ts = { us / 1000000, (long)(us % 1000000) * 1000 };
        nanosleep(&ts, NULL);
        int64_t t = now_ns();
        if (write(fd, &t, sizeof t) != (ssize_t)sizeof t) die("write");
    }
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    int wake = 0, count = 2000, interval_us = 1000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--wake")) { wake = 1; continue; }
        if (!v) goto usage;
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--conns")) nconns = atoi(v);
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--secs")) secs = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--threads")) nthreads = atoi(v);
        else if (!strcmp(a, "--impl")) impl = v;
        else if (!strcmp(a, "--count")) count = atoi(v);
        else if (!strcmp(a, "--interval-us")) interval_us = atoi(v);
        else goto usage;
        i++;
    }
    if (port <= 0 || nconns <= 0 || size <= 0 || nthreads <= 0 || nthreads > nconns) goto usage;
    return wake ? run_wake(count, interval_us) : run_echo();
usage:
    fprintf(stderr, "usage: echo_load --port P [--host H] [--conns N] [--size B] [--secs S] "
                    "[--warmup S] [--threads T] [--impl NAME]\n"
                    "       echo_load --wake --port P [--count N] [--interval-us US]\n");
    return 2;
}
