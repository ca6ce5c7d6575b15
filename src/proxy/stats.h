/* SPDX-License-Identifier: MIT */
/*
 * stats.h - the proxy's counters for /metrics: responses by status code,
 * upstream response-head latency, open WebSocket tunnels, bytes sent to
 * clients. Workers update them with relaxed atomics; the control loop reads
 * them when scraped. One proxy per process, so they are process-wide.
 */
#ifndef PLANE_PROXY_STATS_H
#define PLANE_PROXY_STATS_H

#include <stdint.h>

#include "../common/buf.h"

/* A response went to a client (ours or the backend's) with this status. */
void proxy_stats_response(unsigned status);
/* From the request head written upstream to the response head read back. */
void proxy_stats_upstream(uint64_t nanoseconds);
void proxy_stats_tunnel(int delta);
void proxy_stats_bytes_out(uint64_t n);
/* A tunnel was handed to the kernel (splice.c). */
void proxy_stats_spliced(void);
/* Appends the Prometheus text of every counter to out. */
void proxy_stats_render(struct buf *out);

#endif
