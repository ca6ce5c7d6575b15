/* SPDX-License-Identifier: MIT */
/*
 * fuzz_node_messages.c - libFuzzer target for what drones, proxies and
 * DNS servers send over their WebSockets to the controller (spec §7.1,
 * §8.1, §9): the first byte picks the side, the rest is the message text.
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/controller/messages.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum node_kind kinds[] = {NODE_PROXY, NODE_DRONE, NODE_DNS};
    struct node_msg m;
    struct buf err = BUF_INIT;

    if (size < 1)
        return 0;
    if (node_msg_decode((const char *)data + 1, size - 1, kinds[data[0] % 3], &m, &err) == 0) {
        /* A decoded event carries a state that encodes again. */
        if (m.kind == MSG_BACKEND_EVENT) {
            json_t *j = backend_state_to_json(&m.state);
            if (!j)
                abort();
            json_decref(j);
        }
    } else if (err.len == 0) {
        abort();
    }
    node_msg_release(&m);
    buf_release(&err);
    return 0;
}
