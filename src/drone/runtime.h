/* SPDX-License-Identifier: MIT */
/*
 * runtime.h - what the drone needs from anything that runs backends (spec
 * §14.1): prepare, spawn, wait_ready, terminate, plus exit and metrics
 * events. A runtime is a struct of function pointers (struct runtime_ops)
 * and a base struct embedded first in each implementation; the drone core
 * calls the runtime_*() wrappers below and never learns whether a backend is
 * a container, a child process or a program behind a Unix socket.
 *
 * Every operation is asynchronous on the caller's libuv loop. Starting one
 * returns a handle (struct runtime_op) and its callback runs exactly once,
 * always later from the loop and never from inside the call that started
 * it, unless the caller cancels the operation first, in which case the
 * callback never runs. Exit events: once a spawn has succeeded the runtime
 * reports that backend's exit exactly once (a runtime wrapping another
 * process may repeat it after a reconnect; callers tolerate duplicates).
 */
#ifndef PLANE_RUNTIME_H
#define PLANE_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "../common/buf.h"
#include "../common/list.h"

struct runtime;
struct runtime_op;

/* Exit code for "the runtime could not tell" (JSON null on the wire). */
#define RUNTIME_EXIT_UNKNOWN INT32_MIN

/* BackendMetrics fields of spec §7.1/§14.7; memory in bytes, cpu in ns. */
struct backend_metrics {
    const char *backend_id; /* borrowed for the callback */
    uint64_t mem_used;
    uint64_t mem_total;
    uint64_t mem_active;
    uint64_t mem_inactive;
    uint64_t mem_unevictable;
    uint64_t mem_limit;
    uint64_t cpu_used; /* since the previous sample */
    uint64_t sys_cpu;  /* host cpu time since the previous sample */
};

/* The key a backend holds (spec §7.2 `key`, §15.2 AcquiredKey); all borrowed. */
struct acquired_key {
    const char *name;
    const char *namespace;
    const char *tag;
    int64_t renew_at; /* deadlines, epoch ms */
    int64_t soft_terminate_at;
    int64_t hard_terminate_at;
    int64_t token; /* the fencing token */
};

/* Arguments of spawn; all borrowed for the length of the call. */
struct spawn_spec {
    const char *backend_id;
    const json_t *executable;
    const struct acquired_key *key; /* NULL if none */
    const char *static_token;       /* NULL if none */
};

/* What an operation produced; borrowed by the callback for its duration. */
struct runtime_result {
    int status;         /* 0, or -errno; wait_ready's startup timeout is -ETIMEDOUT */
    char *error;        /* one line for humans when status < 0 */
    char *container_id; /* spawn: the runtime's name for the backend */
    uint16_t port;      /* spawn: where the backend listens */
    int pid;            /* spawn: its main process on this host, leading its process group; 0 if unknown */
    bool was_running;   /* terminate: a signal was delivered (false: already gone) */
};

typedef void runtime_done_fn(void *arg, const struct runtime_result *res);
/* A backend is gone; exit_code is RUNTIME_EXIT_UNKNOWN when it cannot be told. */
typedef void runtime_exit_fn(void *arg, const char *backend_id, int exit_code);
typedef void runtime_metrics_fn(void *arg, const struct backend_metrics *m);
typedef void runtime_close_fn(void *arg);

