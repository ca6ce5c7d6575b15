/* SPDX-License-Identifier: MIT */
/*
 * ws.c - a WebSocket endpoint over any transport (see ws.h), on wslay's
 * event API. wslay parses and validates frames (masking, opcodes, control
 * frame rules, UTF-8 of text, close codes), answers pings and close frames;
 * this file feeds it the caller's bytes, reassembles text messages itself
 * (wslay runs with buffering off, so memory follows the bytes that arrived
 * rather than the lengths a header claims), enforces the message cap across
 * fragments, and turns wslay's state into one on_close and one return value.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <wslay/wslay.h>

#include "buf.h"
#include "log.h"
#include "names.h"
#include "ws.h"
#include "xalloc.h"

/* RFC 6455 section 1.3: appended to the client's key before hashing. */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
/* Reassembly and output buffers above this are freed after use, not kept. */
#define WS_KEEP_BUFFER (64u * 1024)

enum ws_msg_kind { WS_MSG_NONE, WS_MSG_TEXT, WS_MSG_BINARY };

struct ws {
    wslay_event_context_ptr ctx; /* owned */
    bool server;
    ws_write_fn *write;
    void *transport; /* borrowed; outlives w */
    struct ws_handler h;
    void *arg; /* borrowed; handed to handlers */

    const char *in; /* borrowed; the bytes of the ws_feed() in progress */
    size_t in_len, in_off;
    struct buf out; /* frames wslay produced, written in one piece per flush */

    size_t max_message;
    enum ws_msg_kind msg_kind; /* the data message being received */
    bool in_ctrl;              /* the frame being received is a control frame */
    size_t msg_len;            /* declared bytes of the current message so far */
    struct buf text;           /* the text message being reassembled */

    int close_code;      /* ws_send_close() code waiting for the data queue; -1 none */
    bool close_requested; /* ws_send_close() was called */
    int local_error;     /* close code of a violation we detected ourselves; 0 none */
    bool busy;           /* inside ws_feed()/ws_feed_eof(): handlers may be on the stack */
    bool failed;         /* the write function failed */
    bool aborted;        /* ws_abort() */
    bool finished;       /* the connection has ended; status is final */
    int status;          /* what ws_feed() returns from now on */
};

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    struct ws *w = user;
    size_t n = w->in_len - w->in_off;

    (void)flags;
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (n > len)
        n = len;
    memcpy(buf, w->in + w->in_off, n);
    w->in_off += n;
    return (ssize_t)n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
    struct ws *w = user;

    (void)ctx;
    (void)flags;
    buf_append(&w->out, data, len); /* no cap: cannot fail */
    return (ssize_t)len;
}

static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)ctx;
    (void)user;
    random_bytes(buf, len);
    return 0;
}

/* A violation wslay does not see (the cap across fragments): close with code, read no more. */
static void ws_fail_local(struct ws *w, int code)
{
    w->local_error = code;
    wslay_event_queue_close(w->ctx, (uint16_t)code, NULL, 0);
    wslay_event_shutdown_read(w->ctx);
}

static void ws_frame_start_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_start_arg *arg,
                              void *user)
{
    struct ws *w = user;

    (void)ctx;
    if (w->local_error || w->aborted)
        return;
    w->in_ctrl = wslay_is_ctrl_frame(arg->opcode);
    if (w->in_ctrl)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        w->msg_kind = arg->opcode == WSLAY_TEXT_FRAME ? WS_MSG_TEXT : WS_MSG_BINARY;
        w->msg_len = 0;
        buf_reset(&w->text);
    }
    /*
     * With buffering off, wslay compares each frame with the cap but not the
     * sum of a fragmented message's frames, so the sum is checked here.
     */
    if (w->msg_len > w->max_message || arg->payload_length > w->max_message - w->msg_len) {
        ws_fail_local(w, WS_CLOSE_TOO_BIG);
        return;
    }
    w->msg_len += (size_t)arg->payload_length;
}

static void ws_frame_chunk_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_chunk_arg *arg,
                              void *user)
{
    struct ws *w = user;

    (void)ctx;
    if (w->local_error || w->aborted || w->in_ctrl || w->msg_kind != WS_MSG_TEXT || arg->data_length == 0)
        return;
    if (buf_append(&w->text, arg->data, arg->data_length) < 0)
        ws_fail_local(w, WS_CLOSE_TOO_BIG); /* unreachable: msg_len is checked first */
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
    struct ws *w = user;

    (void)ctx;
    if (w->local_error || w->aborted)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        w->msg_kind = WS_MSG_NONE;
        if (w->h.on_text)
            w->h.on_text(w->arg, buf_cstr(&w->text), w->text.len);
        if (w->text.alloc > WS_KEEP_BUFFER)
            buf_release(&w->text);
        else
            buf_reset(&w->text);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        w->msg_kind = WS_MSG_NONE; /* not part of our protocol: ignored */
    }
    /* Ping (wslay queued the pong), pong and close are handled in ws_feed(). */
}

