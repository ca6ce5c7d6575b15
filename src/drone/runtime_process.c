/* SPDX-License-Identifier: MIT */
/*
 * runtime_process.c - backends as plain child processes of the drone: the
 * `plane dev` default, and a runtime for hosts without Docker.
 *
 * The executable is {"command":[argv...],"env":{...},"cwd":"...",
 * "resource_limits":{...}}. Each backend gets a free port on the bind
 * address as PORT and the §18 variables, runs in its own session and
 * process group (so signals reach its children too), writes stdout and
 * stderr to <data_dir>/logs/<id>.log, and, when it asks for memory or CPU
 * limits, runs in its own cgroup. Soft terminate is SIGTERM to the group and
 * SIGKILL after the grace period; hard terminate is SIGKILL now. When the
 * leader exits, whatever is left of the group is killed too.
 *
 * Readiness probing starts as soon as a backend is spawned, so by the time
 * the caller asks (one protocol round trip later, through an executor) the
 * answer is often already known; wait_ready for the backend's own address
 * joins that probe instead of starting another.
 *
 * A record <data_dir>/run/<id>.pid ("pid starttime") exists while a backend
 * runs, so a drone that was killed and restarted finds what the previous
 * instance left and kills it: no backend outlives the drone that owns it.
 *
 * The machinery is shared with other runtimes whose backends are child
 * processes too (runtime_process.h): a flavour says what to start; this file
 * is also the plain flavour, where the executable's command is the backend.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/names.h"
#include "../common/net.h"
#include "../common/xalloc.h"
#include "cgroup.h"
#include "procfs.h"
#include "ready_probe.h"
#include "runtime.h"
#include "runtime_process.h"

#define PORT_MIN 20000 /* below the kernel's ephemeral range (32768+) */
#define PORT_MAX 29999
#define MAX_ARGS 4096

struct process_runtime {
    struct runtime base; /* must be first */
    const struct process_flavour *flavour;
    void *data;          /* the flavour's, owned */
    char *data_dir;      /* owned */
    char *bind_ip;       /* owned */
    struct list_node children;
    struct cgroup_host cgroups;
    uv_timer_t metrics_timer;
    uint16_t next_port;
    uint64_t last_sys_ns; /* host cpu time at the previous metrics pass */
};

struct waiter {
    struct list_node node; /* in child->waiters */
    struct runtime_op *op;
    struct ready_probe *probe; /* its own probe, or NULL when it waits on the startup probe */
    struct child *child;
};

struct child {
    struct list_node node; /* in runtime->children */
    struct process_runtime *prt;
    char *id;              /* owned */
    uv_poll_t exit_poll;   /* on pidfd: readable once the leader has exited */
    int pidfd;
    uv_timer_t kill_timer; /* SIGKILL after the grace period */
    int pid;
    uint16_t port;
    bool exited;
    bool soft_sent;
    bool frozen;           /* by the cgroup freezer, or SIGSTOP without a freezable group */
    struct cgroup cg;      /* empty unless limits were asked for */
    struct list_node waiters;
    struct ready_probe *startup; /* probe begun at spawn, until it finishes */
    char address[NET_ADDR_LEN];  /* where the startup probe looks */
    bool startup_done;
    int startup_status;          /* its result, once done */
    char *startup_error;         /* owned */
    uint64_t last_cpu_ns;
    unsigned open_handles; /* exit_poll and kill_timer, until closed */
};

/* What the plain flavour's executable JSON says; strings borrowed from the JSON. */
struct process_exec {
    const char *argv[MAX_ARGS + 1];
    size_t argc;
    const json_t *env; /* object or NULL */
    const char *cwd;   /* or NULL */
    struct process_command limits; /* only its limits */
};

static struct process_runtime *to_process(struct runtime *rt)
{
    assert(rt->ops->spawn == process_rt_spawn);
    return (struct process_runtime *)rt;
}

void *process_runtime_data(struct runtime *rt)
{
    return to_process(rt)->data;
}

const char *process_runtime_dir(struct runtime *rt)
{
    return to_process(rt)->data_dir;
}

const struct cgroup_host *process_runtime_cgroups(struct runtime *rt)
{
    return &to_process(rt)->cgroups;
}

static int check_env(const json_t *env, struct buf *err)
{
    const char *k;
    json_t *v;

    if (!json_is_object(env)) {
        buf_printf(err, "executable.env must be an object of strings");
        return -EINVAL;
    }
    json_object_foreach((json_t *)env, k, v) {
        if (!json_is_string(v) || !*k || strchr(k, '=') || strlen(json_string_value(v)) != json_string_length(v)) {
            buf_printf(err, "executable.env.%s must be a string (and the name non-empty, without '=')", k);
            return -EINVAL;
        }
    }
    return 0;
}

static int read_limits(const json_t *limits, struct process_command *cmd, struct buf *err)
{
    int64_t percent = 0, disk = 0;

    if (!limits || json_is_null(limits))
        return 0;
    if (!json_is_object(limits)) {
        buf_printf(err, "executable.resource_limits must be an object");
        return -EINVAL;
    }
    if (runtime_limit(limits, "memory_limit_bytes", INT64_MAX, &cmd->limits.memory_bytes, err) < 0 ||
        runtime_limit(limits, "cpu_period", 1000000, &cmd->limits.cpu_period_us, err) < 0 ||
        runtime_limit(limits, "cpu_period_percent", 255, &percent, err) < 0 ||
        runtime_limit(limits, "cpu_time_limit", INT64_MAX, &cmd->cpu_time_limit, err) < 0 ||
        runtime_limit(limits, "disk_limit_bytes", INT64_MAX, &disk, err) < 0)
        return -EINVAL;
    cmd->limits.cpu_percent = (int)percent;
    if (disk > 0) {
        buf_printf(err, "resource_limits.disk_limit_bytes is not supported by this runtime");
        return -ENOTSUP;
    }
    return 0;
}

