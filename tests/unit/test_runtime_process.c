/* SPDX-License-Identifier: MIT */
/*
 * test_runtime_process.c - the process runtime with the real echo backend
 * (ECHO_BACKEND): env contract, readiness, soft/hard terminate, the grace
 * period, exit codes, process groups, cgroup limits, metrics, freezing, and
 * what a killed drone leaves behind.
 */
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/common/xalloc.h"
#include "runtime_harness.h"

static const char *echo_path(void)
{
    const char *p = getenv("ECHO_BACKEND");

    if (!p || access(p, X_OK) != 0)
        test_fail(__FILE__, __LINE__, "set ECHO_BACKEND to the echo backend binary");
    return p;
}

/* {"command":[echo], "env":{k:v...}} from "K=V" pairs (NULL-terminated). */
static json_t *echo_exe(const char *first, ...)
{
    va_list ap;

    va_start(ap, first);
    json_t *env = harness_env(first, ap);
    va_end(ap);
    return json_pack("{s:[s], s:o}", "command", echo_path(), "env", env);
}

static bool pid_alive(int pid)
{
    char path[64];
    char state = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return false;
    if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
        state = 0;
    fclose(f);
    return state != 0 && state != 'Z';
}

/* How many live processes are in process group pgid. */
static int group_size(int pgid)
{
    DIR *d = opendir("/proc");
    struct dirent *de;
    int n = 0;

    while ((de = readdir(d))) {
        int pid = atoi(de->d_name);
        if (pid > 0 && getpgid(pid) == pgid && pid_alive(pid))
            n++;
    }
    closedir(d);
    return n;
}

TEST(process_spawn_env_ready_http_soft_terminate)
{
    struct harness h;
    struct result r = {0}, t = {0};
    struct acquired_key key = {.name = "k1", .namespace = "", .tag = "", .token = 77};
    json_t *x = echo_exe("FOO=bar", "PORT=1", "SESSION_BACKEND_ID=spoofed", NULL);
    struct spawn_spec spec = {.backend_id = "b1", .executable = x, .key = &key, .static_token = "s.tok"};
    char want[64];
    int status;
    char *body;

    harness_open(&h, "process", NULL);
    runtime_prepare(h.rt, x, on_result, &r);
    wait_result(&h, &r, 2000);
    ASSERT_OK(r.status);
    memset(&r, 0, sizeof(r));
    runtime_spawn(h.rt, &spec, on_result, &r);
    wait_result(&h, &r, 2000);
    ASSERT_OK(r.status);
    int pid = atoi(r.container_id);
    ASSERT_EQ(r.pid, pid);
    ASSERT_TRUE(pid > 0 && pid_alive(pid));
    ASSERT_EQ(getpgid(pid), pid); /* its own process group */
    ASSERT_OK(ready_status(&h, "b1", r.port, 5000, NULL));

    ASSERT_OK(test_http_get(&h.loop, r.port, "/", NULL, &status, &body));
    ASSERT_EQ(status, 200);
    snprintf(want, sizeof(want), "\"PORT\":\"%u\"", r.port);
    ASSERT_CONTAINS(body, want); /* ours win over the user's env */
    ASSERT_CONTAINS(body, "\"SESSION_BACKEND_ID\":\"b1\"");
    ASSERT_CONTAINS(body, "\"SESSION_BACKEND_KEY\":\"k1\"");
    ASSERT_CONTAINS(body, "\"SESSION_BACKEND_FENCING_TOKEN\":\"77\"");
    ASSERT_CONTAINS(body, "\"SESSION_BACKEND_STATIC_TOKEN\":\"s.tok\"");
    ASSERT_CONTAINS(body, "\"FOO\":\"bar\"");
    free(body);

    runtime_terminate(h.rt, "b1", false, on_result, &t);
    wait_exits(&h, 1, 5000);
    ASSERT_TRUE(t.done && t.was_running);
    ASSERT_EQ(exit_code_of(&h, "b1"), 0); /* the echo backend exits 0 on SIGTERM */
    ASSERT_FALSE(pid_alive(pid));

    char *log = xasprintf("%s/logs/b1.log", h.dir);
    struct stat st;
    ASSERT_OK(stat(log, &st));
    ASSERT_TRUE(st.st_size > 0); /* its stderr went there */
    free(log);
    json_decref(x);
    harness_close(&h);
}

