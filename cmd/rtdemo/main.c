/*
 * rtdemo — a small tour of the runtime: a concurrent prime sieve (a pipeline
 * of goroutines connected by channels), a fan-out/fan-in over a WaitGroup, a
 * select with a timeout, and a ticker.  It prints what it did and exits 0.
 *
 *     rtdemo [primes]        (default: 25)
 */
#include "rt.h"

#include <stdio.h>
#include <stdlib.h>

/* The sieve: generate -> filter(2) -> filter(3) -> ... each a goroutine. */
typedef struct filter_args {
    rt_chan *in, *out;
    int prime;
} filter_args;

static void generate(void *arg) {
    rt_chan *out = arg;
    for (int i = 2;; i++) rt_chan_send(out, &i);
}

static void filter(void *arg) {
    filter_args *fa = arg;
    int v;
    while (rt_chan_recv(fa->in, &v))
        if (v % fa->prime != 0) rt_chan_send(fa->out, &v);
}

static int sieve(int count) {
    rt_chan *ch;
    if (rt_chan_make(&ch, sizeof(int), 0) != RT_OK) return 1;
    rt_go(generate, ch);
    printf("first %d primes:", count);
    for (int i = 0; i < count; i++) {
        int prime;
        rt_chan_recv(ch, &prime);
        printf(" %d", prime);
        filter_args *fa = malloc(sizeof *fa);
        if (!fa || rt_chan_make(&fa->out, sizeof(int), 0) != RT_OK) return 1;
        fa->in = ch;
        fa->prime = prime;
        rt_go(filter, fa);
        ch = fa->out;
    }
    printf("\n");
    return 0;
}

/* Fan out: 10,000 goroutines each sleep a little and add to a sum. */
typedef struct fan_args {
    rt_waitgroup wg;
    rt_mutex mu;
    long sum;
} fan_args;

static fan_args fan;

static void worker(void *arg) {
    long n = (long)(intptr_t)arg;
    rt_sleep((n % 10) * RT_MILLISECOND);
    rt_mutex_lock(&fan.mu);
    fan.sum += n;
    rt_mutex_unlock(&fan.mu);
    rt_waitgroup_done(&fan.wg);
}

static int demo_main(void *arg) {
    int count = (int)(intptr_t)arg;
    printf("runtime: GOMAXPROCS=%d\n", rt_gomaxprocs());
    if (sieve(count) != 0) return 1;

    int64_t t0 = rt_nanotime();
    const long n = 10000;
    for (long i = 1; i <= n; i++) {
        rt_waitgroup_add(&fan.wg, 1);
        rt_go(worker, (void *)(intptr_t)i);
    }
    rt_waitgroup_wait(&fan.wg);
    printf("fan-out: %ld goroutines summed to %ld (expected %ld) in %.1f ms\n", n, fan.sum,
           n * (n + 1) / 2, (double)(rt_nanotime() - t0) / 1e6);

    rt_chan *never;
    rt_chan_make(&never, sizeof(int), 0);
    rt_chan *timeout = rt_after(20 * RT_MILLISECOND);
    rt_select_case cases[] = { RT_RECV_CASE(never, NULL), RT_RECV_CASE(timeout, NULL) };
    int chosen = rt_select(cases, 2, false);
    printf("select: case %d fired (the 20 ms timeout)\n", chosen);
    rt_chan_release(timeout);

    rt_timer *ticker;
    rt_ticker_new(&ticker, 5 * RT_MILLISECOND);
    for (int i = 0; i < 3; i++) rt_chan_recv(rt_timer_chan(ticker), NULL);
    rt_timer_free(ticker);
    printf("ticker: 3 ticks of 5 ms\n");
    printf("goroutines still alive: %lld (the sieve's, blocked)\n", (long long)rt_num_goroutine());
    return fan.sum == n * (n + 1) / 2 ? 0 : 1;
}

int main(int argc, char **argv) {
    int count = argc > 1 ? atoi(argv[1]) : 25;
    if (count < 1) count = 25;
    int rc = rt_main(demo_main, (void *)(intptr_t)count);
    fprintf(stderr, "rtdemo: %s\n", rt_strerror(rc));
    return 1;
}