static int parse_exec(const json_t *x, struct process_exec *e, struct buf *err)
{
    const json_t *cmd = json_object_get(x, "command");
    size_t i;

    memset(e, 0, sizeof(*e));
    if (!json_is_object(x)) {
        buf_printf(err, "executable must be an object with a \"command\" array");
        return -EINVAL;
    }
    if (!json_is_array(cmd) || json_array_size(cmd) == 0 || json_array_size(cmd) > MAX_ARGS) {
        buf_printf(err, "executable.command must be a non-empty array of strings");
        return -EINVAL;
    }
    for (i = 0; i < json_array_size(cmd); i++) {
        const json_t *a = json_array_get(cmd, i);
        if (!json_is_string(a) || strlen(json_string_value(a)) != json_string_length(a)) {
            buf_printf(err, "executable.command[%zu] must be a string without NUL bytes", i);
            return -EINVAL;
        }
        e->argv[i] = json_string_value(a);
    }
    e->argc = i;
    if (e->argv[0][0] == '\0') {
        buf_printf(err, "executable.command[0] is empty");
        return -EINVAL;
    }
    return process_exec_common(x, &e->env, &e->cwd, &e->limits, err);
}

int process_exec_common(const json_t *x, const json_t **env, const char **cwd, struct process_command *limits,
                        struct buf *err)
{
    const json_t *dir = json_object_get(x, "cwd");

    *env = json_object_get(x, "env");
    *cwd = NULL;
    if (*env && json_is_null(*env))
        *env = NULL;
    if (*env && check_env(*env, err) < 0)
        return -EINVAL;
    if (dir && !json_is_null(dir)) {
        if (!json_is_string(dir) || json_string_value(dir)[0] != '/') {
            buf_printf(err, "executable.cwd must be an absolute path");
            return -EINVAL;
        }
        *cwd = json_string_value(dir);
    }
    return read_limits(json_object_get(x, "resource_limits"), limits, err);
}

/*
 * Finds the program argv0 names: a path with a slash as it is (relative to
 * our working directory), else the first executable file of that name on
 * path_env. 0 with *out set (owned), or -errno.
 */
static int find_program(const char *argv0, const char *path_env, char **out)
{
    *out = NULL;
    if (strchr(argv0, '/')) {
        if (access(argv0, X_OK) != 0)
            return -errno;
        if (argv0[0] == '/') {
            *out = xstrdup(argv0);
        } else {
            /* The child changes directory before exec: anchor the path to ours. */
            char cwd[4096];
            if (!getcwd(cwd, sizeof(cwd)))
                return -errno;
            *out = xasprintf("%s/%s", cwd, argv0);
        }
        return 0;
    }
    char *paths = xstrdup(path_env ? path_env : "/usr/local/bin:/usr/bin:/bin");
    int rc = -ENOENT;
    for (char *save = NULL, *d = strtok_r(paths, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char *p = xasprintf("%s/%s", *d ? d : ".", argv0);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0) {
            *out = p;
            rc = 0;
            break;
        }
        free(p);
    }
    free(paths);
    return rc;
}

static const char *exec_path(const struct process_exec *e)
{
    const json_t *p = e->env ? json_object_get(e->env, "PATH") : NULL;

    return p ? json_string_value(p) : getenv("PATH");
}

static void plain_prepare(struct runtime *rt, struct runtime_op *op, const json_t *executable)
{
    struct process_exec e;
    struct buf err = BUF_INIT;
    int rc;

    (void)rt;
    rc = parse_exec(executable, &e, &err);
    if (rc == 0) {
        char *program;
        rc = find_program(e.argv[0], exec_path(&e), &program);
        if (rc < 0)
            buf_printf(&err, "cannot run '%s': %s", e.argv[0], strerror(-rc));
        free(program);
    }
    if (rc < 0)
        runtime_op_complete(op, rc, "%s", buf_cstr(&err));
    else
        runtime_op_complete(op, 0, NULL);
    buf_release(&err);
}

/* The running backend called id; one that exited lingers only until its handles close. */
static struct child *child_find(struct process_runtime *prt, const char *id)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &prt->children) {
        struct child *c = list_entry(pos, struct child, node);
        if (!c->exited && strcmp(c->id, id) == 0)
            return c;
    }
    return NULL;
}

static bool port_taken(struct process_runtime *prt, uint16_t port)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &prt->children)
        if (list_entry(pos, struct child, node)->port == port)
            return true;
    return false;
}

/* A free port from our range, skipping our own backends' ports. */
static int pick_port(struct process_runtime *prt)
{
    for (int tries = 0; tries <= PORT_MAX - PORT_MIN; tries++) {
        uint16_t port = prt->next_port;
        prt->next_port = port >= PORT_MAX ? PORT_MIN : port + 1;
        if (!port_taken(prt, port) && net_pick_free_port(prt->bind_ip, port) == (int)port)
            return port;
    }
    return -EADDRINUSE;
}

