/*
 * microbench.c — micro-benchmarks of the goroutine runtime (rt.h).
 *
 * bench/go/microbench.go implements the same workloads the same way for Go;
 * both print one JSON line per workload/variant to stdout ("impl":"c" here),
 * and bench/run-micro.sh runs them side by side.  See bench/README.md.
 *
 *   microbench                    run every workload
 *   microbench pingpong sleep     run the named workloads (or variants)
 *
 * Workloads: spawn, park-mem (park-mem-100k, park-mem-1m), pingpong,
 * chan (chan-1x1, chan-4x4), mutex, select, sleep.  The process exits 1 if a
 * correctness check failed ("ok":false), 2 on a usage error.
 */
#include "rt.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    SPAWN_N = 1000000,
    PINGPONG_N = 1000000,
    CHAN_N = 10000000,
    CHAN_CAP = 1024,
    MUTEX_G = 8,
    MUTEX_ITERS = 1000000,
    SELECT_CHANS = 4,
    SELECT_CAP = 128,
    SELECT_N = 4000000,
    SLEEP_N = 100000,
};
#define SLEEP_DUR (10 * RT_MILLISECOND)

static bool all_ok = true;

/* ---------------------------------------------------------------- output */

/* One output line; fields are emitted in the same order as the Go side. */
typedef struct result {
    const char *bench;
    const char *variant;   /* NULL: none */
    char fields[1024];
    size_t len;
    bool ok;
    char error[256];
} result;

static void res_init(result *r, const char *bench, const char *variant)
{
    memset(r, 0, sizeof *r);
    r->bench = bench;
    r->variant = variant;
    r->ok = true;
}

static void res_addf(result *r, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void res_addf(result *r, const char *key, const char *fmt, ...)
{
    if (r->len >= sizeof r->fields)
        return;
    int n = snprintf(r->fields + r->len, sizeof r->fields - r->len, ",\"%s\":", key);
    if (n < 0)
        return;
    r->len += (size_t)n;
    if (r->len >= sizeof r->fields)
        return;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(r->fields + r->len, sizeof r->fields - r->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        r->len += (size_t)n;
}

static void res_fail(result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void res_fail(result *r, const char *fmt, ...)
{
    if (!r->ok)
        return;   /* keep the first failure */
    r->ok = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
}

static void res_timed(result *r, int64_t ops, int64_t wall_ns)
{
    res_addf(r, "ns_per_op", "%.2f", (double)wall_ns / (double)ops);
    res_addf(r, "ops", "%" PRId64, ops);
    res_addf(r, "wall_ms", "%.2f", (double)wall_ns / 1e6);
}

static void res_emit(result *r)
{
    printf("{\"impl\":\"c\",\"bench\":\"%s\"", r->bench);
    if (r->variant)
        printf(",\"variant\":\"%s\"", r->variant);
    printf(",\"gomaxprocs\":%d%s,\"ok\":%s", rt_gomaxprocs(), r->fields,
           r->ok ? "true" : "false");
    if (!r->ok)
        printf(",\"error\":\"%s\"", r->error);   /* messages have no quotes */
    printf("}\n");
    fflush(stdout);
    if (!r->ok) {
        all_ok = false;
        fprintf(stderr, "microbench: FAILED: %s %s: %s\n", r->bench,
                r->variant ? r->variant : "", r->error);
    }
}

/* Spawn or record the failure; returns false if rt_go failed. */
static bool spawn(result *r, rt_func fn, void *arg)
{
    int rc = rt_go(fn, arg);
    if (rc != RT_OK) {
        res_fail(r, "rt_go failed: %s", rt_strerror(rc));
        return false;
    }
    return true;
}

/* ----------------------------------------------------------------- spawn */

static void spawn_fn(void *arg)
{
    rt_waitgroup_done(arg);
}

static void bench_spawn(void)
{
    result r;
    res_init(&r, "spawn", NULL);
    static rt_waitgroup wg;
    int64_t start = rt_nanotime();
    rt_waitgroup_add(&wg, SPAWN_N);
    for (int i = 0; i < SPAWN_N; i++) {
        if (!spawn(&r, spawn_fn, &wg)) {
            rt_waitgroup_add(&wg, -(SPAWN_N - i));
            break;
        }
    }
    rt_waitgroup_wait(&wg);
    res_timed(&r, SPAWN_N, rt_nanotime() - start);
    res_emit(&r);
}

/* -------------------------------------------------------------- park-mem */

/* VmRSS of this process in bytes, or -1. */
static int64_t vm_rss(void)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof buf - 1)
            break;
    }
    close(fd);
    buf[len] = '\0';
    const char *p = strstr(buf, "\nVmRSS:");
    if (!p)
        return -1;
    return strtoll(p + strlen("\nVmRSS:"), NULL, 10) * 1024;
}

