/*
 * test_sched.c — the scheduler: spawning (from goroutines and plain
 * threads, before and after rt_main), goroutine ids, yield, goexit,
 * GOMAXPROCS, stack sizes and overflow, deadlock detection, goroutine dumps
 * (API and SIGQUIT), idle CPU, blocking calls and CPU-bound goroutines.
 */
#include "rt_test.h"

#include <pthread.h>
#include <stdint.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/time.h>

/* ------------------------------------------------------------- helpers */

static int64_t cpu_time_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * RT_SECOND +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * RT_MICROSECOND;
}

/* ------------------------------------------- spawned before rt_main */

static _Atomic int pre_main_ran;
static _Atomic uint64_t pre_main_goid;

static void pre_main_fn(void *arg) {
    (void)arg;
    atomic_store(&pre_main_goid, rt_goid());
    atomic_fetch_add(&pre_main_ran, 1);
}

static void test_spawn_before_main(void) {
    /* main() spawned 3 goroutines before rt_main; they must all run. */
    for (int i = 0; i < 1000 && atomic_load(&pre_main_ran) < 3; i++) rt_sleep(RT_MILLISECOND);
    CHECK_EQ(atomic_load(&pre_main_ran), 3);
    CHECK(atomic_load(&pre_main_goid) > 1);   /* 1 is main's */
}

/* ----------------------------------------------------------- basics */

static void test_main_is_goroutine_one(void) {
    CHECK_EQ(rt_goid(), 1);
    CHECK(rt_gomaxprocs() >= 1);
    const char *env = getenv("GOMAXPROCS");
    if (env) CHECK_EQ(rt_gomaxprocs(), atoi(env));
}

typedef struct id_probe {
    rt_waitgroup wg;
    _Atomic uint64_t ids[64];
} id_probe;

static id_probe idp;

static void record_id(void *arg) {
    long i = (long)(intptr_t)arg;
    atomic_store(&idp.ids[i], rt_goid());
    rt_waitgroup_done(&idp.wg);
}

static void test_goroutine_ids_unique(void) {
    for (long i = 0; i < 64; i++) {
        rt_waitgroup_add(&idp.wg, 1);
        CHECK_EQ(rt_go(record_id, (void *)(intptr_t)i), RT_OK);
    }
    rt_waitgroup_wait(&idp.wg);
    for (int i = 0; i < 64; i++) {
        CHECK(atomic_load(&idp.ids[i]) > 1);
        for (int j = 0; j < i; j++) CHECK(atomic_load(&idp.ids[i]) != atomic_load(&idp.ids[j]));
    }
}

static void test_spawn_errors(void) {
    CHECK_EQ(rt_go(NULL, NULL), RT_EINVAL);
    rt_spawn_opts tiny = { .stack_size = 1024 };
    CHECK_EQ(rt_go_opts(pre_main_fn, NULL, &tiny), RT_EINVAL);
    rt_spawn_opts huge = { .stack_size = (size_t)1 << 40 };
    CHECK_EQ(rt_go_opts(pre_main_fn, NULL, &huge), RT_EINVAL);
    CHECK(strcmp(rt_strerror(RT_EINVAL), "invalid argument") == 0);
    CHECK(strcmp(rt_strerror(12345), "unknown runtime error") == 0);
}

/* Every goroutine that yields repeatedly still lets all others finish. */
static _Atomic long yield_rounds;
static rt_waitgroup yield_wg;

static void yielder(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        atomic_fetch_add(&yield_rounds, 1);
        rt_yield();
    }
    rt_waitgroup_done(&yield_wg);
}

static void test_yield(void) {
    for (int i = 0; i < 50; i++) {
        rt_waitgroup_add(&yield_wg, 1);
        rt_go(yielder, NULL);
    }
    rt_waitgroup_wait(&yield_wg);
    CHECK_EQ(atomic_load(&yield_rounds), 50 * 1000);
}

