/* SPDX-License-Identifier: MIT */
/*
 * http_server.c - HTTP/1.1 server for the controller API (see http_server.h).
 *
 * Each connection parses with http-parser into one struct http_request at a
 * time. The parser is paused at the end of each request; bytes that arrive
 * meanwhile (a pipelined request, or the first WebSocket frames after an
 * upgrade) wait in conn->in. When the response is done the connection goes
 * back to parsing. A connection whose client vanishes while its request is
 * still unanswered calls the request's on_abort, and is freed only after
 * that (or, without on_abort, once the handler answers), so a handler never
 * writes to freed memory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "http_server.h"
#include "list.h"
#include "log.h"
#include "net.h"
#include "ws.h"
#include "xalloc.h"

#define IDLE_TIMEOUT_MS 60000 /* keep-alive connection with nothing to do */
#define HEAD_TIMEOUT_MS 30000 /* a request head must arrive in this time */
#define LINGER_MS 2000 /* reading what a client still sends after our last answer */
#define MAX_QUEUED (8u << 20) /* bytes waiting for a WebSocket or stream reader before it is dropped */
#define MAX_BUFFERED (4u << 20)

enum conn_state {
    CONN_READING,    /* parsing a request */
    CONN_DISPATCHED, /* the handler has it; no answer yet */
    CONN_STREAMING,  /* a streamed response is open */
    CONN_WS,         /* upgraded */
    CONN_CLOSING,
};

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening;
    http_handler_fn *handler;
    void *arg;
    struct list_node conns;
    http_parser_settings settings;
    int port;
    unsigned refs; /* the server itself, the listener, each connection */
};

struct http_ws {
    struct ws *ws;
    const struct ws_handler *h; /* the user's */
    void *arg;
    struct http_conn *conn;
};

struct http_conn {
    struct list_node node; /* in server->conns */
    struct http_server *server;
    uv_tcp_t tcp;
    uv_timer_t timer;
    http_parser parser;
    enum conn_state state;
    struct http_request req;
    struct buf in;          /* received, not yet parsed */
    struct buf field, value; /* header being parsed */
    bool in_value;
    size_t head_bytes;
    int too_big;            /* 413 or 431 when a limit was passed */
    bool message_done;
    bool in_process;        /* inside process(): do not recurse */
    bool overflow;          /* a WebSocket peer or stream reader stopped reading: closing */
    bool dead;              /* the socket is closed; waits for the handler */
    bool closed;            /* handles closed */
    unsigned open_handles;
    struct http_ws hws;
    char peer_ip[64];
};

struct out_write {
    uv_write_t req;
    struct http_conn *conn;
    char *data;
    bool close_after;
};

static void process(struct http_conn *c);
static void conn_close(struct http_conn *c);

