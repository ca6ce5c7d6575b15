/* SPDX-License-Identifier: MIT */
/*
 * executor_cmd.c - the `plane executor` command line: open the chosen
 * runtime, serve it on a Unix socket until SIGINT/SIGTERM, then stop every
 * backend it started and remove the socket.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "executor_server.h"
#include "runtime.h"

#define CLEANUP_INTERVAL_MS 60000 /* spec §14.9 */

/* Long options without a short letter. */
enum {
    OPT_DOCKER_SOCKET = 256,
    OPT_DOCKER_NETWORK,
    OPT_DOCKER_RUNTIME,
    OPT_LOG_CONFIG,
    OPT_MOUNT_BASE,
    OPT_PRUNE_IMAGES,
    OPT_CLEANUP_INTERVAL,
};

struct executor_cmd {
    uv_loop_t loop;
    struct runtime *rt;
    struct executor_server *server;
    uv_signal_t sigint, sigterm;
    uv_timer_t cleanup;
    int64_t cleanup_min_age_ms;
    long cleanup_interval_ms;
    bool stopping;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: plane executor --runtime %s --socket PATH [options]\n"
            "\n"
            "Serves a runtime over the Unix-socket executor protocol.\n"
            "\n"
            "  --runtime NAME          process, mock, docker, or executor (a client of another executor)\n"
            "  --socket PATH           where to listen\n"
            "  --data-dir DIR          process: logs, pid records, working dirs (default ./plane-data)\n"
            "  --bind-ip IP            address backends listen on (default 127.0.0.1)\n"
            "  --grace-period SECS     soft terminate: SIGKILL after this (default 30)\n"
            "  --ready-timeout SECS    give up waiting for readiness after this (default 300)\n"
            "  --metrics-interval SECS metrics sampling period (default 10)\n"
            "  --cleanup-min-age SECS  prune leftovers of backends gone this long (default 3600)\n"
            "  --cleanup-interval SECS how often to prune (default 60)\n"
            "  --mock-port N           mock: the shared port (default: any free port)\n"
            "  --executor-socket PATH  executor: the upstream executor's socket\n"
            "  --docker-socket PATH    docker: the Engine API socket (default /var/run/docker.sock)\n"
            "  --docker-network NAME   docker: \"host\" for host networking, or a network name\n"
            "                          (default: the bridge, 8080/tcp published on a random port)\n"
            "  --docker-runtime NAME   docker: HostConfig.Runtime for containers (e.g. runsc)\n"
            "  --log-config JSON       docker: HostConfig.LogConfig, e.g. {\"Type\":\"json-file\",\"Config\":{}}\n"
            "  --mount-base PATH       docker: base directory of backend volume mounts\n"
            "  --auto-prune-images     docker: cleanup also prunes unused images\n",
            runtime_names());
}

/* Seconds (fractions allowed) to milliseconds; -1 if not a sane duration. */
static long parse_secs(const char *s)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 86400.0 * 365)
        return -1;
    return lround(v * 1000);
}

static void closed_runtime(void *arg)
{
    (void)arg;
}

static void stop(struct executor_cmd *x)
{
    if (x->stopping)
        return;
    x->stopping = true;
    log_info("stopping: terminating every backend");
    executor_server_close(x->server);
    runtime_close(x->rt, closed_runtime, x);
    uv_close((uv_handle_t *)&x->sigint, NULL);
    uv_close((uv_handle_t *)&x->sigterm, NULL);
    uv_close((uv_handle_t *)&x->cleanup, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)signum;
    stop(h->data);
}

static void cleanup_cb(uv_timer_t *t)
{
    struct executor_cmd *x = t->data;

    runtime_cleanup(x->rt, x->cleanup_min_age_ms);
}

