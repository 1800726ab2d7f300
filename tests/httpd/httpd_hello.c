/*
 * httpd_hello.c — a throwaway server answering {"status":"ok"} to every
 * request, for a quick wrk measurement of internal/httpd alone:
 *
 *     GOMAXPROCS=2 build/tests/httpd/httpd_hello 8080 &
 *     wrk -t2 -c64 -d5s --latency http://127.0.0.1:8080/healthz
 *
 * Prints "port N" once listening; runs until killed.
 */
#include "httpd.h"
#include "rt.h"

#include <stdio.h>
#include <stdlib.h>

static void hello(void *ud, const httpd_request *req, httpd_response *resp) {
    (void)ud;
    (void)req;
    httpd_body_append(resp, "{\"status\":\"ok\"}", 15);
}

static int run(void *arg) {
    int port = (int)(intptr_t)arg;
    httpd_options o = {.port = port, .handler = hello};
    httpd_server *s;
    char err[128];
    int rc = httpd_listen(&o, &s, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("port %d\n", httpd_port(s));
    fflush(stdout);
    if (httpd_start(s)) return 1;
    for (;;) rt_sleep(RT_SECOND);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    return rt_main(run, (void *)(intptr_t)port);
}
