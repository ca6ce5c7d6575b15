/* SPDX-License-Identifier: MIT */
/*
 * backend.c - the per-backend state machine of spec §11.2 (see backend.h).
 * Entering a state cancels the operation of the previous one, persists and
 * reports the new state, then starts that state's runtime operation; the
 * operation's result picks the next state. Terminate requests that fail in
 * the runtime are retried with backoff (1 s x1.1, at most 60 s).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../common/metrics.h"
#include "../common/net.h"
#include "../common/xalloc.h"
#include "backend.h"
#include "state_store.h"

#define RETRY_FIRST_MS 1000
#define RETRY_MAX_MS 60000

static void enter(struct backend *b, struct backend_state st);

struct backend *backend_new(const struct backend_env *env, const char *id, const json_t *executable,
                            const struct acquired_key *key, const char *static_token)
{
    struct backend *b = xcalloc(1, sizeof(*b));

    b->env = env;
    b->id = xstrdup(id);
    b->executable = executable ? json_deep_copy(executable) : json_null();
    if (key) {
        b->key = *key;
        b->key_name = xstrdup(key->name ? key->name : "");
        b->key_namespace = xstrdup(key->namespace ? key->namespace : "");
        b->key_tag = xstrdup(key->tag ? key->tag : "");
        b->key.name = b->key_name;
        b->key.namespace = b->key_namespace;
        b->key.tag = b->key_tag;
        b->has_key = true;
    }
    b->static_token = static_token ? xstrdup(static_token) : NULL;
    b->retry_ms = RETRY_FIRST_MS;
    list_init(&b->node);
    uv_timer_init(env->loop, &b->retry);
    b->retry.data = b;
    return b;
}

bool backend_is_terminated(const struct backend *b)
{
    return b->state.status == BACKEND_TERMINATED;
}

static void cancel_op(struct backend *b)
{
    runtime_op_cancel(b->op);
    b->op = NULL;
    uv_timer_stop(&b->retry);
}

/* ---- results of each state's operation ---- */

static void observe(struct backend *b, enum runtime_op_kind kind, int status)
{
    struct backend_metrics_sink *m = b->env->metrics;

    if (!m)
        return;
    metric_histogram_observe(m->seconds[kind], (double)(uv_hrtime() - b->op_started) / 1e9);
    metric_counter_add(status < 0 ? m->failed[kind] : m->ok[kind], 1);
}

static void prepared(void *arg, const struct runtime_result *res)
{
    struct backend *b = arg;

    observe(b, RUNTIME_OP_PREPARE, res->status);
    b->op = NULL;
    if (res->status < 0) {
        log_warn("backend %s: prepare failed: %s", b->id, res->error);
        enter(b, backend_state_terminated(&b->state, false, 0));
        return;
    }
    enter(b, backend_state_simple(BACKEND_STARTING));
}

static void spawned(void *arg, const struct runtime_result *res)
{
    struct backend *b = arg;
    char addr[NET_ADDR_LEN];

    observe(b, RUNTIME_OP_SPAWN, res->status);
    b->op = NULL;
    if (res->status < 0) {
        log_warn("backend %s: spawn failed: %s", b->id, res->error);
        enter(b, backend_state_terminated(&b->state, false, 0));
        return;
    }
    net_addr_format(addr, b->env->ip, res->port);
    b->pid = res->pid;
    enter(b, backend_state_at(BACKEND_WAITING, addr));
}

static void became_ready(void *arg, const struct runtime_result *res)
{
    struct backend *b = arg;

    observe(b, RUNTIME_OP_WAIT_READY, res->status);
    b->op = NULL;
    if (res->status == -ETIMEDOUT) {
        log_warn("backend %s: did not become ready in time", b->id);
        enter(b, backend_state_hard_terminating(&b->state, REASON_STARTUPTIMEOUT));
    } else if (res->status < 0) {
        log_warn("backend %s: readiness failed: %s", b->id, res->error);
        enter(b, backend_state_hard_terminating(&b->state, REASON_INTERNALERROR));
    } else {
        enter(b, backend_state_at(BACKEND_READY, b->state.address));
    }
}

static void start_freeze(struct backend *b);

static void freeze_done(void *arg, const struct runtime_result *res)
{
    struct backend *b = arg;
    struct backend_state st = b->state;
    bool frozen = !st.frozen;

    b->op = NULL;
    if (res->status < 0 && frozen) {
        /* Idle and cannot be frozen (a runtime without a freezer): swept, as without "freeze". */
        log_warn("backend %s: cannot freeze (%s), terminating it as idle", b->id, res->error);
        backend_terminate(b, TERMINATION_SOFT, REASON_SWEPT);
        return;
    }
    if (res->status < 0) {
        log_warn("backend %s: cannot thaw: %s", b->id, res->error);
        return; /* stays frozen; the next request or connect asks again */
    }
    st.frozen = frozen;
    enter(b, st);
    if (b->state.status == BACKEND_READY && b->state.frozen != b->want_frozen)
        start_freeze(b); /* asked the other way meanwhile */
}

static void start_freeze(struct backend *b)
{
    b->op_started = uv_hrtime();
    b->op = runtime_freeze(b->env->rt, b->id, !b->state.frozen, freeze_done, b);
}