struct ws *ws_new(bool server, ws_write_fn *write_fn, void *transport, const struct ws_handler *h, void *arg)
{
    struct wslay_event_callbacks cbs = {
        .recv_callback = ws_recv_cb,
        .send_callback = ws_send_cb,
        .genmask_callback = ws_genmask_cb,
        .on_frame_recv_start_callback = ws_frame_start_cb,
        .on_frame_recv_chunk_callback = ws_frame_chunk_cb,
        .on_msg_recv_callback = ws_msg_cb,
    };
    struct ws *w = xcalloc(1, sizeof(*w));
    int r;

    w->server = server;
    w->write = write_fn;
    w->transport = transport;
    w->h = *h;
    w->arg = arg;
    w->close_code = -1;
    buf_init(&w->out, 0);
    buf_init(&w->text, 0);
    r = server ? wslay_event_context_server_init(&w->ctx, &cbs, w)
               : wslay_event_context_client_init(&w->ctx, &cbs, w);
    if (r != 0)
        fatalx("cannot create websocket context: wslay error %d", r);
    wslay_event_config_set_no_buffering(w->ctx, 1);
    ws_set_max_message(w, WS_MAX_MESSAGE_DEFAULT);
    return w;
}

void ws_set_max_message(struct ws *w, size_t max)
{
    w->max_message = max;
    wslay_event_config_set_max_recv_msg_length(w->ctx, max);
}

/* Hands everything in w->out to the transport. */
static int ws_write_out(struct ws *w)
{
    int rc = 0;

    if (w->out.len > 0) {
        rc = w->write(w->transport, w->out.data, w->out.len);
        if (w->out.alloc > WS_KEEP_BUFFER)
            buf_release(&w->out);
        else
            buf_reset(&w->out);
        if (rc < 0)
            w->failed = true;
    }
    return rc;
}

/*
 * Turns queued messages into frames and writes them. A pending close goes
 * after the data queued before it: wslay would send control frames first.
 */
static int ws_flush(struct ws *w)
{
    int r;

    if (w->failed || w->aborted)
        return -EPIPE;
    r = wslay_event_send(w->ctx);

    if (r == 0 && w->close_code >= 0) {
        wslay_event_queue_close(w->ctx, (uint16_t)w->close_code, NULL, 0); /* NO_MORE_MSG: peer closed first */
        w->close_code = -1;
        r = wslay_event_send(w->ctx);
    }
    if (r != 0) /* the send callback cannot fail, so this is out of memory */
        fatalx("cannot send websocket frames: wslay error %d", r);
    return ws_write_out(w);
}

/* Flushes now, or leaves it to the ws_feed() in progress. */
static int ws_flush_unless_busy(struct ws *w)
{
    return w->busy ? 0 : ws_flush(w);
}

/* A frame-level error wslay answered with an empty close frame: replace it with a 1002 close. */
static void ws_write_protocol_error_close(struct ws *w)
{
    uint8_t frame[8] = {0x88, 0x02};
    uint8_t payload[2] = {WS_CLOSE_PROTOCOL_ERROR >> 8, WS_CLOSE_PROTOCOL_ERROR & 0xff};
    size_t n = 2;

    wslay_event_shutdown_write(w->ctx);
    if (wslay_event_get_close_sent(w->ctx))
        return;
    if (w->server) {
        memcpy(frame + 2, payload, 2);
        n = 4;
    } else {
        frame[1] |= 0x80;
        random_bytes(frame + 2, 4);
        for (int i = 0; i < 2; i++)
            frame[6 + i] = payload[i] ^ frame[2 + i];
        n = 8;
    }
    buf_append(&w->out, frame, n);
    ws_write_out(w);
}

/* The connection has ended: record the result and tell the owner once. */
static int ws_finish(struct ws *w, int code, int status)
{
    if (w->finished)
        return w->status;
    w->finished = true;
    w->status = status;
    if (!w->aborted && w->h.on_close)
        w->h.on_close(w->arg, code);
    return status;
}

