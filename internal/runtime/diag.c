/*
 * diag.c — what the runtime tells a human: goroutine dumps, the deadlock
 * report, stack-overflow reports, and SIGQUIT.
 *
 * Dump format (modelled on Go's traceback header lines):
 *
 *     goroutine 7 [chan receive, 1532 ms]:
 *     	created at server.c:42
 *
 * The state is the goroutine's status, or its wait reason when parked; the
 * time is how long it has been parked (coarse clock, ~ms resolution).
 *
 * SIGQUIT.  A dump needs locks (the list of all goroutines), which a signal
 * handler must not take.  So the handler only writes a byte to a pipe; a
 * dedicated thread reads it and writes the dump to stderr, and the process
 * keeps running — Go instead exits on SIGQUIT, but a daemon's operators want
 * to look without killing it.
 *
 * Stack overflow.  A goroutine that runs off its stack hits the guard page
 * (stack.c) and takes SIGSEGV.  The handler runs on a per-thread alternate
 * signal stack (the faulting stack is unusable), checks whether the fault is
 * in the guard of the goroutine running on this thread, and if so reports
 * "fatal error: stack overflow" naming the goroutine and where it was
 * spawned, then exits with status 2.  Any other fault is passed on to the
 * previous handler (or the default action, so a core dump still happens).
 * Only async-signal-safe calls are used on that path.
 *
 * State (documented global state): the SIGQUIT pipe and the previous
 * SIGSEGV/SIGBUS actions, written once in diag_init.
 */
#define _GNU_SOURCE
#include "rt_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int quit_pipe[2] = { -1, -1 };
static struct sigaction prev_segv, prev_bus;

static const char *const wait_reason_names[WAIT_REASON_COUNT] = {
    [WAIT_NONE] = "",
    [WAIT_CHAN_SEND] = "chan send",
    [WAIT_CHAN_RECV] = "chan receive",
    [WAIT_CHAN_SEND_NIL] = "chan send (nil chan)",
    [WAIT_CHAN_RECV_NIL] = "chan receive (nil chan)",
    [WAIT_SELECT] = "select",
    [WAIT_SELECT_NO_CASES] = "select (no cases)",
    [WAIT_MUTEX] = "mutex",
    [WAIT_RWMUTEX_R] = "rwmutex rlock",
    [WAIT_RWMUTEX_W] = "rwmutex lock",
    [WAIT_WAITGROUP] = "waitgroup",
    [WAIT_COND] = "cond wait",
    [WAIT_SEMA] = "semacquire",
    [WAIT_SLEEP] = "sleep",
    [WAIT_IO] = "I/O wait",
    [WAIT_TIMER_STOP] = "timer stop",
};

const char *wait_reason_string(wait_reason r) {
    if ((unsigned)r >= WAIT_REASON_COUNT || !wait_reason_names[r]) return "unknown";
    return wait_reason_names[r];
}

static const char *status_string(uint32_t status) {
    switch ((gstatus)status) {
    case G_IDLE: return "idle";
    case G_RUNNABLE: return "runnable";
    case G_RUNNING: return "running";
    case G_WAITING: return "waiting";
    case G_SYSCALL: return "syscall";
    case G_DEAD: return "dead";
    }
    return "unknown";
}

static int64_t coarse_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * RT_SECOND + ts.tv_nsec;
}

static void dump_one(FILE *f, g *gp, int64_t now) {
    uint32_t status = atomic_load_explicit(&gp->status, memory_order_acquire);
    if (status == G_DEAD || status == G_IDLE) return;
    fprintf(f, "goroutine %llu [", (unsigned long long)gp->goid);
    if (status == G_WAITING) {
        wait_reason r = atomic_load_explicit(&gp->wait_reason, memory_order_relaxed);
        int64_t since = atomic_load_explicit(&gp->wait_since, memory_order_relaxed);
        int64_t ms = since ? (now - since) / RT_MILLISECOND : 0;
        fprintf(f, "%s, %lld ms", wait_reason_string(r), (long long)(ms > 0 ? ms : 0));
    } else {
        fputs(status_string(status), f);
    }
    fprintf(f, "]:\n\tcreated at %s:%d\n\n", gp->spawn_file ? gp->spawn_file : "?", gp->spawn_line);
}

