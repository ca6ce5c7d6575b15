/* SPDX-License-Identifier: MIT */
/*
 * docker_spawn_bench.c - spawn->ready latency of the Docker runtime, driven
 * through the runtime interface on a libuv loop as the drone drives it,
 * against two baselines measured in the same run with the same image
 * (plane-test-echo:1, host networking):
 *   - `docker run -d --network host -e PORT=P IMAGE`, polled from the
 *     moment the command starts until the backend answers HEAD / (so the
 *     CLI's own exit is not counted);
 *   - the same two Engine API calls (create, start) made with blocking
 *     libcurl, polled the same way: the work our runtime does, minus our
 *     runtime.
 * Rounds alternate so drift hits every path alike. Then waves of N
 * containers are started, probed ready and hard-terminated concurrently,
 * and the process's RSS and fds are compared after the first wave and after
 * the last, and no container of ours may be left once pruned.
 *
 * usage: docker_spawn_bench [ROUNDS] [WAVE] [WAVES]     (needs a Docker Engine)
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../src/common/log.h"
#include "../src/common/net.h"
#include "../src/common/xalloc.h"
#include "../src/drone/docker_client.h"
#include "../src/drone/runtime.h"
#include "../tests/unit/engine_api.h"
#include "bench_util.h"

#define SOCK ENGINE_SOCK
#define IMAGE "plane-test-echo:1"
#define BASE_PORT 32100 /* baselines: apart from the runtime's 30000-31999, below 32768 */

extern char **environ;

static void remove_container(const char *name)
{
    char *path = xasprintf("/containers/%s?force=1", name);

    engine_api("DELETE", path, NULL, NULL);
    free(path);
}

/* `docker run`, polled from the start. */
static double baseline_cli(int i, int port)
{
    char name[64], env[32];
    char *argv[] = {"docker", "run", "-d", "--network", "host", "--label", "plane-bench=1", "--name", name,
                    "-e", env, IMAGE, NULL};
    posix_spawn_file_actions_t fa;
    pid_t pid;

    snprintf(name, sizeof(name), "plane-bench-cli-%d", i);
    snprintf(env, sizeof(env), "PORT=%d", port);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    double t0 = now_ms();
    if (posix_spawnp(&pid, "docker", &fa, NULL, argv, environ) != 0)
        fatal("cannot run docker");
    while (!probe_once(port))
        usleep(200);
    double dt = now_ms() - t0;
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fatalx("docker run failed");
    posix_spawn_file_actions_destroy(&fa);
    remove_container(name);
    return dt;
}

/* The runtime's two calls, blocking, polled the same way. */
static double baseline_api(int i, int port)
{
    char *path = xasprintf("/containers/create?name=plane-bench-api-%d", i);
    char *body = xasprintf("{\"Image\":\"" IMAGE "\",\"Env\":[\"PORT=%d\"],\"Labels\":{\"plane-bench\":\"1\"},"
                           "\"HostConfig\":{\"NetworkMode\":\"host\"}}",
                           port);
    char *start = xasprintf("/containers/plane-bench-api-%d/start", i);
    double t0 = now_ms();

    if (engine_api("POST", path, body, NULL) != 201 || engine_api("POST", start, NULL, NULL) != 204)
        fatalx("create/start failed");
    while (!probe_once(port))
        usleep(200);
    double dt = now_ms() - t0;
    free(path);
    free(body);
    free(start);
    char name[64];
    snprintf(name, sizeof(name), "plane-bench-api-%d", i);
    remove_container(name);
    return dt;
}

struct slot {
    struct bench *b;
    char id[48];
    bool ready, exited, failed;
};

struct bench {
    uv_loop_t loop;
    struct runtime *rt;
    json_t *exe;
    struct slot *slots;
    int nslots;
    int ready, exited, metrics;
};

static struct slot *slot_of(struct bench *b, const char *id)
{
    for (int i = 0; i < b->nslots; i++)
        if (strcmp(b->slots[i].id, id) == 0)
            return &b->slots[i];
    return NULL;
}

