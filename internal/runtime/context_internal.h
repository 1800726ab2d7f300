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
 * caller may free w afterwards either way).
 */
bool ctx_unwatch(rt_context *ctx, ctx_waiter *w);

#endif /* LEDGERD_CONTEXT_INTERNAL_H */
