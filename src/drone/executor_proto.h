/* SPDX-License-Identifier: MIT */
/*
 * executor_proto.h - the messages of the Unix-socket executor protocol
 * (spec §15): one JSON document per line, {"id":ID|null,"message":PAYLOAD},
 * with Plane's payload shapes. Shared by the client (runtime_executor.c)
 * and the server (executor_server.c); parsing is the only place where bytes
 * from the peer are interpreted, and it never trusts them.
 *
 * Beyond Plane, the server greets each client with an event
 * {"ExecutorHello":{"backends":[ids...]}} naming the backends it runs, so a
 * client that reconnects (perhaps to a restarted server) can tell which of
 * its backends are gone. A Plane client skips it as an unknown message.
 */
#ifndef PLANE_EXECUTOR_PROTO_H
#define PLANE_EXECUTOR_PROTO_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/buf.h"
#include "runtime.h"

#define EXEC_MAX_LINE (4u << 20) /* longest line either side accepts */

enum exec_kind {
    EXEC_UNKNOWN,
    /* client -> server requests */
    EXEC_PREPARE,
    EXEC_SPAWN,
    EXEC_TERMINATE,
    EXEC_WAIT_FOR_BACKEND,
    /* server -> client responses */
    EXEC_PREPARE_RESULT,
    EXEC_SPAWN_RESULT,
    EXEC_TERMINATE_RESULT,
    EXEC_WAIT_RESULT,
    EXEC_ERROR, /* ours: a request we could not read */
    /* server -> client events */
    EXEC_METRICS,
    EXEC_TERMINATE_EVENT,
    EXEC_HELLO,
    EXEC_PROCESS,
};

/* A parsed line. Pointers borrow from root, which the message owns. */
struct exec_msg {
    enum exec_kind kind;
    json_t *root;
    const char *id;            /* NULL for events */
    /* requests */
    const char *backend_id;    /* spawn, terminate, wait, and the events */
    const json_t *executable;  /* prepare, spawn */
    struct acquired_key key;   /* spawn, when has_key */
    bool has_key;
    const char *static_token;  /* spawn; NULL if none */
    bool hard;                 /* terminate */
    const char *address;       /* wait */
    /* responses: status 0 for Ok, -EIO for Err (-ETIMEDOUT for StartupTimeout) */
    int status;
    const char *error;         /* Err message */
    const char *container_id;  /* spawn result */
    uint16_t port;             /* spawn result */
    bool was_running;          /* terminate result */
    /* events */
    struct backend_metrics metrics;
    int exit_code;             /* RUNTIME_EXIT_UNKNOWN for null */
    const json_t *backends;    /* hello: array of strings */
    int pid;                   /* process: the backend's main process */
    const char *pid_ns;        /* process: the executor's pid namespace ("pid:[N]") */
};

/*
 * Parses one line. On error -EINVAL is returned, a line is written to err,
 * and whatever could be read is left in m (id, and kind when the payload's
 * tag was known) so a server can still answer. Release m either way.
 */
int exec_msg_parse(const char *line, size_t len, struct exec_msg *m, struct buf *err);
void exec_msg_release(struct exec_msg *m);
const char *exec_kind_name(enum exec_kind kind);
/* The response kind that answers request kind, or EXEC_UNKNOWN. */
enum exec_kind exec_response_kind(enum exec_kind request);

/* Encoders: each returns a complete line ending in "\n", owned by the caller. */
char *exec_encode_prepare(const char *id, const json_t *executable);
char *exec_encode_spawn(const char *id, const struct spawn_spec *spec);
char *exec_encode_terminate(const char *id, const char *backend_id, bool hard);
char *exec_encode_wait(const char *id, const char *backend_id, const char *address);
/* The response of kind (a *_RESULT) to request id, from an operation's result. */
char *exec_encode_result(enum exec_kind kind, const char *id, const struct runtime_result *res);
char *exec_encode_error(const char *id, const char *message);
char *exec_encode_metrics(const struct backend_metrics *m);
char *exec_encode_exit(const char *backend_id, int exit_code);
char *exec_encode_hello(const char *const *backend_ids, size_t n);
/*
 * Our extension, sent just before a spawn's result: the backend's process,
 * with the executor's pid namespace, so that a drone on the same host (and
 * in the same namespace) can fence it (fence.h). Plane clients skip it.
 */
char *exec_encode_process(const char *backend_id, int pid, const char *pid_ns);
/* This process's pid namespace as /proc names it ("pid:[4026531836]"), or "" if unknown. Static storage. */
const char *exec_pid_namespace(void);

#endif