TEST(process_hard_terminate_and_grace_period)
{
    struct harness h;
    struct runtime_config cfg = {.grace_ms = 300};
    json_t *x = echo_exe("ECHO_IGNORE_SIGTERM=1", NULL);
    struct result t = {0};

    harness_open(&h, "process", &cfg);
    uint16_t p1 = spawn_ok(&h, "b1", x);
    uint16_t p2 = spawn_ok(&h, "b2", x);
    ASSERT_NE(p1, p2);
    ASSERT_OK(ready_status(&h, "b1", p1, 5000, NULL));
    ASSERT_OK(ready_status(&h, "b2", p2, 5000, NULL));
    runtime_terminate(h.rt, "b1", true, on_result, &t);
    wait_exits(&h, 1, 3000);
    ASSERT_EQ(exit_code_of(&h, "b1"), 137);

    uint64_t t0 = uv_now(&h.loop);
    runtime_terminate(h.rt, "b2", false, NULL, NULL);
    test_run_for(&h.loop, 150);
    ASSERT_EQ(h.nexits, 1); /* ignores SIGTERM */
    wait_exits(&h, 2, 3000);
    ASSERT_EQ(exit_code_of(&h, "b2"), 137);
    ASSERT_TRUE(uv_now(&h.loop) - t0 >= 290);
    json_decref(x);
    harness_close(&h);
}

TEST(process_exits_on_its_own_with_code)
{
    struct harness h;
    json_t *x = echo_exe("ECHO_EXIT_AFTER_MS=100", "ECHO_EXIT_CODE=3", NULL);
    struct result t = {0};

    harness_open(&h, "process", NULL);
    spawn_ok(&h, "b1", x);
    wait_exits(&h, 1, 3000);
    ASSERT_EQ(exit_code_of(&h, "b1"), 3);
    runtime_terminate(h.rt, "b1", false, on_result, &t);
    wait_result(&h, &t, 2000);
    ASSERT_FALSE(t.was_running); /* already gone: not an error */
    json_decref(x);
    harness_close(&h);
}

TEST(process_never_ready_and_exit_while_waiting)
{
    struct harness h;
    struct runtime_config cfg = {.ready_timeout_ms = 400};
    json_t *never = echo_exe("ECHO_NEVER_LISTEN=1", NULL);
    json_t *dies = echo_exe("ECHO_NEVER_LISTEN=1", "ECHO_EXIT_AFTER_MS=100", "ECHO_EXIT_CODE=4", NULL);
    struct result r = {0};

    harness_open(&h, "process", &cfg);
    uint16_t p = spawn_ok(&h, "b1", never);
    ASSERT_EQ(ready_status(&h, "b1", p, 3000, NULL), -ETIMEDOUT);
    cfg.ready_timeout_ms = 10000;
    p = spawn_ok(&h, "b2", dies);
    uint64_t t0 = uv_now(&h.loop);
    ASSERT_NE(ready_status(&h, "b2", p, 3000, &r), 0);
    ASSERT_CONTAINS(r.error, "exited with code 4");
    ASSERT_TRUE(uv_now(&h.loop) - t0 < 2000);
    json_decref(never);
    json_decref(dies);
    harness_close(&h);
}

