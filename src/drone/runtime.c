/* SPDX-License-Identifier: MIT */
/*
 * runtime.c - the table of runtimes and the only caller of runtime_ops.
 * It owns the life of every operation: implementations start work and call
 * runtime_op_complete(); this file queues the result and runs the caller's
 * callback from a check handle (right after the loop polls for I/O, with an
 * idle handle keeping the poll from blocking meanwhile), so callbacks never
 * run inside the call that started them, they run before timers that were
 * started after the operation finished, and a cancelled operation's callback
 * never runs at all.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "runtime.h"

static const struct runtime_ops *const runtimes[] = {
    &runtime_process_ops,
    &runtime_mock_ops,
    &runtime_executor_ops,
    &runtime_docker_ops,
    &runtime_oci_ops,
};

#define DEFAULT_GRACE_MS 30000u          /* spec §14.5, §19 */
#define DEFAULT_READY_TIMEOUT_MS 300000u /* spec §14.8 */
#define DEFAULT_METRICS_INTERVAL_MS 10000u

const struct runtime_ops *runtime_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(runtimes); i++)
        if (strcmp(runtimes[i]->name, name) == 0)
            return runtimes[i];
    return NULL;
}

const char *runtime_names(void)
{
    return "process|mock|executor|docker|oci";
}

static void deliver_cb(uv_check_t *check);
static void nudge_cb(uv_idle_t *idle)
{
    (void)idle;
}

int runtime_open(struct runtime **out, const struct runtime_ops *ops, const struct runtime_config *cfg,
                 struct buf *err)
{
    struct runtime *rt = NULL;
    int rc;

    *out = NULL;
    if (!cfg->loop || !cfg->on_exit)
        BUG("runtime_open without a loop or an exit callback");
    rc = ops->open(&rt, cfg, err);
    if (rc < 0)
        return rc;
    rt->ops = ops;
    rt->loop = cfg->loop;
    rt->on_exit = cfg->on_exit;
    rt->on_metrics = cfg->on_metrics;
    rt->cb_arg = cfg->cb_arg;
    rt->grace_ms = cfg->grace_ms ? cfg->grace_ms : DEFAULT_GRACE_MS;
    rt->ready_timeout_ms = cfg->ready_timeout_ms ? cfg->ready_timeout_ms : DEFAULT_READY_TIMEOUT_MS;
    rt->metrics_interval_ms = cfg->metrics_interval_ms ? cfg->metrics_interval_ms : DEFAULT_METRICS_INTERVAL_MS;
    list_init(&rt->inflight);
    list_init(&rt->done);
    uv_check_init(rt->loop, &rt->deliver);
    rt->deliver.data = rt;
    uv_idle_init(rt->loop, &rt->nudge);
    *out = rt;
    return 0;
}

bool runtime_has_cap(const struct runtime *rt, unsigned cap)
{
    return (rt->ops->caps & cap) == cap;
}

const char *runtime_name(const struct runtime *rt)
{
    return rt->ops->name;
}

static void op_free(struct runtime_op *op)
{
    list_remove(&op->node);
    free(op->backend_id);
    free(op->res.error);
    free(op->res.container_id);
    free(op);
}

static struct runtime_op *op_new(struct runtime *rt, enum runtime_op_kind kind, const char *backend_id,
                                 runtime_done_fn *cb, void *arg)
{
    struct runtime_op *op = xcalloc(1, sizeof(*op));

    op->rt = rt;
    op->kind = kind;
    op->cb = cb;
    op->arg = arg;
    op->backend_id = backend_id ? xstrdup(backend_id) : NULL;
    list_insert_tail(&rt->inflight, &op->node);
    return op;
}

static bool backend_id_ok(const char *id)
{
    /* Ids become file and container names: keep them to what §3.2 allows. */
    return id && *id && strlen(id) <= 64 && strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(id);
}

struct runtime_op *runtime_prepare(struct runtime *rt, const json_t *executable, runtime_done_fn *cb,
                                   void *arg)
{
    struct runtime_op *op = op_new(rt, RUNTIME_OP_PREPARE, NULL, cb, arg);

    if (rt->closing)
        runtime_op_complete(op, -ESHUTDOWN, "runtime is shutting down");
    else
        rt->ops->prepare(rt, op, executable);
    return op;
}