static char *run_dir(struct process_runtime *prt)
{
    return xasprintf("%s/run", prt->data_dir);
}

static char *pid_record_path(struct process_runtime *prt, const char *id)
{
    return xasprintf("%s/run/%s.pid", prt->data_dir, id);
}

static void write_pid_record(struct process_runtime *prt, struct child *c)
{
    char *path = pid_record_path(prt, c->id);
    FILE *f = fopen(path, "we");

    if (f) {
        fprintf(f, "%d %llu %s\n", c->pid, procfs_start_time(c->pid), c->cg.mem_path ? c->cg.mem_path : "-");
        fclose(f);
    } else {
        log_warn("backend %s: cannot write '%s': %s", c->id, path, strerror(errno));
    }
    free(path);
}

static void child_unref(void *ptr)
{
    struct child *c = ptr;

    if (--c->open_handles > 0)
        return;
    list_remove(&c->node);
    free(c->startup_error);
    free(c->id);
    free(c);
}

static void child_poll_closed(void *ptr)
{
    struct child *c = ptr;

    close(c->pidfd);
    child_unref(c);
}

static void child_close(struct child *c)
{
    struct runtime *rt = &c->prt->base;

    uv_timer_stop(&c->kill_timer);
    if (!uv_is_closing((uv_handle_t *)&c->kill_timer))
        runtime_close_handle(rt, (uv_handle_t *)&c->kill_timer, child_unref, c);
    if (!uv_is_closing((uv_handle_t *)&c->exit_poll))
        runtime_close_handle(rt, (uv_handle_t *)&c->exit_poll, child_poll_closed, c);
}

static void waiter_complete(struct waiter *w, int status, const char *error)
{
    list_remove(&w->node);
    w->op->impl = NULL;
    if (status < 0)
        runtime_op_complete(w->op, status, "%s", error ? error : strerror(-status));
    else
        runtime_op_complete(w->op, 0, NULL);
    free(w);
}

static void waiter_done(void *arg, int status, const char *error)
{
    waiter_complete(arg, status, error);
}

/* The startup probe finished: remember how, and answer whoever waits on it. */
static void startup_done(void *arg, int status, const char *error)
{
    struct child *c = arg;
    struct list_node *pos, *tmp;

    c->startup = NULL;
    c->startup_done = true;
    c->startup_status = status;
    c->startup_error = error ? xstrdup(error) : NULL;
    list_for_each_safe(pos, tmp, &c->waiters) {
        struct waiter *w = list_entry(pos, struct waiter, node);
        if (!w->probe)
            waiter_complete(w, status, error);
    }
}

/* Ends every wait on c: its own probes and the startup probe. */
static void child_stop_waits(struct child *c, int status, const char *error)
{
    struct list_node *pos, *tmp;

    if (c->startup)
        ready_probe_stop(c->startup, status, error);
    list_for_each_safe(pos, tmp, &c->waiters)
        ready_probe_stop(list_entry(pos, struct waiter, node)->probe, status, error);
}

/* The leader is gone (its pidfd is readable): reap it, clean up after it and report. */
static void exit_cb(uv_poll_t *h, int status, int events)
{
    struct child *c = container_of(h, struct child, exit_poll);
    struct process_runtime *prt = c->prt;
    siginfo_t si = {0};
    char msg[96];
    int code;

    (void)status;
    (void)events;
    if (c->exited)
        return;
    if (waitid(P_PID, (id_t)c->pid, &si, WEXITED | WNOHANG) == -1) {
        log_error("backend %s: waitid(%d): %s", c->id, c->pid, strerror(errno));
        code = RUNTIME_EXIT_UNKNOWN;
    } else if (si.si_pid == 0) {
        return; /* not yet */
    } else {
        /* Killed by a signal reads as 128 + signal, as Docker and shells report it. */
        code = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
    }
    c->exited = true;
    /* Whatever the leader left in its group or cgroup goes with it. */
    kill(-c->pid, SIGKILL);
    if (c->cg.mem_path) {
        cgroup_kill_all(&c->cg);
        cgroup_destroy(&c->cg);
    }
    char *rec = pid_record_path(prt, c->id);
    unlink(rec);
    free(rec);
    log_info("backend %s: pid %d exited with code %d", c->id, c->pid, code);
    snprintf(msg, sizeof(msg), "backend exited with code %d before it was ready", code);
    child_stop_waits(c, -ECHILD, msg);
    child_close(c);
    if (prt->flavour->forget)
        prt->flavour->forget(prt->data, c->id);
    runtime_emit_exit(&prt->base, c->id, code);
}

/*
 * Signals c's process group; a leader started by fork may not have made its
 * group yet (between fork and setsid), so then the leader alone. 0 or -errno.
 */
static int child_signal(const struct child *c, int sig)
{
    if (kill(-c->pid, sig) == 0)
        return 0;
    if (errno == ESRCH && !c->exited && kill(c->pid, sig) == 0)
        return 0;
    return -errno;
}

static void kill_timer_cb(uv_timer_t *t)
{
    struct child *c = container_of(t, struct child, kill_timer);

    if (!c->exited) {
        log_info("backend %s: still running %u ms after SIGTERM, sending SIGKILL", c->id, c->prt->base.grace_ms);
        child_signal(c, SIGKILL);
    }
}