static rt_waitgroup park_parked, park_done;

static void park_fn(void *arg)
{
    rt_chan *ch = arg;
    rt_waitgroup_done(&park_parked);
    rt_chan_recv(ch, NULL);
    rt_waitgroup_done(&park_done);
}

static void bench_park_mem(int n, const char *variant)
{
    result r;
    res_init(&r, "park-mem", variant);
    int64_t rss0 = vm_rss();
    rt_chan **chans = calloc((size_t)n, sizeof *chans);
    if (!chans) {
        res_fail(&r, "out of memory");
        res_emit(&r);
        return;
    }
    for (int i = 0; i < n; i++) {
        int rc = rt_chan_make(&chans[i], sizeof(int64_t), 0);
        if (rc != RT_OK) {
            fprintf(stderr, "microbench: rt_chan_make: %s\n", rt_strerror(rc));
            exit(1);
        }
    }
    int64_t rss1 = vm_rss();

    int spawned = 0;
    rt_waitgroup_add(&park_parked, n);
    rt_waitgroup_add(&park_done, n);
    int64_t start = rt_nanotime();
    for (; spawned < n; spawned++) {
        if (!spawn(&r, park_fn, chans[spawned])) {
            rt_waitgroup_add(&park_parked, -(n - spawned));
            rt_waitgroup_add(&park_done, -(n - spawned));
            break;
        }
    }
    rt_waitgroup_wait(&park_parked);
    int64_t parked_at = rt_nanotime() - start;
    /* Every goroutine has signalled; give the last ones time to reach the
     * receive and block in it. */
    for (int i = 0; i < 10; i++)
        rt_yield();
    rt_sleep(50 * RT_MILLISECOND);
    int64_t rss2 = vm_rss();
    int64_t live = rt_num_goroutine();

    for (int i = 0; i < n; i++)
        rt_chan_close(chans[i]);
    rt_waitgroup_wait(&park_done);
    int64_t wall = rt_nanotime() - start;
    for (int i = 0; i < n; i++)
        rt_chan_release(chans[i]);
    free(chans);

    if (rss0 < 0 || rss1 < 0 || rss2 < 0)
        res_fail(&r, "cannot read VmRSS");
    if (live < spawned + 1)
        res_fail(&r, "only %" PRId64 " goroutines alive while parked", live);
    res_addf(&r, "n", "%d", n);
    res_addf(&r, "bytes_per_goroutine", "%.2f", (double)(rss2 - rss1) / n);
    res_addf(&r, "chan_bytes_per_goroutine", "%.2f", (double)(rss1 - rss0) / n);
    res_addf(&r, "rss_before_kb", "%" PRId64, rss1 / 1024);
    res_addf(&r, "rss_parked_kb", "%" PRId64, rss2 / 1024);
    res_addf(&r, "spawn_park_ms", "%.2f", (double)parked_at / 1e6);
    res_addf(&r, "wall_ms", "%.2f", (double)wall / 1e6);
    res_emit(&r);
}

/* -------------------------------------------------------------- pingpong */

static struct {
    rt_chan *ping, *pong;
    rt_waitgroup wg;
    int64_t final;
} pp;

