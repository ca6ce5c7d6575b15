/* SPDX-License-Identifier: MIT */
/*
 * ws_client.c - a WebSocket client over libuv TCP (see ws_client.h). The
 * life of a client: resolving -> connecting (each address in turn) ->
 * handshake (GET with Upgrade, 101 parsed by http-parser, the accept key
 * checked) -> open (a client-side ws endpoint does the framing) -> done.
 * Done is reached once, through client_end(), which starts closing the
 * handles and reports on_close unless the owner has already let go. The
 * struct is freed when the owner has called ws_client_free() and the last
 * handle or request callback has run, so no libuv callback can outlive it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>
#include <uv.h>

#include "buf.h"
#include "log.h"
#include "url.h"
#include "ws.h"
#include "ws_client.h"
#include "xalloc.h"

#define WSC_READ_SIZE (64 * 1024)
#define WSC_LINGER_MS 1000      /* time our close frame gets to leave before the socket is closed */
#define WSC_MAX_HEADER_LEN 8192 /* one header name or value in the response */

enum wsc_state { WSC_RESOLVING, WSC_CONNECTING, WSC_HANDSHAKE, WSC_OPEN, WSC_DONE };

struct wsc_write {
    uv_write_t req; /* req.data is the client */
    char data[];
};

struct ws_client {
    uv_loop_t *loop; /* borrowed; outlives the client */
    struct ws_client_handler h;
    void *arg; /* borrowed; handed to handlers */
    enum wsc_state state;

    char *host;      /* owned; as resolved (IPv6 without brackets) */
    char *port;      /* owned; decimal */
    char *authority; /* owned; "host:port" for the Host header and messages */
    char *request;   /* owned; the handshake request; NULL once sent */
    char accept[WS_ACCEPT_LEN]; /* the Sec-WebSocket-Accept the server must send */

    uv_timer_t timer; /* connect and handshake timeouts, pings once open, deferred failures, linger */
    uint64_t last_rx;   /* uv_now() when the peer last sent anything */
    uint64_t last_tick; /* uv_now() of the last ping round */
    uv_getaddrinfo_t gai;
    struct addrinfo *ai;      /* owned (uv_freeaddrinfo) */
    struct addrinfo *ai_next; /* borrowed from ai: the next address to try */
    int last_error;           /* of the last connect attempt (a UV_* code) */
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req;
    bool tcp_inited;   /* tcp is initialized and its close callback has not run */
    bool connected;    /* tcp is connected */
    bool gai_pending;  /* the getaddrinfo callback has not run */
    unsigned pending;  /* handles and requests whose callback has yet to run */
    char *fail_reason; /* owned; a failure the timer reports (never from inside a call) */
    int write_error;   /* the first failed uv_write(), a UV_* code */

    http_parser parser;
    struct buf field, value; /* the response header being parsed */
    bool in_value;
    char *upgrade_hdr; /* owned; the response's Upgrade value */
    char *accept_hdr;  /* owned; the response's Sec-WebSocket-Accept value */
    bool head_done;
    size_t head_bytes;

    struct ws *ws; /* owned; from the 101 on */
    int ws_close_code;
    char *rbuf;   /* owned; WSC_READ_SIZE bytes for reads */
    bool in_feed; /* inside ws_feed(): handlers of ours may be on the stack */
    bool freed;   /* ws_client_free() was called: no handler runs any more */
};

static void wsc_on_timer(uv_timer_t *t);
static void wsc_connect_next(struct ws_client *c);

static void wsc_destroy(struct ws_client *c)
{
    ws_free(c->ws);
    if (c->ai)
        uv_freeaddrinfo(c->ai);
    free(c->host);
    free(c->port);
    free(c->authority);
    free(c->request);
    free(c->fail_reason);
    buf_release(&c->field);
    buf_release(&c->value);
    free(c->upgrade_hdr);
    free(c->accept_hdr);
    free(c->rbuf);
    free(c);
}

/* Frees c once the owner let go and no callback of libuv can reach it any more. */
static void wsc_maybe_free(struct ws_client *c)
{
    if (c->freed && c->pending == 0)
        wsc_destroy(c);
}

static void wsc_on_timer_closed(uv_handle_t *h)
{
    struct ws_client *c = h->data;

    c->pending--;
    wsc_maybe_free(c);
}

static void wsc_on_tcp_closed(uv_handle_t *h)
{
    struct ws_client *c = h->data;

    c->pending--;
    c->tcp_inited = false;
    c->connected = false;
    if (c->state == WSC_CONNECTING)
        wsc_connect_next(c); /* that address failed: try the next */
    else
        wsc_maybe_free(c);
}

