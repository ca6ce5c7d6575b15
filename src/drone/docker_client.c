/* SPDX-License-Identifier: MIT */
/*
 * docker_client.c - HTTP to the Docker Engine over its Unix socket, on
 * libcurl's multi interface driven by libuv (see docker_client.h).
 *
 * libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one
 * uv_poll per socket) and when to call it back (CURLMOPT_TIMERFUNCTION: one
 * uv_timer); on readiness we call curl_multi_socket_action. libcurl forbids
 * most of its API inside its own callbacks, so the write and header
 * callbacks only stash bytes; lines and completions are handed to the
 * caller after curl_multi_socket_action returns ("dispatch"), where the
 * caller may freely start, cancel or close. Requests cancelled during a
 * dispatch are unlinked and freed once it is over.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../common/line_reader.h"
#include "../common/list.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "docker_client.h"

#define MAX_PLAIN_BODY (64u << 20) /* a container list of thousands fits */
#define MAX_INBOX (16u << 20)      /* stream bytes not yet handed over */
#define MAX_LINE (4u << 20)
#define CONNECT_TIMEOUT_MS 5000L
#define MAX_IDLE_CONNECTIONS 8

struct docker_client {
    uv_loop_t *loop;                    /* borrowed */
    CURLM *multi;                       /* NULL once torn down */
    char *socket_path;                  /* owned */
    uv_timer_t timer;                   /* libcurl's timeout */
    struct list_node requests;          /* of struct docker_request */
    struct list_node socks;             /* of struct sock_ctx */
    docker_close_handle_fn *close_hook; /* NULL: plain uv_close */
    void *close_ctx;
    unsigned handles;                   /* open or closing handles */
    unsigned depth;                     /* > 0 while curl or a dispatch runs */
    bool need_reap;                     /* a request was cancelled during a dispatch */
    bool closing;
    bool torn_down;
};

struct sock_ctx {
    struct list_node node; /* in client->socks */
    struct docker_client *c;
    uv_poll_t poll;
    curl_socket_t fd;
};

struct docker_request {
    struct list_node node; /* in client->requests */
    struct docker_client *c;
    CURL *easy;
    struct curl_slist *headers;
    char *url;  /* owned */
    char *body; /* owned request body, or NULL */
    docker_line_fn *on_line;
    docker_done_fn *on_done;
    void *arg;
    struct buf resp;  /* plain body, or a stream's non-2xx body */
    struct buf inbox; /* stream bytes not yet handed over */
    struct line_reader lines;
    int status;
    bool headers_in;   /* the final response's headers are complete */
    bool headers_told; /* on_line(status, NULL, 0) ran */
    bool overflow;     /* the body went past its cap */
    bool cancelled;
    bool added;
    char errbuf[CURL_ERROR_SIZE];
};

struct default_close {
    void (*done)(void *ptr);
    void *ptr;
};

static void default_closed(uv_handle_t *h)
{
    struct default_close *d = h->data;

    d->done(d->ptr);
    free(d);
}

static void close_handle(struct docker_client *c, uv_handle_t *h, void (*done)(void *ptr), void *ptr)
{
    if (c->close_hook) {
        c->close_hook(c->close_ctx, h, done, ptr);
        return;
    }
    struct default_close *d = xmalloc(sizeof(*d));
    d->done = done;
    d->ptr = ptr;
    h->data = d;
    uv_close(h, default_closed);
}

static void client_handle_closed(struct docker_client *c)
{
    if (c->handles == 0)
        BUG("docker client: more handles closed than opened");
    if (--c->handles == 0 && c->closing) {
        free(c->socket_path);
        free(c);
    }
}

static void sock_closed(void *ptr)
{
    struct sock_ctx *s = ptr;
    struct docker_client *c = s->c;

    free(s);
    client_handle_closed(c);
}

static void timer_closed(void *ptr)
{
    client_handle_closed(ptr);
}

static void sock_close(struct sock_ctx *s)
{
    list_remove(&s->node);
    uv_poll_stop(&s->poll);
    close_handle(s->c, (uv_handle_t *)&s->poll, sock_closed, s);
}

static void request_free(struct docker_request *r)
{
    if (r->added)
        curl_multi_remove_handle(r->c->multi, r->easy);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    list_remove(&r->node);
    buf_release(&r->resp);
    buf_release(&r->inbox);
    line_reader_release(&r->lines);
    free(r->url);
    free(r->body);
    free(r);
}

static bool status_ok(int status)
{
    return status >= 200 && status < 300;
}

static int line_cb(void *arg, const char *line, size_t len)
{
    struct docker_request *r = arg;

    if (r->cancelled || r->c->closing)
        return 1; /* stop */
    if (line) /* NULL: an overlong line was skipped */
        r->on_line(r->arg, r->status, line, len);
    return 0;
}

