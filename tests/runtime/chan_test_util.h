/*
 * chan_test_util.h — helpers shared by the channel and select tests.
 *
 * Some checks need to know that a goroutine is really parked on a channel
 * (FIFO order of waiters, close waking sleepers).  Sleeping and hoping is
 * flaky, so these helpers read the public goroutine dump
 * (rt_dump_goroutines: "goroutine 7 [chan receive, 3 ms]:") and poll until
 * the goroutine shows the expected wait state.
 */
#ifndef LEDGERD_CHAN_TEST_UTIL_H
#define LEDGERD_CHAN_TEST_UTIL_H

#include "rt_test.h"

#include <pthread.h>
#include <sys/mman.h>

/* The goroutine dump as a malloc'd NUL-terminated string. */
static inline char *ctu_dump(void) {
    int fd = memfd_create("rt-dump", 0);
    CHECK(fd >= 0);
    CHECK_EQ(rt_dump_goroutines(fd), RT_OK);
    off_t size = lseek(fd, 0, SEEK_END);
    CHECK(size >= 0);
    char *text = malloc((size_t)size + 1);
    CHECK(text != NULL);
    CHECK_EQ(pread(fd, text, (size_t)size, 0), size);
    text[size] = 0;
    close(fd);
    return text;
}

/* How many goroutines are parked with wait reason `state` ("chan send"). */
static inline int ctu_count_in_state(const char *state) {
    char needle[64];
    snprintf(needle, sizeof needle, "[%s,", state);
    char *text = ctu_dump();
    int n = 0;
    for (const char *s = text; (s = strstr(s, needle)) != NULL; s += strlen(needle)) n++;
    free(text);
    return n;
}

static inline bool ctu_in_state(uint64_t goid, const char *state) {
    char needle[96];
    snprintf(needle, sizeof needle, "goroutine %llu [%s,", (unsigned long long)goid, state);
    char *text = ctu_dump();
    bool found = strstr(text, needle) != NULL;
    free(text);
    return found;
}

#define CTU_WAIT_LIMIT (60 * RT_SECOND)

/* Poll until goroutine goid is parked in `state` (fails after a minute). */
static inline void ctu_wait_parked(uint64_t goid, const char *state) {
    int64_t deadline = rt_nanotime() + CTU_WAIT_LIMIT;
    while (!ctu_in_state(goid, state)) {
        CHECK(rt_nanotime() < deadline);
        rt_sleep(100 * RT_MICROSECOND);
    }
}

/* Poll until at least n goroutines are parked in `state`. */
static inline void ctu_wait_count(const char *state, int n) {
    int64_t deadline = rt_nanotime() + CTU_WAIT_LIMIT;
    while (ctu_count_in_state(state) < n) {
        CHECK(rt_nanotime() < deadline);
        rt_sleep(RT_MILLISECOND);
    }
}

/* Make a channel or fail the test. */
static inline rt_chan *ctu_make(size_t elem_size, size_t cap) {
    rt_chan *c = NULL;
    CHECK_EQ(rt_chan_make(&c, elem_size, cap), RT_OK);
    CHECK(c != NULL);
    return c;
}

#endif /* LEDGERD_CHAN_TEST_UTIL_H */