char **process_env(const char *const *base, const json_t *user_env, const struct spawn_spec *spec, uint16_t port)
{
    size_t nbase = 0;
    size_t cap, n = 0;
    char **env;
    const char *k;
    json_t *v;

    while (base && base[nbase])
        nbase++;
    cap = nbase + 8 + (user_env ? json_object_size(user_env) : 0);
    env = xcalloc(cap, sizeof(*env));
    for (size_t i = 0; i < nbase; i++) {
        size_t len = strcspn(base[i], "=");
        char *name = xstrndup(base[i], len);
        bool ours = strcmp(name, "PORT") == 0 || strncmp(name, "SESSION_BACKEND_", 16) == 0;
        if (!ours && !(user_env && json_object_get(user_env, name)))
            env[n++] = xstrdup(base[i]);
        free(name);
    }
    if (user_env) {
        json_object_foreach((json_t *)user_env, k, v) {
            /* Ours win (§14.3): skip user values we are about to set. */
            if (strcmp(k, "PORT") == 0 || strncmp(k, "SESSION_BACKEND_", 16) == 0)
                continue;
            env[n++] = xasprintf("%s=%s", k, json_string_value(v));
        }
    }
    env[n++] = xasprintf("PORT=%u", port);
    env[n++] = xasprintf("SESSION_BACKEND_ID=%s", spec->backend_id);
    if (spec->key) {
        env[n++] = xasprintf("SESSION_BACKEND_KEY=%s", spec->key->name ? spec->key->name : "");
        env[n++] = xasprintf("SESSION_BACKEND_FENCING_TOKEN=%" PRId64, spec->key->token);
    }
    if (spec->static_token)
        env[n++] = xasprintf("SESSION_BACKEND_STATIC_TOKEN=%s", spec->static_token);
    env[n] = NULL;
    return env;
}

void process_strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

void process_command_release(struct process_command *cmd)
{
    free(cmd->program);
    process_strv_free(cmd->argv);
    process_strv_free(cmd->env);
    free(cmd->cwd);
    memset(cmd, 0, sizeof(*cmd));
}

int process_ensure_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) == -1 && errno != EEXIST)
        return -errno;
    return 0;
}

/* The plain flavour: the executable's command, with the drone's PATH, LANG, LC_ALL, TZ and HOME. */
static int plain_command(struct runtime *rt, const struct spawn_spec *spec, uint16_t port, const char *dir,
                         struct process_command *out, struct buf *err)
{
    static const char *const inherited[] = {"PATH", "LANG", "LC_ALL", "TZ"};
    const char *base[ARRAY_SIZE(inherited) + 2] = {0};
    char *owned[ARRAY_SIZE(inherited) + 1] = {0};
    struct process_exec e;
    size_t n = 0;
    int rc;

    (void)rt;
    rc = parse_exec(spec->executable, &e, err);
    if (rc < 0)
        return rc;
    rc = find_program(e.argv[0], exec_path(&e), &out->program);
    if (rc < 0) {
        buf_printf(err, "cannot run '%s': %s", e.argv[0], strerror(-rc));
        return rc;
    }
    for (size_t i = 0; i < ARRAY_SIZE(inherited); i++) {
        const char *val = getenv(inherited[i]);
        if (val) {
            owned[n] = xasprintf("%s=%s", inherited[i], val);
            base[n] = owned[n];
            n++;
        }
    }
    owned[n] = xasprintf("HOME=%s", dir);
    base[n] = owned[n];
    out->env = process_env(base, e.env, spec, port);
    for (size_t i = 0; i <= n; i++)
        free(owned[i]);
    out->argv = xcalloc(e.argc + 1, sizeof(*out->argv));
    for (size_t i = 0; i < e.argc; i++)
        out->argv[i] = xstrdup(e.argv[i]);
    out->cwd = xstrdup(e.cwd ? e.cwd : dir);
    out->limits = e.limits.limits;
    out->cpu_time_limit = e.limits.cpu_time_limit;
    return 0;
}

/* What the leader does between its creation and exec. */
struct start_plan {
    const char *program;
    char *const *argv;
    char *const *env;
    const char *cwd;
    int log_fd;
    int cgroup_fds[CGROUP_MAX_PROCS_FILES]; /* cgroup.procs files to enter, opened for writing */
    int ncgroup_fds;
    bool hide_cgroup2;
};

/* The child says why it cannot go on, in the backend's log, and exits 127. */
static void __attribute__((noreturn)) plan_fail(const struct start_plan *p, const char *step)
{
    static const char prefix[] = "plane: cannot start the backend: ";
    const char *why = strerror(errno);

    if (write(p->log_fd, prefix, sizeof(prefix) - 1) > 0 && write(p->log_fd, step, strlen(step)) > 0 &&
        write(p->log_fd, ": ", 2) > 0 && write(p->log_fd, why, strlen(why)) > 0)
        (void)!write(p->log_fd, "\n", 1);
    _exit(127);
}

/*
 * The child of fork, until exec: a copy of a threaded process, so it makes
 * system calls only. Its signal handlers are reset first; ours were blocked
 * from before the fork until then.
 */