/* Hands a stream's news to its caller: headers first, then whole lines. */
static void stream_deliver(struct docker_request *r)
{
    if (!r->on_line || r->cancelled)
        return;
    if (r->headers_in && !r->headers_told) {
        r->headers_told = true;
        r->on_line(r->arg, r->status, NULL, 0);
        if (r->cancelled || r->c->closing)
            return;
    }
    if (r->inbox.len > 0) {
        /* Take the bytes first: a line callback may cancel r, which frees nothing now. */
        size_t n = r->inbox.len;
        char *data = buf_detach(&r->inbox);
        buf_init(&r->inbox, MAX_INBOX);
        line_reader_feed(&r->lines, data, n, line_cb, r);
        free(data);
    }
}

static char *docker_message(const struct docker_request *r)
{
    json_t *j = json_loadb(r->resp.data ? r->resp.data : "", r->resp.len, 0, NULL);
    const char *m = json_string_value(json_object_get(j, "message"));
    char *out;

    if (m) {
        out = xstrdup(m);
    } else {
        /* Not Docker's JSON: a short, single-line excerpt of whatever it is. */
        out = xstrndup(r->resp.data ? r->resp.data : "", 200);
        for (char *p = out; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        if (!*out) {
            free(out);
            out = xasprintf("HTTP status %d", r->status);
        }
    }
    json_decref(j);
    return out;
}

static int curl_errno(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

/* r is done (removed from the multi by the caller or not): tell its caller and free it. */
static void request_finish(struct docker_request *r, CURLcode rc)
{
    struct docker_response res = {0};
    char *msg = NULL;
    long code = 0;

    if (r->added) {
        curl_multi_remove_handle(r->c->multi, r->easy);
        r->added = false;
    }
    if (r->cancelled) {
        request_free(r);
        return;
    }
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    r->status = (int)code;
    stream_deliver(r);
    if (r->cancelled || r->c->closing) {
        request_free(r);
        return;
    }
    res.status = r->status;
    if (r->overflow) {
        res.error = -EFBIG;
        msg = xstrdup("docker's response is too large");
    } else if (rc == CURLE_COULDNT_CONNECT) {
        /* libcurl's own text names "localhost port 80": say what failed on the socket. */
        long os_errno = 0;
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
        res.error = os_errno > 0 ? -(int)os_errno : -ECONNREFUSED;
        msg = xasprintf("cannot connect to the docker engine at '%s': %s", r->c->socket_path, strerror(-res.error));
    } else if (rc != CURLE_OK) {
        res.error = curl_errno(rc);
        msg = xasprintf("docker engine at '%s': %s", r->c->socket_path,
                        r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc));
        size_t n = strlen(msg);
        if (n > 0 && msg[n - 1] == '\n')
            msg[n - 1] = '\0';
    } else if (r->status >= 400 || (r->on_line && !status_ok(r->status))) {
        msg = docker_message(r);
    }
    res.message = msg;
    if (!r->on_line) {
        res.body = buf_cstr(&r->resp);
        res.body_len = r->resp.len;
    }
    r->on_done(r->arg, &res);
    free(msg);
    request_free(r);
}

/* Everything that waits for the caller after libcurl ran: stream lines, then completions. */
static void dispatch(struct docker_client *c)
{
    struct list_node *pos, *tmp;
    CURLMsg *m;
    int left;

    list_for_each_safe(pos, tmp, &c->requests) {
        if (c->closing)
            return;
        stream_deliver(list_entry(pos, struct docker_request, node));
    }
    while (!c->closing && (m = curl_multi_info_read(c->multi, &left))) {
        struct docker_request *r = NULL;
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode rc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        request_finish(r, rc);
    }
}

static void teardown(struct docker_client *c)
{
    struct list_node *pos, *tmp;

    if (c->torn_down)
        return;
    c->torn_down = true;
    list_for_each_safe(pos, tmp, &c->requests)
        request_free(list_entry(pos, struct docker_request, node));
    /* May call socket_cb with CURL_POLL_REMOVE for cached connections. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    list_for_each_safe(pos, tmp, &c->socks)
        sock_close(list_entry(pos, struct sock_ctx, node));
    uv_timer_stop(&c->timer);
    close_handle(c, (uv_handle_t *)&c->timer, timer_closed, c);
}

/* Called when the outermost curl call or dispatch is over. */
static void settle(struct docker_client *c)
{
    struct list_node *pos, *tmp;

    if (c->closing) {
        teardown(c);
        return;
    }
    if (c->need_reap) {
        c->need_reap = false;
        list_for_each_safe(pos, tmp, &c->requests) {
            struct docker_request *r = list_entry(pos, struct docker_request, node);
            if (r->cancelled)
                request_free(r);
        }
    }
}

static void run_action(struct docker_client *c, curl_socket_t fd, int flags)
{
    int running;

    c->depth++;
    curl_multi_socket_action(c->multi, fd, flags, &running);
    dispatch(c);
    if (--c->depth == 0)
        settle(c);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    struct sock_ctx *s = container_of(h, struct sock_ctx, poll);
    int flags = 0;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    run_action(s->c, s->fd, flags);
}

static void timer_cb(uv_timer_t *t)
{
    struct docker_client *c = container_of(t, struct docker_client, timer);

    run_action(c, CURL_SOCKET_TIMEOUT, 0);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct docker_client *c = userp;
    struct sock_ctx *s = socketp;
    int events = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s)
            sock_close(s);
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof(*s));
        s->c = c;
        s->fd = fd;
        int rc = uv_poll_init_socket(c->loop, &s->poll, fd);
        if (rc < 0) {
            log_error("docker client: cannot watch socket %d: %s", (int)fd, uv_strerror(rc));
            free(s);
            return -1;
        }
        c->handles++;
        list_insert_tail(&c->socks, &s->node);
        curl_multi_assign(c->multi, fd, s);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, poll_cb);
    return 0;
}

