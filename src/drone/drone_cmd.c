/* SPDX-License-Identifier: MIT */
/*
 * drone_cmd.c - the `plane drone` command line (spec §2.2, plus our
 * --runtime and its settings). Runs the drone until SIGINT/SIGTERM.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/controller_urls.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/run_loop.h"
#include "drone.h"
#include "runtime.h"
#include "runtime_flags.h"

enum { OPT_PRUNE_AGE = 256, OPT_METRICS_PORT };

static void usage(FILE *f)
{
    fprintf(f, "usage: plane drone --controller-url URL --cluster NAME [options]\n"
               "\n"
               "  --controller-url URL    the controller (http://[TOKEN@]host:port/); more than once: several,\n"
               "                          tried in turn\n"
               "  --cluster NAME          the cluster this drone serves\n"
               "  --name NAME             dr-...; random by default\n"
               "  --ip ADDR               address proxies reach backends at (default 127.0.0.1)\n"
               "  --db PATH               state store (SQLite); in memory by default\n"
               "  --pool NAME             drone pool (default \"\")\n"
               "  --runtime NAME          %s (default: executor with --executor-socket, else docker)\n"
               "  --auto-prune-containers-older-than-seconds N\n"
               "                          prune what backends gone this long left behind (default 0)\n"
               "  --metrics-port N        serve Prometheus metrics at http://127.0.0.1:N/metrics\n"
               "%s",
            runtime_names(), runtime_flags_usage);
}

static void stop_cb(void *arg)
{
    drone_stop(arg);
}

int drone_main(int argc, char **argv)
{
    static const struct option own[] = {
        {"controller-url", required_argument, NULL, 'u'},
        {"cluster", required_argument, NULL, 'c'},
        {"name", required_argument, NULL, 'n'},
        {"ip", required_argument, NULL, 'i'},
        {"db", required_argument, NULL, 'd'},
        {"pool", required_argument, NULL, 'p'},
        {"runtime", required_argument, NULL, 'r'},
        {"auto-prune-containers-older-than-seconds", required_argument, NULL, OPT_PRUNE_AGE},
        {"metrics-port", required_argument, NULL, OPT_METRICS_PORT},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct option *longopts = runtime_flags_options(own);
    struct drone_config cfg = {.pool = "", .ip = "127.0.0.1"};
    const char *runtime = NULL;
    char *urls = NULL; /* --controller-url, each given */
    struct drone *drone = NULL;
    struct buf err = BUF_INIT;
    uv_loop_t loop;
    int opt, r, rc = 2;
    char *end;
    long v;

    cfg.runtime_config.data_dir = "plane-data";
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if ((r = runtime_flag_parse(opt, optarg, &cfg.runtime_config, "drone")) < 0)
            goto out;
        if (r > 0)
            continue;
        switch (opt) {
        case 'u': urls = controller_urls_append(urls, optarg); cfg.controller_url = urls; break;
        case 'c': cfg.cluster = optarg; break;
        case 'n': cfg.name = optarg; break;
        case 'i': cfg.ip = optarg; break;
        case 'd': cfg.db_path = optarg; break;
        case 'p': cfg.pool = optarg; break;
        case 'r': runtime = optarg; break;
        case OPT_PRUNE_AGE:
        case OPT_METRICS_PORT:
            v = strtol(optarg, &end, 10);
            if (*end || v < 0 || (opt == OPT_METRICS_PORT && (v < 1 || v > 65535))) {
                fprintf(stderr, "plane drone: invalid number '%s'\n", optarg);
                goto out;
            }
            if (opt == OPT_PRUNE_AGE)
                cfg.cleanup_min_age_ms = (int64_t)v * 1000;
            else
                cfg.metrics_port = (int)v;
            break;
        case 'h':
            usage(stdout);
            rc = 0;
            goto out;
        default:
            usage(stderr);
            goto out;
        }
    }
    if (optind < argc || !cfg.controller_url || !cfg.cluster) {
        fprintf(stderr, "plane drone: %s\n",
                optind < argc ? "unexpected argument" : "--controller-url and --cluster are required");
        goto out;
    }
    if (cfg.name && !name_is_valid(cfg.name, "dr")) {
        fprintf(stderr, "plane drone: invalid --name '%s' (dr..., [a-z0-9-], at most 45 chars)\n", cfg.name);
        goto out;
    }
    if (!runtime)
        runtime = cfg.runtime_config.executor_socket ? "executor" : "docker";
    if (!(cfg.runtime = runtime_find(runtime))) {
        fprintf(stderr, "plane drone: unknown runtime '%s' (use %s)\n", runtime, runtime_names());
        goto out;
    }
    if (!cfg.runtime_config.bind_ip)
        cfg.runtime_config.bind_ip = cfg.ip;

    uv_loop_init(&loop);
    rc = drone_start(&drone, &loop, &cfg, &err);
    if (rc < 0) {
        fprintf(stderr, "plane drone: %s\n", buf_cstr(&err));
        uv_run(&loop, UV_RUN_DEFAULT); /* let what was opened close */
        uv_loop_close(&loop);
        rc = 1;
    } else {
        run_until_signal(&loop, stop_cb, drone);
    }
    buf_release(&err);
out:
    free(longopts);
    free(urls);
    return rc;
}