static void wsc_close_tcp(struct ws_client *c)
{
    if (c->tcp_inited && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, wsc_on_tcp_closed);
}

static void wsc_close_timer(struct ws_client *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, wsc_on_timer_closed);
}

static void wsc_on_shutdown(uv_shutdown_t *req, int status)
{
    struct ws_client *c = req->data;

    (void)status;
    wsc_close_tcp(c);
    wsc_close_timer(c);
}

static void wsc_on_linger(uv_timer_t *t)
{
    struct ws_client *c = t->data;

    wsc_close_tcp(c); /* the shutdown callback then runs with UV_ECANCELED */
    wsc_close_timer(c);
}

/*
 * Starts closing everything. graceful: let what was written (our close
 * frame) leave first, for at most WSC_LINGER_MS.
 */
static void wsc_teardown(struct ws_client *c, bool graceful)
{
    if (c->gai_pending)
        uv_cancel((uv_req_t *)&c->gai);
    uv_timer_stop(&c->timer);
    if (c->tcp_inited && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->shutdown_req.data = c;
        if (graceful && c->connected &&
            uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, wsc_on_shutdown) == 0) {
            uv_timer_start(&c->timer, wsc_on_linger, WSC_LINGER_MS, 0);
            return;
        }
        wsc_close_tcp(c);
    }
    wsc_close_timer(c);
}

/* The one way to the done state; reason (if not NULL) goes to on_close unless the owner let go. */
static void wsc_end(struct ws_client *c, bool graceful, const char *reason)
{
    if (c->state == WSC_DONE)
        return;
    c->state = WSC_DONE;
    wsc_teardown(c, graceful);
    if (reason) {
        log_debug("websocket %s: %s", c->authority, reason);
        if (!c->freed && c->h.on_close)
            c->h.on_close(c->arg, reason);
    }
}

