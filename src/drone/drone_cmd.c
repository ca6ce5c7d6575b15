/* SPDX-License-Identifier: MIT */
/*
 * drone_cmd.c - the `plane drone` command line (spec §2.2, plus our
 * --runtime and its settings). Runs the drone until SIGINT/SIGTERM.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/names.h"
#include "../common/run_loop.h"
#include "drone.h"
#include "runtime.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: plane drone --controller-url URL --cluster NAME [options]\n"
               "\n"
               "  --controller-url URL    the controller (http://[TOKEN@]host:port/)\n"
               "  --cluster NAME          the cluster this drone serves\n"
               "  --name NAME             dr-...; random by default\n"
               "  --ip ADDR               address proxies reach backends at (default 127.0.0.1)\n"
               "  --db PATH               state store (SQLite); in memory by default\n"
               "  --pool NAME             drone pool (default \"\")\n"
               "  --runtime NAME          %s (default: executor with --executor-socket, else docker)\n"
               "  --executor-socket PATH  the executor to use (--runtime executor)\n"
               "  --data-dir DIR          process runtime: logs, pid records, working dirs (default ./plane-data)\n"
               "  --grace-period SECS     soft terminate: SIGKILL after this (default 30)\n"
               "  --ready-timeout SECS    readiness gives up after this (default 300)\n"
               "  --metrics-interval SECS metrics period (default 10)\n"
               "  --mock-port N           mock runtime: the shared port\n"
               "  --metrics-port N        serve Prometheus metrics at http://127.0.0.1:N/metrics\n",
            runtime_names());
}

static long secs_to_ms(const char *s)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end || !isfinite(v) || v <= 0 || v > 86400.0 * 365)
        return -1;
    return lround(v * 1000);
}

static void stop_cb(void *arg)
{
    drone_stop(arg);
}

int drone_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"controller-url", required_argument, NULL, 'u'},
        {"cluster", required_argument, NULL, 'c'},
        {"name", required_argument, NULL, 'n'},
        {"ip", required_argument, NULL, 'i'},
        {"db", required_argument, NULL, 'd'},
        {"pool", required_argument, NULL, 'p'},
        {"runtime", required_argument, NULL, 'r'},
        {"executor-socket", required_argument, NULL, 'e'},
        {"data-dir", required_argument, NULL, 'D'},
        {"grace-period", required_argument, NULL, 'g'},
        {"ready-timeout", required_argument, NULL, 't'},
        {"metrics-interval", required_argument, NULL, 'm'},
        {"mock-port", required_argument, NULL, 'P'},
        {"metrics-port", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    uv_loop_t loop;
    struct drone *drone = NULL;
    struct drone_config cfg = {.pool = "", .ip = "127.0.0.1"};
    const char *runtime = NULL;
    struct buf err = BUF_INIT;
    long ms;
    int opt, rc;

    cfg.runtime_config.data_dir = "plane-data";
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'u': cfg.controller_url = optarg; break;
        case 'c': cfg.cluster = optarg; break;
        case 'n': cfg.name = optarg; break;
        case 'i': cfg.ip = optarg; break;
        case 'd': cfg.db_path = optarg; break;
        case 'p': cfg.pool = optarg; break;
        case 'r': runtime = optarg; break;
        case 'e': cfg.runtime_config.executor_socket = optarg; break;
        case 'D': cfg.runtime_config.data_dir = optarg; break;
        case 'g':
        case 't':
        case 'm':
            if ((ms = secs_to_ms(optarg)) < 0) {
                fprintf(stderr, "plane drone: invalid duration '%s' (seconds)\n", optarg);
                return 2;
            }
            if (opt == 'g')
                cfg.runtime_config.grace_ms = (unsigned)ms;
            else if (opt == 't')
                cfg.runtime_config.ready_timeout_ms = (unsigned)ms;
            else
                cfg.runtime_config.metrics_interval_ms = (unsigned)ms;
            break;
        case 'M': {
            char *end;
            long p = strtol(optarg, &end, 10);
            if (*end || p < 1 || p > 65535) {
                fprintf(stderr, "plane drone: invalid port '%s'\n", optarg);
                return 2;
            }
            cfg.metrics_port = (int)p;
            break;
        }
        case 'P': {
            char *end;
            long p = strtol(optarg, &end, 10);
            if (*end || p < 1 || p > 65535) {
                fprintf(stderr, "plane drone: invalid port '%s'\n", optarg);
                return 2;
            }
            cfg.runtime_config.mock_port = (unsigned)p;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || !cfg.controller_url || !cfg.cluster) {
        fprintf(stderr, "plane drone: %s\n",
                optind < argc ? "unexpected argument" : "--controller-url and --cluster are required");
        return 2;
    }
    if (cfg.name && !name_is_valid(cfg.name, "dr")) {
        fprintf(stderr, "plane drone: invalid --name '%s' (dr..., [a-z0-9-], at most 45 chars)\n", cfg.name);
        return 2;
    }
    if (!runtime)
        runtime = cfg.runtime_config.executor_socket ? "executor" : "docker";
    if (!(cfg.runtime = runtime_find(runtime))) {
        fprintf(stderr, "plane drone: unknown runtime '%s' (use %s)\n", runtime, runtime_names());
        return 2;
    }
    cfg.runtime_config.bind_ip = cfg.ip;

    uv_loop_init(&loop);
    rc = drone_start(&drone, &loop, &cfg, &err);
    if (rc < 0) {
        fprintf(stderr, "plane drone: %s\n", buf_cstr(&err));
        uv_run(&loop, UV_RUN_DEFAULT); /* let what was opened close */
        uv_loop_close(&loop);
    } else {
        run_until_signal(&loop, stop_cb, drone);
    }
    buf_release(&err);
    return rc < 0 ? 1 : 0;
}
