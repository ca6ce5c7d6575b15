/* SPDX-License-Identifier: MIT */
/*
 * ready_probe.h - the readiness probe of spec §14.8, on a libuv loop: connect
 * to the backend, send exactly "HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n",
 * and call it ready when the first 5 bytes read (1 s timeout) are "HTTP/".
 * Retries until a deadline. The spec polls every 100 ms; we start at 1 ms
 * and back off to 100 ms, because a backend that is up in 3 ms should not
 * wait 100 ms to be called ready.
 */
#ifndef PLANE_READY_PROBE_H
#define PLANE_READY_PROBE_H

#include <uv.h>

#include "../common/buf.h"

struct ready_probe;
/* status: 0 ready, -ETIMEDOUT past the deadline, or the status given to stop. */
typedef void ready_probe_fn(void *arg, int status, const char *error);

/*
 * Starts probing address ("IP:PORT" or "[IPv6]:PORT") for at most timeout_ms.
 * cb runs exactly once, from the loop. The probe frees itself. On a bad
 * address NULL is returned, a line is written to err and cb never runs.
 */
struct ready_probe *ready_probe_start(uv_loop_t *loop, const char *address, unsigned timeout_ms,
                                      ready_probe_fn *cb, void *arg, struct buf *err);
/* Ends the probe: cb runs now, synchronously, with status and error. */
void ready_probe_stop(struct ready_probe *p, int status, const char *error);

#endif