/* Settings of every runtime; each uses the ones that concern it. */
struct runtime_config {
    uv_loop_t *loop;                 /* borrowed; outlives the runtime */
    const char *data_dir;            /* process: logs, pid records, working dirs */
    const char *bind_ip;             /* address backends listen on (default 127.0.0.1) */
    unsigned grace_ms;               /* soft terminate: SIGKILL after this (default 30 s) */
    unsigned ready_timeout_ms;       /* wait_ready gives up after this (default 300 s) */
    unsigned metrics_interval_ms;    /* 0: the default 10 s */
    const char *executor_socket;     /* executor: the server's socket path */
    unsigned mock_port;              /* mock: the shared port, 0 for any free one */
    const char *docker_socket;       /* docker: the Engine API socket (default /var/run/docker.sock) */
    const char *docker_network;      /* docker: NULL the default bridge, "host", or a network name */
    const char *docker_runtime;      /* docker: HostConfig.Runtime (e.g. runsc), or NULL */
    const char *docker_log_config;   /* docker: HostConfig.LogConfig as JSON, or NULL */
    const char *mount_base;          /* docker: base directory of backend mounts (spec §14.4), or NULL */
    bool prune_images;               /* docker: cleanup also prunes unused images */
    const char *oci_runtime;         /* oci: the crun program (default: crun on PATH) */
    runtime_exit_fn *on_exit;        /* required */
    runtime_metrics_fn *on_metrics;  /* may be NULL */
    void *cb_arg;                    /* passed to on_exit and on_metrics */
};

#define RUNTIME_CAP_METRICS (1u << 0)     /* emits metrics events */
#define RUNTIME_CAP_SHARED_PORT (1u << 1) /* backends may share one address */
#define RUNTIME_CAP_LIMITS (1u << 2)      /* applies resource_limits */
#define RUNTIME_CAP_FREEZE (1u << 3)      /* implements freeze: idle backends frozen, not killed */

enum runtime_op_kind {
    RUNTIME_OP_PREPARE,
    RUNTIME_OP_SPAWN,
    RUNTIME_OP_WAIT_READY,
    RUNTIME_OP_TERMINATE,
    RUNTIME_OP_FREEZE, /* not counted in the drone's per-operation metrics */
};

/* An operation in flight. Implementations finish it with runtime_op_complete(). */
struct runtime_op {
    struct runtime *rt;      /* borrowed */
    enum runtime_op_kind kind;
    runtime_done_fn *cb;     /* NULL once cancelled */
    void *arg;
    char *backend_id;        /* owned; NULL for prepare */
    struct runtime_result res;
    bool completed;
    struct list_node node;   /* in rt->inflight, then rt->done */
    void *impl;              /* the implementation's per-operation state */
};

struct runtime_ops {
    const char *name; /* value of --runtime */
    unsigned caps;    /* RUNTIME_CAP_* */

    /* Allocates the implementation; runtime_open() fills in the base. */
    int (*open)(struct runtime **out, const struct runtime_config *cfg, struct buf *err);
    /* Stops every backend and closes every handle with runtime_close_handle(). */
    void (*close)(struct runtime *rt);
    /* Called once all handles are closed: frees the implementation. */
    void (*free)(struct runtime *rt);

    /* Each starts op and must finish it with runtime_op_complete() exactly once. */
    void (*prepare)(struct runtime *rt, struct runtime_op *op, const json_t *executable);
    void (*spawn)(struct runtime *rt, struct runtime_op *op, const struct spawn_spec *spec);
    void (*wait_ready)(struct runtime *rt, struct runtime_op *op, const char *address);
    void (*terminate)(struct runtime *rt, struct runtime_op *op, bool hard);
    /*
     * Optional (RUNTIME_CAP_FREEZE): stop every process of the backend where
     * it stands (frozen) or let it go on (!frozen). Its sockets stay open: a
     * connection made meanwhile waits in the listen queue until the thaw.
     * Terminating a frozen backend must work (thaw it first if need be).
     */
    void (*freeze)(struct runtime *rt, struct runtime_op *op, bool frozen);
    /* Optional: op was cancelled; stop its work early (still complete it). */
    void (*cancel)(struct runtime *rt, struct runtime_op *op);
    /* Optional: prune what terminated backends left behind (spec §14.9). */
    void (*cleanup)(struct runtime *rt, int64_t min_age_ms);
};

