/* SPDX-License-Identifier: MIT */
/*
 * h2.c - the HTTP/2 protocol half of the proxy's client side (see h2.h).
 *
 * A request stream becomes one HTTP/1.1 request: ":method :path HTTP/1.1",
 * Host from :authority (RFC 9113 §8.3.1: it wins over a host field), the
 * cookie fields joined with "; " (§8.2.3), every other field as it came
 * (nghttp2 has already refused connection-specific fields, upper-case
 * names and CR/LF/NUL in values, §8.2), a body as chunked unless the client
 * gave a content-length. Everything else of
 * spec §16.1 (/ready, /, tokens, routes, hosts, the x-verified-* contract,
 * forwarding to the backend over HTTP/1.1) happens where it happens for
 * HTTP/1.1 clients, so the two cannot drift apart. The HTTP/1.1 response is
 * parsed with http-parser: 1xx heads are dropped, hop-by-hop fields go,
 * names are lower-cased, and the body (de-chunked) becomes DATA frames.
 * Request trailers are not forwarded. WebSocket over HTTP/2 (RFC 8441) is
 * not offered: SETTINGS_ENABLE_CONNECT_PROTOCOL is never sent.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>
#include <nghttp2/nghttp2.h>

#include "../common/buf.h"
#include "../common/list.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "h2.h"

struct h2_session {
    nghttp2_session *ng;
    const struct h2_io *io;
    void *arg;
    const char *server_header;  /* borrowed */
    struct list_node streams;   /* of struct h2_stream */
    size_t nstreams;
    bool broken;                /* io->send failed */
    bool blocked;               /* io->send asked to stop; flush again when drained */
};

struct h2_stream {
    struct h2_session *s;       /* borrowed */
    struct list_node node;      /* in s->streams */
    int32_t id;
    void *bridge;               /* io's, while the exchange is open */
    bool opened;                /* io->open succeeded and io->close has not run */

    /* The request. */
    char *method, *path, *authority, *host; /* owned */
    struct buf fields;          /* "name: value\r\n" lines */
    struct buf cookie;          /* cookie values joined with "; " */
    size_t head_bytes, nfields;
    bool too_big;               /* past H2_HEAD_MAX / H2_FIELDS_MAX: 431 */
    bool has_length;            /* the client sent content-length */
    bool req_ended;             /* the client ended the request (END_STREAM) */
    bool chunked;               /* the body goes upstream chunked */
    bool head_method;
    size_t unconsumed;          /* body bytes written but not yet taken */

    /* The response. */
    http_parser parser;
    struct buf rfields;         /* name\0value\0 pairs, names lower-cased */
    struct buf rname;           /* the field name being read */
    bool in_value;
    int status;
    bool headers_sent;          /* the response HEADERS were submitted */
    bool resp_done;             /* the whole response body is in resp */
    bool resp_close;            /* the response said "connection: close" */
    bool deferred;              /* the data source said NGHTTP2_ERR_DEFERRED */
    bool paused;                /* io->pause(true) is in effect */
    struct buf resp;            /* body bytes waiting for the client */
};

static const char *const hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
};

int h2_preface(const char *data, size_t len)
{
    size_t n = len < H2_PREFACE_LEN ? len : H2_PREFACE_LEN;

    if (memcmp(data, H2_PREFACE, n) != 0)
        return 0;
    return n == H2_PREFACE_LEN ? 1 : -1;
}

void *h2_session_arg(const struct h2_session *s) { return s->arg; }
void *h2_stream_bridge(const struct h2_stream *st) { return st->bridge; }
void h2_stream_set_bridge(struct h2_stream *st, void *bridge) { st->bridge = bridge; }
struct h2_session *h2_stream_session(const struct h2_stream *st) { return st->s; }
size_t h2_session_streams(const struct h2_session *s) { return s->nstreams; }

static void stream_exchange_close(struct h2_stream *st, bool reuse)
{
    if (!st->opened)
        return;
    st->opened = false;
    st->s->io->close(st, reuse);
    st->bridge = NULL;
}

static void stream_free(struct h2_stream *st)
{
    stream_exchange_close(st, false);
    if (st->unconsumed > 0 && st->s->ng)
        nghttp2_session_consume_connection(st->s->ng, st->unconsumed);
    list_remove(&st->node);
    st->s->nstreams--;
    free(st->method);
    free(st->path);
    free(st->authority);
    free(st->host);
    buf_release(&st->fields);
    buf_release(&st->cookie);
    buf_release(&st->rfields);
    buf_release(&st->rname);
    buf_release(&st->resp);
    free(st);
}

