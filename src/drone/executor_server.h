/* SPDX-License-Identifier: MIT */
/*
 * executor_server.h - `plane executor`: serves any runtime over the
 * Unix-socket executor protocol (spec §15), so a Plane drone, or our drone
 * with --runtime executor, can run backends through it.
 */
#ifndef PLANE_EXECUTOR_SERVER_H
#define PLANE_EXECUTOR_SERVER_H

#include <uv.h>

#include "../common/buf.h"

struct runtime;
struct executor_server;
struct backend_metrics;

/* A server on loop; it listens once executor_server_listen() is called. */
struct executor_server *executor_server_new(uv_loop_t *loop);
/*
 * Listens on path (a stale socket file there is replaced; anything else is
 * an error) and serves rt, which stays the caller's. 0, or -errno with a
 * line in err.
 */
int executor_server_listen(struct executor_server *s, const char *path, struct runtime *rt, struct buf *err);
/* Stops listening, drops clients, removes the socket file; frees s once closed. */
void executor_server_close(struct executor_server *s);

/* Hooks for the served runtime's runtime_config (cb_arg = the server). */
void executor_server_on_exit(void *server, const char *backend_id, int exit_code);
void executor_server_on_metrics(void *server, const struct backend_metrics *m);

/* The `plane executor` subcommand. */
int executor_main(int argc, char **argv);

#endif