/* The base embedded first in every implementation. */
struct runtime {
    const struct runtime_ops *ops;
    uv_loop_t *loop;               /* borrowed */
    runtime_exit_fn *on_exit;
    runtime_metrics_fn *on_metrics;
    void *cb_arg;
    unsigned grace_ms;
    unsigned ready_timeout_ms;
    unsigned metrics_interval_ms;
    struct list_node inflight;     /* of struct runtime_op */
    struct list_node done;         /* completed, callbacks not yet run */
    uv_check_t deliver;            /* runs callbacks of completed operations */
    uv_idle_t nudge;               /* active while any wait: keeps the loop from blocking */
    unsigned open_handles;         /* handles being closed */
    bool closing;
    runtime_close_fn *close_cb;
    void *close_arg;
};

extern const struct runtime_ops runtime_process_ops, runtime_mock_ops, runtime_executor_ops, runtime_docker_ops,
    runtime_oci_ops;

/* The runtime named name (see runtime_names()), or NULL. */
const struct runtime_ops *runtime_find(const char *name);
/* "process|mock|executor|docker|oci": the names runtime_find() knows. */
const char *runtime_names(void);

/*
 * Opens a runtime. On error a negative errno is returned, *out is NULL and a
 * line is written to err.
 */
int runtime_open(struct runtime **out, const struct runtime_ops *ops, const struct runtime_config *cfg,
                 struct buf *err);
/*
 * Stops every backend, cancels every operation (no callback runs) and frees
 * the runtime; cb (may be NULL) runs once everything is closed.
 */
void runtime_close(struct runtime *rt, runtime_close_fn *cb, void *arg);
bool runtime_has_cap(const struct runtime *rt, unsigned cap);
const char *runtime_name(const struct runtime *rt);

/* Make executable startable (the `loading` state). */
struct runtime_op *runtime_prepare(struct runtime *rt, const json_t *executable, runtime_done_fn *cb,
                                   void *arg);
/* Start a backend (the `starting` state); the result carries its port. */
struct runtime_op *runtime_spawn(struct runtime *rt, const struct spawn_spec *spec, runtime_done_fn *cb,
                                 void *arg);
/* Probe address until the backend answers HTTP (spec §14.8; the `waiting` state). */
struct runtime_op *runtime_wait_ready(struct runtime *rt, const char *backend_id, const char *address,
                                      runtime_done_fn *cb, void *arg);
/* Stop a backend: soft (SIGTERM, SIGKILL after the grace period) or hard. */
struct runtime_op *runtime_terminate(struct runtime *rt, const char *backend_id, bool hard,
                                     runtime_done_fn *cb, void *arg);
/* Freeze or thaw a running backend; -ENOTSUP from a runtime that cannot. */
struct runtime_op *runtime_freeze(struct runtime *rt, const char *backend_id, bool frozen, runtime_done_fn *cb,
                                  void *arg);
/* The callback of op will not run; op must not be used afterwards. */
void runtime_op_cancel(struct runtime_op *op);
void runtime_cleanup(struct runtime *rt, int64_t min_age_ms);

/* For implementations. */

/* Finishes op: status 0, or -errno with a message (printf format). */
void runtime_op_complete(struct runtime_op *op, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool runtime_op_is_cancelled(const struct runtime_op *op);
/*
 * Reads resource_limits.<name> (§4.6): 0 (and *out 0) when absent or null,
 * -EINVAL with a line in err unless an integer from 0 to max.
 */
int runtime_limit(const json_t *limits, const char *name, int64_t max, int64_t *out, struct buf *err);
/* Reports an exit to the runtime's owner. */
void runtime_emit_exit(struct runtime *rt, const char *backend_id, int exit_code);
void runtime_emit_metrics(struct runtime *rt, const struct backend_metrics *m);
/*
 * Closes a handle of the runtime's; done(ptr), if given, runs once it is
 * closed (to free what holds it). handle->data is overwritten. Use it for
 * every handle, at any time: runtime_close() frees the runtime only after
 * the last of them has closed, and ops->close must close every handle
 * still open before returning.
 */
void runtime_close_handle(struct runtime *rt, uv_handle_t *handle, void (*done)(void *ptr), void *ptr);

#endif
