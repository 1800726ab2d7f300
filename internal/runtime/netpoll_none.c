/*
 * netpoll_none.c — the network API where no libuv exists for the target
 * (the AArch64 cross build): every call fails with RT_ESYS.  See netpoll.c
 * and internal/runtime/CMakeLists.txt.
 */
#include "rt_internal.h"

int64_t netpoll_waiters(void) { return 0; }

int rt_listen(rt_listener **out, const char *host, int port, int backlog) {
    (void)host, (void)port, (void)backlog;
    if (out) *out = NULL;
    return RT_ESYS;
}
int rt_listener_port(rt_listener *l) { (void)l; return RT_EINVAL; }
int rt_accept(rt_listener *l, rt_conn **out) { (void)l; if (out) *out = NULL; return RT_ESYS; }
int rt_accept_ctx(rt_context *ctx, rt_listener *l, rt_conn **out) {
    (void)ctx;
    return rt_accept(l, out);
}
int rt_listener_close(rt_listener *l) { (void)l; return RT_EINVAL; }
int rt_dial(rt_conn **out, const char *host, int port) {
    (void)host, (void)port;
    if (out) *out = NULL;
    return RT_ESYS;
}
int rt_dial_ctx(rt_context *ctx, rt_conn **out, const char *host, int port) {
    (void)ctx;
    return rt_dial(out, host, port);
}
int64_t rt_conn_read(rt_conn *c, void *buf, size_t len) { (void)c, (void)buf, (void)len; return RT_EINVAL; }
int64_t rt_conn_read_ctx(rt_context *ctx, rt_conn *c, void *buf, size_t len) {
    (void)ctx;
    return rt_conn_read(c, buf, len);
}
int rt_conn_write(rt_conn *c, const void *buf, size_t len) { (void)c, (void)buf, (void)len; return RT_EINVAL; }
int rt_conn_write_ctx(rt_context *ctx, rt_conn *c, const void *buf, size_t len) {
    (void)ctx;
    return rt_conn_write(c, buf, len);
}
int rt_conn_set_read_deadline(rt_conn *c, int64_t d) { (void)c, (void)d; return RT_EINVAL; }
int rt_conn_set_write_deadline(rt_conn *c, int64_t d) { (void)c, (void)d; return RT_EINVAL; }
int rt_conn_shutdown_write(rt_conn *c) { (void)c; return RT_EINVAL; }
int rt_conn_close(rt_conn *c) { (void)c; return RT_EINVAL; }
int rt_conn_oserror(rt_conn *c) { (void)c; return 0; }
int rt_conn_peer_addr(rt_conn *c, char *buf, size_t len) { (void)c, (void)buf, (void)len; return RT_EINVAL; }
int rt_conn_local_addr(rt_conn *c, char *buf, size_t len) { (void)c, (void)buf, (void)len; return RT_EINVAL; }
