/* SPDX-License-Identifier: MIT */
/*
 * runtime_driver.h - drives one runtime through the runtime interface on a
 * libuv loop, as the drone does, for the benchmarks: open (and prepare the
 * executable), spawn until ready, stop, close. Header-only, like
 * bench_util.h: each benchmark is one program.
 */
#ifndef PLANE_BENCH_RUNTIME_DRIVER_H
#define PLANE_BENCH_RUNTIME_DRIVER_H

#include <stdio.h>
#include <stdlib.h>

#include "../src/common/log.h"
#include "../src/common/net.h"
#include "../src/common/xalloc.h"
#include "../src/drone/runtime.h"
#include "bench_util.h"

struct bench {
    uv_loop_t *loop;
    struct runtime *rt;
    json_t *exe;
    bool ready, exited, failed, done;
    char id[32];
    uint16_t port;
    char *container_id;
};

static inline void on_exit_cb(void *arg, const char *id, int code)
{
    struct bench *b = arg;

    (void)id;
    (void)code;
    b->exited = true;
}

static inline void on_ready(void *arg, const struct runtime_result *res)
{
    struct bench *b = arg;

    if (res->status < 0) {
        fprintf(stderr, "wait_ready: %s\n", res->error);
        b->failed = true;
    }
    b->ready = true;
}

static inline void on_spawned(void *arg, const struct runtime_result *res)
{
    struct bench *b = arg;
    char addr[NET_ADDR_LEN];

    if (res->status < 0) {
        fprintf(stderr, "spawn: %s\n", res->error);
        b->failed = b->ready = true;
        return;
    }
    b->port = res->port;
    free(b->container_id);
    b->container_id = xstrdup(res->container_id ? res->container_id : "");
    net_addr_format(addr, "127.0.0.1", res->port);
    runtime_wait_ready(b->rt, b->id, addr, on_ready, b);
}

static inline void on_done(void *arg, const struct runtime_result *res)
{
    struct bench *b = arg;

    if (res->status < 0) {
        fprintf(stderr, "%s\n", res->error);
        b->failed = true;
    }
    b->done = true;
}

static inline void run_until(struct bench *b, bool *flag)
{
    while (!*flag)
        uv_run(b->loop, UV_RUN_ONCE);
    if (b->failed)
        exit(1);
}

static inline struct bench *bench_open(uv_loop_t *loop, const struct runtime_ops *ops, struct runtime_config *cfg,
                                json_t *exe)
{
    struct bench *b = xcalloc(1, sizeof(*b));
    struct buf err = BUF_INIT;

    b->loop = loop;
    b->exe = exe;
    cfg->loop = loop;
    cfg->on_exit = on_exit_cb;
    cfg->cb_arg = b;
    if (runtime_open(&b->rt, ops, cfg, &err) < 0) {
        fprintf(stderr, "%s runtime: %s\n", ops->name, buf_cstr(&err));
        buf_release(&err);
        json_decref(exe);
        free(b);
        return NULL;
    }
    runtime_prepare(b->rt, exe, on_done, b);
    run_until(b, &b->done);
    return b;
}

/* Spawn until ready; the backend is left running (stop it with bench_stop). */
static inline double bench_start(struct bench *b, int i)
{
    struct spawn_spec spec = {.backend_id = b->id, .executable = b->exe};

    snprintf(b->id, sizeof(b->id), "b%d", i);
    b->ready = b->exited = false;
    double t0 = now_ms();
    runtime_spawn(b->rt, &spec, on_spawned, b);
    run_until(b, &b->ready);
    return now_ms() - t0;
}

static inline void bench_stop(struct bench *b)
{
    runtime_terminate(b->rt, b->id, true, NULL, NULL);
    run_until(b, &b->exited);
}

static inline double bench_once(struct bench *b, int i)
{
    double dt = bench_start(b, i);

    bench_stop(b);
    return dt;
}

/* Closes the runtime; its loop must run afterwards (once every runtime of it is closed). */
static inline void bench_close(struct bench *b)
{
    if (!b)
        return;
    runtime_close(b->rt, NULL, NULL);
    json_decref(b->exe);
    free(b->container_id);
    free(b);
}

#endif