static void on_exit_cb(void *arg, const char *id, int code)
{
    struct bench *b = arg;
    struct slot *s = slot_of(b, id);

    (void)code;
    if (s && !s->exited) {
        s->exited = true;
        b->exited++;
    }
}

static void on_metrics_cb(void *arg, const struct backend_metrics *m)
{
    (void)m;
    ((struct bench *)arg)->metrics++;
}

static void on_ready(void *arg, const struct runtime_result *res)
{
    struct slot *s = arg;

    if (res->status < 0) {
        fprintf(stderr, "wait_ready %s: %s\n", s->id, res->error);
        s->failed = true;
    }
    s->ready = true;
    s->b->ready++;
}

static void on_spawned(void *arg, const struct runtime_result *res)
{
    struct slot *s = arg;
    char addr[NET_ADDR_LEN];

    if (res->status < 0) {
        fprintf(stderr, "spawn %s: %s\n", s->id, res->error);
        s->failed = s->ready = s->exited = true;
        s->b->ready++;
        s->b->exited++;
        return;
    }
    net_addr_format(addr, "127.0.0.1", res->port);
    runtime_wait_ready(s->b->rt, s->id, addr, on_ready, s);
}

/* Starts n backends at once, waits for all to be ready, kills them all; the wall time to all-ready. */
static double wave(struct bench *b, int n, const char *tag)
{
    struct slot *slots = xcalloc((size_t)n, sizeof(*slots));

    b->slots = slots;
    b->nslots = n;
    b->ready = b->exited = 0;
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        struct slot *s = &slots[i];
        s->b = b;
        snprintf(s->id, sizeof(s->id), "bench-%s-%d", tag, i);
        struct spawn_spec spec = {.backend_id = s->id, .executable = b->exe};
        runtime_spawn(b->rt, &spec, on_spawned, s);
    }
    while (b->ready < n)
        uv_run(&b->loop, UV_RUN_ONCE);
    double dt = now_ms() - t0;
    for (int i = 0; i < n; i++) {
        if (slots[i].failed)
            exit(1);
        runtime_terminate(b->rt, slots[i].id, true, NULL, NULL);
    }
    while (b->exited < n)
        uv_run(&b->loop, UV_RUN_ONCE);
    b->slots = NULL;
    b->nslots = 0;
    free(slots);
    return dt;
}

static double ours_once(struct bench *b, int i)
{
    char tag[32];

    snprintf(tag, sizeof(tag), "one%d", i);
    return wave(b, 1, tag);
}

static void prune_all(struct bench *b)
{
    /* Through the runtime (async), then wait until the engine shows none of ours stopped. */
    runtime_cleanup(b->rt, 0);
    for (int i = 0; i < 200; i++) {
        char *body = NULL;
        engine_api("GET", "/containers/json?all=1&filters=%7B%22label%22%3A%5B%22dev.plane.backend%22%5D%7D", NULL, &body);
        bool none = strstr(body, "plane-bench-") == NULL;
        free(body);
        if (none)
            return;
        double until = now_ms() + 50;
        while (now_ms() < until)
            uv_run(&b->loop, UV_RUN_NOWAIT);
        if (i % 20 == 19)
            runtime_cleanup(b->rt, 0);
    }
}

/* Containers of ours (by name) the engine still has, running or not. */
static int containers_left(void)
{
    char *body = NULL;
    int n = 0;

    engine_api("GET", "/containers/json?all=1", NULL, &body);
    for (const char *p = body; (p = strstr(p, "\"/plane-bench-")); p++)
        n++;
    free(body);
    return n;
}