void diag_dump_all(int fd) {
    /* Build the text in memory, then write it once: a dump is read while
     * other output may interleave, and must not be interleaved itself. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return;
    int64_t now = coarse_now();
    lock_acquire(&sched.allg_lock);
    for (g *gp = sched.allg; gp; gp = gp->all_next) dump_one(f, gp, now);
    lock_release(&sched.allg_lock);
    fclose(f);
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    free(buf);
}

int rt_dump_goroutines(int fd) {
    if (fd < 0) return RT_EINVAL;
    diag_dump_all(fd);
    return RT_OK;
}

_Noreturn void diag_deadlock(void) {
    static const char msg[] = "fatal error: all goroutines are asleep - deadlock!\n\n";
    fflush(stdout);
    (void)!write(2, msg, sizeof msg - 1);
    diag_dump_all(2);
    _exit(2);
}

/* ------------------------------------------------------------- SIGQUIT */

static void on_sigquit(int sig) {
    (void)sig;
    int saved = errno;
    char c = 'q';
    (void)!write(quit_pipe[1], &c, 1);
    errno = saved;
}

static void *quit_thread(void *arg) {
    (void)arg;
    for (;;) {
        char c;
        ssize_t r = read(quit_pipe[0], &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return NULL;
        static const char hdr[] = "SIGQUIT: goroutine dump\n\n";
        (void)!write(2, hdr, sizeof hdr - 1);
        diag_dump_all(2);
    }
}

/* --------------------------------------------------------- stack overflow */

static void write_str(const char *s) { (void)!write(2, s, strlen(s)); }

static void write_u64(uint64_t v) {
    char buf[24];
    int i = (int)sizeof buf;
    buf[--i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i > 0);
    write_str(buf + i);
}

static void pass_on(int sig, siginfo_t *info, void *uctx, struct sigaction *prev) {
    if ((prev->sa_flags & SA_SIGINFO) && prev->sa_sigaction) {
        prev->sa_sigaction(sig, info, uctx);
        return;
    }
    if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN && prev->sa_handler) {
        prev->sa_handler(sig);
        return;
    }
    /* Default action: restore it and return; the fault repeats and kills us
     * with the right signal (and a core dump where enabled). */
    signal(sig, SIG_DFL);
}

static void on_fault(int sig, siginfo_t *info, void *uctx) {
    m *mp = getm();
    g *gp = mp ? mp->curg : NULL;
    if (gp && stack_fault_is_guard(gp, (uintptr_t)info->si_addr)) {
        write_str("fatal error: stack overflow in goroutine ");
        write_u64(gp->goid);
        write_str(" (stack ");
        write_u64(gp->stack_size / 1024);
        write_str(" KiB, created at ");
        write_str(gp->spawn_file ? gp->spawn_file : "?");
        write_str(":");
        write_u64((uint64_t)gp->spawn_line);
        write_str(")\n");
        _exit(2);
    }
    pass_on(sig, info, uctx, sig == SIGSEGV ? &prev_segv : &prev_bus);
}

void diag_thread_init(m *mp) {
    size_t size = 64 * 1024;
    void *stk = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stk == MAP_FAILED) return;   /* overflow then dies by plain SIGSEGV */
    stack_t ss = { .ss_sp = stk, .ss_size = size, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(stk, size);
        return;
    }
    mp->sigstack = stk;
    mp->sigstack_size = size;
}

void diag_init(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &prev_segv);
    sigaction(SIGBUS, &sa, &prev_bus);

    if (pipe2(quit_pipe, O_CLOEXEC) == 0) {
        struct sigaction sq;
        memset(&sq, 0, sizeof sq);
        sq.sa_handler = on_sigquit;
        sq.sa_flags = SA_RESTART;
        sigemptyset(&sq.sa_mask);
        sigaction(SIGQUIT, &sq, NULL);
        if (os_thread_start(NULL, quit_thread, NULL, 256 * 1024) != 0) {
            /* No dump thread: leave SIGQUIT's default action alone. */
            signal(SIGQUIT, SIG_DFL);
        }
    }
}
