/* SPDX-License-Identifier: MIT */
/*
 * messages.h - decoding what drones and proxies send the controller
 * (spec §7.1, §8.1) into plain structs, apart from acting on them, so the
 * parsing of these untrusted bytes is in one place (and fuzzed).
 */
#ifndef PLANE_MESSAGES_H
#define PLANE_MESSAGES_H

#include <stdint.h>

#include <jansson.h>

#include "../common/backend_state.h"
#include "../common/buf.h"
#include "store.h"

enum node_msg_kind {
    MSG_HEARTBEAT,
    MSG_BACKEND_EVENT,
    MSG_BACKEND_METRICS,
    MSG_ACK_ACTION,
    MSG_RENEW_KEY,
    MSG_ROUTE_INFO_REQUEST,
    MSG_KEEPALIVE,
    MSG_CERT_LEASE_REQUEST,
    MSG_SET_TXT_RECORD,
    MSG_RELEASE_CERT_LEASE,
    MSG_TXT_RECORD_REQUEST,
};

struct node_msg {
    enum node_msg_kind kind;
    json_t *root;            /* owned; the strings below borrow from it */
    int64_t local_time;      /* heartbeat, renew key */
    int64_t event_id;        /* backend event */
    int64_t timestamp;
    const char *backend_id;  /* backend event, metrics, renew key (its "backend"), keepalive */
    struct backend_state state;
    const char *action_id;   /* ack action */
    const char *token;       /* route info request */
    const char *txt_value;   /* set txt record */
    const char *cluster;     /* txt record request */
};

/* Decodes one message from a node of the given kind. 0, or -EINVAL with a line in err. */
int node_msg_decode(const char *text, size_t len, enum node_kind kind, struct node_msg *out, struct buf *err);
void node_msg_release(struct node_msg *m);

#endif
