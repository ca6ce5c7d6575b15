/* SPDX-License-Identifier: MIT */
/*
 * events.h - the controller's event bus (spec §10.2), in process: state
 * changes of backends, actions for drones, and node connections are
 * published with an optional key (a backend id, a drone id) and delivered
 * synchronously to subscribers of that kind and key (or of the kind alone).
 * Subscribers may unsubscribe themselves or others from inside a callback.
 */
#ifndef PLANE_EVENTS_H
#define PLANE_EVENTS_H

#include <jansson.h>

enum event_kind { EVENT_BACKEND_STATE, EVENT_BACKEND_ACTION, EVENT_NODE_CONNECTION };

struct events;
struct event_sub;
typedef void event_fn(void *arg, enum event_kind kind, const char *key, const json_t *payload);

struct events *events_new(void);
void events_free(struct events *e);
/* key NULL: every event of the kind. */
struct event_sub *events_subscribe(struct events *e, enum event_kind kind, const char *key, event_fn *fn, void *arg);
void events_unsubscribe(struct event_sub *sub);
/* Delivers to this process's subscribers, then hands the event to the forwarder, if any. */
void events_publish(struct events *e, enum event_kind kind, const char *key, const json_t *payload);
/* Delivers to this process's subscribers only (an event that came from another process). */
void events_deliver(struct events *e, enum event_kind kind, const char *key, const json_t *payload);
/* fn sees every event published here (bus_pg.c sends them to the other controllers); NULL: none. */
void events_set_forwarder(struct events *e, event_fn *fn, void *arg);

#endif