static void __attribute__((noreturn)) plan_exec(const struct start_plan *p)
{
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigset_t none;
    int fd;

    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
    sigemptyset(&none);
    if (setsid() == -1)
        plan_fail(p, "setsid");
    /* Into the cgroups before anything can fork: nothing escapes the limits. */
    for (int i = 0; i < p->ncgroup_fds; i++)
        if (write(p->cgroup_fds[i], "0", 1) == -1)
            plan_fail(p, "entering its cgroup");
    if (p->hide_cgroup2) {
        /* Slave, not private: host mounts still reach us, ours never reach the host. */
        if (unshare(CLONE_NEWNS) == -1 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) == -1 ||
            umount2("/sys/fs/cgroup/unified", MNT_DETACH) == -1)
            plan_fail(p, "hiding /sys/fs/cgroup/unified");
    }
    fd = open("/dev/null", O_RDONLY);
    if (fd == -1 || dup2(fd, 0) == -1 || dup2(p->log_fd, 1) == -1 || dup2(p->log_fd, 2) == -1)
        plan_fail(p, "redirecting its input and output");
    if (fd > 2)
        close(fd);
    if (chdir(p->cwd) == -1)
        plan_fail(p, p->cwd);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(p->program, p->argv, p->env);
    plan_fail(p, p->program);
}

/*
 * start_child() for a leader that enters cgroups or a mount namespace before
 * exec. A fork, not a vfork: writing to cgroup.procs waits for the kernel
 * (an RCU grace period under the cgroup rwsem, milliseconds), and the loop
 * must not wait with it. So the child's failures cannot be returned here:
 * it logs them and exits 127, reported as the backend's exit.
 */
static int start_planned(const struct start_plan *p, pid_t *pid_out)
{
    sigset_t all, old;
    pid_t pid;

    /* No handler of ours may run in the child before it resets them. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0)
        plan_exec(p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid == -1)
        return -errno;
    *pid_out = pid;
    return 0;
}

/*
 * Starts program in a new session (so in its own process group), with
 * default signal dispositions and an empty signal mask, stdin from
 * /dev/null and stdout/stderr to log_fd, in cwd, inside cg when it has a
 * group. posix_spawn rather than uv_spawn: glibc's is a vfork, about half
 * the cost of libuv's fork plus a sigaction per signal in the child; a
 * leader that must enter cgroups or a mount namespace first gets our own
 * vfork with those steps. A pidfd tells the loop when it exits. 0 or -errno.
 */
static int start_child(struct process_runtime *prt, const struct process_command *cmd, const struct cgroup *cg,
                       int log_fd, int *pid_out, int *pidfd_out)
{
    struct start_plan plan = {.program = cmd->program, .argv = cmd->argv, .env = cmd->env, .cwd = cmd->cwd,
                              .log_fd = log_fd, .hide_cgroup2 = prt->flavour->hide_cgroup2};
    pid_t pid;
    int rc;

    if (cg->mem_path) {
        rc = cgroup_open_procs(cg, plan.cgroup_fds);
        if (rc < 0)
            return rc;
        plan.ncgroup_fds = rc;
    }
    if (plan.ncgroup_fds > 0 || plan.hide_cgroup2) {
        rc = start_planned(&plan, &pid);
        for (int i = 0; i < plan.ncgroup_fds; i++)
            close(plan.cgroup_fds[i]);
    } else {
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t all, none;

        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        sigfillset(&all);
        sigemptyset(&none);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, log_fd, 1);
        posix_spawn_file_actions_adddup2(&fa, log_fd, 2);
        posix_spawn_file_actions_addchdir_np(&fa, cmd->cwd);
        rc = -posix_spawn(&pid, cmd->program, &fa, &attr, cmd->argv, cmd->env);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
    }
    if (rc < 0)
        return rc;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd == -1) {
        rc = -errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return rc;
    }
    fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    *pid_out = pid;
    *pidfd_out = pidfd;
    return 0;
}