static void pinger_fn(void *arg)
{
    int64_t v = 0;
    for (int i = 0; i < PINGPONG_N; i++) {
        rt_chan_send(pp.ping, &v);
        rt_chan_recv(pp.pong, &v);
    }
    rt_chan_close(pp.ping);
    pp.final = v;
    rt_waitgroup_done(&pp.wg);
}

static void ponger_fn(void *arg)
{
    int64_t v;
    while (rt_chan_recv(pp.ping, &v)) {
        v++;
        rt_chan_send(pp.pong, &v);
    }
    rt_waitgroup_done(&pp.wg);
}

static void bench_pingpong(void)
{
    result r;
    res_init(&r, "pingpong", NULL);
    if (rt_chan_make(&pp.ping, sizeof(int64_t), 0) != RT_OK ||
        rt_chan_make(&pp.pong, sizeof(int64_t), 0) != RT_OK) {
        fprintf(stderr, "microbench: rt_chan_make failed\n");
        exit(1);
    }
    rt_waitgroup_add(&pp.wg, 2);
    int64_t start = rt_nanotime();
    if (!spawn(&r, pinger_fn, NULL) || !spawn(&r, ponger_fn, NULL)) {
        res_emit(&r);
        exit(1);
    }
    rt_waitgroup_wait(&pp.wg);
    res_timed(&r, PINGPONG_N, rt_nanotime() - start);
    if (pp.final != PINGPONG_N)
        res_fail(&r, "final value %" PRId64 ", want %d", pp.final, PINGPONG_N);
    rt_chan_release(pp.ping);
    rt_chan_release(pp.pong);
    res_emit(&r);
}

/* ------------------------------------------------------- chan-throughput */

static struct {
    rt_chan *ch;
    int64_t per;
    rt_waitgroup prod, cons;
    int64_t sums[8], counts[8];
} ct;

static void chan_producer(void *arg)
{
    int64_t lo = (int64_t)(intptr_t)arg * ct.per;
    for (int64_t i = lo; i < lo + ct.per; i++)
        rt_chan_send(ct.ch, &i);
    rt_waitgroup_done(&ct.prod);
}

static void chan_consumer(void *arg)
{
    int k = (int)(intptr_t)arg;
    int64_t v, sum = 0, cnt = 0;
    while (rt_chan_recv(ct.ch, &v)) {
        sum += v;
        cnt++;
    }
    ct.sums[k] = sum;
    ct.counts[k] = cnt;
    rt_waitgroup_done(&ct.cons);
}

static void bench_chan(int np, int nc, const char *variant)
{
    result r;
    res_init(&r, "chan", variant);
    if (rt_chan_make(&ct.ch, sizeof(int64_t), CHAN_CAP) != RT_OK) {
        fprintf(stderr, "microbench: rt_chan_make failed\n");
        exit(1);
    }
    ct.per = CHAN_N / np;
    rt_waitgroup_add(&ct.prod, np);
    rt_waitgroup_add(&ct.cons, nc);
    int64_t start = rt_nanotime();
    for (int k = 0; k < np; k++)
        if (!spawn(&r, chan_producer, (void *)(intptr_t)k)) {
            res_emit(&r);
            exit(1);
        }
    for (int k = 0; k < nc; k++)
        if (!spawn(&r, chan_consumer, (void *)(intptr_t)k)) {
            res_emit(&r);
            exit(1);
        }
    rt_waitgroup_wait(&ct.prod);
    rt_chan_close(ct.ch);
    rt_waitgroup_wait(&ct.cons);
    int64_t total = ct.per * np;
    res_timed(&r, total, rt_nanotime() - start);
    int64_t sum = 0, cnt = 0;
    for (int k = 0; k < nc; k++) {
        sum += ct.sums[k];
        cnt += ct.counts[k];
    }
    int64_t want = total * (total - 1) / 2;
    if (cnt != total || sum != want)
        res_fail(&r, "received %" PRId64 " items sum %" PRId64 ", want %" PRId64
                 " sum %" PRId64, cnt, sum, total, want);
    res_addf(&r, "producers", "%d", np);
    res_addf(&r, "consumers", "%d", nc);
    res_addf(&r, "cap", "%d", CHAN_CAP);
    rt_chan_release(ct.ch);
    res_emit(&r);
}

