/* SPDX-License-Identifier: MIT */
/*
 * splice.h - a plain-TCP tunnel handed to the kernel: bytes move from one
 * socket to the other through a pipe with splice(2) and are never copied
 * into the proxy. The issue this serves: large transfers over an upgraded
 * connection (file sync, bulk WebSocket traffic), where copying every byte
 * in and out of user space is most of a relay's cost.
 *
 * Only tunnels that carry bulk are handed over (a read filled the worker's
 * whole buffer): for small messages a splice costs a little more than the
 * read or write it replaces, so chatty WebSockets keep copying. Measured on
 * loopback, a spliced relay uses about a third of the CPU per gigabyte.
 *
 * Once a tunnel's two streams are idle (nothing queued, nothing kept, no
 * FIN yet), their libuv TCP handles stop reading and a poll handle per
 * socket drives the splices instead; from then on the stream layer must not
 * touch those sockets (stream.spliced). Pipes come from a small per-worker
 * pool and go back as soon as they are empty, so an idle tunnel holds no
 * pipe. A FIN is passed on once the pipe of that direction is empty; the
 * tunnel ends when both directions have ended or either side fails, as
 * the copying tunnel does.
 */
#ifndef PLANE_PROXY_SPLICE_H
#define PLANE_PROXY_SPLICE_H

#include <stdbool.h>

struct conn;
struct worker;

/* Whether c's tunnel can be handed over now (bulk seen, plain TCP, both sides idle). */
bool splice_ready(const struct conn *c);
/* Hands c's tunnel over; false (and nothing changed) if it cannot be. */
bool splice_start(struct conn *c);
/* The tunnel is closing: stops the poll handles before the sockets close. */
void splice_stop(struct conn *c);
/* Closes the worker's idle pipes (its loop has ended). */
void splice_pool_free(struct worker *w);

#endif