struct runtime_op *runtime_spawn(struct runtime *rt, const struct spawn_spec *spec, runtime_done_fn *cb,
                                 void *arg)
{
    struct runtime_op *op = op_new(rt, RUNTIME_OP_SPAWN, spec->backend_id, cb, arg);

    if (rt->closing)
        runtime_op_complete(op, -ESHUTDOWN, "runtime is shutting down");
    else if (!backend_id_ok(spec->backend_id))
        runtime_op_complete(op, -EINVAL, "invalid backend id '%s'", spec->backend_id ? spec->backend_id : "");
    else if (!spec->executable)
        runtime_op_complete(op, -EINVAL, "missing executable");
    else
        rt->ops->spawn(rt, op, spec);
    return op;
}

struct runtime_op *runtime_wait_ready(struct runtime *rt, const char *backend_id, const char *address,
                                      runtime_done_fn *cb, void *arg)
{
    struct runtime_op *op = op_new(rt, RUNTIME_OP_WAIT_READY, backend_id, cb, arg);

    if (rt->closing)
        runtime_op_complete(op, -ESHUTDOWN, "runtime is shutting down");
    else if (!backend_id_ok(backend_id))
        runtime_op_complete(op, -EINVAL, "invalid backend id '%s'", backend_id ? backend_id : "");
    else
        rt->ops->wait_ready(rt, op, address);
    return op;
}

struct runtime_op *runtime_terminate(struct runtime *rt, const char *backend_id, bool hard,
                                     runtime_done_fn *cb, void *arg)
{
    struct runtime_op *op = op_new(rt, RUNTIME_OP_TERMINATE, backend_id, cb, arg);

    if (rt->closing)
        runtime_op_complete(op, -ESHUTDOWN, "runtime is shutting down");
    else if (!backend_id_ok(backend_id))
        /* Nothing by that name can be running here. */
        runtime_op_complete(op, 0, NULL);
    else
        rt->ops->terminate(rt, op, hard);
    return op;
}

struct runtime_op *runtime_freeze(struct runtime *rt, const char *backend_id, bool frozen, runtime_done_fn *cb,
                                  void *arg)
{
    struct runtime_op *op = op_new(rt, RUNTIME_OP_FREEZE, backend_id, cb, arg);

    if (rt->closing)
        runtime_op_complete(op, -ESHUTDOWN, "runtime is shutting down");
    else if (!rt->ops->freeze)
        runtime_op_complete(op, -ENOTSUP, "the %s runtime cannot freeze backends", rt->ops->name);
    else if (!backend_id_ok(backend_id))
        runtime_op_complete(op, -ESRCH, "backend %s is not running", backend_id ? backend_id : "");
    else
        rt->ops->freeze(rt, op, frozen);
    return op;
}

void runtime_op_cancel(struct runtime_op *op)
{
    if (!op || !op->cb)
        return;
    op->cb = NULL;
    if (!op->completed && op->rt->ops->cancel)
        op->rt->ops->cancel(op->rt, op);
}

bool runtime_op_is_cancelled(const struct runtime_op *op)
{
    return op->cb == NULL;
}

void runtime_cleanup(struct runtime *rt, int64_t min_age_ms)
{
    if (rt->ops->cleanup && !rt->closing)
        rt->ops->cleanup(rt, min_age_ms);
}

void runtime_op_complete(struct runtime_op *op, int status, const char *fmt, ...)
{
    struct runtime *rt = op->rt;
    va_list ap;

    if (op->completed)
        BUG("runtime %s: operation %d for '%s' completed twice", rt->ops->name, op->kind,
            op->backend_id ? op->backend_id : "");
    op->completed = true;
    op->res.status = status;
    if (status < 0) {
        if (fmt) {
            va_start(ap, fmt);
            op->res.error = xvasprintf(fmt, ap);
            va_end(ap);
        } else {
            op->res.error = xstrdup(strerror(-status));
        }
    }
    list_remove(&op->node);
    if (rt->closing) {
        /* Nobody is listening any more. */
        list_insert_tail(&rt->inflight, &op->node);
        op_free(op);
        return;
    }
    list_insert_tail(&rt->done, &op->node);
    if (!uv_is_active((uv_handle_t *)&rt->deliver)) {
        uv_check_start(&rt->deliver, deliver_cb);
        uv_idle_start(&rt->nudge, nudge_cb);
    }
}

