/* SPDX-License-Identifier: MIT */
/*
 * listener.h - client connections of the proxy: accepting them, reading
 * request heads, the decisions of spec §16.1 (ready, root, token, route,
 * host), answers the proxy makes itself, and the life of a connection
 * across keep-alive exchanges. forward.c and tunnel.c call back into it
 * when the upstream side of an exchange moves on.
 */
#ifndef PLANE_PROXY_LISTENER_H
#define PLANE_PROXY_LISTENER_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "../common/buf.h"
#include "../common/list.h"
#include "h1.h"
#include "route_cache.h"
#include "stream.h"

struct h2_session;
struct listener;
struct upconn;
struct worker;

#define CONN_HEAD_TIMEOUT_MS 10000 /* a request head must be complete this long after its first byte */
#define CONN_IDLE_TIMEOUT_MS 60000 /* a keep-alive connection may wait this long for its next request */
#define CONN_BODY_TIMEOUT_MS 60000 /* a request body may pause this long */
#define CONN_LINGER_MS 2000        /* after our FIN, input is drained this long before closing */
#define CONN_IN_MAX (64 * 1024)    /* input held while an exchange is in progress */

enum conn_state {
    CONN_HEAD,    /* reading a request head (or idle between requests) */
    CONN_ROUTE,   /* the head is complete; its route is being looked up */
    CONN_FORWARD, /* exchange with the upstream in progress */
    CONN_TUNNEL,  /* upgraded: bytes both ways */
    CONN_LINGER,  /* done: our FIN is (being) sent, input is discarded */
    CONN_H2,      /* HTTP/2: the input is frames for c->h2 (h2_bridge.c) */
};

struct conn {
    struct stream s;              /* first: the client socket */
    struct list_node node;        /* in w->conns */
    enum conn_state state;
    bool https;                   /* accepted on the TLS port */
    bool redirect;                /* accepted on the redirect-only port */
    char ip[INET6_ADDRSTRLEN];    /* x-forwarded-for */
    uint64_t deadline;            /* loop time of the next timeout; 0: none */

    /* The exchange in progress; reset between requests. */
    struct h1_parser req;
    bool looked_up;               /* the route decision was made */
    bool waiting;                 /* waiter is queued in the route cache */
    struct route_waiter waiter;
    struct route *route;          /* owned reference while proxying */
    bool keep_alive;              /* the client lets the connection be reused */
    bool close_after;             /* close once this exchange is over */
    bool upgrade;                 /* the request asks to upgrade */
    bool http10;
    bool head_method;
    bool req_done;                /* the whole request went upstream */
    bool resp_started;            /* response bytes went to the client */
    bool shutdown_pending;        /* lingering: send FIN once writes drain */
    bool tunnel_client_eof, tunnel_up_eof, tunnel_open;
    bool tunnel_counted; /* counted in the open-tunnels gauge */
    struct splice_tunnel *splice; /* owned: the tunnel is moved by the kernel (splice.c) */
    bool splice_failed;           /* could not be handed over: copy to the end */
    bool bulk;                    /* the tunnel filled a whole read buffer once */
    bool client_eof;              /* the client sent its FIN: what it sent before is still answered */
    struct upconn *up;            /* the upstream of this exchange, or NULL */
    struct buf head_out;          /* the rewritten request head; kept until the response starts */

    /* The last route used on this connection, so a keep-alive client skips the cache. */
    struct route *memo;           /* owned reference */
    char *memo_token;             /* owned */
    size_t memo_len;

    bool served;                  /* an exchange has ended: no HTTP/2 preface any more */
    bool bridged;                 /* adopted for one HTTP/2 stream (h2_bridge.c) */
    struct h2_session *h2;        /* owned in CONN_H2 */

    bool in_process;              /* conn_process() is on the stack */
    bool again;                   /* resumed while in process: look at the input again */
};

/* Starts listening on the worker's sockets. 0 or a UV error (logged). */
int listener_start(struct worker *w);
/* Stops accepting (graceful shutdown). */
void listener_stop(struct worker *w);
/* Route answers for the worker have arrived: continue the connections waiting. */
void listener_route_answers(struct worker *w);
/* Timeouts; called every tick. */
void listener_tick(struct worker *w, uint64_t now);
/* Graceful shutdown: close idle connections, let the others finish their exchange. */
void listener_drain(struct worker *w);
/* Closes every connection now. */
void listener_close_all(struct worker *w);

/*
 * A connection on fd (a stream socket, owned from now on) as if accepted
 * from a client at ip, on the TLS port if https: how h2_bridge.c hands an
 * HTTP/2 stream to the HTTP/1.1 path. NULL (fd closed) on failure.
 */
struct conn *listener_adopt(struct worker *w, int fd, const char *ip, bool https);
/* Processes input c could not handle before (its upstream is ready, a write drained, ...). */
void conn_resume(struct conn *c);
/* Writes to the client; on failure c is closed and a UV error returned. */
int conn_send(struct conn *c, const uv_buf_t *bufs, unsigned n);
/* The upstream delivered the whole response. */
void conn_response_done(struct conn *c);
/* The upstream failed (c->up already detached): 502 if nothing was sent yet, else close. */
void conn_upstream_failed(struct conn *c, int status);
/* Closes the connection and everything attached to it. */
void conn_close(struct conn *c);

#endif
