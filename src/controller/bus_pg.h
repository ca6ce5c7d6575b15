/* SPDX-License-Identifier: MIT */
/*
 * bus_pg.h - the event bus across controllers that share one PostgreSQL
 * database (spec §10.2): every event a controller publishes is also sent
 * with NOTIFY, and every controller LISTENs and hands the others' events to
 * its own subscribers, so that a drone's socket, a status stream or a
 * proxy may be on any controller.
 *
 * A notification is only a wake-up: everything it says is in the tables
 * already. One that is lost (the connection broke, the payload was too big
 * for NOTIFY) costs latency, not state: unacknowledged actions are re-sent
 * from the table every 5 s, and after every (re)connection the controller
 * resynchronises from the tables (resync callback).
 */
#ifndef PLANE_BUS_PG_H
#define PLANE_BUS_PG_H

#include <uv.h>

#include "events.h"

struct pg_bus;

/*
 * Starts listening on url's database as controller self_id, forwarding what
 * events publishes; resync(arg) runs after each (re)connection. Never fails:
 * while the database cannot be reached it retries every second.
 */
struct pg_bus *pg_bus_start(uv_loop_t *loop, const char *url, const char *self_id, struct events *events,
                            void (*resync)(void *arg), void *arg);
/* Stops and frees once its handles are closed. */
void pg_bus_stop(struct pg_bus *b);

#endif
