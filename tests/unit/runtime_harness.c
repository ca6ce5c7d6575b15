/* SPDX-License-Identifier: MIT */
/*
 * runtime_harness.c - see runtime_harness.h.
 */
#include <stdio.h>

#include "../../src/common/net.h"
#include "runtime_harness.h"

static void h_exit(void *arg, const char *id, int code)
{
    struct harness *h = arg;

    if (h->nexits < 64) {
        snprintf(h->exit_ids[h->nexits], sizeof(h->exit_ids[0]), "%s", id);
        h->exit_codes[h->nexits] = code;
    }
    h->nexits++;
}

static void h_metrics(void *arg, const struct backend_metrics *m)
{
    struct harness *h = arg;

    h->nmetrics++;
    h->last_metrics = *m;
    snprintf(h->last_metrics_id, sizeof(h->last_metrics_id), "%s", m->backend_id);
    h->last_metrics.backend_id = h->last_metrics_id;
}

void harness_open(struct harness *h, const char *runtime, const struct runtime_config *base)
{
    struct runtime_config cfg = {0};
    struct buf err = BUF_INIT;
    const struct runtime_ops *ops = runtime_find(runtime);

    memset(h, 0, sizeof(*h));
    ASSERT_NOT_NULL(ops);
    if (base)
        cfg = *base;
    uv_loop_init(&h->loop);
    h->dir = test_tmpdir();
    cfg.loop = &h->loop;
    if (!cfg.data_dir)
        cfg.data_dir = h->dir;
    cfg.on_exit = h_exit;
    cfg.on_metrics = h_metrics;
    cfg.cb_arg = h;
    if (runtime_open(&h->rt, ops, &cfg, &err) != 0)
        test_fail(__FILE__, __LINE__, "runtime_open(%s): %s", runtime, buf_cstr(&err));
    buf_release(&err);
}

static void closed(void *arg)
{
    ((struct harness *)arg)->closed = true;
}

static bool is_closed(void *arg)
{
    return ((struct harness *)arg)->closed;
}

void harness_close(struct harness *h)
{
    runtime_close(h->rt, closed, h);
    if (!test_run_until(&h->loop, 5000, is_closed, h))
        test_fail(__FILE__, __LINE__, "runtime did not finish closing");
    uv_run(&h->loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&h->loop) != 0) {
        uv_print_all_handles(&h->loop, stderr);
        test_fail(__FILE__, __LINE__, "handles left open on the loop");
    }
    free(h->dir);
}

void on_result(void *arg, const struct runtime_result *res)
{
    struct result *r = arg;

    if (r->done)
        test_fail(__FILE__, __LINE__, "callback ran twice");
    r->done = true;
    r->status = res->status;
    r->port = res->port;
    r->pid = res->pid;
    r->was_running = res->was_running;
    snprintf(r->error, sizeof(r->error), "%s", res->error ? res->error : "");
    snprintf(r->container_id, sizeof(r->container_id), "%s", res->container_id ? res->container_id : "");
}

static bool result_done(void *arg)
{
    return ((struct result *)arg)->done;
}

void wait_result(struct harness *h, struct result *r, unsigned ms)
{
    if (!test_run_until(&h->loop, ms, result_done, r))
        test_fail(__FILE__, __LINE__, "no result within %u ms", ms);
}

struct exits_wait {
    struct harness *h;
    int n;
};

static bool exits_reached(void *arg)
{
    struct exits_wait *w = arg;

    return w->h->nexits >= w->n;
}

void wait_exits(struct harness *h, int n, unsigned ms)
{
    struct exits_wait w = {h, n};

    if (!test_run_until(&h->loop, ms, exits_reached, &w))
        test_fail(__FILE__, __LINE__, "%d exits after %u ms, wanted %d", h->nexits, ms, n);
}

int exit_code_of(struct harness *h, const char *id)
{
    for (int i = 0; i < h->nexits && i < 64; i++)
        if (strcmp(h->exit_ids[i], id) == 0)
            return h->exit_codes[i];
    return -1000;
}

uint16_t spawn_ok(struct harness *h, const char *id, json_t *executable)
{
    struct result r = {0};
    struct spawn_spec spec = {.backend_id = id, .executable = executable};

    runtime_spawn(h->rt, &spec, on_result, &r);
    ASSERT_FALSE(r.done); /* never from inside the call */
    wait_result(h, &r, 5000);
    if (r.status != 0)
        test_fail(__FILE__, __LINE__, "spawn %s: %s", id, r.error);
    ASSERT_TRUE(r.port > 0);
    return r.port;
}

int ready_status(struct harness *h, const char *id, uint16_t port, unsigned ms, struct result *out)
{
    struct result r = {0};
    char addr[NET_ADDR_LEN];

    net_addr_format(addr, "127.0.0.1", port);
    runtime_wait_ready(h->rt, id, addr, on_result, &r);
    wait_result(h, &r, ms);
    if (out)
        *out = r;
    return r.status;
}

json_t *harness_env(const char *first, va_list ap)
{
    json_t *env = json_object();

    for (const char *kv = first; kv; kv = va_arg(ap, const char *)) {
        const char *eq = strchr(kv, '=');
        char *k = strndup(kv, (size_t)(eq - kv));
        json_object_set_new(env, k, json_string(eq + 1));
        free(k);
    }
    return env;
}