TEST(process_bad_executables)
{
    struct harness h;
    struct result r = {0};
    static const char *const bad[] = {
        "{\"command\":[\"/nonexistent/prog\"]}",
        "{\"command\":[]}",
        "{\"command\":\"echo\"}",
        "{\"command\":[\"true\"],\"env\":{\"A\":1}}",
        "{\"command\":[\"true\"],\"cwd\":\"relative\"}",
        "{\"command\":[\"true\"],\"resource_limits\":{\"disk_limit_bytes\":1000}}",
        "{\"command\":[\"true\"],\"resource_limits\":{\"memory_limit_bytes\":-5}}",
        "[1,2]",
    };

    harness_open(&h, "process", NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *x = json_loads(bad[i], 0, NULL);
        memset(&r, 0, sizeof(r));
        runtime_prepare(h.rt, x, on_result, &r);
        wait_result(&h, &r, 2000);
        if (r.status == 0)
            test_fail(__FILE__, __LINE__, "prepare accepted %s", bad[i]);
        ASSERT_TRUE(r.error[0] != '\0');
        json_decref(x);
    }
    /* spawn of a missing program fails cleanly too, and reports no exit */
    json_t *x = json_loads(bad[0], 0, NULL);
    struct spawn_spec spec = {.backend_id = "b1", .executable = x};
    memset(&r, 0, sizeof(r));
    runtime_spawn(h.rt, &spec, on_result, &r);
    wait_result(&h, &r, 2000);
    ASSERT_NE(r.status, 0);
    test_run_for(&h.loop, 100);
    ASSERT_EQ(h.nexits, 0);
    json_decref(x);
    harness_close(&h);
}

TEST(process_group_dies_with_backend)
{
    struct harness h;
    json_t *x = echo_exe("ECHO_FORK_CHILD=1", "ECHO_IGNORE_SIGTERM=1", NULL);
    struct result r = {0};
    struct spawn_spec spec = {.backend_id = "b1", .executable = x};

    harness_open(&h, "process", NULL);
    runtime_spawn(h.rt, &spec, on_result, &r);
    wait_result(&h, &r, 2000);
    int pid = atoi(r.container_id);
    ASSERT_OK(ready_status(&h, "b1", r.port, 5000, NULL));
    ASSERT_EQ(group_size(pid), 2); /* the backend and its child */
    runtime_terminate(h.rt, "b1", true, NULL, NULL);
    wait_exits(&h, 1, 3000);
    test_run_for(&h.loop, 50);
    ASSERT_EQ(group_size(pid), 0);
    json_decref(x);
    harness_close(&h);
}

static char *cgroup_of(int pid, const char *ctl)
{
    char path[64], line[512];
    char *found = NULL;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
    f = fopen(path, "r");
    while (f && !found && fgets(line, sizeof(line), f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2 && (strstr(c1, ctl) || c1[1] == ':')) {
            c2[strcspn(c2, "\n")] = '\0';
            found = xstrdup(c2 + 1);
        }
    }
    if (f)
        fclose(f);
    return found;
}

TEST(process_memory_limit_uses_cgroup)
{
    struct harness h;
    json_t *x = json_pack("{s:[s], s:{s:I}}", "command", echo_path(), "resource_limits", "memory_limit_bytes",
                          (json_int_t)(64 << 20));
    struct result r = {0};
    struct spawn_spec spec = {.backend_id = "b1", .executable = x};

    harness_open(&h, "process", NULL);
    runtime_spawn(h.rt, &spec, on_result, &r);
    wait_result(&h, &r, 2000);
    if (access("/sys/fs/cgroup/memory/cgroup.procs", F_OK) != 0 &&
        access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0) {
        /* No cgroups here: the spawn must fail with a clear error instead. */
        ASSERT_NE(r.status, 0);
        ASSERT_CONTAINS(r.error, "cgroup");
    } else {
        ASSERT_OK(r.status);
        int pid = atoi(r.container_id);
        char *cg = NULL;
        /* The leader enters its group between fork and exec, while the loop goes on. */
        for (int i = 0; i < 400 && !(cg && strstr(cg, "/plane/b1")); i++) {
            free(cg);
            usleep(5000);
            cg = cgroup_of(pid, "memory");
        }
        ASSERT_NOT_NULL(cg);
        ASSERT_CONTAINS(cg, "/plane/b1");
        bool v1 = access("/sys/fs/cgroup/memory/cgroup.procs", F_OK) == 0;
        char *limit_path = xasprintf("/sys/fs/cgroup%s%s/%s", v1 ? "/memory" : "", cg,
                                     v1 ? "memory.limit_in_bytes" : "memory.max");
        FILE *f = fopen(limit_path, "r");
        long long limit = 0;
        ASSERT_NOT_NULL(f);
        ASSERT_EQ(fscanf(f, "%lld", &limit), 1);
        fclose(f);
        ASSERT_EQ(limit, 64 << 20);
        runtime_terminate(h.rt, "b1", true, NULL, NULL);
        wait_exits(&h, 1, 3000);
        char *dir = xasprintf("/sys/fs/cgroup%s%s", v1 ? "/memory" : "", cg);
        test_run_for(&h.loop, 50);
        ASSERT_TRUE(access(dir, F_OK) != 0); /* removed with the backend */
        free(dir);
        free(limit_path);
        free(cg);
    }
    json_decref(x);
    harness_close(&h);
}