/* ---- the response, from HTTP/1.1 ---- */

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *out, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    struct h2_stream *st = src->ptr;
    size_t n = st->resp.len < length ? st->resp.len : length;

    (void)ng;
    (void)id;
    (void)user;
    if (n > 0) {
        memcpy(out, st->resp.data, n);
        buf_consume(&st->resp, n);
    }
    if (st->paused && st->resp.len < H2_RESP_HIGH / 2 && st->opened) {
        st->paused = false;
        st->s->io->pause(st, false);
    }
    if (st->resp.len == 0 && st->resp_done) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (n == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static void resume(struct h2_stream *st)
{
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(st->s->ng, st->id);
    }
}

/* An answer of the session's own (431 for a head too large, 502 when no exchange could start). */
static void answer_local(struct h2_stream *st, int status, const char *body)
{
    char code[8];
    nghttp2_nv nv[6];
    size_t n = 0;

#define NV(k, v) (nv[n++] = (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), NGHTTP2_NV_FLAG_NONE})
    snprintf(code, sizeof(code), "%d", status);
    NV(":status", code);
    NV("content-type", "text/plain");
    NV("server", st->s->server_header);
    NV("access-control-allow-origin", "*");
    NV("access-control-allow-methods", "*");
    NV("access-control-allow-headers", "*, Authorization");
#undef NV
    buf_reset(&st->resp);
    buf_append_str(&st->resp, body);
    st->resp_done = true;
    st->headers_sent = true;
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = data_read};
    if (nghttp2_submit_response(st->s->ng, st->id, nv, n, st->head_method ? NULL : &dp) != 0)
        nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
}

static struct h2_stream *st_of(http_parser *p)
{
    return p->data;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct h2_stream *st = st_of(p);

    if (st->in_value) {
        buf_append(&st->rfields, "", 1); /* ends the previous value */
        st->in_value = false;
        buf_reset(&st->rname);
    }
    return buf_append(&st->rname, at, len) < 0 ? -1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct h2_stream *st = st_of(p);

    if (!st->in_value) {
        for (size_t i = 0; i < st->rname.len; i++)
            st->rname.data[i] = (char)tolower((unsigned char)st->rname.data[i]);
        buf_append(&st->rfields, st->rname.data ? st->rname.data : "", st->rname.len + 1);
        st->in_value = true;
    }
    return buf_append(&st->rfields, at, len) < 0 ? -1 : 0;
}

static bool is_hop_by_hop(const char *name)
{
    for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++)
        if (strcmp(name, hop_by_hop[i]) == 0)
            return true;
    return false;
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!strchr("!#$%&'*+-.^_`|~", *s) && !isalnum((unsigned char)*s))
            return false;
    return true;
}

