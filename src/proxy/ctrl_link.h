/* SPDX-License-Identifier: MIT */
/*
 * ctrl_link.h - the proxy's connection to the controller (spec §6, §8,
 * §16.4): the WebSocket to <controller>/ctrl/c/<cluster>/proxy-socket,
 * the handshake, reconnects with backoff (a node_link), RouteInfoRequest out and
 * RouteInfoResponse/BackendRemoved in, and the certificate manager's
 * requests and answers (§8.1, §8.2). It lives on the control loop;
 * ctrl_link_request() and ctrl_link_is_up() may be called from any thread.
 */
#ifndef PLANE_PROXY_CTRL_LINK_H
#define PLANE_PROXY_CTRL_LINK_H

#include <stdbool.h>

#include <jansson.h>
#include <uv.h>

struct buf;
struct ctrl_link;
struct monitor;
struct route_cache;

#define CTRL_LINK_RECONNECT_MS (60 * 60 * 1000)   /* voluntary reconnect, ±10 min */
#define CTRL_LINK_RECONNECT_JITTER_MS (10 * 60 * 1000)

/*
 * Starts connecting at once. controller_url is http(s)/ws(s)://[TOKEN@]host:port/;
 * strings are copied; loop, cache and mon are borrowed and must outlive the
 * link. NULL and one line in err for an unusable URL.
 */
struct ctrl_link *ctrl_link_new(uv_loop_t *loop, const char *controller_url, const char *cluster,
                                const char *name, struct route_cache *cache, struct monitor *mon,
                                struct buf *err);
/* Closes the connection and frees the link once its handles have closed. NULL is fine. */
void ctrl_link_free(struct ctrl_link *l);
/* Queues a RouteInfoRequest for token (len bytes). Any thread. */
void ctrl_link_request(struct ctrl_link *l, const char *token, size_t len);
/* Sends KeepAlive(backend_id) if connected (control loop). */
void ctrl_link_keepalive(struct ctrl_link *l, const char *backend_id);
/* Handshake done and the connection up. Any thread. */
bool ctrl_link_is_up(const struct ctrl_link *l);
/* Queues a message (stolen) for the controller. 0, or -ENOTCONN while the link is down. Any thread. */
int ctrl_link_send(struct ctrl_link *l, json_t *msg);
/* Where CertManagerResponse messages go (control loop): the variant's tag and its "accepted". */
typedef void ctrl_link_cert_fn(void *arg, const char *tag, bool accepted);
void ctrl_link_on_cert_response(struct ctrl_link *l, ctrl_link_cert_fn *fn, void *arg);

#endif
