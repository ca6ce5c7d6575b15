/* SPDX-License-Identifier: MIT */
/*
 * drone.h - `plane drone`: an agent on a host that runs backends with one
 * runtime and keeps the controller informed (spec §7, §11-§13).
 */
#ifndef PLANE_DRONE_H
#define PLANE_DRONE_H

#include <uv.h>

#include "../common/buf.h"
#include "runtime.h"

struct drone;

struct drone_config {
    const char *name;            /* dr-...; random if NULL */
    const char *controller_url;  /* http(s):// or ws(s)://, may carry a bearer token as user */
    const char *cluster;
    const char *pool;            /* "" by default */
    const char *ip;              /* address proxies reach backends at */
    const char *db_path;         /* state store; NULL = in memory */
    const struct runtime_ops *runtime;
    int metrics_port;            /* serve /metrics on 127.0.0.1:port; 0: none */
    int64_t cleanup_min_age_ms;  /* runtime cleanup every 60 s prunes what is older than this */
    struct runtime_config runtime_config; /* loop and callbacks are filled in by the drone */
};

/* Opens the runtime and the store, terminates what a previous run left (§13.1), connects. */
int drone_start(struct drone **out, uv_loop_t *loop, const struct drone_config *cfg, struct buf *err);
/* Disconnects, stops every backend the runtime stops on close, frees the drone asynchronously. */
void drone_stop(struct drone *d);
const char *drone_name(const struct drone *d);

/* The `plane drone` subcommand. */
int drone_main(int argc, char **argv);

#endif