static int on_headers_complete(http_parser *p)
{
    struct h2_stream *st = st_of(p);
    nghttp2_nv *nv;
    size_t n = 0, max;
    char code[8];
    const char *pos, *end;

    if (st->in_value)
        buf_append(&st->rfields, "", 1);
    st->in_value = false;
    buf_reset(&st->rname);
    st->status = (int)p->status_code;
    if (st->status < 200) {
        buf_reset(&st->rfields); /* an interim answer (100 Continue): not passed on */
        return 0;
    }
    max = 1;
    end = (st->rfields.data ? st->rfields.data : "") + st->rfields.len;
    for (pos = end - st->rfields.len; pos < end; pos += strlen(pos) + 1)
        max++;
    nv = xcalloc(max, sizeof(*nv));
    snprintf(code, sizeof(code), "%d", st->status);
    nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)code, 7, strlen(code), NGHTTP2_NV_FLAG_NONE};
    for (pos = end - st->rfields.len; pos < end;) {
        const char *name = pos, *value = pos + strlen(pos) + 1;
        pos = value + strlen(value) + 1;
        if (strcmp(name, "connection") == 0 && strcasestr(value, "close"))
            st->resp_close = true;
        if (is_hop_by_hop(name) || !is_token(name))
            continue;
        nv[n++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value), NGHTTP2_NV_FLAG_NONE};
    }
    st->headers_sent = true;
    bool body = !st->head_method && st->status != 204 && st->status != 304;
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = data_read};
    if (nghttp2_submit_response(st->s->ng, st->id, nv, n, body ? &dp : NULL) != 0)
        nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    free(nv);
    buf_release(&st->rfields);
    return body ? 0 : 1; /* 1: http-parser expects no body */
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct h2_stream *st = st_of(p);

    buf_append(&st->resp, at, len);
    if (st->resp.len >= H2_RESP_HIGH && !st->paused && st->opened) {
        st->paused = true;
        st->s->io->pause(st, true);
    }
    resume(st);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct h2_stream *st = st_of(p);

    if (st->status >= 200 || st->status == 0) {
        st->resp_done = true;
        resume(st);
        http_parser_pause(p, 1); /* one response per exchange */
    }
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void h2_stream_response(struct h2_stream *st, const char *data, size_t len)
{
    size_t n;

    if (st->resp_done || len == 0) {
        if (len > 0)
            stream_exchange_close(st, false); /* bytes after the response: that exchange is not reused */
        return;
    }
    n = http_parser_execute(&st->parser, &resp_settings, data, len);
    if (HTTP_PARSER_ERRNO(&st->parser) != HPE_OK && HTTP_PARSER_ERRNO(&st->parser) != HPE_PAUSED) {
        log_debug("h2 stream %d: bad response from the exchange: %s", st->id,
                  http_errno_name(HTTP_PARSER_ERRNO(&st->parser)));
        nghttp2_submit_rst_stream(st->s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        stream_exchange_close(st, false);
    } else if (st->resp_done) {
        /* The whole response is here: its carrier is free again if it ended cleanly on both sides. */
        stream_exchange_close(st, n == len && st->req_ended && !st->chunked && !st->resp_close);
    }
    h2_session_flush(st->s);
}

void h2_stream_response_end(struct h2_stream *st, int status)
{
    struct h2_session *s = st->s;

    if (!st->resp_done && status == 0)
        http_parser_execute(&st->parser, &resp_settings, NULL, 0); /* a body that ends with the connection */
    if (!st->headers_sent)
        answer_local(st, 502, "backend failed\n");
    else if (!st->resp_done)
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    stream_exchange_close(st, false);
    h2_session_flush(s);
}

void h2_stream_written(struct h2_stream *st)
{
    if (st->unconsumed > 0) {
        nghttp2_session_consume(st->s->ng, st->id, st->unconsumed);
        st->unconsumed = 0;
    }
    h2_session_flush(st->s);
}

/* ---- the request, to HTTP/1.1 ---- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct h2_session *s = user;
    struct h2_stream *st;

    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    st = xcalloc(1, sizeof(*st));
    st->s = s;
    st->id = frame->hd.stream_id;
    http_parser_init(&st->parser, HTTP_RESPONSE);
    st->parser.data = st;
    list_insert_tail(&s->streams, &st->node);
    s->nstreams++;
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    return 0;
}

static void set_once(char **field, const uint8_t *value, size_t len)
{
    free(*field);
    *field = xmalloc(len + 1);
    memcpy(*field, value, len);
    (*field)[len] = '\0';
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);

    (void)flags;
    (void)user;
    if (!st || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers: not forwarded */
    st->head_bytes += namelen + valuelen + 4;
    if (++st->nfields > H2_FIELDS_MAX || st->head_bytes > H2_HEAD_MAX)
        st->too_big = true;
    if (st->too_big)
        return 0;
    if (namelen > 0 && name[0] == ':') {
        if (namelen == 7 && memcmp(name, ":method", 7) == 0)
            set_once(&st->method, value, valuelen);
        else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
            set_once(&st->path, value, valuelen);
        else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
            set_once(&st->authority, value, valuelen);
        return 0; /* :scheme: the proxy knows whether it serves TLS */
    }
    if (namelen == 4 && memcmp(name, "host", 4) == 0) {
        /* A second host field is passed on as one, so the HTTP/1.1 side refuses it (§16.1 step 5). */
        if (st->host) {
            buf_printf(&st->fields, "host: %.*s\r\n", (int)valuelen, (const char *)value);
            return 0;
        }
        set_once(&st->host, value, valuelen);
        return 0;
    }
    if (namelen == 6 && memcmp(name, "cookie", 6) == 0) {
        if (st->cookie.len > 0)
            buf_append(&st->cookie, "; ", 2);
        buf_append(&st->cookie, value, valuelen);
        return 0;
    }
    if (namelen == 14 && memcmp(name, "content-length", 14) == 0)
        st->has_length = true;
    buf_append(&st->fields, name, namelen);
    buf_append(&st->fields, ": ", 2);
    buf_append(&st->fields, value, valuelen);
    buf_append(&st->fields, "\r\n", 2);
    return 0;
}

