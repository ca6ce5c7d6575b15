/* SPDX-License-Identifier: MIT */
/*
 * executor_cmd.c - the `plane executor` command line: open the chosen
 * runtime, serve it on a Unix socket until SIGINT/SIGTERM, then close the
 * runtime (the process and mock runtimes stop their backends; containers
 * outlive it, as in Plane) and remove the socket.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/run_loop.h"
#include "../common/xalloc.h"
#include "executor_server.h"
#include "runtime.h"
#include "runtime_flags.h"

#define CLEANUP_INTERVAL_MS 60000 /* spec §14.9 */

enum { OPT_CLEANUP_INTERVAL = 256 };

struct executor_cmd {
    struct runtime *rt;
    struct executor_server *server;
    uv_timer_t cleanup;
    int64_t cleanup_min_age_ms;
    long cleanup_interval_ms;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: plane executor --runtime %s --socket PATH [options]\n"
            "\n"
            "Serves a runtime over the Unix-socket executor protocol.\n"
            "\n"
            "  --runtime NAME          process, mock, docker, oci, or executor (a client of another executor)\n"
            "  --socket PATH           where to listen\n"
            "  --cleanup-min-age SECS  prune leftovers of backends gone this long (default 3600)\n"
            "  --cleanup-interval SECS how often to prune (default 60)\n"
            "%s",
            runtime_names(), runtime_flags_usage);
}

static void closed_runtime(void *arg)
{
    (void)arg;
}

static void stop(void *arg)
{
    struct executor_cmd *x = arg;

    log_info("stopping the %s runtime", runtime_name(x->rt));
    executor_server_close(x->server);
    runtime_close(x->rt, closed_runtime, x);
    uv_close((uv_handle_t *)&x->cleanup, NULL);
}

static void cleanup_cb(uv_timer_t *t)
{
    struct executor_cmd *x = t->data;

    runtime_cleanup(x->rt, x->cleanup_min_age_ms);
}

int executor_main(int argc, char **argv)
{
    static const struct option own[] = {
        {"runtime", required_argument, NULL, 'r'},
        {"socket", required_argument, NULL, 's'},
        {"cleanup-min-age", required_argument, NULL, 'c'},
        {"cleanup-interval", required_argument, NULL, OPT_CLEANUP_INTERVAL},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct option *longopts = runtime_flags_options(own);
    struct executor_cmd x = {.cleanup_min_age_ms = 3600 * 1000, .cleanup_interval_ms = CLEANUP_INTERVAL_MS};
    struct runtime_config cfg = {.data_dir = "plane-data"};
    const struct runtime_ops *ops = NULL;
    const char *socket_path = NULL;
    struct buf err = BUF_INIT;
    uv_loop_t loop;
    long ms;
    int opt, r;
    int rc = 2;

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if ((r = runtime_flag_parse(opt, optarg, &cfg, "executor")) < 0)
            goto out_args;
        if (r > 0)
            continue;
        switch (opt) {
        case 'r':
            if (!(ops = runtime_find(optarg))) {
                fprintf(stderr, "plane executor: unknown runtime '%s' (use %s)\n", optarg, runtime_names());
                goto out_args;
            }
            break;
        case 's':
            socket_path = optarg;
            break;
        case 'c':
        case OPT_CLEANUP_INTERVAL:
            ms = runtime_flags_secs(optarg);
            if (ms < 0 || (ms == 0 && opt != 'c')) {
                fprintf(stderr, "plane executor: invalid duration '%s' (seconds)\n", optarg);
                goto out_args;
            }
            if (opt == 'c')
                x.cleanup_min_age_ms = ms;
            else
                x.cleanup_interval_ms = ms;
            break;
        case 'h':
            usage(stdout);
            rc = 0;
            goto out_args;
        default:
            usage(stderr);
            goto out_args;
        }
    }
    if (optind < argc || !ops || !socket_path) {
        fprintf(stderr, "plane executor: %s\n",
                optind < argc ? "unexpected argument" : "--runtime and --socket are required");
        usage(stderr);
        goto out_args;
    }

    uv_loop_init(&loop);
    x.server = executor_server_new(&loop);
    cfg.loop = &loop;
    cfg.on_exit = executor_server_on_exit;
    cfg.on_metrics = executor_server_on_metrics;
    cfg.cb_arg = x.server;
    rc = runtime_open(&x.rt, ops, &cfg, &err);
    if (rc == 0)
        rc = executor_server_listen(x.server, socket_path, x.rt, &err);
    if (rc < 0) {
        fprintf(stderr, "plane executor: %s\n", buf_cstr(&err));
        executor_server_close(x.server);
        if (x.rt)
            runtime_close(x.rt, closed_runtime, &x);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        rc = 1;
    } else {
        uv_timer_init(&loop, &x.cleanup);
        x.cleanup.data = &x;
        uv_timer_start(&x.cleanup, cleanup_cb, (uint64_t)x.cleanup_interval_ms, (uint64_t)x.cleanup_interval_ms);
        run_until_signal(&loop, stop, &x);
    }
    buf_release(&err);
out_args:
    free(longopts);
    return rc;
}