static int timerfunc_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct docker_client *c = userp;

    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else /* never call libcurl from here: a 0 ms timer runs on the next loop turn */
        uv_timer_start(&c->timer, timer_cb, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t header_cb(char *data, size_t size, size_t n, void *userp)
{
    struct docker_request *r = userp;
    size_t len = size * n;

    if (len <= 2 && (data[0] == '\r' || data[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200) { /* not an interim 1xx */
            r->status = (int)code;
            r->headers_in = true;
        }
    }
    return len;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userp)
{
    struct docker_request *r = userp;
    size_t len = size * n;

    if (r->cancelled)
        return 0; /* aborts the transfer */
    if (r->on_line && status_ok(r->status)) {
        if (memchr(data, '\0', len)) {
            r->overflow = true; /* not text: give up rather than mis-split */
            return 0;
        }
        if (buf_append(&r->inbox, data, len) < 0) {
            r->overflow = true;
            return 0;
        }
    } else if (buf_append(&r->resp, data, len) < 0) {
        r->overflow = true;
        return 0;
    }
    return len;
}

void docker_url_escape(struct buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~", ch)) {
            buf_append(out, s, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            buf_append(out, e, 3);
        }
    }
}

struct docker_client *docker_client_new(uv_loop_t *loop, const char *socket_path,
                                        docker_close_handle_fn *close_hook, void *ctx)
{
    struct docker_client *c = xcalloc(1, sizeof(*c));

    curl_global_init(CURL_GLOBAL_DEFAULT);
    c->loop = loop;
    c->socket_path = xstrdup(socket_path);
    c->close_hook = close_hook;
    c->close_ctx = ctx;
    list_init(&c->requests);
    list_init(&c->socks);
    c->multi = curl_multi_init();
    if (!c->multi)
        fatalx("docker client: curl_multi_init failed");
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timerfunc_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    /* Idle keep-alive connections kept for reuse: the engine never closes them itself. */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)MAX_IDLE_CONNECTIONS);
    uv_timer_init(loop, &c->timer);
    c->handles = 1;
    return c;
}

void docker_client_close(struct docker_client *c)
{
    if (!c || c->closing)
        return;
    c->closing = true;
    if (c->depth == 0)
        teardown(c);
}

struct docker_request *docker_request_start(struct docker_client *c, const struct docker_request_spec *spec)
{
    struct docker_request *r;
    CURLMcode mrc;

    if (c->closing)
        BUG("docker client: request after close");
    r = xcalloc(1, sizeof(*r));
    r->c = c;
    r->on_line = spec->on_line;
    r->on_done = spec->on_done;
    r->arg = spec->arg;
    buf_init(&r->resp, MAX_PLAIN_BODY);
    buf_init(&r->inbox, MAX_INBOX);
    line_reader_init(&r->lines, MAX_LINE);
    r->url = xasprintf("http://localhost/" DOCKER_API_VERSION "%s", spec->path);
    r->easy = curl_easy_init();
    if (!r->easy)
        fatalx("docker client: curl_easy_init failed");
    list_insert_tail(&c->requests, &r->node);

    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    if (spec->timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, spec->timeout_ms);
    /* A 100-continue round trip would only add latency on a local socket. */
    r->headers = curl_slist_append(r->headers, "Expect:");
    if (spec->body)
        r->headers = curl_slist_append(r->headers, "Content-Type: application/json");
    if (spec->auth) {
        char *h = xasprintf("X-Registry-Auth: %s", spec->auth);
        r->headers = curl_slist_append(r->headers, h);
        free(h);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    if (strcmp(spec->method, "POST") == 0) {
        r->body = xstrdup(spec->body ? spec->body : "");
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    } else if (strcmp(spec->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, spec->method);
    }
    mrc = curl_multi_add_handle(c->multi, e);
    if (mrc != CURLM_OK)
        fatalx("docker client: curl_multi_add_handle: %s", curl_multi_strerror(mrc));
    r->added = true;
    return r;
}

void docker_request_cancel(struct docker_request *r)
{
    if (!r || r->cancelled)
        return;
    r->cancelled = true;
    if (r->c->depth > 0)
        r->c->need_reap = true; /* freed when the dispatch is over */
    else
        request_free(r);
}