static void wsc_fail(struct ws_client *c, bool graceful, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void wsc_fail(struct ws_client *c, bool graceful, const char *fmt, ...)
{
    va_list ap;
    char *reason;

    va_start(ap, fmt);
    reason = xvasprintf(fmt, ap);
    va_end(ap);
    wsc_end(c, graceful, reason);
    free(reason);
}

/* Reports a failure from the loop, for code that must not run handlers itself. */
static void wsc_fail_later(struct ws_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wsc_fail_later(struct ws_client *c, const char *fmt, ...)
{
    va_list ap;

    if (c->state == WSC_DONE || c->fail_reason)
        return;
    va_start(ap, fmt);
    c->fail_reason = xvasprintf(fmt, ap);
    va_end(ap);
    uv_timer_start(&c->timer, wsc_on_timer, 0, 0);
}

static void wsc_on_timer(uv_timer_t *t)
{
    struct ws_client *c = t->data;
    char *reason = c->fail_reason;

    if (reason) {
        c->fail_reason = NULL;
        wsc_end(c, false, reason);
        free(reason);
    } else if (c->state == WSC_RESOLVING || c->state == WSC_CONNECTING) {
        wsc_fail(c, false, "cannot connect to %s: timed out", c->authority);
    } else if (c->state == WSC_HANDSHAKE) {
        wsc_fail(c, false, "handshake with %s timed out", c->authority);
    } else if (c->state == WSC_OPEN) {
        uint64_t now = uv_now(c->loop);
        /* A round long overdue means we stood still (stopped, or a long call): what the peer sent
         * meanwhile is still unread, so its silence is not judged this time. */
        bool stalled = now - c->last_tick > 2 * WS_CLIENT_PING_MS;
        c->last_tick = now;
        if (!stalled && now - c->last_rx >= WS_CLIENT_SILENCE_MS)
            wsc_fail(c, false, "no answer from %s for %d s", c->authority, WS_CLIENT_SILENCE_MS / 1000);
        else
            ws_send_ping(c->ws, "", 0); /* a write error surfaces on the next read or send */
    }
}

static void wsc_on_written(uv_write_t *req, int status)
{
    struct wsc_write *w = container_of(req, struct wsc_write, req);
    struct ws_client *c = req->data;

    free(w);
    if (status < 0 && status != UV_ECANCELED && c->state != WSC_DONE)
        wsc_fail(c, false, "cannot write to %s: %s", c->authority, uv_strerror(status));
}

/* ws_write_fn: one uv_write() of an owned copy. */
static int wsc_write(void *transport, const char *data, size_t len)
{
    struct ws_client *c = transport;
    struct wsc_write *w;
    uv_buf_t b;
    int rc;

    if (!c->connected || uv_is_closing((uv_handle_t *)&c->tcp))
        return -EPIPE;
    if (len > UINT32_MAX)
        return -EMSGSIZE;
    w = xmalloc(sizeof(*w) + len);
    memcpy(w->data, data, len);
    w->req.data = c;
    b = uv_buf_init(w->data, (unsigned)len);
    rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, wsc_on_written);
    if (rc < 0) {
        free(w);
        if (!c->write_error)
            c->write_error = rc;
        return rc; /* UV_* codes are -errno on Unix */
    }
    return 0;
}

static void wsc_ws_on_text(void *arg, const char *msg, size_t len)
{
    struct ws_client *c = arg;

    if (!c->freed && c->state == WSC_OPEN && c->h.on_text)
        c->h.on_text(c->arg, msg, len);
}

static void wsc_ws_on_close(void *arg, int code)
{
    ((struct ws_client *)arg)->ws_close_code = code;
}

static const struct ws_handler wsc_ws_handler = {.on_text = wsc_ws_on_text, .on_close = wsc_ws_on_close};

/* Hands WebSocket bytes to the endpoint and turns its verdict into our state. */
static void wsc_feed(struct ws_client *c, const char *data, size_t len)
{
    int rc;

    c->in_feed = true;
    rc = ws_feed(c->ws, data, len);
    c->in_feed = false;
    if (c->freed) {
        wsc_end(c, true, NULL); /* ws_client_free() from a handler: finish its job */
        return;
    }
    if (c->state != WSC_OPEN)
        return;
    if (rc == -EPROTO)
        wsc_fail(c, true, "protocol error from %s (closed with code %d)", c->authority, c->ws_close_code);
    else if (rc < 0)
        wsc_fail(c, false, "cannot write to %s: %s", c->authority,
                 uv_strerror(c->write_error ? c->write_error : UV_EIO));
    else if (ws_is_closed(c->ws))
        wsc_fail(c, true, "closed by peer with code %d", c->ws_close_code);
}

static void wsc_header_done(struct ws_client *c)
{
    char **dst = NULL;

    while (c->value.len > 0 && (c->value.data[c->value.len - 1] == ' ' || c->value.data[c->value.len - 1] == '\t'))
        c->value.data[--c->value.len] = '\0';
    if (strcasecmp(buf_cstr(&c->field), "Upgrade") == 0)
        dst = &c->upgrade_hdr;
    else if (strcasecmp(buf_cstr(&c->field), "Sec-WebSocket-Accept") == 0)
        dst = &c->accept_hdr;
    if (dst) {
        free(*dst);
        *dst = xstrdup(buf_cstr(&c->value));
    }
    buf_reset(&c->field);
    buf_reset(&c->value);
}

static int wsc_on_header_field(http_parser *p, const char *at, size_t len)
{
    struct ws_client *c = p->data;

    if (c->in_value) {
        wsc_header_done(c);
        c->in_value = false;
    }
    return buf_append(&c->field, at, len) < 0;
}

static int wsc_on_header_value(http_parser *p, const char *at, size_t len)
{
    struct ws_client *c = p->data;

    c->in_value = true;
    return buf_append(&c->value, at, len) < 0;
}

static int wsc_on_headers_complete(http_parser *p)
{
    struct ws_client *c = p->data;

    if (c->in_value)
        wsc_header_done(c);
    c->in_value = false;
    c->head_done = true;
    return 0;
}

static const http_parser_settings wsc_parser_settings = {
    .on_header_field = wsc_on_header_field,
    .on_header_value = wsc_on_header_value,
    .on_headers_complete = wsc_on_headers_complete,
};

/* Response bytes until the head is complete; the rest belongs to the WebSocket stream. */
static void wsc_handshake_feed(struct ws_client *c, const char *data, size_t len)
{
    size_t used = http_parser_execute(&c->parser, &wsc_parser_settings, data, len);

    if (!c->head_done) {
        c->head_bytes += len;
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK)
            wsc_fail(c, false, "handshake with %s failed: bad response: %s", c->authority,
                     http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
        else if (c->head_bytes > WS_CLIENT_MAX_RESPONSE_HEAD)
            wsc_fail(c, false, "handshake with %s failed: response head too long", c->authority);
        return;
    }
    /* RFC 6455 section 4.1: what the client must check in the server's handshake. */
    if (c->parser.status_code != 101) {
        wsc_fail(c, false, "handshake with %s failed: HTTP %u", c->authority, c->parser.status_code);
        return;
    }
    if (!c->parser.upgrade || !c->upgrade_hdr || strcasecmp(c->upgrade_hdr, "websocket") != 0) {
        wsc_fail(c, false, "handshake with %s failed: no upgrade to websocket", c->authority);
        return;
    }
    if (!c->accept_hdr || strcmp(c->accept_hdr, c->accept) != 0) {
        wsc_fail(c, false, "handshake with %s failed: wrong Sec-WebSocket-Accept", c->authority);
        return;
    }
    c->state = WSC_OPEN;
    c->last_rx = c->last_tick = uv_now(c->loop);
    uv_timer_start(&c->timer, wsc_on_timer, WS_CLIENT_PING_MS, WS_CLIENT_PING_MS);
    buf_release(&c->field);
    buf_release(&c->value);
    c->ws = ws_new(false, wsc_write, c, &wsc_ws_handler, c);
    if (c->h.on_open)
        c->h.on_open(c->arg);
    if (c->state != WSC_OPEN || c->freed)
        return; /* ws_client_free() from on_open */
    if (used < len)
        wsc_feed(c, data + used, len - used);
}

static void wsc_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct ws_client *c = h->data;

    (void)suggested;
    if (!c->rbuf)
        c->rbuf = xmalloc(WSC_READ_SIZE);
    *b = uv_buf_init(c->rbuf, WSC_READ_SIZE);
}