static void deliver_cb(uv_check_t *check)
{
    struct runtime *rt = check->data;
    struct list_node batch;
    struct list_node *pos, *tmp;

    /* Take the current batch: callbacks may complete further operations. */
    list_init(&batch);
    if (!list_empty(&rt->done)) {
        batch.next = rt->done.next;
        batch.prev = rt->done.prev;
        batch.next->prev = &batch;
        batch.prev->next = &batch;
        list_init(&rt->done);
    }
    list_for_each_safe(pos, tmp, &batch) {
        struct runtime_op *op = list_entry(pos, struct runtime_op, node);
        runtime_done_fn *cb = op->cb;
        list_remove(&op->node);
        list_insert_tail(&rt->inflight, &op->node); /* so op_free can unlink it */
        if (cb && !rt->closing)
            cb(op->arg, &op->res);
        op_free(op);
    }
    if (list_empty(&rt->done)) {
        uv_check_stop(&rt->deliver);
        uv_idle_stop(&rt->nudge);
    }
}

void runtime_emit_exit(struct runtime *rt, const char *backend_id, int exit_code)
{
    if (rt->closing)
        return;
    rt->on_exit(rt->cb_arg, backend_id, exit_code);
}

void runtime_emit_metrics(struct runtime *rt, const struct backend_metrics *m)
{
    if (rt->on_metrics && !rt->closing)
        rt->on_metrics(rt->cb_arg, m);
}

struct close_req {
    struct runtime *rt;
    void (*done)(void *ptr);
    void *ptr;
};

static void runtime_finish_close(struct runtime *rt)
{
    runtime_close_fn *cb = rt->close_cb;
    void *arg = rt->close_arg;
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &rt->inflight)
        op_free(list_entry(pos, struct runtime_op, node));
    list_for_each_safe(pos, tmp, &rt->done)
        op_free(list_entry(pos, struct runtime_op, node));
    rt->ops->free(rt);
    if (cb)
        cb(arg);
}

static void handle_closed(uv_handle_t *h)
{
    struct close_req *req = h->data;
    struct runtime *rt = req->rt;

    if (req->done)
        req->done(req->ptr);
    free(req);
    if (rt->open_handles == 0)
        BUG("runtime %s: more handles closed than opened", rt->ops->name);
    if (--rt->open_handles == 0 && rt->closing)
        runtime_finish_close(rt);
}

void runtime_close_handle(struct runtime *rt, uv_handle_t *handle, void (*done)(void *ptr), void *ptr)
{
    struct close_req *req;

    if (uv_is_closing(handle))
        BUG("runtime %s: handle closed twice", rt->ops->name);
    req = xmalloc(sizeof(*req));
    req->rt = rt;
    req->done = done;
    req->ptr = ptr;
    handle->data = req;
    rt->open_handles++;
    uv_close(handle, handle_closed);
}

void runtime_close(struct runtime *rt, runtime_close_fn *cb, void *arg)
{
    struct list_node *pos, *tmp;

    if (!rt)
        return;
    if (rt->closing)
        BUG("runtime %s: closed twice", rt->ops->name);
    rt->closing = true;
    rt->close_cb = cb;
    rt->close_arg = arg;
    list_for_each_safe(pos, tmp, &rt->inflight)
        list_entry(pos, struct runtime_op, node)->cb = NULL;
    list_for_each_safe(pos, tmp, &rt->done)
        list_entry(pos, struct runtime_op, node)->cb = NULL;
    /* The base's own handle counts too, so free runs after the last one. */
    runtime_close_handle(rt, (uv_handle_t *)&rt->deliver, NULL, NULL);
    runtime_close_handle(rt, (uv_handle_t *)&rt->nudge, NULL, NULL);
    rt->ops->close(rt);
}

int runtime_limit(const json_t *limits, const char *name, int64_t max, int64_t *out, struct buf *err)
{
    const json_t *v = json_object_get(limits, name);

    *out = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max) {
        buf_printf(err, "resource_limits.%s must be an integer from 0 to %" PRId64, name, max);
        return -EINVAL;
    }
    *out = json_integer_value(v);
    return 0;
}
