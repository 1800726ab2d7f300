/*
 * daemon.h — detaching from the terminal and the pidfile (internal to
 * cmd/ledgerd).  Both run before rt_main: fork() is only safe while the
 * process has one thread.
 */
#ifndef LEDGERD_CMD_DAEMON_H
#define LEDGERD_CMD_DAEMON_H

#include <stddef.h>

/*
 * Detach: fork; the parent waits on a pipe until the daemon reports
 * readiness (exit 0) or an error (printed to stderr, exit 1) and never
 * returns.  The child calls setsid, forks again (so it can never reacquire a
 * controlling terminal), sets umask 027, chdir("/"), points stdin and stdout
 * at /dev/null and stderr at stderr_fd (or /dev/null if stderr_fd < 0), and
 * returns 0 with *ready_fd the pipe's write end.  -1 with a message on
 * failure (nothing forked).
 */
int daemon_detach(int stderr_fd, int *ready_fd, char *errbuf, size_t errlen);

/* Tell the waiting parent: ready (errmsg NULL) or failed with errmsg.
 * Closes the pipe; a no-op when ready_fd < 0 (foreground). */
void daemon_report(int *ready_fd, const char *errmsg);

/*
 * Create or take over the pidfile at path: opened O_CREAT|O_NOFOLLOW, locked
 * with flock(LOCK_EX|LOCK_NB) for the life of the process, then truncated
 * and filled with our pid.  A pidfile whose lock is held names a live
 * ledgerd: -1, "already running (pid N)".  One whose lock is free is stale
 * (its owner died, and the lock with it) and is replaced.  Returns the
 * descriptor (keep it open) or -1 with a message.
 */
int pidfile_acquire(const char *path, char *errbuf, size_t errlen);

/* Remove the pidfile (still holding its lock) and close it.  fd < 0: no-op. */
void pidfile_release(const char *path, int fd);

#endif /* LEDGERD_CMD_DAEMON_H */
