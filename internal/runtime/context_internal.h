/*
 * context_internal.h — how runtime code waits on a context (context.c).
 *
 * A blocking operation that honours a context registers a ctx_waiter before
 * it parks.  When the context becomes done (rt_context_cancel, its deadline
 * timer, or a parent's cancellation), context.c calls every registered
 * waiter's fn exactly once, with the context's error.  fn runs in whatever
 * context cancelled — a goroutine, or the scheduler stack (g0) for deadline
 * timers — so it must not block: typically it takes the operation's own
 * lock, removes the goroutine from its wait list if it is still there, and
 * goready()s it with the error.
 *
 * Locks (see context.c): a context's lock is a leaf, so ctx_watch may be
 * called while holding any runtime lock.  fn is called with no context
 * lock held; it must not block, and must not call ctx_unwatch on its own
 * waiter.  ctx_unwatch may wait for a running fn, so it must not be called
 * while holding a lock that fn takes.
 */
#ifndef LEDGERD_CONTEXT_INTERNAL_H
#define LEDGERD_CONTEXT_INTERNAL_H

#include "rt_internal.h"

typedef struct ctx_waiter ctx_waiter;
struct ctx_waiter {
    void (*fn)(ctx_waiter *w, int err);
    void *arg;
    ctx_waiter *next;    /* owned by context.c */
    ctx_waiter *prev;
    _Atomic uint32_t state;  /* owned by context.c */
};

/*
 * Register w on ctx.  Returns 0, or the context's error if it is already
 * done (w is then not registered and fn will not run).  ctx NULL or
 * background: returns 0 and registers nothing (never fires).
 */
int ctx_watch(rt_context *ctx, ctx_waiter *w);

/*
 * Unregister w.  Returns true if it was removed before firing; false if fn
 * has run (or is running — ctx_unwatch waits until it has returned, so the
 * caller may free w afterwards either way).  A w that is not registered
 * (ctx NULL or background, or ctx_watch returned an error) gives true.
 */
bool ctx_unwatch(rt_context *ctx, ctx_waiter *w);

/* Context nodes allocated and not yet freed (tests: leak checks). */
int64_t ctx_live_count(void);

#endif /* LEDGERD_CONTEXT_INTERNAL_H */
