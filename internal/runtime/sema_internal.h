/*
 * sema_internal.h — goroutine semaphores and notify lists (sema.c), shared
 * with sync.c.  Nothing outside internal/runtime may include it.
 *
 * A semaphore here is any _Atomic uint32_t in memory: its value is the count,
 * and goroutines blocked on it are kept in a global hash table keyed by its
 * address, so the semaphore itself costs nothing but the 4 bytes (the sync
 * types embed one and stay usable at their zero value).  As in Go's
 * runtime/sema.go these are not general semaphores but a sleep/wakeup
 * primitive where every sleep is paired with exactly one wakeup, even if the
 * wakeup happens before the sleep (Mullender and Cox, "Semaphores in Plan 9").
 *
 * Call these from a goroutine.  From a plain thread (no current goroutine)
 * sema_acquire degrades to polling the count with backoff, which is correct
 * but slow; the runtime itself never does that.
 */
#ifndef LEDGERD_SEMA_INTERNAL_H
#define LEDGERD_SEMA_INTERNAL_H

#include "rt_internal.h"

/*
 * Wait until *addr > 0, then decrement it.  lifo: queue at the head of the
 * address's wait list instead of the tail (sync.Mutex uses it for waiters
 * that were already woken once and lost the race, so they are not sent to
 * the back of the line).  reason is shown in goroutine dumps.
 */
void sema_acquire(_Atomic uint32_t *addr, bool lifo, wait_reason reason);

/*
 * sema_acquire that can be abandoned: when ctx (NULL: background) is done,
 * or at the absolute deadline (rt_nanotime(); 0: none), it stops waiting
 * and returns the context's error or RT_ETIMEDOUT without having touched
 * *addr.  Returns RT_OK if and only if it decremented *addr — including
 * when a release handed it the count as the context was being cancelled.
 * An already-done ctx or past deadline still takes a count that is there.
 */
int sema_acquire_ctx(_Atomic uint32_t *addr, bool lifo, wait_reason reason,
                     rt_context *ctx, int64_t deadline);

/* Decrement *addr if it is > 0, without blocking; true if it did. */
bool sema_try_acquire(_Atomic uint32_t *addr);

/*
 * Increment *addr and wake one goroutine waiting on it, if any.  handoff:
 * the count goes directly to the woken waiter (the waker consumes it on the
 * waiter's behalf) and the caller yields its P so the waiter runs at once;
 * sync.Mutex uses it in starvation mode so that a late arrival cannot barge
 * in between.
 */
void sema_release(_Atomic uint32_t *addr, bool handoff);

/* Goroutines queued on exactly addr now (takes the root lock; for tests and
 * diagnostics — the answer may be stale by the time it is used). */
uint32_t sema_waiters(const _Atomic uint32_t *addr);

/*
 * Notify lists: the ticket-based wait queue behind rt_cond (Go's notifyList).
 * A waiter first takes a ticket (notify_list_add) while holding the
 * condition's mutex, then releases the mutex and calls notify_list_wait with
 * that ticket.  A notification issued between the two is not lost: it marks
 * the ticket notified and notify_list_wait returns at once.
 */
uint32_t notify_list_add(rt_cond *c);
void notify_list_wait(rt_cond *c, uint32_t ticket);
void notify_list_notify_one(rt_cond *c);
void notify_list_notify_all(rt_cond *c);

#endif /* LEDGERD_SEMA_INTERNAL_H */
