/* SPDX-License-Identifier: MIT */
/*
 * node_link.h - a node's WebSocket to the controller (spec §6): connect,
 * exchange handshakes, then JSON messages both ways; on any loss, connect
 * again after 1 s x 1.1^n (at most 60 s, reset by a connection that lasted
 * 60 s). The first attempt is immediate. Optionally the connection is
 * also remade every period +- jitter (drones and proxies, §6). Everything
 * runs on one loop.
 */
#ifndef PLANE_NODE_LINK_H
#define PLANE_NODE_LINK_H

#include <stdbool.h>

#include <jansson.h>
#include <uv.h>

struct buf;
struct node_link;

struct node_link_handler {
    void (*on_up)(void *arg);   /* handshake done: messages may be sent */
    void (*on_down)(void *arg); /* the connection went away after on_up */
    /* A message {tag: payload} after the handshake; payload borrowed for the call (may be NULL). */
    void (*on_message)(void *arg, const char *tag, json_t *payload);
};

/*
 * Starts connecting to controller_url ("http://[TOKEN@]host:port/"; several
 * separated by commas: tried in turn, the next at once when a working
 * connection ends) + path as node name. Strings are copied; loop is borrowed; h is copied. NULL and
 * one line in err for an unusable URL.
 */
struct node_link *node_link_new(uv_loop_t *loop, const char *controller_url, const char *path, const char *name,
                                const struct node_link_handler *h, void *arg, struct buf *err);
/* Drops and remakes a connection that has been up for period_ms +- jitter_ms (uniform). */
void node_link_cycle(struct node_link *l, unsigned period_ms, unsigned jitter_ms);
/* Closes the connection; no handler runs afterwards; freed once its handles have closed. NULL is fine. */
void node_link_free(struct node_link *l);
/* Sends msg (stolen). 0, or -ENOTCONN when the link is not up. */
int node_link_send(struct node_link *l, json_t *msg);
bool node_link_is_up(const struct node_link *l);

#endif