int executor_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"runtime", required_argument, NULL, 'r'},
        {"socket", required_argument, NULL, 's'},
        {"data-dir", required_argument, NULL, 'd'},
        {"bind-ip", required_argument, NULL, 'b'},
        {"grace-period", required_argument, NULL, 'g'},
        {"ready-timeout", required_argument, NULL, 't'},
        {"metrics-interval", required_argument, NULL, 'm'},
        {"cleanup-min-age", required_argument, NULL, 'c'},
        {"mock-port", required_argument, NULL, 'p'},
        {"executor-socket", required_argument, NULL, 'e'},
        {"docker-socket", required_argument, NULL, OPT_DOCKER_SOCKET},
        {"docker-network", required_argument, NULL, OPT_DOCKER_NETWORK},
        {"docker-runtime", required_argument, NULL, OPT_DOCKER_RUNTIME},
        {"log-config", required_argument, NULL, OPT_LOG_CONFIG},
        {"mount-base", required_argument, NULL, OPT_MOUNT_BASE},
        {"auto-prune-images", no_argument, NULL, OPT_PRUNE_IMAGES},
        {"cleanup-interval", required_argument, NULL, OPT_CLEANUP_INTERVAL},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct executor_cmd x = {.cleanup_min_age_ms = 3600 * 1000, .cleanup_interval_ms = CLEANUP_INTERVAL_MS};
    struct runtime_config cfg = {.data_dir = "plane-data"};
    const struct runtime_ops *ops = NULL;
    const char *socket_path = NULL;
    struct buf err = BUF_INIT;
    long ms;
    int opt;
    int rc;

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'r':
            if (!(ops = runtime_find(optarg))) {
                fprintf(stderr, "plane executor: unknown runtime '%s' (use %s)\n", optarg, runtime_names());
                return 2;
            }
            break;
        case 's':
            socket_path = optarg;
            break;
        case 'd':
            cfg.data_dir = optarg;
            break;
        case 'b':
            cfg.bind_ip = optarg;
            break;
        case 'g':
        case 't':
        case 'm':
        case 'c':
            ms = parse_secs(optarg);
            if (ms < 0 || (ms == 0 && opt != 'c')) {
                fprintf(stderr, "plane executor: invalid duration '%s' (seconds)\n", optarg);
                return 2;
            }
            if (opt == 'g')
                cfg.grace_ms = (unsigned)ms;
            else if (opt == 't')
                cfg.ready_timeout_ms = (unsigned)ms;
            else if (opt == 'm')
                cfg.metrics_interval_ms = (unsigned)ms;
            else
                x.cleanup_min_age_ms = ms;
            break;
        case 'p': {
            char *end;
            long p = strtol(optarg, &end, 10);
            if (*end || p < 1 || p > 65535) {
                fprintf(stderr, "plane executor: invalid port '%s'\n", optarg);
                return 2;
            }
            cfg.mock_port = (unsigned)p;
            break;
        }
        case 'e':
            cfg.executor_socket = optarg;
            break;
        case OPT_DOCKER_SOCKET:
            cfg.docker_socket = optarg;
            break;
        case OPT_DOCKER_NETWORK:
            cfg.docker_network = optarg;
            break;
        case OPT_DOCKER_RUNTIME:
            cfg.docker_runtime = optarg;
            break;
        case OPT_LOG_CONFIG:
            cfg.docker_log_config = optarg;
            break;
        case OPT_MOUNT_BASE:
            cfg.mount_base = optarg;
            break;
        case OPT_PRUNE_IMAGES:
            cfg.prune_images = true;
            break;
        case OPT_CLEANUP_INTERVAL:
            ms = parse_secs(optarg);
            if (ms <= 0) {
                fprintf(stderr, "plane executor: invalid duration '%s' (seconds)\n", optarg);
                return 2;
            }
            x.cleanup_interval_ms = ms;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || !ops || !socket_path) {
        fprintf(stderr, "plane executor: %s\n",
                optind < argc ? "unexpected argument" : "--runtime and --socket are required");
        usage(stderr);
        return 2;
    }

    uv_loop_init(&x.loop);
    x.server = executor_server_new(&x.loop);
    cfg.loop = &x.loop;
    cfg.on_exit = executor_server_on_exit;
    cfg.on_metrics = executor_server_on_metrics;
    cfg.cb_arg = x.server;
    rc = runtime_open(&x.rt, ops, &cfg, &err);
    if (rc < 0) {
        fprintf(stderr, "plane executor: %s\n", buf_cstr(&err));
        executor_server_close(x.server);
        goto out;
    }
    rc = executor_server_listen(x.server, socket_path, x.rt, &err);
    if (rc < 0) {
        fprintf(stderr, "plane executor: %s\n", buf_cstr(&err));
        executor_server_close(x.server);
        runtime_close(x.rt, closed_runtime, &x);
        goto out;
    }
    uv_signal_init(&x.loop, &x.sigint);
    uv_signal_init(&x.loop, &x.sigterm);
    x.sigint.data = x.sigterm.data = &x;
    uv_signal_start(&x.sigint, on_signal, SIGINT);
    uv_signal_start(&x.sigterm, on_signal, SIGTERM);
    uv_timer_init(&x.loop, &x.cleanup);
    x.cleanup.data = &x;
    uv_timer_start(&x.cleanup, cleanup_cb, (uint64_t)x.cleanup_interval_ms, (uint64_t)x.cleanup_interval_ms);
out:
    uv_run(&x.loop, UV_RUN_DEFAULT);
    uv_loop_close(&x.loop);
    buf_release(&err);
    return rc < 0 ? 1 : 0;
}
