/* SPDX-License-Identifier: MIT */
/*
 * ws.h - one RFC 6455 WebSocket endpoint, independent of the transport. The
 * owner reads bytes from its transport (a TCP connection after an HTTP
 * upgrade, a test pipe) and hands them to ws_feed(); frames going out are
 * handed to a write function, at most one call per ws_feed() or ws_send_*().
 * Built on wslay's event API; text messages are reassembled here, so they
 * grow with the data that really arrived, under a per-message cap.
 */
#ifndef PLANE_WS_H
#define PLANE_WS_H

#include <stdbool.h>
#include <stddef.h>

#define WS_MAX_MESSAGE_DEFAULT ((size_t)16 << 20) /* 16 MiB */
#define WS_ACCEPT_LEN 29                          /* base64 of a SHA-1, plus NUL */
#define WS_KEY_LEN 25                             /* base64 of 16 bytes, plus NUL */

/* Close codes of RFC 6455 section 7.4.1 that we use. */
#define WS_CLOSE_NORMAL 1000
#define WS_CLOSE_GOING_AWAY 1001
#define WS_CLOSE_PROTOCOL_ERROR 1002
#define WS_CLOSE_NO_STATUS 1005 /* never sent; peer's close frame had no code */
#define WS_CLOSE_ABNORMAL 1006  /* never sent; transport ended without a close frame */
#define WS_CLOSE_INVALID_DATA 1007
#define WS_CLOSE_TOO_BIG 1009

struct ws;

/* Writes bytes to the transport; returns 0 or -errno. The transport copies or keeps the bytes until written. */
typedef int ws_write_fn(void *transport, const char *data, size_t len);

/*
 * Handlers run only inside ws_feed() and ws_feed_eof(). From inside a
 * handler (on_text or on_close) of a ws, the owner may call ws_send_text(),
 * ws_send_ping(), ws_send_close(), ws_abort(), ws_is_open(), ws_is_closed()
 * and ws_set_max_message() on it (sends are queued and written before
 * ws_feed() returns), and record that it wants the connection gone. It must
 * not call ws_free() (the owner frees after ws_feed() returns; doing it from
 * a handler is caught by BUG()), nor ws_feed()/ws_feed_eof() on the same ws.
 * The write function must not call back into the same ws either.
 */
struct ws_handler {
    /* One complete text message, as a NUL-terminated copy valid only during the call. */
    void (*on_text)(void *arg, const char *msg, size_t len);
    /*
     * The connection is over: the peer's close code after a close frame
     * (WS_CLOSE_NO_STATUS if it had none; our close reply has been written),
     * the code we sent on a protocol error (1002, 1007, 1009), or
     * WS_CLOSE_ABNORMAL when the transport failed or ended. Called at most
     * once, never after ws_abort().
     */
    void (*on_close)(void *arg, int code);
};

/*
 * server: true on the accepting side (frames unmasked), false on the client
 * side (frames masked, random mask via getrandom). write and transport are
 * borrowed and must outlive the ws; *h is copied; arg is passed to every
 * handler. Never NULL.
 */
struct ws *ws_new(bool server, ws_write_fn *write, void *transport, const struct ws_handler *h, void *arg);

/*
 * Feeds bytes read from the transport (borrowed for the call); runs handlers
 * and writes whatever the input calls for (pong, close reply, sends queued
 * by handlers). Returns:
 *   0              the connection is fine, or it ended with a close frame
 *                  from the peer (ws_is_closed() is then true and on_close
 *                  has run; close the transport once its writes are done);
 *   -EPROTO        the peer broke the protocol or passed max_message; our
 *                  close frame has been written and on_close has run;
 *   -EIO           the write function failed; on_close(WS_CLOSE_ABNORMAL) has run;
 *   -ECONNABORTED  ws_abort() was called (from a handler or before).
 * Once the connection has ended, input is ignored and that result is returned again.
 */
int ws_feed(struct ws *w, const char *data, size_t len);

/*
 * The transport reached EOF or failed without a close handshake finishing:
 * runs on_close(WS_CLOSE_ABNORMAL) unless the connection has already ended.
 * Returns -ECONNRESET, or the earlier result if the connection had ended.
 */
int ws_feed_eof(struct ws *w);

/*
 * Queues one text message and flushes it to the transport (from inside a
 * handler, the flush happens before ws_feed() returns). 0 or -errno:
 * -EPIPE once a close frame was sent or received or the connection ended,
 * or what the write function returned.
 */
int ws_send_text(struct ws *w, const char *msg, size_t len);

/* A ping with up to 125 bytes of payload (-EINVAL if longer); the peer answers with a pong, which is ignored. */
int ws_send_ping(struct ws *w, const char *data, size_t len);

/*
 * Sends a close frame with code (1000-1003, 1007-1011, 3000-4999; 0 for a
 * frame without a code; else -EINVAL), after any messages queued before it.
 * Further sends fail with -EPIPE. The peer's close reply arrives through
 * ws_feed() and on_close. -EPIPE if the connection is no longer open.
 */
int ws_send_close(struct ws *w, int code);

/*
 * Ends the connection at once, without a close frame: queued frames are
 * dropped, no handler runs afterwards (not even on_close), sends fail with
 * -EPIPE, and the ws_feed() in progress (if any) stops delivering messages
 * and returns -ECONNABORTED. For a handler that wants the connection torn
 * down; the owner still calls ws_free() afterwards.
 */
void ws_abort(struct ws *w);

/* Caps the size of one incoming message (default WS_MAX_MESSAGE_DEFAULT); bigger ones close with 1009. */
void ws_set_max_message(struct ws *w, size_t max);

/* True while messages can be sent: no close frame sent or received, no error, no abort. */
bool ws_is_open(const struct ws *w);
/* True once the connection has ended: on_close has run (or was skipped by ws_abort()). */
bool ws_is_closed(const struct ws *w);

/* Frees w and everything queued; never calls handlers. NULL is fine. Not from inside a handler of w. */
void ws_free(struct ws *w);

/* Sec-WebSocket-Accept for a client key: base64(SHA1(key + GUID)); out must hold 29 bytes. */
void ws_accept_key(const char *client_key, char out[WS_ACCEPT_LEN]);
/* A fresh Sec-WebSocket-Key: base64 of 16 random bytes; out must hold 25 bytes. */
void ws_random_key(char out[WS_KEY_LEN]);

#endif
