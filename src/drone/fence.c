/* SPDX-License-Identifier: MIT */
/*
 * fence.c - the lease fence (see fence.h): the drone's side, which sends
 * one datagram per change over a SOCK_SEQPACKET pair, and the keeper, a
 * poll loop over that socket and the backends' pidfds.
 *
 * Messages, one per datagram:
 *   "A <deadline> <pid> <backend id>"  with the backend's pidfd attached: arm
 *   "M <deadline> <backend id>"        move an armed deadline (never arms)
 *   "D <backend id>"                   disarm
 * At end of file (the drone stopped or died) the keeper enforces the
 * deadlines it holds and exits when none is left. Deadlines are waited for
 * with a CLOCK_BOOTTIME timerfd, which counts a suspend.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "fence.h"

#define KEEPER_FD 3
#define MSG_MAX 512

extern char **environ;

struct fence {
    int sock;
    int pid; /* the keeper's */
    bool broken; /* said once: the keeper is gone */
};

static int pidfd_open_(int pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* ---- the drone's side ---- */

struct fence *fence_start(struct buf *err)
{
    int sv[2];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    char *argv[] = {(char *)"plane", (char *)"fence-keeper", NULL};
    int pid, rc;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        buf_printf(err, "lease fence: socketpair: %s", strerror(errno));
        return NULL;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], KEEPER_FD);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID); /* out of the drone's process group */
    rc = posix_spawn(&pid, "/proc/self/exe", &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    close(sv[1]);
    if (rc != 0) {
        buf_printf(err, "lease fence: cannot start its keeper: %s", strerror(rc));
        close(sv[0]);
        return NULL;
    }
    struct fence *f = xcalloc(1, sizeof(*f));
    f->sock = sv[0];
    f->pid = pid;
    log_info("lease fence: keeper %d started", pid);
    return f;
}

static void send_line(struct fence *f, const char *line, int fd)
{
    struct iovec iov = {.iov_base = (void *)line, .iov_len = strlen(line)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

    if (fd >= 0) {
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof(u.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    /* The keeper reads at once and messages are small; a full socket means it is stuck. */
    if (sendmsg(f->sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && !f->broken) {
        f->broken = true;
        log_error("lease fence: cannot reach its keeper (%s): backends are no longer fenced", strerror(errno));
    }
}

void fence_arm(struct fence *f, const char *backend_id, int pid, int64_t deadline)
{
    char line[MSG_MAX];
    int fd;

    if (!f || pid <= 1)
        return;
    fd = pidfd_open_(pid);
    if (fd < 0) {
        fence_disarm(f, backend_id); /* already gone */
        return;
    }
    snprintf(line, sizeof(line), "A %lld %d %s", (long long)deadline, pid, backend_id);
    send_line(f, line, fd);
    close(fd);
}

void fence_move(struct fence *f, const char *backend_id, int64_t deadline)
{
    char line[MSG_MAX];

    if (!f)
        return;
    snprintf(line, sizeof(line), "M %lld %s", (long long)deadline, backend_id);
    send_line(f, line, -1);
}

void fence_disarm(struct fence *f, const char *backend_id)
{
    char line[MSG_MAX];

    if (!f)
        return;
    snprintf(line, sizeof(line), "D %s", backend_id);
    send_line(f, line, -1);
}

void fence_detach(struct fence *f)
{
    if (!f)
        return;
    close(f->sock);
    /* It exits once nothing it holds is alive; reap it if it has, or init will. */
    waitpid(f->pid, NULL, WNOHANG);
    free(f);
}

/* ---- the keeper ---- */

struct entry {
    char *id;
    int pid, pidfd;
    int64_t deadline;
};

struct keeper {
    struct entry *e;
    size_t n, cap;
    int sock;  /* -1 once the drone is gone */
    int timer; /* CLOCK_BOOTTIME timerfd, set to the earliest deadline */
};

static void entry_drop(struct keeper *k, size_t i)
{
    free(k->e[i].id);
    close(k->e[i].pidfd);
    k->e[i] = k->e[--k->n];
}

static ssize_t entry_find(const struct keeper *k, const char *id)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->e[i].id, id) == 0)
            return (ssize_t)i;
    return -1;
}

/* Kills the backend's process group (it leads one) and the process itself. */
static void enforce(struct entry *e)
{
    struct pollfd p = {.fd = e->pidfd, .events = POLLIN};

    if (poll(&p, 1, 0) == 1)
        return; /* it has exited already */
    if (e->pid > 1 && getpgid(e->pid) == e->pid)
        kill(-e->pid, SIGKILL);
    syscall(SYS_pidfd_send_signal, e->pidfd, SIGKILL, NULL, 0);
    log_warn("lease fence: backend %s (pid %d) outlived its key lease and the drone did not stop it: killed", e->id,
             e->pid);
}

static void handle(struct keeper *k, char *line, int fd)
{
    long long deadline;
    int pid, off = 0;
    ssize_t i;

    if (line[0] == 'A' && fd >= 0 && sscanf(line, "A %lld %d %n", &deadline, &pid, &off) == 2 && off > 0 &&
        line[off] && pid > 1) {
        if ((i = entry_find(k, line + off)) >= 0)
            entry_drop(k, (size_t)i);
        if (k->n == k->cap) {
            k->cap = k->cap ? k->cap * 2 : 16;
            k->e = xrealloc(k->e, k->cap * sizeof(*k->e));
        }
        k->e[k->n++] = (struct entry){.id = xstrdup(line + off), .pid = pid, .pidfd = fd, .deadline = deadline};
        return;
    }
    if (fd >= 0)
        close(fd);
    if (line[0] == 'M' && sscanf(line, "M %lld %n", &deadline, &off) == 1 && off > 0 && line[off]) {
        if ((i = entry_find(k, line + off)) >= 0)
            k->e[i].deadline = deadline; /* gone meanwhile: nothing to move, never a new entry */
    } else if (line[0] == 'D' && line[1] == ' ') {
        if ((i = entry_find(k, line + 2)) >= 0)
            entry_drop(k, (size_t)i);
    } else {
        log_warn("lease fence: dropped a message it does not understand");
    }
}

/* One datagram from the drone; false once it is gone. */
static bool receive(struct keeper *k)
{
    char line[MSG_MAX + 1];
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = line, .iov_len = MSG_MAX};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    int fd = -1;
    ssize_t n = recvmsg(k->sock, &mh, MSG_CMSG_CLOEXEC);

    if (n < 0)
        return errno == EINTR || errno == EAGAIN;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(&fd, CMSG_DATA(c), sizeof(int));
    if (n == 0) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    line[n] = '\0';
    handle(k, line, fd);
    return true;
}

