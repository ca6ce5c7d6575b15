/* SPDX-License-Identifier: MIT */
/*
 * tunnel.h - upgraded connections (spec §16.1 step 8): after the
 * upstream's 101 reaches the client, bytes are copied both ways until
 * either side closes. Copies go through the worker's read buffer; a side
 * is not read while the other side has writes queued, so a slow reader
 * holds at most one read's worth of memory per direction. The backend
 * counts as active for the monitor while the tunnel is open (§16.3).
 */
#ifndef PLANE_PROXY_TUNNEL_H
#define PLANE_PROXY_TUNNEL_H

#include <stddef.h>

struct conn;
struct upconn;

/*
 * Switches c and up to tunnelling: sends the rewritten 101 head and rest
 * (bytes the upstream sent after its head) to the client, then any bytes
 * the client sent after its request head to the upstream.
 */
void tunnel_start(struct conn *c, struct upconn *up, const char *head, size_t head_len, const char *rest,
                  size_t rest_len);
/* Input from either side; everything is consumed (sent or queued). */
size_t tunnel_client_input(struct conn *c, const char *data, size_t len);
size_t tunnel_up_input(struct conn *c, const char *data, size_t len);
/* A side ended (EOF: half-close the other side; error: close both). */
void tunnel_client_end(struct conn *c, int status);
void tunnel_up_end(struct conn *c, int status);
/* A side's writes drained: read the other side again. */
void tunnel_client_drained(struct conn *c);
void tunnel_up_drained(struct conn *c);
/* io_uring: a receive cancelled for a splice hand-over is gone: try the hand-over again. */
void tunnel_quiet(struct conn *c);
/* The tunnel of c is closing: account for it in the monitor. */
void tunnel_closing(struct conn *c);

#endif