static void request_start(struct h2_stream *st, bool end_stream)
{
    struct buf head = BUF_INIT;
    const char *host = st->authority ? st->authority : st->host;

    if (st->too_big) {
        answer_local(st, 431, "request head too large\n");
        return;
    }
    /* nghttp2 has checked the pseudo fields (§8.3.1); CONNECT has no :path and is refused upstream (405). */
    st->head_method = st->method && strcmp(st->method, "HEAD") == 0;
    st->chunked = !end_stream && !st->has_length;
    buf_printf(&head, "%s %s HTTP/1.1\r\n", st->method ? st->method : "GET", st->path ? st->path : "*");
    if (host)
        buf_printf(&head, "host: %s\r\n", host);
    if (st->fields.len)
        buf_append(&head, st->fields.data, st->fields.len);
    if (st->cookie.len)
        buf_printf(&head, "cookie: %s\r\n", st->cookie.data);
    if (st->chunked)
        buf_append_str(&head, "transfer-encoding: chunked\r\n");
    buf_append_str(&head, "\r\n");
    st->req_ended = end_stream;
    buf_release(&st->fields);
    buf_release(&st->cookie);
    if (st->s->io->open(st, head.data, head.len) < 0)
        answer_local(st, 502, "backend failed\n");
    else
        st->opened = true;
    buf_release(&head);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user)
{
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;

    (void)user;
    if (!st)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        request_start(st, end);
        return 0;
    }
    if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) && end) {
        st->req_ended = true;
        if (st->opened && st->chunked) {
            st->chunked = false;
            if (st->s->io->write(st, "0\r\n\r\n", 5) < 0)
                nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        }
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *user)
{
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, id);
    char size[24];
    int r = 1;

    (void)flags;
    (void)user;
    if (!st || !st->opened) {
        nghttp2_session_consume(ng, id, len); /* nobody wants it: acknowledge at once */
        return 0;
    }
    st->unconsumed += len;
    if (st->chunked && len > 0) {
        int n = snprintf(size, sizeof(size), "%zx\r\n", len);
        r = st->s->io->write(st, size, (size_t)n);
    }
    if (r >= 0)
        r = st->s->io->write(st, (const char *)data, len);
    if (r >= 0 && st->chunked && len > 0)
        r = st->s->io->write(st, "\r\n", 2);
    if (r < 0) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
        stream_exchange_close(st, false);
    } else if (r == 1 && st->opened) {
        nghttp2_session_consume(ng, id, st->unconsumed);
        st->unconsumed = 0;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t error, void *user)
{
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, id);

    (void)error;
    (void)user;
    if (st)
        stream_free(st);
    return 0;
}

/* ---- the session ---- */

struct h2_session *h2_session_new(const struct h2_io *io, void *arg, const char *server_header)
{
    struct h2_session *s = xcalloc(1, sizeof(*s));
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_HEAD_MAX},
    };

    s->io = io;
    s->arg = arg;
    s->server_header = server_header;
    list_init(&s->streams);
    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        fatalx("out of memory");
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    /* Request body is acknowledged only once its exchange has taken it (backpressure). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    if (nghttp2_session_server_new2(&s->ng, cb, s, opt) != 0)
        fatalx("out of memory");
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
    return s;
}

void h2_session_free(struct h2_session *s)
{
    struct list_node *pos, *tmp;

    if (!s)
        return;
    nghttp2_session_del(s->ng); /* calls no callbacks */
    s->ng = NULL;
    list_for_each_safe(pos, tmp, &s->streams)
        stream_free(list_entry(pos, struct h2_stream, node));
    free(s);
}

int h2_session_recv(struct h2_session *s, const uint8_t *data, size_t len)
{
    ssize_t n = nghttp2_session_mem_recv(s->ng, data, len);

    if (n < 0) {
        log_debug("h2: %s", nghttp2_strerror((int)n));
        return -EPROTO; /* nghttp2 has queued a GOAWAY where one is due */
    }
    return h2_session_flush(s);
}

int h2_session_flush(struct h2_session *s)
{
    const uint8_t *data;
    ssize_t n;
    int r;

    if (s->broken)
        return -EPIPE;
    s->blocked = false;
    while (nghttp2_session_want_write(s->ng)) {
        n = nghttp2_session_mem_send(s->ng, &data);
        if (n < 0) {
            s->broken = true;
            return -EPROTO;
        }
        if (n == 0)
            break;
        r = s->io->send(s, data, (size_t)n);
        if (r < 0) {
            s->broken = true;
            return r;
        }
        if (r == 1) {
            s->blocked = true;
            break;
        }
    }
    return 0;
}

void h2_session_shutdown(struct h2_session *s)
{
    nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    h2_session_flush(s);
}

bool h2_session_done(const struct h2_session *s)
{
    return s->broken || (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng));
}
