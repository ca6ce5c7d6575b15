/* SPDX-License-Identifier: MIT */
/*
 * h2_bridge.h - an HTTP/2 client connection of the proxy (CONN_H2): the
 * session of h2.c on the client's socket, and each request stream handed
 * to an ordinary HTTP/1.1 proxy connection over a socketpair, so every
 * rule of spec §16.1 applies to HTTP/2 requests exactly as written for
 * HTTP/1.1 (listener.c, forward.c).
 */
#ifndef PLANE_PROXY_H2_BRIDGE_H
#define PLANE_PROXY_H2_BRIDGE_H

#include <stddef.h>

struct conn;

/* Makes c (its first bytes are the preface) an HTTP/2 connection. */
void h2_conn_start(struct conn *c);
/* Client bytes; all are used. c may be closed on return. */
size_t h2_conn_input(struct conn *c, const char *data, size_t len);
/* The client's queued writes drained: make more frames. */
void h2_conn_drained(struct conn *c);
/* Graceful shutdown: GOAWAY, open streams finish. */
void h2_conn_drain(struct conn *c);
/* c is closing: the session and every stream's exchange go. */
void h2_conn_free(struct conn *c);

#endif
