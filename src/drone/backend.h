/* SPDX-License-Identifier: MIT */
/*
 * backend.h - the life of one backend on a drone (spec §11.2): scheduled ->
 * loading -> starting -> waiting -> ready -> terminating -> hard-terminating
 * -> terminated. Only backend.c changes a backend's state; the runtime
 * reports facts ("exited 137") through backend_exited(), and the drone asks
 * for termination through backend_terminate(). Every state entered is
 * persisted in the state store first, then reported through env->on_state.
 */
#ifndef PLANE_BACKEND_H
#define PLANE_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "../common/backend_state.h"
#include "../common/list.h"
#include "runtime.h"

struct backend;
struct state_store;
struct metric_counter;
struct metric_histogram;

/* Runtime operation metrics, optional: indexed by enum runtime_op_kind. */
struct backend_metrics_sink {
    struct metric_histogram *seconds[4];
    struct metric_counter *ok[4], *failed[4];
};

struct backend_env {
    uv_loop_t *loop;          /* borrowed */
    struct runtime *rt;       /* borrowed */
    struct state_store *store; /* borrowed */
    const char *ip;           /* the drone's address: backends are at ip:port */
    /* A state was entered and recorded as event_id (0 if recording failed). */
    void (*on_state)(void *arg, struct backend *b, int64_t event_id, const struct backend_state *st,
                     int64_t timestamp_ms);
    void *arg;
    struct backend_metrics_sink *metrics; /* may be NULL */
};

struct backend {
    struct list_node node; /* for the drone's use */
    const struct backend_env *env;
    char *id;              /* owned */
    json_t *executable;    /* owned reference */
    char *key_name, *key_namespace, *key_tag; /* owned */
    struct acquired_key key; /* strings borrow the three above */
    bool has_key;
    char *static_token;    /* owned, or NULL */
    struct backend_state state;
    int pid;               /* its main process, once spawned, if the runtime tells; else 0 */
    bool fenced;           /* the drone has armed the lease fence for it */
    struct runtime_op *op; /* the current state's operation, or NULL */
    uint64_t op_started;   /* uv_hrtime() when op began */
    uv_timer_t retry;      /* terminate retries */
    unsigned retry_ms;
    bool want_frozen;      /* what the controller asked last (freeze on idle) */
    bool closing;
};

/* A backend in no state yet; backend_start() begins its life. Copies what it keeps. */
struct backend *backend_new(const struct backend_env *env, const char *id, const json_t *executable,
                            const struct acquired_key *key, const char *static_token);
/* Enters scheduled, then runs the machine. */
void backend_start(struct backend *b);
/*
 * Adopts a backend found in the state store at startup (§13.1) in state st,
 * without running anything: the caller terminates it.
 */
void backend_adopt(struct backend *b, const struct backend_state *st);
/* Converts the state by the §11.2 rules and (re)sends the stop request. */
void backend_terminate(struct backend *b, enum termination_kind kind, enum termination_reason reason);
/*
 * Freezes a ready backend (frozen: its processes stopped, its sockets open)
 * or thaws it; the state becomes ready with "frozen" once the runtime has
 * done it. Ignored in any other state; the last request wins. A backend the
 * runtime cannot freeze is soft-terminated as swept instead.
 */
void backend_freeze(struct backend *b, bool frozen);
/* The runtime says the backend is gone. */
void backend_exited(struct backend *b, bool has_code, int exit_code);
bool backend_is_terminated(const struct backend *b);
/* Cancels what is in flight and frees b once its handles are closed. */
void backend_free(struct backend *b);

#endif