/* Sets the timer to the earliest deadline (disarmed when none). */
static void arm_timer(struct keeper *k)
{
    struct itimerspec its = {0};
    int64_t first = 0;

    for (size_t i = 0; i < k->n; i++)
        if (!first || k->e[i].deadline < first)
            first = k->e[i].deadline;
    if (first) {
        its.it_value.tv_sec = first / 1000;
        its.it_value.tv_nsec = (first % 1000) * 1000000 + 1; /* never all zero: that disarms */
    }
    timerfd_settime(k->timer, TFD_TIMER_ABSTIME, &its, NULL);
}

int fence_keeper_main(int argc, char **argv)
{
    struct keeper k = {.sock = KEEPER_FD};
    struct pollfd *pfd = NULL;

    (void)argv;
    if (argc != 1 || fcntl(KEEPER_FD, F_GETFD) < 0) {
        fprintf(stderr, "plane fence-keeper: started by the drone, not by hand\n");
        return 2;
    }
    fcntl(KEEPER_FD, F_SETFD, FD_CLOEXEC);
    /* Whatever a terminal or the drone's group is sent is not for us. */
    static const int ignored[] = {SIGINT, SIGHUP, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU, SIGQUIT};
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
        signal(ignored[i], SIG_IGN);
    prctl(PR_SET_NAME, "plane-fence");
    k.timer = timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC | TFD_NONBLOCK);
    if (k.timer < 0) {
        log_error("lease fence: no boot-time timer: %s", strerror(errno));
        return 1;
    }
    for (;;) {
        int64_t now = clock_boot_ms();
        for (size_t i = 0; i < k.n;) {
            if (k.e[i].deadline <= now) {
                enforce(&k.e[i]);
                entry_drop(&k, i);
                continue;
            }
            i++;
        }
        if (k.sock < 0 && k.n == 0)
            break;
        arm_timer(&k);
        /* The socket, the timer, then each backend's pidfd (readable once it has exited). */
        pfd = xrealloc(pfd, (k.n + 2) * sizeof(*pfd));
        pfd[0] = (struct pollfd){.fd = k.sock, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = k.timer, .events = POLLIN};
        for (size_t i = 0; i < k.n; i++)
            pfd[i + 2] = (struct pollfd){.fd = k.e[i].pidfd, .events = POLLIN};
        size_t n = k.n;
        if (poll(pfd, n + 2, -1) < 0 && errno != EINTR)
            break;
        uint64_t expirations;
        if (pfd[1].revents && read(k.timer, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
            break;
        for (size_t i = n; i > 0; i--)
            if (pfd[i + 1].revents && i - 1 < k.n)
                entry_drop(&k, i - 1); /* exited: nothing to enforce */
        if (k.sock >= 0 && pfd[0].revents && !receive(&k)) {
            close(k.sock);
            k.sock = -1;
            if (k.n)
                log_info("lease fence: the drone has let go; enforcing the deadlines of %zu backends", k.n);
        }
    }
    for (size_t i = k.n; i > 0; i--)
        entry_drop(&k, i - 1);
    if (k.sock >= 0)
        close(k.sock);
    close(k.timer);
    free(k.e);
    free(pfd);
    return 0;
}
