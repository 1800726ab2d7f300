/*
 * daemon.c — classic Unix daemonization and a lock-held pidfile (contract in
 * daemon.h).
 *
 * Readiness
 *   The process that the user (or an init script) started must not exit 0
 *   before the daemon can serve, or a script that starts ledgerd and then
 *   calls it races the start-up; nor exit 0 when the start-up then fails.
 *   So the first parent keeps the read end of a pipe and blocks on it; the
 *   daemon (the grandchild) writes "OK\n" once it listens, or "ERR
 *   <message>\n" when it gives up, and closes its end.  EOF without either
 *   means the daemon died before it could say anything.  The pipe is
 *   O_CLOEXEC, so nothing the daemon executes can hold it open.
 *
 * Why flock, and not "is the pid alive?"
 *   The pidfile is locked for the whole life of the daemon, and the kernel
 *   drops the lock when the process dies however it dies.  A held lock is
 *   therefore proof of a live ledgerd; a free lock proves the file is stale
 *   — even when its pid has since been reused by an unrelated process, which
 *   a kill(pid, 0) check would mistake for a running daemon.
 *
 *   Taking over a stale file: after locking, the file we hold must still be
 *   the one at the path (a clean exit unlinks it while holding the lock, and
 *   we may have opened it just before that): fstat and stat must agree, else
 *   retry on the new file.
 */
#define _GNU_SOURCE 1
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* The first parent: wait for the daemon's word, then exit with it. */
static _Noreturn void parent_wait(int rfd, pid_t child) {
    char msg[2048];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(rfd, msg + len, sizeof msg - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
        if (len == sizeof msg - 1) break;
    }
    msg[len] = '\0';
    waitpid(child, NULL, 0);   /* the intermediate child exits at once */
    if (strncmp(msg, "OK", 2) == 0) _exit(0);
    if (strncmp(msg, "ERR ", 4) == 0) {
        fprintf(stderr, "ledgerd: %s", msg + 4);
        if (len == 0 || msg[len - 1] != '\n') fputc('\n', stderr);
    } else {
        fprintf(stderr, "ledgerd: the daemon exited before it was ready (see its log)\n");
    }
    fflush(stderr);
    _exit(1);
}

static int redirect_stdio(int stderr_fd) {
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) return -1;
    int rc = 0;
    if (dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0) rc = -1;
    if (dup2(stderr_fd >= 0 ? stderr_fd : null, STDERR_FILENO) < 0) rc = -1;
    close(null);
    return rc;
}

int daemon_detach(int stderr_fd, int *ready_fd, char *errbuf, size_t errlen) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        set_err(errbuf, errlen, "daemon: pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);   /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        set_err(errbuf, errlen, "daemon: fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid > 0) {
        close(p[1]);
        parent_wait(p[0], pid);
    }
    close(p[0]);
    if (setsid() < 0) {
        daemon_report(&p[1], "daemon: setsid failed");
        _exit(1);
    }
    /* SIGHUP to the session when the session leader exits must not kill us. */
    signal(SIGHUP, SIG_IGN);
    pid = fork();
    if (pid < 0) {
        daemon_report(&p[1], "daemon: second fork failed");
        _exit(1);
    }
    if (pid > 0) _exit(0);
    signal(SIGHUP, SIG_DFL);   /* main blocks it and waits for it */
    umask(027);
    if (chdir("/") != 0 || redirect_stdio(stderr_fd) != 0) {
        daemon_report(&p[1], "daemon: cannot chdir / or redirect stdio");
        _exit(1);
    }
    *ready_fd = p[1];
    return 0;
}

void daemon_report(int *ready_fd, const char *errmsg) {
    if (*ready_fd < 0) return;
    if (errmsg == NULL) {
        write_all(*ready_fd, "OK\n", 3);
    } else {
        char buf[1024];
        int n = snprintf(buf, sizeof buf, "ERR %s\n", errmsg);
        if (n > (int)sizeof buf - 1) n = (int)sizeof buf - 1;
        write_all(*ready_fd, buf, (size_t)n);
    }
    close(*ready_fd);
    *ready_fd = -1;
}

/* The pid a held pidfile names, for the message. */
static void read_pid(int fd, char *buf, size_t len) {
    ssize_t r = pread(fd, buf, len - 1, 0);
    if (r < 0) r = 0;
    buf[r] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (buf[0] == '\0') snprintf(buf, len, "unknown");
}

int pidfile_acquire(const char *path, char *errbuf, size_t errlen) {
    for (int attempt = 0; attempt < 10; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
        if (fd < 0) {
            set_err(errbuf, errlen, "pidfile %s: %s", path, strerror(errno));
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            char pid[32];
            if (e == EWOULDBLOCK) {
                read_pid(fd, pid, sizeof pid);
                set_err(errbuf, errlen, "pidfile %s: ledgerd already running (pid %s)", path, pid);
            } else {
                set_err(errbuf, errlen, "pidfile %s: lock: %s", path, strerror(e));
            }
            close(fd);
            return -1;
        }
        struct stat held, at_path;
        if (fstat(fd, &held) != 0 || stat(path, &at_path) != 0 || held.st_ino != at_path.st_ino ||
            held.st_dev != at_path.st_dev) {
            close(fd);   /* unlinked under us by an exiting daemon: take the new one */
            continue;
        }
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
            set_err(errbuf, errlen, "pidfile %s: write: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        return fd;
    }
    set_err(errbuf, errlen, "pidfile %s: keeps being replaced", path);
    return -1;
}

void pidfile_release(const char *path, int fd) {
    if (fd < 0) return;
    unlink(path);   /* before the lock goes: see the top */
    close(fd);
}
