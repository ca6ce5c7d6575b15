/* SPDX-License-Identifier: MIT */
/*
 * forward.h - the upstream side of a proxied exchange (spec §16.1 step 7):
 * connections to backends, a keep-alive pool of them per worker and
 * backend address, sending the rewritten request, and relaying the
 * response to the client as it arrives (head rewritten, body bytes as
 * they are, chunk framing included).
 */
#ifndef PLANE_PROXY_FORWARD_H
#define PLANE_PROXY_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/list.h"
#include "../common/net.h"
#include "h1.h"
#include "stream.h"

struct conn;
struct worker;

#define FORWARD_CONNECT_TIMEOUT_MS 10000 /* §19 */
#define POOL_IDLE_MS 30000               /* an idle upstream connection is closed after this */
#define POOL_MAX_PER_ADDRESS 256         /* idle connections kept per backend address and worker */
#define POOL_BUCKETS 256

struct pool_slot;

/* Idle upstream connections of one worker, by backend address. */
struct pool {
    struct pool_slot *buckets[POOL_BUCKETS];
    unsigned idle;
};

enum up_state { UP_CONNECTING, UP_ACTIVE, UP_IDLE, UP_TUNNEL };

struct upconn {
    struct stream s;            /* first: the backend socket */
    struct list_node node;      /* in w->upconns */
    struct list_node idle;      /* in its pool slot while idle */
    struct pool_slot *slot;     /* while idle */
    struct conn *c;             /* the client it serves; NULL while idle */
    enum up_state state;
    bool reused;                /* taken from the pool for this exchange */
    bool got_bytes;             /* response bytes arrived for this exchange */
    bool head_pending;          /* the client's response head is in w->scratch, unsent */
    uint64_t deadline;          /* connect or idle timeout; 0: none */
    uint64_t sent_at;           /* uv_hrtime() when the request head was written */
    char key[NET_ADDR_LEN];     /* the backend address */
    struct h1_parser resp;
    uv_connect_t creq;
};

/*
 * Starts the upstream half of c's exchange: a pooled connection to the
 * route's address, or a new one. The request head (c->head_out) goes out as
 * soon as the connection is up, then conn_resume() lets c send its body.
 * 0, or a UV error with nothing started (the caller answers 502).
 */
int forward_start(struct conn *c);
/* The connection is up and has no queued writes: more body may be sent. */
bool forward_writable(const struct upconn *up);
/* Sends request bytes upstream. 0 or a UV error. */
int forward_send(struct upconn *up, const uv_buf_t *bufs, unsigned n);
/* The client's writes drained: read the upstream again. */
void forward_client_drained(struct upconn *up);
/* c is going away or giving up on its upstream: close it (never pooled). */
void forward_detach(struct conn *c);
/* Closes an upstream connection. */
void forward_close(struct upconn *up);
/* Timeouts of the worker's upstream connections. */
void forward_tick(struct worker *w, uint64_t now);
/* Closes every idle pooled connection of the worker. */
void forward_close_idle(struct worker *w);

#endif