static const char *reason(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static void server_unref(struct http_server *s)
{
    if (--s->refs == 0)
        free(s);
}

/* ---- request state ---- */

static void request_clear(struct http_request *r)
{
    free(r->path);
    free(r->query);
    for (size_t i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    buf_release(&r->body);
    r->path = r->query = NULL;
    r->headers = NULL;
    r->nheaders = 0;
    r->method = NULL;
    r->on_abort = NULL;
    r->abort_arg = NULL;
}

const char *http_header(const struct http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Form-style decoding: %XX and '+' for space. */
static char *url_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    return out;
}

char *http_query_param(const struct http_request *r, const char *name)
{
    size_t nlen = strlen(name);
    const char *p = r->query;

    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        char *key = url_decode(p, klen);
        bool match = strlen(key) == nlen && memcmp(key, name, nlen) == 0;
        free(key);
        if (match)
            return eq ? url_decode(eq + 1, len - klen - 1) : xstrdup("");
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

/* ---- parser callbacks ---- */

static int limit(struct http_conn *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > HTTP_MAX_HEAD) {
        c->too_big = 431;
        return -1;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct http_conn *c = p->data;

    request_clear(&c->req);
    buf_init(&c->req.body, HTTP_MAX_BODY);
    buf_reset(&c->field);
    buf_reset(&c->value);
    c->in_value = false;
    c->head_bytes = 0;
    c->too_big = 0;
    c->req.path = xstrdup("");
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;
    size_t old = strlen(c->req.path);

    if (limit(c, n) < 0)
        return -1;
    c->req.path = xrealloc(c->req.path, old + n + 1);
    memcpy(c->req.path + old, at, n);
    c->req.path[old + n] = '\0';
    return 0;
}

static void flush_header(struct http_conn *c)
{
    struct http_request *r = &c->req;

    if (c->field.len == 0)
        return;
    for (char *q = c->field.data; *q; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char)(*q - 'A' + 'a');
    r->headers = xrealloc(r->headers, (r->nheaders + 1) * sizeof(*r->headers));
    r->headers[r->nheaders].name = buf_detach(&c->field);
    r->headers[r->nheaders].value = buf_detach(&c->value);
    r->nheaders++;
    buf_init(&c->field, HTTP_MAX_HEAD);
    buf_init(&c->value, HTTP_MAX_HEAD);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;

    if (c->in_value)
        flush_header(c);
    c->in_value = false;
    if (limit(c, n) < 0 || c->req.nheaders >= 256)
        return c->too_big = 431, -1;
    return buf_append(&c->field, at, n) < 0 ? -1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;

    c->in_value = true;
    if (limit(c, n) < 0)
        return -1;
    return buf_append(&c->value, at, n) < 0 ? -1 : 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    char *q;

    flush_header(c);
    q = strchr(c->req.path, '?');
    c->req.query = xstrdup(q ? q + 1 : "");
    if (q)
        *q = '\0';
    c->req.method = http_method_str((enum http_method)p->method);
    if (p->content_length != ULLONG_MAX && p->content_length > HTTP_MAX_BODY) {
        c->too_big = 413;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = p->data;

    if (buf_append(&c->req.body, at, n) < 0) {
        c->too_big = 413;
        return -1;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_conn *c = p->data;

    c->message_done = true;
    c->req.keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1);
    return 0;
}

/* ---- writing ---- */

static void linger_done(uv_timer_t *t)
{
    conn_close(t->data);
}

static void shutdown_done(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

/*
 * The last answer is out: send our FIN, then read and drop whatever the
 * client still sends until its own FIN (read_cb closes then) or
 * LINGER_MS. Closing at once would make the kernel answer those bytes with
 * a reset, which can destroy the answer before the client has read it (a
 * 413 for a body still on its way).
 */
static void conn_linger(struct http_conn *c)
{
    uv_shutdown_t *req = xmalloc(sizeof(*req));

    c->state = CONN_CLOSING;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, shutdown_done) < 0) {
        free(req);
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, linger_done, LINGER_MS, 0);
}

static void write_done(uv_write_t *req, int status)
{
    struct out_write *w = container_of(req, struct out_write, req);
    struct http_conn *c = w->conn;

    if (status < 0 && !c->dead)
        conn_close(c);
    else if (w->close_after && !c->dead && !c->closed)
        conn_linger(c);
    free(w->data);
    free(w);
}

/* Writes data (taken) to the connection. */
static int conn_write(struct http_conn *c, char *data, size_t len, bool close_after)
{
    struct out_write *w;
    uv_buf_t b = uv_buf_init(data, (unsigned)len);

    if (c->dead || c->closed) {
        free(data);
        return -EPIPE;
    }
    w = xcalloc(1, sizeof(*w));
    w->conn = c;
    w->data = data;
    w->close_after = close_after;
    /* libuv runs write callbacks before the stream's close callback: c outlives w. */
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_done) < 0) {
        free(data);
        free(w);
        conn_close(c);
        return -EPIPE;
    }
    return 0;
}

static void head(struct buf *out, int status, const char *content_type, const char *extra)
{
    buf_printf(out, "HTTP/1.1 %d %s\r\n", status, reason(status));
    if (content_type)
        buf_printf(out, "Content-Type: %s\r\n", content_type);
    if (extra)
        buf_append_str(out, extra);
}

/* The request is over: go back to reading, or let the connection go. */
static void request_finished(struct http_conn *c)
{
    struct http_request *r = &c->req;

    if (c->dead) {
        /* The handler answered a request whose client had gone: now we can let go. */
        request_clear(r);
        conn_close(c);
        return;
    }
    request_clear(r);
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_READING;
    c->message_done = false;
    http_parser_pause(&c->parser, 0);
    process(c);
}

void http_respond(struct http_request *r, int status, const char *content_type, const char *body, size_t len,
                  const char *extra_headers)
{
    struct http_conn *c = r->conn;
    struct buf out = BUF_INIT;
    bool keep = r->keep_alive;

    if (c->state != CONN_DISPATCHED)
        BUG("http_respond on a request in state %d", c->state);
    head(&out, status, content_type, extra_headers);
    buf_printf(&out, "Content-Length: %zu\r\nConnection: %s\r\n\r\n", len, keep ? "keep-alive" : "close");
    buf_append(&out, body, len);
    size_t n = out.len;
    conn_write(c, buf_detach(&out), n, !keep);
    if (!keep && !c->closed)
        c->state = CONN_CLOSING;
    request_finished(c);
}

void http_respond_json(struct http_request *r, int status, json_t *body, const char *extra_headers)
{
    char *s = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);

    http_respond(r, status, "application/json", s, strlen(s), extra_headers);
    free(s);
    json_decref(body);
}