void process_rt_spawn(struct runtime *rt, struct runtime_op *op, const struct spawn_spec *spec)
{
    struct process_runtime *prt = to_process(rt);
    struct process_command cmd = {0};
    struct buf err = BUF_INIT;
    struct child *c = NULL;
    char *log_path = NULL, *home = NULL, *logs = NULL, *backends = NULL;
    int log_fd = -1;
    int port;
    int rc;

    c = child_find(prt, spec->backend_id);
    if (c) {
        rc = -EEXIST;
        buf_printf(&err, "backend %s is already running here", spec->backend_id);
        c = NULL;
        goto out;
    }
    port = pick_port(prt);
    if (port < 0) {
        rc = port;
        buf_printf(&err, "no free port on %s: %s", prt->bind_ip, strerror(-rc));
        goto out;
    }
    logs = xasprintf("%s/logs", prt->data_dir);
    backends = xasprintf("%s/backends", prt->data_dir);
    home = xasprintf("%s/%s", backends, spec->backend_id);
    if ((rc = process_ensure_dir(logs, 0750)) < 0 || (rc = process_ensure_dir(backends, 0750)) < 0 ||
        (rc = process_ensure_dir(home, 0750)) < 0) {
        buf_printf(&err, "cannot create backend directories under '%s': %s", prt->data_dir, strerror(-rc));
        goto out;
    }
    rc = prt->flavour->command(rt, spec, (uint16_t)port, home, &cmd, &err);
    if (rc < 0)
        goto out;
    log_path = xasprintf("%s/%s.log", logs, spec->backend_id);
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log_fd == -1) {
        rc = -errno;
        buf_printf(&err, "cannot open log '%s': %s", log_path, strerror(-rc));
        goto out;
    }

    c = xcalloc(1, sizeof(*c));
    c->prt = prt;
    c->id = xstrdup(spec->backend_id);
    c->port = (uint16_t)port;
    list_init(&c->waiters);
    list_init(&c->node);
    if (cmd.limits.memory_bytes > 0 || cmd.limits.cpu_percent > 0 || prt->flavour->always_cgroup) {
        rc = cgroup_create(&prt->cgroups, c->id, &cmd.limits, &c->cg, &err);
        if (rc < 0)
            goto out;
    }
    rc = start_child(prt, &cmd, &c->cg, log_fd, &c->pid, &c->pidfd);
    if (rc < 0) {
        buf_printf(&err, "cannot start '%s': %s", cmd.program, strerror(-rc));
        goto out;
    }
    uv_poll_init(rt->loop, &c->exit_poll, c->pidfd);
    uv_poll_start(&c->exit_poll, UV_READABLE, exit_cb);
    uv_timer_init(rt->loop, &c->kill_timer);
    c->open_handles = 2;
    list_insert_tail(&prt->children, &c->node);
    if (cmd.cpu_time_limit > 0) {
        struct rlimit rl = {.rlim_cur = (rlim_t)cmd.cpu_time_limit, .rlim_max = (rlim_t)cmd.cpu_time_limit};
        if (prlimit(c->pid, RLIMIT_CPU, &rl, NULL) == -1)
            log_warn("backend %s: cannot set cpu time limit: %s", c->id, strerror(errno));
    }
    write_pid_record(prt, c);
    net_addr_format(c->address, prt->bind_ip, c->port);
    c->startup = ready_probe_start(rt->loop, c->address, rt->ready_timeout_ms, startup_done, c, &err);
    buf_reset(&err);
    log_info("backend %s: started pid %d on port %u, log '%s'", c->id, c->pid, c->port, log_path);
    op->res.port = c->port;
    op->res.pid = c->pid;
    op->res.container_id = xasprintf("%d", c->pid);
    rc = 0;
out:
    if (rc < 0) {
        if (c) {
            cgroup_destroy(&c->cg);
            free(c->id);
            free(c);
        }
        if (prt->flavour->forget)
            prt->flavour->forget(prt->data, spec->backend_id);
        runtime_op_complete(op, rc, "%s", buf_cstr(&err));
    } else {
        runtime_op_complete(op, 0, NULL);
    }
    if (log_fd != -1)
        close(log_fd);
    process_command_release(&cmd);
    free(log_path);
    free(home);
    free(logs);
    free(backends);
    buf_release(&err);
}

void process_rt_wait_ready(struct runtime *rt, struct runtime_op *op, const char *address)
{
    struct process_runtime *prt = to_process(rt);
    struct child *c = child_find(prt, op->backend_id);
    struct buf err = BUF_INIT;
    struct waiter *w;

    if (!c || c->exited) {
        runtime_op_complete(op, -ESRCH, "backend %s is not running", op->backend_id);
        return;
    }
    bool own = address && strcmp(address, c->address) == 0;
    if (own && c->startup_done) {
        if (c->startup_status < 0)
            runtime_op_complete(op, c->startup_status, "%s", c->startup_error ? c->startup_error : "not ready");
        else
            runtime_op_complete(op, 0, NULL);
        return;
    }
    w = xcalloc(1, sizeof(*w));
    w->op = op;
    w->child = c;
    list_insert_tail(&c->waiters, &w->node);
    op->impl = w;
    if (own && c->startup)
        return; /* answered when the startup probe finishes */
    w->probe = ready_probe_start(rt->loop, address, rt->ready_timeout_ms, waiter_done, w, &err);
    if (!w->probe)
        waiter_complete(w, -EINVAL, buf_cstr(&err));
    buf_release(&err);
}

void process_rt_cancel(struct runtime *rt, struct runtime_op *op)
{
    struct waiter *w = op->impl;

    (void)rt;
    if (op->kind != RUNTIME_OP_WAIT_READY || !w)
        return;
    if (w->probe)
        ready_probe_stop(w->probe, -ECANCELED, "cancelled");
    else
        waiter_complete(w, -ECANCELED, "cancelled");
}

/*
 * Freezes or thaws every process of c: through its cgroup's freezer when it
 * has one that can, else by stopping its process group (SIGSTOP/SIGCONT).
 * Either way its sockets stay open and connections queue. 0 or -errno.
 */
static int child_set_frozen(struct child *c, bool frozen)
{
    int rc = 0;

    if (c->frozen == frozen)
        return 0;
    if (cgroup_can_freeze(&c->cg))
        rc = cgroup_freeze(&c->cg, frozen);
    else
        rc = child_signal(c, frozen ? SIGSTOP : SIGCONT);
    if (rc == 0) {
        c->frozen = frozen;
        log_info("backend %s: %s", c->id, frozen ? "frozen" : "thawed");
    } else if (frozen) {
        /* Never leave it half frozen. */
        if (cgroup_can_freeze(&c->cg))
            cgroup_freeze(&c->cg, false);
    }
    return rc;
}

