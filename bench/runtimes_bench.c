/* SPDX-License-Identifier: MIT */
/*
 * runtimes_bench.c - spawn->ready of the echo backend in every runtime that
 * runs it on this host, in one run, through the runtime interface on a
 * libuv loop as the drone drives it: `process`, `oci` (crun, the root
 * exported from the test image), `docker` (host networking), and as the
 * baseline of oci a bare `crun run` of the very bundle the oci runtime
 * wrote, polled with the same HEAD probe every 100 us. Rounds alternate
 * between oci and bare crun so drift hits both alike. Then thaw->first
 * byte: a request sent to a frozen backend waits in its listen queue;
 * the clock runs from the thaw call to the first byte of the answer.
 *
 * usage: runtimes_bench ECHO_BACKEND [ROUNDS] [DOCKER_ROUNDS]
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/drone/oci_image.h"
#include "runtime_driver.h"

/* ---- bare crun ---- */

struct bare {
    const char *crun, *root, *bundle;
    bool hide_cgroup2;
    bool no_cgroups; /* --cgroup-manager=disabled: the floor, no cgroup at all */
};

static bool needs_hidden_cgroup2(void)
{
    struct statfs fs;
    char text[64] = "";
    int fd = open("/sys/fs/cgroup/unified/cgroup.controllers", O_RDONLY);

    if (statfs("/sys/fs/cgroup", &fs) == -1 || fs.f_type == 0x63677270 || fd == -1)
        return false;
    ssize_t n = read(fd, text, sizeof(text) - 1);
    close(fd);
    return n > 0 && text[0] != '\n';
}

/* `crun run` of the bundle, started as crun must be started on this host; ms until it answers on port. */
static double bare_once(const struct bare *x, int port, int i)
{
    char id[32];
    snprintf(id, sizeof(id), "bare%d", i);
    const char *argv[10];
    int n = 0;
    argv[n++] = x->crun;
    if (x->no_cgroups)
        argv[n++] = "--cgroup-manager=disabled";
    const char *rest[] = {"--root", x->root, "run", "--bundle", x->bundle, id, NULL};
    memcpy(argv + n, rest, sizeof(rest));
    const char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    double t0 = now_ms();
    pid_t pid = vfork();
    if (pid == 0) {
        if (x->hide_cgroup2 && (unshare(CLONE_NEWNS) == -1 || mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) == -1 ||
                                umount2("/sys/fs/cgroup/unified", MNT_DETACH) == -1))
            _exit(126);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        execve(x->crun, (char *const *)argv, (char *const *)envp);
        _exit(127);
    }
    while (!probe_once(port)) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            fatalx("bare crun exited before it answered");
        usleep(100);
    }
    double dt = now_ms() - t0;
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return dt;
}

/* Copies the oci runtime's bundle of backend id to dir, with PORT set to port. */
static char *copy_bundle(const char *data_dir, const char *id, const char *dir, int port)
{
    char *src = xasprintf("%s/oci/bundles/%s/config.json", data_dir, id);
    char *dst = xasprintf("%s/config.json", dir);
    json_t *config = json_load_file(src, 0, NULL);
    json_t *env = json_object_get(json_object_get(config, "process"), "env");
    size_t i;
    json_t *v;

    if (!config)
        fatalx("cannot read '%s'", src);
    json_array_foreach(env, i, v) {
        if (strncmp(json_string_value(v), "PORT=", 5) == 0) {
            char *p = xasprintf("PORT=%d", port);
            json_array_set_new(env, i, json_string(p));
            free(p);
        }
    }
    mkdir(dir, 0700);
    json_dump_file(config, dst, JSON_COMPACT);
    json_decref(config);
    free(src);
    free(dst);
    return xstrdup(dir);
}

/* ---- thaw -> first byte ---- */

static int connect_port(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
        fatal("connect");
    return fd;
}

/* Freezes the running backend, sends a request (it waits), thaws: ms from the thaw to the first byte. */
static double thaw_once(struct bench *b)
{
    static const char req[] = "GET /thaw HTTP/1.1\r\nHost: x\r\n\r\n";
    char c;

    b->done = false;
    runtime_freeze(b->rt, b->id, true, on_done, b);
    run_until(b, &b->done);
    int fd = connect_port(b->port);
    if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1)
        fatal("write");
    usleep(2000);
    b->done = false;
    double t0 = now_ms();
    runtime_freeze(b->rt, b->id, false, on_done, b);
    run_until(b, &b->done);
    if (recv(fd, &c, 1, 0) != 1)
        fatal("recv");
    double dt = now_ms() - t0;
    close(fd);
    return dt;
}

static void report(const char *what, double *v, int n)
{
    printf("  %-34s p50 %7.3f  p90 %7.3f  p99 %7.3f\n", what, pct(v, n, 0.5), pct(v, n, 0.9), pct(v, n, 0.99));
}