void http_stream_start(struct http_request *r, int status, const char *content_type, const char *extra_headers)
{
    struct http_conn *c = r->conn;
    struct buf out = BUF_INIT;

    if (c->state != CONN_DISPATCHED)
        BUG("http_stream_start on a request in state %d", c->state);
    head(&out, status, content_type, extra_headers);
    buf_append_str(&out, "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n");
    size_t n = out.len;
    c->state = CONN_STREAMING;
    conn_write(c, buf_detach(&out), n, false);
}

static void overflow_close_cb(uv_timer_t *t)
{
    conn_close(t->data);
}

/*
 * A reader that stops reading (a stuck drone or proxy, a browser tab that
 * sleeps on a stream) must not make the controller queue without end: past
 * MAX_QUEUED the connection is closed, from the loop rather than from inside
 * the sender's call (its owner learns through on_close or on_abort, and may
 * free itself there). True once that is decided: len must not be sent.
 */
static bool conn_overflows(struct http_conn *c, size_t len, const char *who)
{
    size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);

    if (c->overflow)
        return true;
    if (queued + len <= MAX_QUEUED)
        return false;
    log_warn("http: %s %s reads nothing (%zu bytes waiting); closing", who, c->peer_ip, queued);
    c->overflow = true;
    uv_timer_start(&c->timer, overflow_close_cb, 0, 0);
    return true;
}

int http_stream_write(struct http_request *r, const char *data, size_t len)
{
    struct http_conn *c = r->conn;
    struct buf out = BUF_INIT;

    if (c->dead || c->state != CONN_STREAMING)
        return -EPIPE;
    if (len == 0)
        return 0;
    if (conn_overflows(c, len, "stream reader"))
        return -EPIPE;
    buf_printf(&out, "%zx\r\n", len);
    buf_append(&out, data, len);
    buf_append_str(&out, "\r\n");
    size_t n = out.len;
    return conn_write(c, buf_detach(&out), n, false);
}

/* ---- websocket ---- */

static int ws_write(void *transport, const char *data, size_t len)
{
    struct http_conn *c = transport;

    if (conn_overflows(c, len, "WebSocket peer"))
        return -EPIPE;
    return conn_write(c, xstrndup(data, len), len, false);
}

static void hws_text(void *arg, const char *msg, size_t len)
{
    struct http_ws *hw = arg;

    if (hw->h->on_text && hw->conn->state == CONN_WS)
        hw->h->on_text(hw->arg, msg, len);
}

static void hws_close(void *arg, int code)
{
    struct http_ws *hw = arg;
    struct http_conn *c = hw->conn;

    if (c->state != CONN_WS)
        return;
    c->state = CONN_CLOSING;
    if (hw->h->on_close)
        hw->h->on_close(hw->arg, code);
}

static const struct ws_handler hws_handler = {.on_text = hws_text, .on_close = hws_close};

static void feed_later_cb(uv_timer_t *t)
{
    process(t->data);
}

struct http_ws *http_upgrade(struct http_request *r, const struct ws_handler *h, void *arg)
{
    struct http_conn *c = r->conn;
    const char *upgrade = http_header(r, "upgrade");
    const char *key = http_header(r, "sec-websocket-key");
    const char *version = http_header(r, "sec-websocket-version");
    struct buf out = BUF_INIT;
    char accept[29];