TEST(process_metrics_events)
{
    struct harness h;
    struct runtime_config cfg = {.metrics_interval_ms = 100};
    json_t *x = echo_exe(NULL);

    harness_open(&h, "process", &cfg);
    uint16_t p = spawn_ok(&h, "b1", x);
    ASSERT_OK(ready_status(&h, "b1", p, 5000, NULL));
    test_run_for(&h.loop, 350);
    ASSERT_TRUE(h.nmetrics >= 2);
    ASSERT_STR_EQ(h.last_metrics.backend_id, "b1");
    ASSERT_TRUE(h.last_metrics.mem_used > 0);
    ASSERT_TRUE(h.last_metrics.mem_limit >= h.last_metrics.mem_used);
    ASSERT_TRUE(h.last_metrics.sys_cpu > 0);
    json_decref(x);
    harness_close(&h);
}

TEST(process_leftovers_of_a_killed_drone_are_reaped)
{
    struct harness h;
    char *dir = test_tmpdir();
    char *run = xasprintf("%s/run", dir);
    struct runtime_config cfg = {.data_dir = dir};
    int pid = fork();

    if (pid == 0) {
        setpgid(0, 0);
        execl("/bin/sleep", "sleep", "60", (char *)NULL);
        _exit(127);
    }
    usleep(50000);
    mkdir(run, 0755);
    /* Start time: field 22 of /proc/PID/stat. */
    char path[64], text[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *p = strrchr(text, ')') + 2;
    for (int i = 0; i < 19; i++)
        p = strchr(p, ' ') + 1;
    char *rec = xasprintf("%s/old.pid", run);
    f = fopen(rec, "w");
    fprintf(f, "%d %llu -\n", pid, strtoull(p, NULL, 10));
    fclose(f);

    harness_open(&h, "process", &cfg);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    ASSERT_TRUE(access(rec, F_OK) != 0);
    harness_close(&h);
    free(rec);
    free(run);
    free(dir);
}

TEST(process_close_kills_every_backend)
{
    struct harness h;
    json_t *x = echo_exe(NULL);
    int pids[3];

    harness_open(&h, "process", NULL);
    for (int i = 0; i < 3; i++) {
        struct result r = {0};
        char id[8];
        snprintf(id, sizeof(id), "b%d", i);
        struct spawn_spec spec = {.backend_id = id, .executable = x};
        runtime_spawn(h.rt, &spec, on_result, &r);
        wait_result(&h, &r, 2000);
        ASSERT_OK(r.status);
        pids[i] = atoi(r.container_id);
    }
    harness_close(&h);
    usleep(100000);
    for (int i = 0; i < 3; i++)
        ASSERT_FALSE(pid_alive(pids[i]));
    json_decref(x);
}

TEST(process_terminate_during_wait_and_exit_during_terminate)
{
    struct harness h;
    struct runtime_config cfg = {.grace_ms = 5000};
    json_t *slow = echo_exe("ECHO_LISTEN_DELAY_MS=3000", NULL);
    json_t *lingering = echo_exe("ECHO_IGNORE_SIGTERM=1", "ECHO_EXIT_AFTER_MS=300", "ECHO_EXIT_CODE=9", NULL);
    struct result w = {0}, t = {0};

    harness_open(&h, "process", &cfg);
    uint16_t port = spawn_ok(&h, "b1", slow);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    runtime_wait_ready(h.rt, "b1", addr, on_result, &w);
    test_run_for(&h.loop, 50);
    runtime_terminate(h.rt, "b1", false, on_result, &t);
    wait_result(&h, &w, 2000); /* the wait ends with the backend, long before its delay */
    ASSERT_NE(w.status, 0);
    wait_exits(&h, 1, 2000);
    ASSERT_EQ(exit_code_of(&h, "b1"), 0);

    /* It exits on its own while a soft terminate waits out the grace period. */
    memset(&t, 0, sizeof(t));
    spawn_ok(&h, "b2", lingering);
    test_run_for(&h.loop, 50);
    runtime_terminate(h.rt, "b2", false, on_result, &t);
    wait_exits(&h, 2, 3000);
    ASSERT_TRUE(t.done && t.was_running);
    ASSERT_EQ(exit_code_of(&h, "b2"), 9);
    test_run_for(&h.loop, 100);
    ASSERT_EQ(h.nexits, 2); /* once, and no SIGKILL timer firing on a dead group later */
    json_decref(slow);
    json_decref(lingering);
    harness_close(&h);
}

TEST(process_same_id_again_after_exit)
{
    struct harness h;
    json_t *x = echo_exe(NULL);

    harness_open(&h, "process", NULL);
    spawn_ok(&h, "b1", x);
    runtime_terminate(h.rt, "b1", true, NULL, NULL);
    wait_exits(&h, 1, 3000);
    /* Straight away, while the old one's handles may still be closing. */
    uint16_t port = spawn_ok(&h, "b1", x);
    ASSERT_OK(ready_status(&h, "b1", port, 5000, NULL));
    json_decref(x);
    harness_close(&h);
}

/* A frozen backend queues a request and answers it once thawed; terminate thaws it first. */
static void freeze_cycle(struct harness *h, const char *id, json_t *x)
{
    struct result r = {0};
    uint16_t port = spawn_ok(h, id, x);
    char req[] = "GET /late HTTP/1.1\r\nHost: x\r\n\r\n";
    char got[16];

    ASSERT_OK(ready_status(h, id, port, 5000, NULL));
    runtime_freeze(h->rt, id, true, on_result, &r);
    wait_result(h, &r, 2000);
    ASSERT_OK(r.status);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    /* The kernel still accepts the connection; nobody reads the request yet. */
    ASSERT_TRUE(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EINPROGRESS);
    test_run_for(&h->loop, 20);
    ASSERT_EQ(write(fd, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
    test_run_for(&h->loop, 100);
    ASSERT_EQ(read(fd, got, sizeof(got)), -1);
    ASSERT_EQ(errno, EAGAIN);

    memset(&r, 0, sizeof(r));
    runtime_freeze(h->rt, id, false, on_result, &r);
    wait_result(h, &r, 2000);
    ASSERT_OK(r.status);
    for (int i = 0; i < 200 && read(fd, got, 5) != 5; i++)
        test_run_for(&h->loop, 10);
    ASSERT_TRUE(memcmp(got, "HTTP/", 5) == 0);
    close(fd);

    /* Frozen again, then terminated: the soft signal reaches it. */
    memset(&r, 0, sizeof(r));
    runtime_freeze(h->rt, id, true, on_result, &r);
    wait_result(h, &r, 2000);
    ASSERT_OK(r.status);
    memset(&r, 0, sizeof(r));
    runtime_terminate(h->rt, id, false, on_result, &r);
    wait_exits(h, h->nexits + 1, 5000);
    ASSERT_EQ(exit_code_of(h, id), 0);
}

TEST(process_freeze_thaw_and_terminate_frozen)
{
    struct harness h;
    json_t *plain = echo_exe(NULL);
    json_t *limited = echo_exe(NULL);
    struct result r = {0};

    json_object_set_new(limited, "resource_limits", json_pack("{s:I}", "memory_limit_bytes", (json_int_t)(256 << 20)));
    harness_open(&h, "process", NULL);
    ASSERT_TRUE(runtime_has_cap(h.rt, RUNTIME_CAP_FREEZE));
    freeze_cycle(&h, "stopped", plain); /* no cgroup: its process group is stopped */
    if (access("/sys/fs/cgroup/freezer/cgroup.procs", F_OK) == 0 ||
        access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0)
        freeze_cycle(&h, "frozen", limited); /* the cgroup freezer */
    runtime_freeze(h.rt, "nobody", true, on_result, &r);
    wait_result(&h, &r, 2000);
    ASSERT_EQ(r.status, -ESRCH);
    json_decref(plain);
    json_decref(limited);
    harness_close(&h);
}

/* A drone killed while a backend was frozen: the next runtime on its data dir kills it and removes its groups. */
TEST(process_frozen_leftovers_of_a_killed_drone_are_reaped)
{
    char *dir = test_tmpdir();
    struct runtime_config cfg = {.data_dir = dir};
    int fds[2];
    int pid = 0;

    if (access("/sys/fs/cgroup/freezer/cgroup.procs", F_OK) != 0 &&
        access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0) {
        free(dir);
        return; /* no cgroup freezer here */
    }
    ASSERT_OK(pipe(fds));
    pid_t drone = fork();
    if (drone == 0) {
        /* The first drone: spawns, freezes, and dies without closing anything. */
        struct harness h;
        struct result r = {0};
        json_t *x = echo_exe(NULL);
        json_object_set_new(x, "resource_limits", json_pack("{s:I}", "memory_limit_bytes", (json_int_t)(256 << 20)));
        harness_open(&h, "process", &cfg);
        uint16_t port = spawn_ok(&h, "left", x);
        ASSERT_OK(ready_status(&h, "left", port, 5000, NULL));
        runtime_freeze(h.rt, "left", true, on_result, &r);
        wait_result(&h, &r, 2000);
        ASSERT_OK(r.status);
        FILE *f = fopen(xasprintf("%s/run/left.pid", dir), "r");
        ASSERT_NOT_NULL(f);
        ASSERT_EQ(fscanf(f, "%d", &pid), 1);
        ASSERT_EQ(write(fds[1], &pid, sizeof(pid)), (ssize_t)sizeof(pid));
        _exit(0);
    }
    close(fds[1]);
    ASSERT_EQ(read(fds[0], &pid, sizeof(pid)), (ssize_t)sizeof(pid));
    close(fds[0]);
    ASSERT_EQ(waitpid(drone, NULL, 0), drone);
    ASSERT_TRUE(pid_alive(pid)); /* frozen, orphaned, still there */
    char *cg = cgroup_of(pid, "memory");
    ASSERT_NOT_NULL(cg);

    struct harness h;
    harness_open(&h, "process", &cfg);
    for (int i = 0; i < 200 && pid_alive(pid); i++)
        usleep(5000);
    ASSERT_FALSE(pid_alive(pid));
    bool v1 = access("/sys/fs/cgroup/memory/cgroup.procs", F_OK) == 0;
    char *mem = xasprintf("/sys/fs/cgroup%s%s", v1 ? "/memory" : "", cg);
    ASSERT_TRUE(access(mem, F_OK) != 0);
    if (v1) {
        char *frz = xasprintf("/sys/fs/cgroup/freezer%s", strstr(cg, "/plane/"));
        ASSERT_TRUE(access(frz, F_OK) != 0);
        free(frz);
    }
    harness_close(&h);
    free(mem);
    free(cg);
    free(dir);
}
