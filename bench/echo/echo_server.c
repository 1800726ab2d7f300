/*
 * echo_server.c — a TCP echo server on the goroutine runtime (bench/run-echo.sh
 * runs it against the Go one in bench/go/echo/, with bench/echo/echo_load.c
 * as the client).
 *
 *   echo_server [--host H] [--port P] [--mode echo|wake]
 *
 * Prints "port N" on stdout once listening (P = 0 picks a free port).
 *
 *   echo   one goroutine per connection: read up to 16 KiB, write it back.
 *   wake   the hop-cost measurement: each connection carries 8-byte
 *          CLOCK_MONOTONIC timestamps written by a peer that sleeps between
 *          them (so the reader is parked, and the process idle, every
 *          time); the reader goroutine records "now - timestamp" as soon as
 *          its read returns.  On EOF it prints the distribution as one JSON
 *          line and the process exits.
 */
#include "rt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *host = "127.0.0.1";
static int port;
static int wake_mode;

static void echo_conn(void *arg) {
    rt_conn *c = arg;
    char buf[16384];
    for (;;) {
        int64_t n = rt_conn_read(c, buf, sizeof buf);
        if (n <= 0) break;
        if (rt_conn_write(c, buf, (size_t)n) != RT_OK) break;
    }
    rt_conn_close(c);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void wake_conn(void *arg) {
    rt_conn *c = arg;
    size_t cap = 1 << 20, n = 0;
    int64_t *lat = malloc(cap * sizeof *lat);
    unsigned char buf[8];
    size_t have = 0;
    for (;;) {
        int64_t r = rt_conn_read(c, buf + have, sizeof buf - have);
        int64_t now = rt_nanotime();
        if (r <= 0) break;
        have += (size_t)r;
        if (have < sizeof buf) continue;
        have = 0;
        int64_t ts;
        memcpy(&ts, buf, sizeof ts);
        if (n < cap) lat[n++] = now - ts;
    }
    rt_conn_close(c);
    if (n == 0) {
        printf("{\"impl\":\"c\",\"workload\":\"wake\",\"samples\":0}\n");
        exit(1);
    }
    qsort(lat, n, sizeof *lat, cmp_i64);
    printf("{\"impl\":\"c\",\"workload\":\"wake\",\"samples\":%zu,\"p50_us\":%.1f,"
           "\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
           n, (double)lat[n / 2] / 1e3, (double)lat[n * 90 / 100] / 1e3,
           (double)lat[n * 99 / 100] / 1e3, (double)lat[n - 1] / 1e3);
    fflush(stdout);
    exit(0);
}

static int serve(void *arg) {
    (void)arg;
    rt_listener *l = NULL;
    int rc = rt_listen(&l, host, port, 0);
    if (rc != RT_OK) {
        fprintf(stderr, "echo_server: listen %s:%d: %s\n", host, port, rt_strerror(rc));
        return 1;
    }
    printf("port %d\n", rt_listener_port(l));
    fflush(stdout);
    for (;;) {
        rt_conn *c = NULL;
        rc = rt_accept(l, &c);
        if (rc != RT_OK) {
            fprintf(stderr, "echo_server: accept: %s\n", rt_strerror(rc));
            continue;
        }
        rt_go(wake_mode ? wake_conn : echo_conn, c);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--host") && i + 1 < argc) host = argv[++i];
        else if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc) wake_mode = !strcmp(argv[++i], "wake");
        else {
            fprintf(stderr, "usage: echo_server [--host H] [--port P] [--mode echo|wake]\n");
            return 2;
        }
    }
    int rc = rt_main(serve, NULL);
    fprintf(stderr, "echo_server: %s\n", rt_strerror(rc));
    return 1;
}