    if (!upgrade || strcasecmp(upgrade, "websocket") != 0 || !key || !version || strcmp(version, "13") != 0) {
        static const char msg[] = "expected a WebSocket upgrade";
        r->keep_alive = false;
        http_respond(r, 400, "text/plain", msg, sizeof(msg) - 1, NULL);
        return NULL;
    }
    ws_accept_key(key, accept);
    buf_printf(&out,
               "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Accept: %s\r\n\r\n",
               accept);
    size_t n = out.len;
    conn_write(c, buf_detach(&out), n, false);
    c->hws.h = h;
    c->hws.arg = arg;
    c->hws.conn = c;
    c->hws.ws = ws_new(true, ws_write, c, &hws_handler, &c->hws);
    c->state = CONN_WS;
    uv_timer_stop(&c->timer);
    request_clear(r);
    /* Frames that came with the request head: fed from the loop, once the caller has its
     * session ready (inside process() the loop would feed them anyway). */
    if (c->in.len && !c->in_process)
        uv_timer_start(&c->timer, feed_later_cb, 0, 0);
    return &c->hws;
}

int http_ws_send(struct http_ws *hw, const char *text, size_t len)
{
    if (hw->conn->state != CONN_WS)
        return -EPIPE;
    return ws_send_text(hw->ws, text, len);
}

void http_ws_close(struct http_ws *hw, int code)
{
    struct http_conn *c = hw->conn;

    if (c->state != CONN_WS)
        return;
    ws_send_close(hw->ws, code);
    c->state = CONN_CLOSING;
    /* Let the close frame go out before the socket closes. */
    conn_write(c, xstrdup(""), 0, true);
}

const char *http_ws_peer_ip(const struct http_ws *hw)
{
    return hw->conn->peer_ip;
}

/* ---- the connection ---- */

static void conn_handle_closed(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    struct http_server *s = c->server;

    if (--c->open_handles > 0)
        return;
    if (c->hws.ws)
        ws_free(c->hws.ws);
    request_clear(&c->req);
    buf_release(&c->in);
    buf_release(&c->field);
    buf_release(&c->value);
    free(c);
    server_unref(s);
}

/* Closes the socket; the struct is freed once no handler can still answer. */
static void conn_close(struct http_conn *c)
{
    if (c->closed)
        return;
    /* A WebSocket's owner hears of every end (a failed write included), or it
     * would keep using the connection after it is freed. */
    if (c->state == CONN_WS)
        hws_close(&c->hws, 1006);
    bool waiting = c->state == CONN_DISPATCHED || c->state == CONN_STREAMING;
    if (waiting && !c->dead) {
        c->dead = true;
        list_remove(&c->node);
        uv_read_stop((uv_stream_t *)&c->tcp);
        if (c->req.on_abort) {
            void (*fn)(void *) = c->req.on_abort;
            c->req.on_abort = NULL;
            fn(c->req.abort_arg);
        } else if (c->state == CONN_DISPATCHED) {
            return; /* freed when the handler answers */
        }
    }
    c->closed = true;
    c->state = CONN_CLOSING;
    list_remove(&c->node);
    c->tcp.data = c;
    c->timer.data = c;
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void timeout_cb(uv_timer_t *t)
{
    struct http_conn *c = t->data;

    if (c->state == CONN_READING)
        conn_close(c);
}

static void arm_timer(struct http_conn *c)
{
    uv_timer_start(&c->timer, timeout_cb, c->in.len || c->parser.state ? HEAD_TIMEOUT_MS : IDLE_TIMEOUT_MS, 0);
}

static void reject(struct http_conn *c, int status)
{
    struct buf out = BUF_INIT;

    buf_printf(&out, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status, reason(status));
    size_t n = out.len;
    conn_write(c, buf_detach(&out), n, true);
    c->state = CONN_CLOSING;
}

/* Parses what is buffered and dispatches complete requests, one at a time. */
static void process(struct http_conn *c)
{
    struct http_server *s = c->server;

    if (c->in_process)
        return;
    c->in_process = true;
    while (!c->closed && !c->dead) {
        if (c->state == CONN_WS) {
            if (c->in.len) {
                struct buf data = c->in;
                buf_init(&c->in, MAX_BUFFERED);
                int rc = ws_feed(c->hws.ws, data.data, data.len);
                buf_release(&data);
                if (rc < 0 && c->state == CONN_WS)
                    hws_close(&c->hws, 1002);
            }
            if (c->state == CONN_CLOSING)
                conn_write(c, xstrdup(""), 0, true);
            break;
        }
        if (c->state != CONN_READING || c->in.len == 0)
            break;
        size_t n = http_parser_execute(&c->parser, &s->settings, c->in.data, c->in.len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        buf_consume(&c->in, n);
        if (c->message_done) {
            if (c->parser.upgrade) {
                /* Whatever follows the head belongs to the upgraded protocol. */
                c->req.keep_alive = true;
            }
            c->state = CONN_DISPATCHED;
            uv_timer_stop(&c->timer);
            c->req.conn = c;
            snprintf(c->req.peer_ip, sizeof(c->req.peer_ip), "%s", c->peer_ip);
            s->handler(s->arg, &c->req);
            continue;
        }
        if (e != HPE_OK && e != HPE_PAUSED) {
            reject(c, c->too_big ? c->too_big : 400);
            break;
        }
        if (n == 0)
            break;
    }
    c->in_process = false;
    if (!c->closed && !c->dead && c->state == CONN_READING)
        arm_timer(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char slab[65536];

    (void)h;
    (void)suggested;
    *b = uv_buf_init(slab, sizeof(slab));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct http_conn *c = stream->data;

    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->state == CONN_WS)
            hws_close(&c->hws, 1006); /* gone without a close frame */
        conn_close(c);
        return;
    }
    if (c->state == CONN_STREAMING || c->state == CONN_CLOSING)
        return; /* nothing to read while streaming; EOF still ends it */
    if (buf_append(&c->in, b->base, (size_t)nread) < 0) {
        log_warn("http: client %s sent more than %u bytes ahead, closing", c->peer_ip, MAX_BUFFERED);
        conn_close(c);
        return;
    }
    process(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct http_server *s = listener->data;
    struct http_conn *c;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    if (status < 0)
        return;
    c = xcalloc(1, sizeof(*c));
    c->server = s;
    s->refs++;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    list_insert_tail(&s->conns, &c->node);
    buf_init(&c->in, MAX_BUFFERED);
    buf_init(&c->field, HTTP_MAX_HEAD);
    buf_init(&c->value, HTTP_MAX_HEAD);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer_ip, sizeof(c->peer_ip));
        else
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer_ip, sizeof(c->peer_ip));
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    arm_timer(c);
}