void process_rt_freeze(struct runtime *rt, struct runtime_op *op, bool frozen)
{
    struct child *c = child_find(to_process(rt), op->backend_id);
    int rc;

    if (!c) {
        runtime_op_complete(op, -ESRCH, "backend %s is not running", op->backend_id);
        return;
    }
    rc = child_set_frozen(c, frozen);
    if (rc < 0)
        runtime_op_complete(op, rc, "cannot %s backend %s: %s", frozen ? "freeze" : "thaw", c->id, strerror(-rc));
    else
        runtime_op_complete(op, 0, NULL);
}

void process_rt_terminate(struct runtime *rt, struct runtime_op *op, bool hard)
{
    struct process_runtime *prt = to_process(rt);
    struct child *c = child_find(prt, op->backend_id);

    if (!c || c->exited) {
        op->res.was_running = false;
        runtime_op_complete(op, 0, NULL);
        return;
    }
    /* A frozen backend would not see the signal (v1 holds back even SIGKILL). */
    child_set_frozen(c, false);
    /* A leader that forwards signals gets the soft one alone, so nothing gets it twice. */
    bool leader_only = !hard && prt->flavour->soft_to_leader;
    int rc = leader_only ? (kill(c->pid, SIGTERM) == 0 ? 0 : -errno) : child_signal(c, hard ? SIGKILL : SIGTERM);
    if (rc < 0) {
        if (rc == -ESRCH) {
            /* The group is gone; the exit callback is on its way. */
            op->res.was_running = false;
            runtime_op_complete(op, 0, NULL);
        } else {
            runtime_op_complete(op, rc, "cannot signal backend %s (pid %d): %s", c->id, c->pid, strerror(-rc));
        }
        return;
    }
    log_info("backend %s: sent %s to %s %d", c->id, hard ? "SIGKILL" : "SIGTERM",
             leader_only ? "pid" : "process group", c->pid);
    if (!hard && !c->soft_sent) {
        c->soft_sent = true;
        uv_timer_start(&c->kill_timer, kill_timer_cb, rt->grace_ms, 0);
    }
    op->res.was_running = true;
    runtime_op_complete(op, 0, NULL);
}

static void metrics_cb(uv_timer_t *t)
{
    struct process_runtime *prt = container_of(t, struct process_runtime, metrics_timer);
    uint64_t sys = procfs_host_cpu_ns();
    uint64_t sys_delta = sys > prt->last_sys_ns ? sys - prt->last_sys_ns : 0;
    struct list_node *pos, *tmp;

    prt->last_sys_ns = sys;
    list_for_each_safe(pos, tmp, &prt->children) {
        struct child *c = list_entry(pos, struct child, node);
        struct backend_metrics m = {.backend_id = c->id};
        if (c->exited)
            continue;
        if (!c->cg.mem_path || cgroup_sample(&c->cg, &m) < 0)
            procfs_memory(c->pid, &m);
        /* A leader that runs the backend as its child (crun) is not where the CPU goes. */
        uint64_t cpu = c->cg.mem_path ? cgroup_cpu_ns(&c->cg) : procfs_cpu_ns(c->pid);
        m.cpu_used = cpu > c->last_cpu_ns ? cpu - c->last_cpu_ns : 0;
        c->last_cpu_ns = cpu;
        m.sys_cpu = sys_delta;
        runtime_emit_metrics(&prt->base, &m);
    }
}

/* Kills what a previous instance with this data dir left running. */
static void reap_leftovers(struct process_runtime *prt)
{
    char *dir = run_dir(prt);
    DIR *d = opendir(dir);
    struct dirent *de;

    while (d && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".pid") != 0)
            continue;
        char *path = xasprintf("%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "re");
        int pid = 0;
        unsigned long long start = 0;
        char cg[4096] = "-";
        if (f && fscanf(f, "%d %llu %4095s", &pid, &start, cg) >= 2 && pid > 1) {
            /* Only if it is still the same process, not a reused pid. */
            if (procfs_start_time(pid) == start) {
                log_warn("backend %.*s: killing pid %d left by a previous run", (int)(n - 4), de->d_name, pid);
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
            }
            if (strcmp(cg, "-") != 0) {
                /* The group of that backend in every hierarchy we use, as cgroup_create made it. */
                struct cgroup old;
                char *id = xstrndup(de->d_name, n - 4);
                cgroup_find(&prt->cgroups, id, &old);
                cgroup_kill_all(&old);
                cgroup_destroy(&old);
                free(id);
            }
        }
        if (f)
            fclose(f);
        unlink(path);
        free(path);
        if (prt->flavour->forget) {
            char *id = xstrndup(de->d_name, n - 4);
            prt->flavour->forget(prt->data, id);
            free(id);
        }
    }
    if (d)
        closedir(d);
    free(dir);
}