static _Atomic int goexit_reached_after;
static rt_waitgroup goexit_wg;

static void goexit_inner(void) {
    rt_waitgroup_done(&goexit_wg);
    rt_goexit();
}

static void goexiter(void *arg) {
    (void)arg;
    goexit_inner();
    atomic_store(&goexit_reached_after, 1);   /* never reached */
}

static void test_goexit(void) {
    int64_t before = rt_num_goroutine();
    rt_waitgroup_add(&goexit_wg, 1);
    rt_go(goexiter, NULL);
    rt_waitgroup_wait(&goexit_wg);
    for (int i = 0; i < 100 && rt_num_goroutine() > before; i++) rt_sleep(RT_MILLISECOND);
    CHECK_EQ(rt_num_goroutine(), before);
    CHECK_EQ(atomic_load(&goexit_reached_after), 0);
}

/* -------------------------------------------------- foreign threads */

static _Atomic long foreign_ran;
static rt_waitgroup foreign_wg;

static void foreign_child(void *arg) {
    (void)arg;
    atomic_fetch_add(&foreign_ran, 1);
    rt_waitgroup_done(&foreign_wg);
}

static void *foreign_thread(void *arg) {
    long n = (long)(intptr_t)arg;
    CHECK_EQ(rt_goid(), 0);   /* not a goroutine */
    for (long i = 0; i < n; i++) CHECK_EQ(rt_go(foreign_child, NULL), RT_OK);
    return NULL;
}

static void test_spawn_from_plain_threads(void) {
    enum { THREADS = 4 };
    long per = SCALED(2000);
    rt_waitgroup_add(&foreign_wg, (int)(THREADS * per));
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, foreign_thread, (void *)(intptr_t)per), 0);
    rt_waitgroup_wait(&foreign_wg);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    CHECK_EQ(atomic_load(&foreign_ran), THREADS * per);
}

/* ------------------------------------------------------------ stacks */

static rt_waitgroup deep_wg;
static _Atomic long deep_sum;

static __attribute__((noinline)) long recurse(int depth) {
    volatile char frame[1024];
    frame[0] = (char)depth;
    if (depth == 0) return frame[0];
    return recurse(depth - 1) + frame[0];
}

static void deep_user(void *arg) {
    int depth = (int)(intptr_t)arg;
    atomic_fetch_add(&deep_sum, recurse(depth));
    rt_waitgroup_done(&deep_wg);
}

static void test_custom_stack_sizes(void) {
    /* 48 KiB of frames fits the default 64 KiB stack; 400 KiB needs more. */
    rt_waitgroup_add(&deep_wg, 2);
    CHECK_EQ(rt_go(deep_user, (void *)(intptr_t)40), RT_OK);
    rt_spawn_opts big = { .stack_size = 1024 * 1024 };
    CHECK_EQ(rt_go_opts(deep_user, (void *)(intptr_t)400, &big), RT_OK);
    rt_waitgroup_wait(&deep_wg);
    CHECK(atomic_load(&deep_sum) != 0);
}

static int child_stack_overflow(void *arg) {
    (void)arg;
    rt_waitgroup_add(&deep_wg, 1);
    rt_go(deep_user, (void *)(intptr_t)100000);   /* ~100 MiB of frames */
    rt_waitgroup_wait(&deep_wg);
    return 0;
}

static void test_stack_overflow_is_reported(void) {
    CHECK_CHILD_FATAL("stack_overflow", "fatal error: stack overflow in goroutine");
    static char out[65536];
    rt_test_run_child("stack_overflow", out, sizeof out);
    CHECK(strstr(out, "test_sched.c") != NULL);   /* names the spawn site */
}

/* -------------------------------------------------------- deadlock */

static int child_deadlock_chan(void *arg) {
    (void)arg;
    rt_chan *c;
    rt_chan_make(&c, sizeof(int), 0);
    int v;
    rt_chan_recv(c, &v);   /* nobody will ever send */
    return 0;
}