static void wsc_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct ws_client *c = s->data;

    if (nread == 0 || c->state == WSC_DONE)
        return;
    c->last_rx = uv_now(c->loop);
    if (nread < 0) {
        const char *what = nread == UV_EOF ? "connection closed" : uv_strerror((int)nread);
        if (c->state == WSC_HANDSHAKE)
            wsc_fail(c, false, "handshake with %s failed: %s", c->authority, what);
        else
            wsc_fail(c, false, "connection to %s lost: %s", c->authority, what);
        return;
    }
    if (c->state == WSC_HANDSHAKE)
        wsc_handshake_feed(c, b->base, (size_t)nread);
    else if (c->state == WSC_OPEN)
        wsc_feed(c, b->base, (size_t)nread);
}

static void wsc_on_connected(uv_connect_t *req, int status)
{
    struct ws_client *c = req->data;
    int rc;

    if (status == UV_ECANCELED || c->state != WSC_CONNECTING)
        return;
    if (status < 0) {
        c->last_error = status;
        wsc_close_tcp(c); /* then the next address, from the close callback */
        return;
    }
    c->connected = true;
    c->state = WSC_HANDSHAKE;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, wsc_on_timer, WS_CLIENT_HANDSHAKE_TIMEOUT_MS, 0);
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    rc = uv_read_start((uv_stream_t *)&c->tcp, wsc_on_alloc, wsc_on_read);
    if (rc == 0)
        rc = wsc_write(c, c->request, strlen(c->request));
    if (rc < 0) {
        wsc_fail(c, false, "cannot send the handshake to %s: %s", c->authority, uv_strerror(rc));
        return;
    }
    free(c->request);
    c->request = NULL;
}

static void wsc_connect_next(struct ws_client *c)
{
    while (c->ai_next) {
        struct addrinfo *ai = c->ai_next;
        int rc;

        c->ai_next = ai->ai_next;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        uv_tcp_init(c->loop, &c->tcp);
        c->tcp.data = c;
        c->tcp_inited = true;
        c->pending++;
        c->connect_req.data = c;
        rc = uv_tcp_connect(&c->connect_req, &c->tcp, ai->ai_addr, wsc_on_connected);
        if (rc < 0) {
            c->last_error = rc;
            wsc_close_tcp(c); /* the next address, from the close callback */
        }
        return;
    }
    wsc_fail(c, false, "cannot connect to %s: %s", c->authority,
             uv_strerror(c->last_error ? c->last_error : UV_EADDRNOTAVAIL));
}

static void wsc_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct ws_client *c = req->data;

    c->gai_pending = false;
    c->pending--;
    if (c->state != WSC_RESOLVING) {
        if (res)
            uv_freeaddrinfo(res);
        wsc_maybe_free(c);
        return;
    }
    if (status < 0) {
        wsc_fail(c, false, "cannot resolve '%s': %s", c->host, uv_strerror(status));
        return;
    }
    c->ai = c->ai_next = res;
    c->state = WSC_CONNECTING;
    wsc_connect_next(c);
}