int process_runtime_open(struct runtime **out, const struct runtime_config *cfg, const struct process_flavour *f,
                         void *data, struct buf *err)
{
    struct process_runtime *prt;
    char *dir;
    int rc;

    if (!cfg->data_dir) {
        buf_printf(err, "the runtime needs a data directory");
        rc = -EINVAL;
        goto fail;
    }
    if ((rc = process_ensure_dir(cfg->data_dir, 0750)) < 0) {
        buf_printf(err, "cannot create data directory '%s': %s", cfg->data_dir, strerror(-rc));
        goto fail;
    }
    prt = xcalloc(1, sizeof(*prt));
    prt->flavour = f;
    prt->data = data;
    prt->data_dir = xstrdup(cfg->data_dir);
    prt->bind_ip = xstrdup(cfg->bind_ip ? cfg->bind_ip : "127.0.0.1");
    list_init(&prt->children);
    dir = run_dir(prt);
    rc = process_ensure_dir(dir, 0750);
    free(dir);
    if (rc < 0) {
        buf_printf(err, "cannot create '%s/run': %s", cfg->data_dir, strerror(-rc));
        free(prt->data_dir);
        free(prt->bind_ip);
        free(prt);
        goto fail;
    }
    cgroup_host_detect(&prt->cgroups);
    reap_leftovers(prt);
    if (prt->cgroups.version == 0)
        log_info("process runtime: resource limits unavailable: %s", prt->cgroups.why_not);
    uint16_t r;
    random_bytes(&r, sizeof(r));
    prt->next_port = (uint16_t)(PORT_MIN + r % (PORT_MAX - PORT_MIN + 1));
    uv_timer_init(cfg->loop, &prt->metrics_timer);
    unsigned every = cfg->metrics_interval_ms ? cfg->metrics_interval_ms : 10000;
    prt->last_sys_ns = procfs_host_cpu_ns();
    uv_timer_start(&prt->metrics_timer, metrics_cb, every, every);
    uv_unref((uv_handle_t *)&prt->metrics_timer);
    *out = &prt->base;
    return 0;
fail:
    if (f->free)
        f->free(data);
    return rc;
}

/* Reaps the killed leaders, waiting at most a second for all of them together. */
static void reap_killed(struct process_runtime *prt)
{
    struct list_node *pos, *tmp;

    for (int round = 0; round < 1000; round++) {
        bool waiting = false;
        list_for_each_safe(pos, tmp, &prt->children) {
            struct child *c = list_entry(pos, struct child, node);
            if (c->pid > 0 && !c->exited) {
                pid_t r = waitpid(c->pid, NULL, WNOHANG);
                if (r == c->pid || (r == -1 && errno == ECHILD))
                    c->exited = true;
                else
                    waiting = true;
            }
        }
        if (!waiting)
            return;
        usleep(1000);
    }
    log_warn("process runtime: some backends did not die within 1 s of SIGKILL");
}

void process_rt_close(struct runtime *rt)
{
    struct process_runtime *prt = to_process(rt);
    struct list_node *pos, *tmp;

    if (prt->flavour->close)
        prt->flavour->close(rt);
    uv_timer_stop(&prt->metrics_timer);
    runtime_close_handle(rt, (uv_handle_t *)&prt->metrics_timer, NULL, NULL);
    /* Backends do not outlive the runtime: kill them all, then reap them. */
    list_for_each_safe(pos, tmp, &prt->children) {
        struct child *c = list_entry(pos, struct child, node);
        child_stop_waits(c, -ESHUTDOWN, "runtime closed");
        if (!c->exited) {
            log_info("backend %s: killing pid %d on shutdown", c->id, c->pid);
            child_signal(c, SIGKILL);
            if (c->cg.mem_path)
                cgroup_kill_all(&c->cg);
        }
    }
    reap_killed(prt);
    list_for_each_safe(pos, tmp, &prt->children) {
        struct child *c = list_entry(pos, struct child, node);
        if (c->cg.mem_path)
            cgroup_destroy(&c->cg);
        char *rec = pid_record_path(prt, c->id);
        unlink(rec);
        free(rec);
        if (prt->flavour->forget)
            prt->flavour->forget(prt->data, c->id);
        child_close(c);
    }
}

void process_rt_free(struct runtime *rt)
{
    struct process_runtime *prt = to_process(rt);

    if (prt->flavour->free)
        prt->flavour->free(prt->data);
    cgroup_host_release(&prt->cgroups);
    free(prt->data_dir);
    free(prt->bind_ip);
    free(prt);
}

/* Removes logs and working directories of backends gone for longer than min_age_ms. */
void process_rt_cleanup(struct runtime *rt, int64_t min_age_ms)
{
    struct process_runtime *prt = to_process(rt);
    char *logs = xasprintf("%s/logs", prt->data_dir);
    DIR *d = opendir(logs);
    struct dirent *de;
    time_t now = time(NULL);

    while (d && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".log") != 0)
            continue;
        char *id = xstrndup(de->d_name, n - 4);
        char *path = xasprintf("%s/%s", logs, de->d_name);
        struct stat st;
        if (!child_find(prt, id) && stat(path, &st) == 0 &&
            (int64_t)(now - st.st_mtime) * 1000 >= min_age_ms) {
            char *cmd_dir = xasprintf("%s/backends/%s", prt->data_dir, id);
            unlink(path);
            rmdir(cmd_dir); /* only if the backend left it empty */
            free(cmd_dir);
        }
        free(path);
        free(id);
    }
    if (d)
        closedir(d);
    free(logs);
}

void process_rt_prepare(struct runtime *rt, struct runtime_op *op, const json_t *executable)
{
    to_process(rt)->flavour->prepare(rt, op, executable);
}

static const struct process_flavour plain_flavour = {
    .prepare = plain_prepare,
    .command = plain_command,
};

static int process_open(struct runtime **out, const struct runtime_config *cfg, struct buf *err)
{
    return process_runtime_open(out, cfg, &plain_flavour, NULL, err);
}

const struct runtime_ops runtime_process_ops = {
    .name = "process",
    .open = process_open,
    PROCESS_RUNTIME_OPS,
};
