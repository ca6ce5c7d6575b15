/* SPDX-License-Identifier: MIT */
/*
 * state_store.h - the drone's SQLite state store (spec §13.2): the latest
 * state of every backend, and the state events not yet acknowledged by the
 * controller. A state is persisted before it is reported, so after a crash
 * or a reconnect the unacknowledged events are replayed and nothing is lost.
 */
#ifndef PLANE_STATE_STORE_H
#define PLANE_STATE_STORE_H

#include <stdint.h>

#include "../common/backend_state.h"
#include "../common/buf.h"

struct state_store;

/* Opens (creating) the store at path, mode 0600; NULL or ":memory:" keeps it in memory. */
int state_store_open(struct state_store **out, const char *path, struct buf *err);
void state_store_close(struct state_store *s);
/*
 * Records st as backend_id's state in one transaction (upsert the backend,
 * insert the event). Returns the new event id (> 0) or -errno.
 */
int64_t state_store_record(struct state_store *s, const char *backend_id, const struct backend_state *st,
                           int64_t timestamp_ms);
/* Deletes the acknowledged event. 0 or -errno. */
int state_store_ack(struct state_store *s, int64_t event_id);

typedef void state_event_fn(void *arg, int64_t event_id, const char *backend_id, const struct backend_state *st,
                            int64_t timestamp_ms);
/* Every unacknowledged event, oldest first. 0 or -errno. */
int state_store_each_event(struct state_store *s, state_event_fn *fn, void *arg);
typedef void state_backend_fn(void *arg, const char *backend_id, const struct backend_state *st);
/* Every backend whose latest state is not terminated. 0 or -errno. */
int state_store_each_active(struct state_store *s, state_backend_fn *fn, void *arg);
/* The latest state of backend_id: 0, -ENOENT, or -errno. */
int state_store_get(struct state_store *s, const char *backend_id, struct backend_state *out);

#endif
