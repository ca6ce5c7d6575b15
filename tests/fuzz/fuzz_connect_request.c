/* SPDX-License-Identifier: MIT */
/*
 * fuzz_connect_request.c - libFuzzer target for the body of POST
 * /ctrl/connect: JSON parsing then the ConnectRequest checks of spec §4.7.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/common/log.h"
#include "../../src/controller/controller.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct connect_req r;
    struct buf why = BUF_INIT;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);

    if (!j)
        return 0;
    if (connect_request_parse(j, &r, &why)) {
        /* What a valid request promises the rest of connect. */
        if (!r.key_name || !r.key_ns || !r.key_tag || !r.auth || (r.spawn && !r.executable))
            abort();
    } else if (why.len == 0) {
        abort(); /* a refusal always says why */
    }
    connect_request_release(&r);
    buf_release(&why);
    json_decref(j);
    return 0;
}