/* Printable ASCII without spaces: nothing that could end a request line or header. */
static bool wsc_is_token_text(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* NULL or complete "Name: value\r\n" lines, with no other CR or LF. */
static bool wsc_headers_are_valid(const char *h)
{
    if (!h)
        return true;
    while (*h) {
        const char *eol = strstr(h, "\r\n");
        const char *colon = strchr(h, ':');
        if (!eol || eol == h || !colon || colon > eol)
            return false;
        for (const char *p = h; p < eol; p++)
            if (*p == '\r' || *p == '\n' || *p == '\0')
                return false;
        h = eol + 2;
    }
    return true;
}

struct ws_client *ws_client_connect_with_headers(uv_loop_t *loop, const char *url, const char *bearer,
                                                 const char *headers, const struct ws_client_handler *h,
                                                 void *arg, struct buf *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP,
                             .ai_flags = AI_NUMERICSERV};
    struct ws_client *c = NULL;
    struct url u;
    char key[WS_KEY_LEN];
    char *hash;
    int e = EINVAL;
    int rc;

    if (url_parse(url, &u) < 0) {
        buf_printf(err, "bad websocket url '%s'", url);
        errno = EINVAL;
        return NULL;
    }
    if (strcmp(u.scheme, "wss") == 0 || strcmp(u.scheme, "https") == 0) {
        buf_printf(err, "websocket url '%s': %s is not supported", url, u.scheme);
        e = EPROTONOSUPPORT;
        goto out;
    }
    hash = strchr(u.path, '#'); /* a fragment is not sent (RFC 6455 section 3) */
    if (hash)
        *hash = '\0';
    if (!wsc_is_token_text(u.host) || !wsc_is_token_text(u.path)) {
        buf_printf(err, "bad websocket url '%s'", url);
        goto out;
    }
    if (!bearer)
        bearer = u.user;
    if (bearer && (!*bearer || !wsc_is_token_text(bearer))) {
        buf_printf(err, "websocket url '%s': bad bearer token", url);
        goto out;
    }
    if (!wsc_headers_are_valid(headers)) {
        buf_printf(err, "websocket url '%s': bad extra headers", url);
        goto out;
    }

    c = xcalloc(1, sizeof(*c));
    c->loop = loop;
    c->h = *h;
    c->arg = arg;
    c->state = WSC_RESOLVING;
    c->host = xstrdup(u.host);
    c->port = xasprintf("%d", u.port);
    c->authority = url_authority(&u);
    buf_init(&c->field, WSC_MAX_HEADER_LEN);
    buf_init(&c->value, WSC_MAX_HEADER_LEN);
    ws_random_key(key);
    ws_accept_key(key, c->accept);
    c->request = xasprintf("GET %s HTTP/1.1\r\n"
                           "Host: %s\r\n"
                           "Upgrade: websocket\r\n"
                           "Connection: Upgrade\r\n"
                           "Sec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n"
                           "%s%s%s"
                           "%s"
                           "\r\n",
                           *u.path ? u.path : "/", c->authority, key, bearer ? "Authorization: Bearer " : "",
                           bearer ? bearer : "", bearer ? "\r\n" : "", headers ? headers : "");

    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->pending++;
    uv_timer_start(&c->timer, wsc_on_timer, WS_CLIENT_CONNECT_TIMEOUT_MS, 0);
    c->gai.data = c;
    rc = uv_getaddrinfo(loop, &c->gai, wsc_on_resolved, c->host, c->port, &hints);
    if (rc < 0) {
        wsc_fail_later(c, "cannot resolve '%s': %s", c->host, uv_strerror(rc));
    } else {
        c->gai_pending = true;
        c->pending++;
    }
out:
    url_release(&u);
    if (!c)
        errno = e;
    return c;
}

struct ws_client *ws_client_connect(uv_loop_t *loop, const char *url, const char *bearer,
                                    const struct ws_client_handler *h, void *arg, struct buf *err)
{
    return ws_client_connect_with_headers(loop, url, bearer, NULL, h, arg, err);
}

int ws_client_send_text(struct ws_client *c, const char *msg, size_t len)
{
    int rc;

    if (c->state < WSC_OPEN)
        return -ENOTCONN;
    if (c->state != WSC_OPEN || c->freed)
        return -EPIPE;
    rc = ws_send_text(c->ws, msg, len);
    if (rc < 0 && c->write_error && !c->in_feed)
        wsc_fail_later(c, "cannot write to %s: %s", c->authority, uv_strerror(c->write_error));
    return rc;
}

void ws_client_free(struct ws_client *c)
{
    if (!c)
        return;
    if (c->freed)
        BUG("ws_client_free: called twice for %s", c->authority);
    c->freed = true;
    if (c->state == WSC_OPEN)
        ws_send_close(c->ws, WS_CLOSE_NORMAL); /* inside a handler: written before ws_feed() returns */
    if (c->in_feed)
        return; /* wsc_feed() ends the client once ws_feed() has returned */
    wsc_end(c, true, NULL);
    wsc_maybe_free(c);
}
