/* SPDX-License-Identifier: MIT */
/*
 * runtime_flags.c - runtime settings from the command line (see
 * runtime_flags.h). Option values start at 1000 so they never collide with
 * a command's own short letters.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/xalloc.h"
#include "runtime_flags.h"

enum {
    F_DATA_DIR = 1000,
    F_BIND_IP,
    F_GRACE,
    F_READY_TIMEOUT,
    F_METRICS_INTERVAL,
    F_MOCK_PORT,
    F_EXECUTOR_SOCKET,
    F_DOCKER_SOCKET,
    F_DOCKER_NETWORK,
    F_DOCKER_RUNTIME,
    F_LOG_CONFIG,
    F_MOUNT_BASE,
    F_PRUNE_IMAGES,
    F_OCI_RUNTIME,
};

static const struct option flags[] = {
    {"data-dir", required_argument, NULL, F_DATA_DIR},
    {"bind-ip", required_argument, NULL, F_BIND_IP},
    {"grace-period", required_argument, NULL, F_GRACE},
    {"ready-timeout", required_argument, NULL, F_READY_TIMEOUT},
    {"metrics-interval", required_argument, NULL, F_METRICS_INTERVAL},
    {"mock-port", required_argument, NULL, F_MOCK_PORT},
    {"executor-socket", required_argument, NULL, F_EXECUTOR_SOCKET},
    {"docker-socket", required_argument, NULL, F_DOCKER_SOCKET},
    {"docker-network", required_argument, NULL, F_DOCKER_NETWORK},
    {"docker-runtime", required_argument, NULL, F_DOCKER_RUNTIME},
    {"log-config", required_argument, NULL, F_LOG_CONFIG},
    {"mount-base", required_argument, NULL, F_MOUNT_BASE},
    {"auto-prune-images", no_argument, NULL, F_PRUNE_IMAGES},
    {"oci-runtime", required_argument, NULL, F_OCI_RUNTIME},
};

const char runtime_flags_usage[] =
    "runtime settings:\n"
    "  --data-dir DIR          process, oci: logs, pid records, working dirs, oci/ (default ./plane-data)\n"
    "  --bind-ip IP            process, mock: address backends listen on (default 127.0.0.1)\n"
    "  --grace-period SECS     soft terminate: SIGKILL after this (default 30)\n"
    "  --ready-timeout SECS    give up waiting for readiness after this (default 300)\n"
    "  --metrics-interval SECS metrics sampling period (default 10)\n"
    "  --mock-port N           mock: the shared port (default: any free port)\n"
    "  --executor-socket PATH  executor: the executor's socket\n"
    "  --docker-socket PATH    docker: the Engine API socket (default /var/run/docker.sock)\n"
    "  --docker-network NAME   docker: \"host\" for host networking, or a network name\n"
    "                          (default: the bridge, 8080/tcp published on a random port)\n"
    "  --docker-runtime NAME   docker: HostConfig.Runtime for containers (e.g. runsc)\n"
    "  --log-config JSON       docker: HostConfig.LogConfig, e.g. {\"Type\":\"json-file\",\"Config\":{}}\n"
    "  --mount-base PATH       docker: base directory of backend volume mounts\n"
    "  --auto-prune-images     docker: cleanup also prunes unused images\n"
    "  --oci-runtime PATH      oci: the crun program (default: crun on PATH)\n";

struct option *runtime_flags_options(const struct option *own)
{
    size_t n = 0;
    struct option *all;

    while (own[n].name)
        n++;
    all = xcalloc(n + ARRAY_SIZE(flags) + 1, sizeof(*all));
    memcpy(all, own, n * sizeof(*all));
    memcpy(all + n, flags, sizeof(flags));
    return all;
}

long runtime_flags_secs(const char *s)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 86400.0 * 365)
        return -1;
    return lround(v * 1000);
}

static int bad(const char *cmd, const char *what, const char *arg)
{
    fprintf(stderr, "plane %s: invalid %s '%s'\n", cmd, what, arg);
    return -1;
}

int runtime_flag_parse(int opt, const char *arg, struct runtime_config *cfg, const char *cmd)
{
    long v;
    char *end;

    switch (opt) {
    case F_DATA_DIR: cfg->data_dir = arg; return 1;
    case F_BIND_IP: cfg->bind_ip = arg; return 1;
    case F_GRACE:
    case F_READY_TIMEOUT:
    case F_METRICS_INTERVAL:
        v = runtime_flags_secs(arg);
        if (v <= 0 || v > UINT32_MAX)
            return bad(cmd, "duration (seconds)", arg);
        if (opt == F_GRACE)
            cfg->grace_ms = (unsigned)v;
        else if (opt == F_READY_TIMEOUT)
            cfg->ready_timeout_ms = (unsigned)v;
        else
            cfg->metrics_interval_ms = (unsigned)v;
        return 1;
    case F_MOCK_PORT:
        v = strtol(arg, &end, 10);
        if (*end || v < 1 || v > 65535)
            return bad(cmd, "port", arg);
        cfg->mock_port = (unsigned)v;
        return 1;
    case F_EXECUTOR_SOCKET: cfg->executor_socket = arg; return 1;
    case F_DOCKER_SOCKET: cfg->docker_socket = arg; return 1;
    case F_DOCKER_NETWORK: cfg->docker_network = arg; return 1;
    case F_DOCKER_RUNTIME: cfg->docker_runtime = arg; return 1;
    case F_LOG_CONFIG: cfg->docker_log_config = arg; return 1;
    case F_MOUNT_BASE: cfg->mount_base = arg; return 1;
    case F_PRUNE_IMAGES: cfg->prune_images = true; return 1;
    case F_OCI_RUNTIME: cfg->oci_runtime = arg; return 1;
    default: return 0;
    }
}
