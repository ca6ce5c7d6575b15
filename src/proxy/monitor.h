/* SPDX-License-Identifier: MIT */
/*
 * monitor.h - the connection monitor (spec §16.3): per backend, whether it
 * had traffic lately and how many upgraded connections it has open, and
 * the KeepAlive messages that keep the controller's idle sweep away from a
 * backend in use. Worker loops record activity with a few atomic
 * operations; the KeepAlive schedule runs on the control loop.
 */
#ifndef PLANE_PROXY_MONITOR_H
#define PLANE_PROXY_MONITOR_H

#include <stdbool.h>

#include <uv.h>

#define MONITOR_PERIOD_MS 7000 /* §19: proxy monitor period (the default) */

struct monitor;
struct backend_act; /* one backend's activity, shared by every loop; refcounted */

/* Sends KeepAlive(backend_id) to the controller; runs on the control loop. */
typedef void monitor_send_fn(void *arg, const char *backend_id);

/*
 * loop is the control loop (borrowed, outlives the monitor); period_ms is
 * the time between visits of a backend (MONITOR_PERIOD_MS unless configured).
 */
struct monitor *monitor_new(uv_loop_t *loop, unsigned period_ms, monitor_send_fn *send, void *arg);
/*
 * Stops every schedule and frees the monitor once its handles have closed
 * (control loop). Every backend_act must have been put back before.
 */
void monitor_free(struct monitor *m);

/* The record for backend_id, created if needed. A new reference. Any thread. */
struct backend_act *monitor_intern(struct monitor *m, const char *backend_id);
/* Takes another reference. */
struct backend_act *backend_act_get(struct backend_act *b);
/* Drops a reference; the last one frees the record. NULL is fine. Any thread. */
void backend_act_put(struct backend_act *b);
/* Borrowed; valid while the caller holds a reference. */
const char *backend_act_id(const struct backend_act *b);
/* The controller said the backend is gone (BackendRemoved). */
bool backend_act_removed(const struct backend_act *b);

/* A proxied request reached the backend. Any thread. */
void monitor_touch(struct monitor *m, struct backend_act *b);
/* An upgraded connection to the backend opened / closed. Any thread. */
void monitor_conn_open(struct monitor *m, struct backend_act *b);
void monitor_conn_close(struct monitor *m, struct backend_act *b);
/* BackendRemoved: forget the backend and mark it removed (control loop). */
void monitor_removed(struct monitor *m, const char *backend_id);
/* How many backends are being watched (control loop; for tests and logs). */
unsigned monitor_watched(const struct monitor *m);

#endif
