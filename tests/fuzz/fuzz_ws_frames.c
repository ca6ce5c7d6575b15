/* SPDX-License-Identifier: MIT */
/*
 * fuzz_ws_frames.c - libFuzzer target for the WebSocket endpoint's input
 * path: arbitrary bytes from a client go to a server-side ws (in two pieces,
 * so frames split across reads too) whose writes are discarded. Handlers
 * answer from inside ws_feed() the way real owners do (echo, close, abort),
 * and the message cap is small so the 1009 path is reachable.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/common/log.h"
#include "../../src/common/ws.h"

struct fuzz_conn {
    struct ws *ws;
    int closes;
};

static int discard(void *transport, const char *data, size_t len)
{
    (void)transport;
    (void)data;
    (void)len;
    return 0;
}

static void on_text(void *arg, const char *msg, size_t len)
{
    struct fuzz_conn *f = arg;

    if (msg[len] != '\0')
        abort();
    if (len == 5 && memcmp(msg, "close", 5) == 0)
        ws_send_close(f->ws, 1000);
    else if (len == 5 && memcmp(msg, "abort", 5) == 0)
        ws_abort(f->ws);
    else
        ws_send_text(f->ws, msg, len);
}

static void on_close(void *arg, int code)
{
    struct fuzz_conn *f = arg;

    if (++f->closes > 1 || code < 1000 || code > 4999)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct ws_handler h = {.on_text = on_text, .on_close = on_close};
    static int init;
    struct fuzz_conn f = {0};
    int rc;

    if (!init) {
        setenv("PLANE_LOG", "error", 1);
        log_init("fuzz");
        init = 1;
    }
    f.ws = ws_new(true, discard, NULL, &h, &f);
    ws_set_max_message(f.ws, 1024);
    rc = ws_feed(f.ws, (const char *)data, size / 2);
    if (rc == 0)
        rc = ws_feed(f.ws, (const char *)data + size / 2, size - size / 2);
    if (rc < 0 && !ws_is_closed(f.ws))
        abort();
    ws_feed_eof(f.ws);
    if (f.closes > 1)
        abort();
    ws_free(f.ws);
    return 0;
}
