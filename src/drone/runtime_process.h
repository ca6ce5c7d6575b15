/* SPDX-License-Identifier: MIT */
/*
 * runtime_process.h - the machinery of the process runtime, shared with the
 * runtimes whose backends are child processes of the drone too. A flavour
 * says how an executable is made startable and which command starts it; the
 * machinery does the rest: the port, the log, the cgroup, starting it,
 * readiness, terminate, exits, metrics and what a killed drone left behind.
 * runtime_process.c is the plain flavour (the command is the backend);
 * runtime_oci.c runs `crun run` of a bundle made from an image.
 */
#ifndef PLANE_RUNTIME_PROCESS_H
#define PLANE_RUNTIME_PROCESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "cgroup.h"
#include "runtime.h"

/* What to start for one backend; everything owned (process_command_release() frees it). */
struct process_command {
    char *program;               /* absolute path */
    char **argv;                 /* NULL-terminated */
    char **env;                  /* NULL-terminated NAME=VALUE */
    char *cwd;
    struct cgroup_limits limits; /* memory and CPU, in the backend's cgroup */
    int64_t cpu_time_limit;      /* seconds of CPU (RLIMIT_CPU); 0: none */
};

struct process_flavour {
    /* Checks the executable and makes it startable; completes op, now or later. */
    void (*prepare)(struct runtime *rt, struct runtime_op *op, const json_t *executable);
    /*
     * The command for spec, which must listen on port; dir is the backend's
     * own directory (created). 0, or -errno with a line in err.
     */
    int (*command)(struct runtime *rt, const struct spawn_spec *spec, uint16_t port, const char *dir,
                   struct process_command *out, struct buf *err);
    /* Optional: backend_id is gone (also one a previous run left): remove what command made. */
    void (*forget)(void *data, const char *backend_id);
    /* Optional: the runtime is closing; stop background work (no handles of its own). */
    void (*close)(struct runtime *rt);
    /* Optional: frees the flavour's data. */
    void (*free)(void *data);
    bool always_cgroup;   /* every backend gets a cgroup, limits or not */
    bool soft_to_leader;  /* soft terminate signals the leader alone (it forwards the signal) */
    bool hide_cgroup2;    /* start the leader in a mount namespace without /sys/fs/cgroup/unified */
};

/*
 * Opens a runtime of this machinery with flavour f and its data (owned: f->free
 * frees it, also on error). On error -errno, a line in err.
 */
int process_runtime_open(struct runtime **out, const struct runtime_config *cfg, const struct process_flavour *f,
                         void *data, struct buf *err);
/* The flavour's data given to process_runtime_open(). */
void *process_runtime_data(struct runtime *rt);
/* The data directory of the runtime (logs/, run/, backends/ live there). */
const char *process_runtime_dir(struct runtime *rt);
/* The cgroups this host offers. */
const struct cgroup_host *process_runtime_cgroups(struct runtime *rt);

/*
 * The environment of a backend: base (NAME=VALUE, may be NULL) where the
 * user's env (an object of strings, may be NULL) does not set the name, then
 * the user's, then ours, which win (PORT and the §18 SESSION_BACKEND_*).
 */
char **process_env(const char *const *base, const json_t *user_env, const struct spawn_spec *spec, uint16_t port);
/*
 * Reads what every flavour's executable may say about the backend's
 * process: "env" (an object of strings, *env NULL when absent), "cwd" (an
 * absolute path, *cwd NULL when absent) and "resource_limits" (§4.6, into
 * limits; disk_limit_bytes is refused). Borrowed from x. 0, or -errno with
 * a line in err.
 */
int process_exec_common(const json_t *x, const json_t **env, const char **cwd, struct process_command *limits,
                        struct buf *err);
void process_command_release(struct process_command *cmd);
void process_strv_free(char **v);
/* mkdir that accepts an existing directory; 0 or -errno. */
int process_ensure_dir(const char *path, mode_t mode);

/* A flavour's runtime_ops: its name and open, then PROCESS_RUNTIME_OPS (the machinery's operations). */
#define PROCESS_RUNTIME_OPS                                                                                    \
    .caps = RUNTIME_CAP_METRICS | RUNTIME_CAP_LIMITS | RUNTIME_CAP_FREEZE, .close = process_rt_close,           \
    .free = process_rt_free, .prepare = process_rt_prepare, .spawn = process_rt_spawn,                          \
    .wait_ready = process_rt_wait_ready, .terminate = process_rt_terminate, .freeze = process_rt_freeze,       \
    .cancel = process_rt_cancel, .cleanup = process_rt_cleanup

/* The operations every flavour shares. */
void process_rt_close(struct runtime *rt);
void process_rt_free(struct runtime *rt);
void process_rt_prepare(struct runtime *rt, struct runtime_op *op, const json_t *executable);
void process_rt_spawn(struct runtime *rt, struct runtime_op *op, const struct spawn_spec *spec);
void process_rt_wait_ready(struct runtime *rt, struct runtime_op *op, const char *address);
void process_rt_terminate(struct runtime *rt, struct runtime_op *op, bool hard);
void process_rt_freeze(struct runtime *rt, struct runtime_op *op, bool frozen);
void process_rt_cancel(struct runtime *rt, struct runtime_op *op);
void process_rt_cleanup(struct runtime *rt, int64_t min_age_ms);

#endif
