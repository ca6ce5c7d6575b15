/* SPDX-License-Identifier: MIT */
/*
 * dev.c - `plane dev` (see dev.h). The controller, the drone and the
 * proxy's control side run on one loop (the proxy's workers have threads of
 * their own); the drone and the proxy reach the controller over loopback
 * like any others would. Ctrl-C stops the proxy, the drone (its runtime
 * kills every backend) and the controller. State lives in DATA/controller.db and DATA/drone.db, so a
 * restart picks up where the last run stopped.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/log.h"
#include "../common/run_loop.h"
#include "../common/xalloc.h"
#include "../controller/controller.h"
#include "../drone/drone.h"
#include "../proxy/proxy.h"
#include "dev.h"

struct dev {
    struct controller *controller;
    struct drone *drone;
    struct proxy *proxy;
};

static void stop_cb(void *arg)
{
    struct dev *d = arg;

    proxy_stop(d->proxy);
    drone_stop(d->drone);
    controller_stop(d->controller);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: plane dev [--controller-port 8080] [--proxy-port 9090] [--data-dir DIR] [--runtime NAME]\n"
               "\n"
               "Runs a controller and a drone in one process on 127.0.0.1.\n"
               "  --controller-port N  the controller's HTTP port (default 8080)\n"
               "  --proxy-port N       the port of the cluster name localhost:N (default 9090)\n"
               "  --data-dir DIR       databases and backend files (default ./plane-dev)\n"
               "  --runtime NAME       process (default) or mock\n");
}

static int parse_port(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (*end || v < 1 || v > 65535)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

int dev_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"controller-port", required_argument, NULL, 'c'},
        {"proxy-port", required_argument, NULL, 'p'},
        {"data-dir", required_argument, NULL, 'd'},
        {"runtime", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int controller_port = 8080, proxy_port = 9090, opt, rc;
    const char *data_dir = "plane-dev", *runtime = "process";
    struct dev d = {0};
    struct buf err = BUF_INIT;
    uv_loop_t loop;

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
        case 'p':
            if (parse_port(optarg, opt == 'c' ? &controller_port : &proxy_port) < 0) {
                fprintf(stderr, "plane dev: invalid port '%s'\n", optarg);
                return 2;
            }
            break;
        case 'd': data_dir = optarg; break;
        case 'r': runtime = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "plane dev: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!runtime_find(runtime)) {
        fprintf(stderr, "plane dev: unknown runtime '%s'\n", runtime);
        return 2;
    }
    if (mkdir(data_dir, 0750) == -1 && errno != EEXIST) {
        fprintf(stderr, "plane dev: cannot create '%s': %s\n", data_dir, strerror(errno));
        return 1;
    }
    char *cluster = xasprintf("localhost:%d", proxy_port);
    char *db = xasprintf("%s/controller.db", data_dir);
    char *drone_db = xasprintf("%s/drone.db", data_dir);
    char *backends = xasprintf("%s/backends", data_dir);
    char *controller_url = xasprintf("http://127.0.0.1:%d/", controller_port);
    struct controller_config cc = {
        .db = db, .host = "127.0.0.1", .port = controller_port, .default_cluster = cluster, .best_of = 2,
        .lost_after_ms = 120000,
    };
    struct drone_config dc = {
        .name = "dr-dev", .controller_url = controller_url, .cluster = cluster, .pool = "", .ip = "127.0.0.1",
        .db_path = drone_db, .runtime = runtime_find(runtime),
    };
    dc.runtime_config.data_dir = backends;
    dc.runtime_config.bind_ip = "127.0.0.1";
    struct proxy_options po = {
        .name = "px-dev", .controller_url = controller_url, .cluster = cluster, .host = "127.0.0.1",
        .http_port = proxy_port, .https_port = -1,
    };

    uv_loop_init(&loop);
    rc = controller_start(&d.controller, &loop, &cc, &err);
    if (rc == 0)
        rc = drone_start(&d.drone, &loop, &dc, &err);
    if (rc == 0)
        rc = proxy_start(&d.proxy, &loop, &po, &err);
    if (rc < 0) {
        fprintf(stderr, "plane dev: %s\n", buf_cstr(&err));
        drone_stop(d.drone);
        controller_stop(d.controller);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    } else {
        printf("plane dev: controller http://127.0.0.1:%d, proxy http://127.0.0.1:%d (cluster %s),\n"
               "  %s runtime, data in %s/\n"
               "  dashboard: http://127.0.0.1:%d/dashboard\n"
               "  try:  curl -s -X POST -H 'content-type: application/json' http://127.0.0.1:%d/ctrl/connect \\\n"
               "          -d '{\"key\":{\"name\":\"hello\"},\"spawn_config\":{\"executable\":"
               "{\"command\":[\"sh\",\"-c\",\"exec python3 -m http.server --bind 127.0.0.1 $PORT\"]}}}'\n"
               "  then open the \"url\" it returns. Ctrl-C stops everything, backends included.\n",
               controller_port, proxy_port, cluster, runtime, data_dir, controller_port, controller_port);
        fflush(stdout);
        run_until_signal(&loop, stop_cb, &d);
        proxy_free(d.proxy);
    }
    free(cluster);
    free(db);
    free(drone_db);
    free(backends);
    free(controller_url);
    buf_release(&err);
    return rc < 0 ? 1 : 0;
}