int main(int argc, char **argv)
{
    uv_loop_t loop;
    char pdir[] = "/tmp/plane-rt-bench-p-XXXXXX", odir[] = "/tmp/plane-rt-bench-o-XXXXXX";
    char ddir[] = "/tmp/plane-rt-bench-d-XXXXXX";
    struct runtime_config pc = {0}, oc = {0}, dc = {0};
    bool ok = true;

    if (argc < 2) {
        fprintf(stderr, "usage: runtimes_bench ECHO_BACKEND [ROUNDS] [DOCKER_ROUNDS]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 100;
    int drounds = argc > 3 ? atoi(argv[3]) : 20;
    setenv("PLANE_LOG", "warn", 0);
    log_init("bench");
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    pc.data_dir = mkdtemp(pdir);
    oc.data_dir = mkdtemp(odir);
    dc.data_dir = mkdtemp(ddir);
    dc.docker_network = "host";

    struct bench *proc = bench_open(&loop, &runtime_process_ops, &pc, json_pack("{s:[s]}", "command", argv[1]));
    struct bench *oci = bench_open(&loop, &runtime_oci_ops, &oc, json_pack("{s:s}", "image", "plane-test-echo:1"));
    struct bench *dock = bench_open(&loop, &runtime_docker_ops, &dc,
                                    json_pack("{s:s, s:s}", "image", "plane-test-echo:1", "pull_policy", "Never"));
    if (!proc || !oci)
        return 1;

    /* The bare baseline runs the bundle the oci runtime writes, on a port of its own. */
    bench_start(oci, 999999);
    char *bare_dir = xasprintf("%s/bare-bundle", oc.data_dir);
    char *bare_root = xasprintf("%s/bare-state", oc.data_dir);
    mkdir(bare_root, 0700);
    int bare_port = 19990;
    struct bare bare = {.crun = "/usr/bin/crun", .root = bare_root,
                        .bundle = copy_bundle(oc.data_dir, oci->id, bare_dir, bare_port),
                        .hide_cgroup2 = needs_hidden_cgroup2()};
    struct bare floor = bare;
    floor.no_cgroups = true;
    bench_stop(oci);

    double *p = xcalloc((size_t)rounds, sizeof(double)), *o = xcalloc((size_t)rounds, sizeof(double));
    double *c = xcalloc((size_t)rounds, sizeof(double)), *d = xcalloc((size_t)drounds, sizeof(double));
    double *f = xcalloc((size_t)rounds, sizeof(double));
    for (int i = 0; i < 10; i++) { /* warm up every path */
        bench_once(proc, 100000 + i);
        bench_once(oci, 100000 + i);
        bare_once(&bare, bare_port, 100000 + i);
        bare_once(&floor, bare_port, 200000 + i);
    }
    for (int i = 0; i < rounds; i++) {
        p[i] = bench_once(proc, i);
        c[i] = bare_once(&bare, bare_port, i);
        f[i] = bare_once(&floor, bare_port, 300000 + i);
        o[i] = bench_once(oci, i);
    }
    for (int i = 0; dock && i < drounds; i++)
        d[i] = bench_once(dock, i);

    printf("spawn->ready of the echo backend (ms; %d rounds, docker %d):\n", rounds, dock ? drounds : 0);
    report("process runtime", p, rounds);
    report("oci runtime (crun)", o, rounds);
    report("bare crun run of the same bundle", c, rounds);
    report("  the same, crun making no cgroup", f, rounds);
    if (dock)
        report("docker runtime (host network)", d, drounds);
    else
        printf("  docker runtime                     (no engine with plane-test-echo:1: skipped)\n");
    double mo = pct(o, rounds, 0.5), mc = pct(c, rounds, 0.5);
    printf("  oci median %.2f ms (target <= 20), oci/bare crun %.2f (target <= 1.2)\n", mo, mo / mc);
    ok = mo <= 20 && mo / mc <= 1.2;

    printf("thaw->first byte of a request that waited on a frozen backend (ms; %d rounds):\n", rounds);
    struct bench *frozen[] = {proc, oci, dock};
    const char *names[] = {"process (cgroup freezer)", "oci (cgroup freezer)", "docker (pause)"};
    for (int k = 0; k < 3; k++) {
        struct bench *b = frozen[k];
        int n = k == 2 ? drounds : rounds;
        if (!b || !runtime_has_cap(b->rt, RUNTIME_CAP_FREEZE)) {
            printf("  %-34s (cannot freeze: skipped)\n", names[k]);
            continue;
        }
        if (k == 0) /* a process backend with a cgroup: the freezer, not a stopped group */
            json_object_set_new(b->exe, "resource_limits",
                                json_pack("{s:I}", "memory_limit_bytes", (json_int_t)1 << 30));
        bench_start(b, 500000 + k);
        double *t = xcalloc((size_t)n, sizeof(double));
        for (int i = 0; i < n; i++)
            t[i] = thaw_once(b);
        report(names[k], t, n);
        if (k < 2)
            ok = ok && pct(t, n, 0.5) <= 5;
        free(t);
        bench_stop(b);
    }
    printf("RESULT: %s\n", ok ? "targets met" : "TARGET MISSED");
    bench_close(proc);
    bench_close(oci);
    bench_close(dock);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    oci_remove_tree(pdir);
    oci_remove_tree(odir);
    oci_remove_tree(ddir);
    free(p);
    free(o);
    free(c);
    free(f);
    free(d);
    free(bare_dir);
    free(bare_root);
    free((char *)bare.bundle);
    return ok ? 0 : 1;
}