static void block_forever_helper(void *arg) {
    rt_chan *c = arg;
    rt_chan_send(c, &(int){ 1 });   /* main never receives */
}

static int child_deadlock_many(void *arg) {
    (void)arg;
    rt_chan *c;
    rt_chan_make(&c, sizeof(int), 0);
    for (int i = 0; i < 10; i++) rt_go(block_forever_helper, c);
    rt_sleep(20 * RT_MILLISECOND);
    rt_mutex m = { 0 };
    rt_mutex_lock(&m);
    rt_mutex_lock(&m);   /* self-deadlock; the helpers are blocked too */
    return 0;
}

static int child_sleeping_is_not_deadlock(void *arg) {
    (void)arg;
    rt_sleep(50 * RT_MILLISECOND);   /* only a timer can wake us: not a deadlock */
    return 7;
}

static void test_deadlock_detection(void) {
    CHECK_CHILD_FATAL("deadlock_chan", "fatal error: all goroutines are asleep - deadlock!");
    static char out[65536];
    int st = rt_test_run_child("deadlock_chan", out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    CHECK(strstr(out, "goroutine 1 [chan receive") != NULL);

    st = rt_test_run_child("deadlock_many", out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    CHECK(strstr(out, "all goroutines are asleep") != NULL);
    CHECK(strstr(out, "[mutex") != NULL);
    CHECK(strstr(out, "[chan send") != NULL);

    st = rt_test_run_child("sleeping", out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7);
}

/* ----------------------------------------------------------- dumps */

static rt_chan *dump_block;

static void dump_sleeper(void *arg) {
    (void)arg;
    rt_sleep(10 * RT_SECOND);
}

static void dump_receiver(void *arg) {
    (void)arg;
    rt_chan_recv(dump_block, NULL);
}

static void test_goroutine_dump_api(void) {
    rt_chan_make(&dump_block, 0, 0);
    rt_go(dump_sleeper, NULL);
    rt_go(dump_receiver, NULL);
    rt_sleep(30 * RT_MILLISECOND);
    char path[] = "/tmp/rt_dump_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK_EQ(rt_dump_goroutines(fd), RT_OK);
    CHECK_EQ(rt_dump_goroutines(-1), RT_EINVAL);
    lseek(fd, 0, SEEK_SET);
    static char buf[1 << 20];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    unlink(path);
    CHECK(n > 0);
    buf[n] = 0;
    CHECK(strstr(buf, "goroutine 1 [running]") != NULL);
    CHECK(strstr(buf, "[sleep, ") != NULL);
    CHECK(strstr(buf, "[chan receive, ") != NULL);
    CHECK(strstr(buf, "created at ") != NULL);
    CHECK(strstr(buf, "test_sched.c:") != NULL);
    rt_chan_close(dump_block);   /* let the receiver go */
}

static int child_sigquit(void *arg) {
    (void)arg;
    rt_chan_make(&dump_block, 0, 0);
    rt_go(dump_receiver, NULL);
    rt_sleep(20 * RT_MILLISECOND);
    kill(getpid(), SIGQUIT);
    rt_sleep(200 * RT_MILLISECOND);   /* the dump thread writes meanwhile */
    printf("still running after SIGQUIT\n");
    fflush(stdout);
    return 0;
}

static void test_sigquit_dumps_and_keeps_running(void) {
    static char out[65536];
    int st = rt_test_run_child("sigquit", out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(strstr(out, "SIGQUIT: goroutine dump") != NULL);
    CHECK(strstr(out, "[chan receive, ") != NULL);
    CHECK(strstr(out, "still running after SIGQUIT") != NULL);
}

/* -------------------------------------------------------- idle CPU */

static void test_idle_uses_no_cpu(void) {
    /* Park a few goroutines on long timers and channels, then idle. */
    rt_go(dump_sleeper, NULL);
    int64_t cpu0 = cpu_time_ns();
    int64_t wall0 = rt_nanotime();
    rt_sleep(300 * RT_MILLISECOND);
    int64_t cpu = cpu_time_ns() - cpu0;
    int64_t wall = rt_nanotime() - wall0;
    fprintf(stderr, "      idle: %.2f ms CPU over %.0f ms\n", (double)cpu / 1e6, (double)wall / 1e6);
    CHECK(cpu < TIMING_BOUND(30 * RT_MILLISECOND));   /* ~0%: busy polling burns 300+ */
}

/* ------------------------------------------ blocking and CPU-bound */

static _Atomic int hog_stop;

static void *sleep_500ms(void *arg) {
    (void)arg;
    usleep(500 * 1000);
    return (void *)(intptr_t)42;
}

static _Atomic intptr_t blocking_result;

static void blocker(void *arg) {
    (void)arg;
    atomic_store(&blocking_result, (intptr_t)rt_blocking(sleep_500ms, NULL));
}

static void hog(void *arg) {
    (void)arg;
    volatile unsigned long x = 0;
    while (!atomic_load_explicit(&hog_stop, memory_order_relaxed)) x++;
}

/* One attempt: the worst gap between ticks of a 10 ms ticker while one
 * goroutine sits 500 ms in a blocking call and another spins. */
static int64_t ticker_worst_gap(void) {
    atomic_store(&hog_stop, 0);
    atomic_store(&blocking_result, 0);
    rt_go(blocker, NULL);
    rt_go(hog, NULL);
    rt_timer *t;
    CHECK_EQ(rt_ticker_new(&t, 10 * RT_MILLISECOND), RT_OK);
    int64_t last = rt_nanotime(), worst = 0;
    for (int i = 0; i < 60; i++) {
        rt_chan_recv(rt_timer_chan(t), NULL);
        int64_t now = rt_nanotime();
        if (now - last > worst) worst = now - last;
        last = now;
    }
    rt_timer_free(t);
    atomic_store(&hog_stop, 1);
    for (int i = 0; i < 200 && atomic_load(&blocking_result) == 0; i++) rt_sleep(5 * RT_MILLISECOND);
    CHECK_EQ(atomic_load(&blocking_result), 42);
    return worst;
}

static void test_ticker_survives_blocking_and_hog(void) {
    /* The criterion: while one goroutine sits 500 ms in a blocking
     * call and another spins in a CPU loop, a third's 10 ms ticker keeps
     * firing with no gap above ~30 ms.  Without the monitor thread the gap
     * is the whole 500 ms (or forever, for the spinner), every time.  The
     * machine running the tests is shared, so a descheduled thread can add
     * tens of ms by itself: the best of three attempts must pass. */
    int64_t bound = TIMING_BOUND(30 * RT_MILLISECOND);
    int64_t best = INT64_MAX;
    for (int attempt = 0; attempt < 3 && best >= bound; attempt++) {
        int64_t worst = ticker_worst_gap();
        fprintf(stderr, "      GOMAXPROCS=%d: worst ticker gap %.1f ms\n", rt_gomaxprocs(),
                (double)worst / 1e6);
        if (worst < best) best = worst;
    }
    CHECK(best < bound);
}

static int child_ticker_gomaxprocs1(void *arg) {
    (void)arg;
    if (rt_gomaxprocs() != 1) return 3;
    test_ticker_survives_blocking_and_hog();
    return 0;
}

static void test_ticker_at_gomaxprocs_1(void) {
    setenv("GOMAXPROCS", "1", 1);
    static char out[65536];
    int st = rt_test_run_child("ticker1", out, sizeof out);
    unsetenv("GOMAXPROCS");
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fprintf(stderr, "%s\n", out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    const char *gaps = strstr(out, "      GOMAXPROCS");
    fprintf(stderr, "%s", gaps ? gaps : "");
}

/* Many goroutines in blocking calls at once: the others keep running, and
 * threads are reused afterwards. */
static rt_waitgroup blk_wg;

static void *sleep_50ms(void *arg) {
    (void)arg;
    usleep(50 * 1000);
    return NULL;
}

static void many_blocker(void *arg) {
    (void)arg;
    rt_blocking(sleep_50ms, NULL);
    rt_waitgroup_done(&blk_wg);
}

static void test_many_blocking_calls(void) {
    int n = 32;
    int64_t t0 = rt_nanotime();
    rt_waitgroup_add(&blk_wg, n);
    for (int i = 0; i < n; i++) rt_go(many_blocker, NULL);
    rt_waitgroup_wait(&blk_wg);
    int64_t took = rt_nanotime() - t0;
    fprintf(stderr, "      %d x 50 ms blocking calls took %.0f ms\n", n, (double)took / 1e6);
    /* Serialised on GOMAXPROCS threads they would take n*50/P ms. */
    CHECK(took < (int64_t)n * 50 * RT_MILLISECOND / rt_gomaxprocs());
}

/* ------------------------------------------------- many goroutines */

static rt_waitgroup parked_wg;
static rt_chan *parked_release;

static void parked(void *arg) {
    (void)arg;
    rt_waitgroup_done(&parked_wg);
    rt_chan_recv(parked_release, NULL);
    rt_waitgroup_done(&parked_wg);
}

static void test_many_parked_goroutines(void) {
    /* Beyond the ~32k mprotect-guard ceiling when madvise guards exist. */
    long n = SCALED(100000);
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer makes every goroutine a fiber and allows 8128. */
    if (n > 2000) n = 2000;
#endif
    rt_chan_make(&parked_release, 0, 0);
    rt_waitgroup_add(&parked_wg, (int)n);
    int64_t base = rt_num_goroutine();
    for (long i = 0; i < n; i++) CHECK_EQ(rt_go(parked, NULL), RT_OK);
    rt_waitgroup_wait(&parked_wg);
    /* Goroutines of earlier tests may finish meanwhile: bound, not equal. */
    CHECK(rt_num_goroutine() >= n && rt_num_goroutine() <= base + n);
    rt_waitgroup_add(&parked_wg, (int)n);
    rt_chan_close(parked_release);
    rt_waitgroup_wait(&parked_wg);
    for (int i = 0; i < 1000 && rt_num_goroutine() > base; i++) rt_sleep(RT_MILLISECOND);
    CHECK(rt_num_goroutine() <= base);
    rt_chan_release(parked_release);
}

/* ------------------------------------------------------------------ */

static int run(void *arg) {
    (void)arg;
    RUN(test_main_is_goroutine_one);
    RUN(test_spawn_before_main);
    RUN(test_goroutine_ids_unique);
    RUN(test_spawn_errors);
    RUN(test_yield);
    RUN(test_goexit);
    RUN(test_spawn_from_plain_threads);
    RUN(test_custom_stack_sizes);
    RUN(test_stack_overflow_is_reported);
    RUN(test_deadlock_detection);
    RUN(test_goroutine_dump_api);
    RUN(test_sigquit_dumps_and_keeps_running);
    RUN(test_idle_uses_no_cpu);
    RUN(test_ticker_survives_blocking_and_hog);
    RUN(test_ticker_at_gomaxprocs_1);
    RUN(test_many_blocking_calls);
    RUN(test_many_parked_goroutines);
    return rt_test_done();
}

static const rt_test_child children[] = {
    { "stack_overflow", child_stack_overflow },
    { "deadlock_chan", child_deadlock_chan },
    { "deadlock_many", child_deadlock_many },
    { "sleeping", child_sleeping_is_not_deadlock },
    { "sigquit", child_sigquit },
    { "ticker1", child_ticker_gomaxprocs1 },
    { NULL, NULL },
};

int main(int argc, char **argv) {
    if (!getenv("RT_TEST_CHILD"))
        for (int i = 0; i < 3; i++) rt_go(pre_main_fn, NULL);
    return rt_test_main_with_children(argc, argv, run, children);
}