/* ---- the server ---- */

struct http_server *http_server_new(uv_loop_t *loop, http_handler_fn *handler, void *arg)
{
    struct http_server *s = xcalloc(1, sizeof(*s));

    s->loop = loop;
    s->handler = handler;
    s->arg = arg;
    s->refs = 1;
    list_init(&s->conns);
    http_parser_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_message_complete = on_message_complete;
    return s;
}

int http_server_listen(struct http_server *s, const char *host, int port, struct buf *err)
{
    struct sockaddr_storage ss;
    char addr[NET_ADDR_LEN];
    int len = sizeof(ss);
    int rc;

    net_addr_format(addr, host, (uint16_t)(port ? port : 1));
    if (port < 0 || port > 65535 || net_addr_parse(addr, &ss) < 0) {
        buf_printf(err, "invalid listen address '%s' port %d", host, port);
        return -EINVAL;
    }
    if (port == 0)
        ((struct sockaddr_in *)&ss)->sin_port = 0;
    uv_tcp_init(s->loop, &s->listener);
    s->listener.data = s;
    s->listening = true;
    s->refs++;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection)) < 0) {
        buf_printf(err, "cannot listen on %s: %s", addr, uv_strerror(rc));
        return rc == UV_EADDRINUSE ? -EADDRINUSE : -EINVAL;
    }
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int http_server_port(const struct http_server *s)
{
    return s->port;
}

static void listener_closed(uv_handle_t *h)
{
    server_unref(h->data);
}

void http_server_close(struct http_server *s)
{
    struct list_node *pos, *tmp;

    if (s->listening)
        uv_close((uv_handle_t *)&s->listener, listener_closed);
    list_for_each_safe(pos, tmp, &s->conns) {
        struct http_conn *c = list_entry(pos, struct http_conn, node);
        if (c->state == CONN_WS && c->hws.h->on_close) {
            c->state = CONN_CLOSING;
            c->hws.h->on_close(c->hws.arg, 1001);
        }
        conn_close(c);
    }
    server_unref(s);
}