int main(int argc, char **argv)
{
    struct bench b = {0};
    struct runtime_config cfg = {0};
    struct buf err = BUF_INIT;
    int rounds = argc > 1 ? atoi(argv[1]) : 30;
    int n = argc > 2 ? atoi(argv[2]) : 50;
    int waves = argc > 3 ? atoi(argv[3]) : 4;

    setenv("PLANE_LOG", "warn", 0);
    log_init("bench");
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (engine_api("GET", "/_ping", NULL, NULL) != 200)
        fatalx("no Docker Engine on %s (scripts/docker-up.sh)", SOCK);
    uv_loop_init(&b.loop);
    cfg.loop = &b.loop;
    cfg.docker_network = "host";
    cfg.on_exit = on_exit_cb;
    cfg.on_metrics = on_metrics_cb;
    cfg.cb_arg = &b;
    if (runtime_open(&b.rt, &runtime_docker_ops, &cfg, &err) < 0)
        fatalx("%s", buf_cstr(&err));
    b.exe = json_pack("{s:s, s:s}", "image", IMAGE, "pull_policy", "Never");

    double *cli = xcalloc((size_t)rounds, sizeof(double)), *raw = xcalloc((size_t)rounds, sizeof(double)),
           *ours = xcalloc((size_t)rounds, sizeof(double));
    for (int i = 0; i < 3; i++) { /* warm up every path */
        ours_once(&b, 1000 + i);
        baseline_cli(1000 + i, BASE_PORT + i);
        baseline_api(1000 + i, BASE_PORT + i);
    }
    prune_all(&b);
    for (int i = 0; i < rounds; i++) {
        cli[i] = baseline_cli(i, BASE_PORT + i % 100);
        raw[i] = baseline_api(i, BASE_PORT + 100 + i % 100);
        ours[i] = ours_once(&b, i);
        if (i % 10 == 9)
            prune_all(&b);
    }
    prune_all(&b);
    double mc = pct(cli, rounds, 0.5), ma = pct(raw, rounds, 0.5), mo = pct(ours, rounds, 0.5);
    printf("spawn->ready of %s (host networking), %d rounds each (ms):\n", IMAGE, rounds);
    printf("  baseline docker run + poll        p50 %7.2f  p90 %7.2f  p99 %7.2f\n", mc, pct(cli, rounds, 0.9),
           pct(cli, rounds, 0.99));
    printf("  baseline API create+start + poll  p50 %7.2f  p90 %7.2f  p99 %7.2f\n", ma, pct(raw, rounds, 0.9),
           pct(raw, rounds, 0.99));
    printf("  docker runtime                    p50 %7.2f  p90 %7.2f  p99 %7.2f\n", mo, pct(ours, rounds, 0.9),
           pct(ours, rounds, 0.99));
    printf("  median ratio runtime / docker run: %.2f (target <= 1.1)\n", mo / mc);
    printf("  median ratio runtime / blocking API calls: %.2f\n", mo / ma);

    /* Waves of n at once; the first brings caches (libcurl's connections, allocator) to steady state. */
    double w0 = wave(&b, n, "w0");
    prune_all(&b);
    long rss0 = rss_kb();
    size_t heap0 = mallinfo2().uordblks;
    int fds0 = count_dir("/proc/self/fd");
    double wsum = 0;
    for (int w = 1; w <= waves; w++) {
        char tag[16];
        snprintf(tag, sizeof(tag), "w%d", w);
        wsum += wave(&b, n, tag);
        prune_all(&b);
    }
    long rss1 = rss_kb();
    size_t heap1 = mallinfo2().uordblks;
    int fds1 = count_dir("/proc/self/fd");
    int left = containers_left();
    printf("%d waves of %d containers started at once, all ready in %.0f ms (first wave %.0f ms), killed, pruned:\n",
           waves, n, wsum / waves, w0);
    printf("  RSS %ld kB -> %ld kB (%+.1f%%, target within 10%%), heap in use %zu kB -> %zu kB, fds %d -> %d,\n"
           "  containers left %d, metrics events %d\n",
           rss0, rss1, (double)(rss1 - rss0) * 100.0 / (double)rss0, heap0 / 1024, heap1 / 1024, fds0, fds1, left,
           b.metrics);
    bool ok = mo / mc <= 1.1 && labs(rss1 - rss0) * 10 <= rss0 && fds1 <= fds0 && left == 0;
    printf("RESULT: %s\n", ok ? "targets met" : "TARGET MISSED");
    runtime_close(b.rt, NULL, NULL);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    uv_loop_close(&b.loop);
    json_decref(b.exe);
    free(cli);
    free(raw);
    free(ours);
    buf_release(&err);
    return ok ? 0 : 1;
}