static void send_stop(struct backend *b);

static void retry_cb(uv_timer_t *t)
{
    send_stop(t->data);
}

static void stopped(void *arg, const struct runtime_result *res)
{
    struct backend *b = arg;

    observe(b, RUNTIME_OP_TERMINATE, res->status);
    b->op = NULL;
    if (res->status < 0) {
        log_warn("backend %s: terminate failed: %s (retrying in %u ms)", b->id, res->error, b->retry_ms);
        uv_timer_start(&b->retry, retry_cb, b->retry_ms, 0);
        b->retry_ms = b->retry_ms * 11 / 10 > RETRY_MAX_MS ? RETRY_MAX_MS : b->retry_ms * 11 / 10;
        return;
    }
    b->retry_ms = RETRY_FIRST_MS;
    if (!res->was_running)
        enter(b, backend_state_terminated(&b->state, false, 0));
    /* Otherwise the runtime's exit event finishes the job. */
}

static void send_stop(struct backend *b)
{
    bool hard = b->state.status == BACKEND_HARD_TERMINATING;

    if (b->state.status != BACKEND_TERMINATING && !hard)
        return;
    runtime_op_cancel(b->op);
    b->op_started = uv_hrtime();
    b->op = runtime_terminate(b->env->rt, b->id, hard, stopped, b);
}

/* ---- entering states ---- */

static void record(struct backend *b)
{
    int64_t ts = clock_epoch_ms();
    int64_t event_id = state_store_record(b->env->store, b->id, &b->state, ts);

    if (event_id < 0) {
        log_error("backend %s: cannot record state %s", b->id, backend_status_name(b->state.status));
        event_id = 0;
    }
    log_info("backend %s: %s%s", b->id, backend_status_name(b->state.status), b->state.frozen ? " (frozen)" : "");
    if (b->env->on_state)
        b->env->on_state(b->env->arg, b, event_id, &b->state, ts);
}

static void enter(struct backend *b, struct backend_state st)
{
    struct spawn_spec spec;

    if (b->closing)
        return;
    cancel_op(b);
    b->state = st;
    record(b);
    if (b->closing || b->state.status != st.status)
        return; /* the report changed things (e.g. the owner let go of us) */
    switch (st.status) {
    case BACKEND_SCHEDULED:
        enter(b, backend_state_simple(BACKEND_LOADING));
        break;
    case BACKEND_LOADING:
        b->op_started = uv_hrtime();
        b->op = runtime_prepare(b->env->rt, b->executable, prepared, b);
        break;
    case BACKEND_STARTING:
        spec.backend_id = b->id;
        spec.executable = b->executable;
        spec.key = b->has_key ? &b->key : NULL;
        spec.static_token = b->static_token;
        b->op_started = uv_hrtime();
        b->op = runtime_spawn(b->env->rt, &spec, spawned, b);
        break;
    case BACKEND_WAITING:
        b->op_started = uv_hrtime();
        b->op = runtime_wait_ready(b->env->rt, b->id, b->state.address, became_ready, b);
        break;
    case BACKEND_TERMINATING:
    case BACKEND_HARD_TERMINATING:
        b->retry_ms = RETRY_FIRST_MS;
        send_stop(b);
        break;
    case BACKEND_READY:
    case BACKEND_TERMINATED:
        break;
    }
}

void backend_start(struct backend *b)
{
    enter(b, backend_state_simple(BACKEND_SCHEDULED));
}

void backend_adopt(struct backend *b, const struct backend_state *st)
{
    b->state = *st;
}

void backend_terminate(struct backend *b, enum termination_kind kind, enum termination_reason reason)
{
    struct backend_state st = kind == TERMINATION_HARD ? backend_state_hard_terminating(&b->state, reason)
                                                       : backend_state_terminating(&b->state, reason);

    if (b->state.status == BACKEND_TERMINATED)
        return;
    if (st.status == b->state.status) {
        /* Unchanged: ask the runtime again, without a new state event. */
        if (!uv_is_active((uv_handle_t *)&b->retry))
            send_stop(b);
        return;
    }
    enter(b, st);
}

void backend_freeze(struct backend *b, bool frozen)
{
    b->want_frozen = frozen;
    /* One freeze or thaw at a time: freeze_done looks at want_frozen again. */
    if (b->closing || b->state.status != BACKEND_READY || b->op || b->state.frozen == frozen)
        return;
    start_freeze(b);
}

void backend_exited(struct backend *b, bool has_code, int exit_code)
{
    if (b->state.status == BACKEND_TERMINATED)
        return;
    enter(b, backend_state_terminated(&b->state, has_code, exit_code));
}

static void backend_closed(uv_handle_t *h)
{
    struct backend *b = h->data;

    json_decref(b->executable);
    free(b->key_name);
    free(b->key_namespace);
    free(b->key_tag);
    free(b->static_token);
    free(b->id);
    free(b);
}

void backend_free(struct backend *b)
{
    if (!b || b->closing)
        return;
    b->closing = true;
    cancel_op(b);
    list_remove(&b->node);
    uv_close((uv_handle_t *)&b->retry, backend_closed);
}