/* ----------------------------------------------------------------- mutex */

static struct {
    rt_mutex mu;
    int64_t count;
    rt_waitgroup wg;
} mx;

static void mutex_fn(void *arg)
{
    for (int i = 0; i < MUTEX_ITERS; i++) {
        rt_mutex_lock(&mx.mu);
        mx.count++;
        rt_mutex_unlock(&mx.mu);
    }
    rt_waitgroup_done(&mx.wg);
}

static void bench_mutex(void)
{
    result r;
    res_init(&r, "mutex", NULL);
    rt_waitgroup_add(&mx.wg, MUTEX_G);
    int64_t start = rt_nanotime();
    for (int k = 0; k < MUTEX_G; k++)
        if (!spawn(&r, mutex_fn, NULL)) {
            res_emit(&r);
            exit(1);
        }
    rt_waitgroup_wait(&mx.wg);
    int64_t total = (int64_t)MUTEX_G * MUTEX_ITERS;
    res_timed(&r, total, rt_nanotime() - start);
    rt_mutex_lock(&mx.mu);
    int64_t count = mx.count;
    rt_mutex_unlock(&mx.mu);
    if (count != total)
        res_fail(&r, "count %" PRId64 ", want %" PRId64, count, total);
    res_addf(&r, "goroutines", "%d", MUTEX_G);
    res_addf(&r, "count", "%" PRId64, count);
    res_emit(&r);
}

/* ---------------------------------------------------------------- select */

static struct {
    rt_chan *chans[SELECT_CHANS];
    int64_t per;
    rt_waitgroup wg;
    int64_t sum, cnt;
} sl;

static void select_producer(void *arg)
{
    int k = (int)(intptr_t)arg;
    rt_chan *ch = sl.chans[k];
    int64_t lo = k * sl.per;
    for (int64_t i = lo; i < lo + sl.per; i++)
        rt_chan_send(ch, &i);
    rt_chan_close(ch);
    rt_waitgroup_done(&sl.wg);
}

static void select_consumer(void *arg)
{
    int64_t vals[SELECT_CHANS];
    rt_select_case cases[SELECT_CHANS];
    for (int k = 0; k < SELECT_CHANS; k++)
        cases[k] = RT_RECV_CASE(sl.chans[k], &vals[k]);
    int open = SELECT_CHANS;
    int64_t s = 0, n = 0;
    while (open > 0) {
        int i = rt_select(cases, SELECT_CHANS, false);
        if (!cases[i].recv_ok) {
            cases[i].chan = NULL;   /* closed: never ready again (nil) */
            open--;
            continue;
        }
        s += vals[i];
        n++;
    }
    sl.sum = s;
    sl.cnt = n;
    rt_waitgroup_done(&sl.wg);
}

static void bench_select(void)
{
    result r;
    res_init(&r, "select", NULL);
    for (int k = 0; k < SELECT_CHANS; k++)
        if (rt_chan_make(&sl.chans[k], sizeof(int64_t), SELECT_CAP) != RT_OK) {
            fprintf(stderr, "microbench: rt_chan_make failed\n");
            exit(1);
        }
    sl.per = SELECT_N / SELECT_CHANS;
    rt_waitgroup_add(&sl.wg, SELECT_CHANS + 1);
    int64_t start = rt_nanotime();
    for (int k = 0; k < SELECT_CHANS; k++)
        if (!spawn(&r, select_producer, (void *)(intptr_t)k)) {
            res_emit(&r);
            exit(1);
        }
    if (!spawn(&r, select_consumer, NULL)) {
        res_emit(&r);
        exit(1);
    }
    rt_waitgroup_wait(&sl.wg);
    int64_t total = sl.per * SELECT_CHANS;
    res_timed(&r, total, rt_nanotime() - start);
    int64_t want = total * (total - 1) / 2;
    if (sl.cnt != total || sl.sum != want)
        res_fail(&r, "received %" PRId64 " items sum %" PRId64 ", want %" PRId64
                 " sum %" PRId64, sl.cnt, sl.sum, total, want);
    res_addf(&r, "chans", "%d", SELECT_CHANS);
    res_addf(&r, "cap", "%d", SELECT_CAP);
    for (int k = 0; k < SELECT_CHANS; k++)
        rt_chan_release(sl.chans[k]);
    res_emit(&r);
}

