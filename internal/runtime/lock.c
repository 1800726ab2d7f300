/*
 * lock.c — the runtime's own low-level locks and sleep/wake events.
 *
 * These block OS threads, not goroutines, and protect only short critical
 * sections inside the runtime (run queues, channel state, timer heaps).  They
 * are built on Linux futexes exactly like Go's lock_futex.go:
 *
 *   rt_lock.key: 0 unlocked, 1 locked, 2 locked with (possible) sleepers.
 *   lock_acquire spins briefly (the holder is on another CPU and about to
 *   release), yields once, then sleeps in the kernel; lock_release wakes one
 *   sleeper only when the key says there may be one, so an uncontended
 *   acquire/release is one atomic exchange each and no system call.
 *
 *   note.key: 0 clear, 1 signalled.  One M sleeps on a note; any thread wakes
 *   it.  A note must be cleared by its owner before it is reused.
 *
 * Every synchronisation goes through C11 atomics with acquire/release order,
 * which is also what lets ThreadSanitizer see the happens-before edges.
 */
#define _GNU_SOURCE
#include "rt_internal.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { LOCK_UNLOCKED = 0, LOCK_LOCKED = 1, LOCK_SLEEPING = 2 };
enum { SPIN_ACTIVE = 4, SPIN_ACTIVE_CYCLES = 30, SPIN_PASSIVE = 1 };

int os_futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t ns) {
    struct timespec ts, *tsp = NULL;
    if (ns >= 0) {
        ts.tv_sec = ns / RT_SECOND;
        ts.tv_nsec = ns % RT_SECOND;
        tsp = &ts;
    }
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, tsp, NULL, 0);
    return r == 0 ? 0 : -errno;
}

void os_futex_wake(_Atomic uint32_t *addr, int count) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

void os_yield(void) { sched_yield(); }

int os_thread_start(pthread_t *out, void *(*fn)(void *), void *arg, size_t stack_size) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, stack_size);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(out ? out : &t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc;
}

void proc_yield(uint32_t cycles) {
    for (uint32_t i = 0; i < cycles; i++) {
#if defined(__x86_64__)
        __asm__ __volatile__("pause" ::: "memory");
#elif defined(__aarch64__)
        __asm__ __volatile__("yield" ::: "memory");
#else
        atomic_signal_fence(memory_order_seq_cst);
#endif
    }
}

void lock_acquire(rt_lock *l) {
    uint32_t v = atomic_exchange_explicit(&l->key, LOCK_LOCKED, memory_order_acquire);
    if (rt_likely(v == LOCK_UNLOCKED)) return;

    /* Contended.  `wait` is what we must leave in the key when we take the
     * lock: if someone was sleeping, keep saying so, or their wakeup is lost. */
    uint32_t wait = v;
    for (;;) {
        for (int i = 0; i < SPIN_ACTIVE; i++) {
            while (atomic_load_explicit(&l->key, memory_order_relaxed) == LOCK_UNLOCKED) {
                uint32_t expected = LOCK_UNLOCKED;
                if (atomic_compare_exchange_weak_explicit(&l->key, &expected, wait,
                                                          memory_order_acquire,
                                                          memory_order_relaxed))
                    return;
            }
            proc_yield(SPIN_ACTIVE_CYCLES);
        }
        for (int i = 0; i < SPIN_PASSIVE; i++) {
            while (atomic_load_explicit(&l->key, memory_order_relaxed) == LOCK_UNLOCKED) {
                uint32_t expected = LOCK_UNLOCKED;
                if (atomic_compare_exchange_weak_explicit(&l->key, &expected, wait,
                                                          memory_order_acquire,
                                                          memory_order_relaxed))
                    return;
            }
            os_yield();
        }
        v = atomic_exchange_explicit(&l->key, LOCK_SLEEPING, memory_order_acquire);
        if (v == LOCK_UNLOCKED) return;
        wait = LOCK_SLEEPING;
        os_futex_wait(&l->key, LOCK_SLEEPING, -1);
    }
}

void lock_release(rt_lock *l) {
    uint32_t v = atomic_exchange_explicit(&l->key, LOCK_UNLOCKED, memory_order_release);
    if (rt_unlikely(v == LOCK_UNLOCKED)) rt_throw("runtime: unlock of unlocked lock");
    if (v == LOCK_SLEEPING) os_futex_wake(&l->key, 1);
}

void note_clear(note *n) { atomic_store_explicit(&n->key, 0, memory_order_relaxed); }

void note_wakeup(note *n) {
    uint32_t old = atomic_exchange_explicit(&n->key, 1, memory_order_release);
    if (rt_unlikely(old != 0)) rt_throw("runtime: note_wakeup: double wakeup");
    os_futex_wake(&n->key, 1);
}

void note_sleep(note *n) {
    while (atomic_load_explicit(&n->key, memory_order_acquire) == 0)
        os_futex_wait(&n->key, 0, -1);
}

bool note_timed_sleep(note *n, int64_t ns) {
    int64_t deadline = rt_nanotime() + ns;
    while (atomic_load_explicit(&n->key, memory_order_acquire) == 0) {
        int64_t left = deadline - rt_nanotime();
        if (left <= 0) return atomic_load_explicit(&n->key, memory_order_acquire) != 0;
        os_futex_wait(&n->key, 0, left);
    }
    return true;
}

int64_t rt_nanotime(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * RT_SECOND + ts.tv_nsec;
}