int ws_feed(struct ws *w, const char *data, size_t len)
{
    int r, rc;

    if (w->busy)
        BUG("ws_feed: called from inside a handler or the write function of the same ws");
    if (w->finished)
        return w->status;
    w->busy = true;
    if (w->failed) {
        rc = ws_finish(w, WS_CLOSE_ABNORMAL, -EIO);
        goto out;
    }
    w->in = data;
    w->in_len = len;
    w->in_off = 0;
    r = wslay_event_recv(w->ctx);
    w->in = NULL;
    w->in_len = w->in_off = 0;
    if (w->aborted) {
        rc = w->status;
        goto out;
    }
    if (r != 0) {
        /*
         * Our callbacks never fail, so this is a malformed frame (or wslay
         * out of memory). wslay queued a close without a code; send 1002.
         */
        if (!w->local_error)
            w->local_error = WS_CLOSE_PROTOCOL_ERROR;
        ws_write_protocol_error_close(w);
        rc = ws_finish(w, w->local_error, -EPROTO);
        goto out;
    }
    ws_flush(w);
    if (w->local_error) {
        rc = ws_finish(w, w->local_error, -EPROTO);
    } else if (wslay_event_get_close_received(w->ctx)) {
        rc = ws_finish(w, wslay_event_get_status_code_received(w->ctx), 0);
    } else if (!wslay_event_get_read_enabled(w->ctx)) {
        /* wslay found a violation (bad opcode, mask, UTF-8, size) and sent its close. */
        int code = wslay_event_get_close_sent(w->ctx) ? wslay_event_get_status_code_sent(w->ctx)
                                                       : WS_CLOSE_PROTOCOL_ERROR;
        rc = ws_finish(w, code, -EPROTO);
    } else if (w->failed) {
        rc = ws_finish(w, WS_CLOSE_ABNORMAL, -EIO);
    } else {
        rc = 0;
    }
out:
    w->busy = false;
    return rc;
}

int ws_feed_eof(struct ws *w)
{
    int rc;

    if (w->busy)
        BUG("ws_feed_eof: called from inside a handler or the write function of the same ws");
    w->busy = true;
    rc = ws_finish(w, WS_CLOSE_ABNORMAL, -ECONNRESET);
    w->busy = false;
    return rc;
}

bool ws_is_open(const struct ws *w)
{
    return !w->finished && !w->failed && !w->aborted && !w->close_requested && !w->local_error &&
           wslay_event_get_read_enabled(w->ctx) && wslay_event_get_write_enabled(w->ctx);
}

bool ws_is_closed(const struct ws *w)
{
    return w->finished;
}

static int ws_queue(struct ws *w, uint8_t opcode, const char *data, size_t len)
{
    struct wslay_event_msg m = {.opcode = opcode, .msg = (const uint8_t *)data, .msg_length = len};
    int r;

    if (!ws_is_open(w))
        return -EPIPE;
    r = wslay_event_queue_msg(w->ctx, &m);
    if (r == WSLAY_ERR_NO_MORE_MSG)
        return -EPIPE;
    if (r == WSLAY_ERR_INVALID_ARGUMENT)
        return -EINVAL;
    if (r != 0)
        return -ENOMEM;
    return ws_flush_unless_busy(w);
}

int ws_send_text(struct ws *w, const char *msg, size_t len)
{
    return ws_queue(w, WSLAY_TEXT_FRAME, len ? msg : "", len);
}

int ws_send_ping(struct ws *w, const char *data, size_t len)
{
    if (len > 125)
        return -EINVAL;
    return ws_queue(w, WSLAY_PING, len ? data : "", len);
}

/* RFC 6455 section 7.4: codes an endpoint may put in a close frame. */
static bool ws_close_code_is_valid(int code)
{
    return code == 0 || (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

int ws_send_close(struct ws *w, int code)
{
    if (!ws_close_code_is_valid(code))
        return -EINVAL;
    if (!ws_is_open(w))
        return -EPIPE;
    w->close_requested = true;
    w->close_code = code;
    return ws_flush_unless_busy(w);
}

void ws_abort(struct ws *w)
{
    w->aborted = true;
    if (!w->finished) {
        w->finished = true;
        w->status = -ECONNABORTED;
    }
    wslay_event_shutdown_read(w->ctx);
    wslay_event_shutdown_write(w->ctx);
}

void ws_free(struct ws *w)
{
    if (!w)
        return;
    if (w->busy)
        BUG("ws_free: called from inside a handler; free the ws after ws_feed() returns");
    wslay_event_context_free(w->ctx);
    buf_release(&w->out);
    buf_release(&w->text);
    free(w);
}

void ws_accept_key(const char *client_key, char out[WS_ACCEPT_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char *in = xasprintf("%s%s", client_key, WS_GUID);

    if (!EVP_Digest(in, strlen(in), md, &md_len, EVP_sha1(), NULL) || md_len != 20)
        fatalx("cannot compute SHA-1 for the websocket accept key");
    EVP_EncodeBlock((unsigned char *)out, md, (int)md_len); /* 28 chars and a NUL */
    free(in);
}

void ws_random_key(char out[WS_KEY_LEN])
{
    unsigned char raw[16];

    random_bytes(raw, sizeof(raw));
    EVP_EncodeBlock((unsigned char *)out, raw, sizeof(raw)); /* 24 chars and a NUL */
}