/* ----------------------------------------------------------------- sleep */

static rt_waitgroup sleep_wg;
static _Atomic int64_t sleep_early;

static void sleep_fn(void *arg)
{
    int64_t t0 = rt_nanotime();
    rt_sleep(SLEEP_DUR);
    if (rt_nanotime() - t0 < SLEEP_DUR)
        atomic_fetch_add(&sleep_early, 1);   /* woke early: a failure */
    rt_waitgroup_done(&sleep_wg);
}

static void bench_sleep(void)
{
    result r;
    res_init(&r, "sleep", NULL);
    rt_waitgroup_add(&sleep_wg, SLEEP_N);
    int64_t start = rt_nanotime();
    for (int i = 0; i < SLEEP_N; i++) {
        if (!spawn(&r, sleep_fn, NULL)) {
            rt_waitgroup_add(&sleep_wg, -(SLEEP_N - i));
            break;
        }
    }
    int64_t spawned_at = rt_nanotime() - start;
    rt_waitgroup_wait(&sleep_wg);
    res_timed(&r, SLEEP_N, rt_nanotime() - start);
    int64_t early = atomic_load(&sleep_early);
    if (early != 0)
        res_fail(&r, "%" PRId64 " goroutines woke before 10ms", early);
    res_addf(&r, "sleep_ms", "%d", (int)(SLEEP_DUR / RT_MILLISECOND));
    res_addf(&r, "spawn_ms", "%.2f", (double)spawned_at / 1e6);
    res_emit(&r);
}

/* ------------------------------------------------------------------ main */

static void run_park_100k(void) { bench_park_mem(100000, "100k"); }
static void run_park_1m(void) { bench_park_mem(1000000, "1m"); }
static void run_chan_1x1(void) { bench_chan(1, 1, "1x1"); }
static void run_chan_4x4(void) { bench_chan(4, 4, "4x4"); }

static const struct bench {
    const char *name;
    const char *group;
    void (*run)(void);
} benches[] = {
    { "spawn", "spawn", bench_spawn },
    { "park-mem-100k", "park-mem", run_park_100k },
    { "park-mem-1m", "park-mem", run_park_1m },
    { "pingpong", "pingpong", bench_pingpong },
    { "chan-1x1", "chan", run_chan_1x1 },
    { "chan-4x4", "chan", run_chan_4x4 },
    { "mutex", "mutex", bench_mutex },
    { "select", "select", bench_select },
    { "sleep", "sleep", bench_sleep },
};
#define NBENCH (sizeof benches / sizeof benches[0])

static bool selected[NBENCH];

static int bench_main(void *arg)
{
    for (size_t b = 0; b < NBENCH; b++)
        if (selected[b])
            benches[b].run();
    fflush(stdout);
    return all_ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help") || !strcmp(a, "list")) {
            printf("usage: microbench [workload...]; workloads:\n");
            for (size_t b = 0; b < NBENCH; b++)
                printf("  %-14s (group %s)\n", benches[b].name, benches[b].group);
            return 0;
        }
        bool found = false;
        for (size_t b = 0; b < NBENCH; b++)
            if (!strcmp(a, benches[b].name) || !strcmp(a, benches[b].group))
                selected[b] = found = true;
        if (!found) {
            fprintf(stderr, "microbench: unknown workload \"%s\" (try --help)\n", a);
            return 2;
        }
    }
    if (argc < 2)
        for (size_t b = 0; b < NBENCH; b++)
            selected[b] = true;

    int rc = rt_main(bench_main, NULL);
    fprintf(stderr, "microbench: rt_main failed: %s\n", rt_strerror(rc));
    return 1;
}
