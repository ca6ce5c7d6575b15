/* SPDX-License-Identifier: MIT */
/*
 * tunnel.c - upgraded connections (see tunnel.h).
 *
 * Bytes are copied through the worker's read buffer with a write tried at
 * once, so in the usual case nothing is copied twice and nothing stays
 * allocated: an idle tunnel holds two sockets and two small structs.
 * (splice(2) through a pipe would save the copy into user space but costs
 * two more descriptors per tunnel and a syscall per direction per chunk;
 * for WebSocket-sized messages the plain copy is cheaper, and it is the
 * only option with TLS.) A FIN from one side is passed on as a FIN to the
 * other, once what was queued for it is out; the tunnel ends when both
 * directions are finished or either side fails.
 */
#include "../common/log.h"
#include "forward.h"
#include "listener.h"
#include "monitor.h"
#include "proxy.h"
#include "splice.h"
#include "stats.h"
#include "tunnel.h"
#include "worker.h"

void tunnel_start(struct conn *c, struct upconn *up, const char *head, size_t head_len, const char *rest,
                  size_t rest_len)
{
    struct proxy *px = c->s.w->px;
    uv_buf_t b[2] = {uv_buf_init((char *)head, (unsigned)head_len), uv_buf_init((char *)rest, (unsigned)rest_len)};

    c->state = CONN_TUNNEL;
    up->state = UP_TUNNEL;
    c->resp_started = true;
    c->deadline = 0;
    up->deadline = 0;
    buf_release(&c->head_out);
    proxy_stats_response(101);
    proxy_stats_tunnel(+1);
    c->tunnel_counted = true;
    if (c->route && c->route->act) {
        monitor_conn_open(px->mon, c->route->act);
        c->tunnel_open = true;
    }
    log_debug("client %s: upgraded to backend %s", c->ip, c->route ? c->route->backend_id : "?");
    if (conn_send(c, b, 2) < 0)
        return;
    /* What the client sent after its request head belongs to the new protocol. */
    if (c->s.in_len > 0) {
        uv_buf_t in = uv_buf_init(c->s.in, (unsigned)c->s.in_len);
        if (forward_send(up, &in, 1) < 0) {
            conn_close(c);
            return;
        }
        stream_consume(&c->s, c->s.in_len);
    }
    stream_read(&c->s, up->s.queued == 0);
    stream_read(&up->s, c->s.queued == 0);
}

void tunnel_closing(struct conn *c)
{
    splice_stop(c);
    if (c->tunnel_open && c->route && c->route->act)
        monitor_conn_close(c->s.w->px->mon, c->route->act);
    c->tunnel_open = false;
    if (c->tunnel_counted)
        proxy_stats_tunnel(-1);
    c->tunnel_counted = false;
}

size_t tunnel_client_input(struct conn *c, const char *data, size_t len)
{
    struct upconn *up = c->up;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    if (!up) {
        conn_close(c);
        return len;
    }
    if (forward_send(up, &b, 1) < 0) {
        conn_close(c);
        return len;
    }
    if (len >= stream_read_size(&c->s))
        c->bulk = true;
    if (up->s.queued > 0)
        stream_read(&c->s, false);
    else
        splice_start(c);
    return len;
}

size_t tunnel_up_input(struct conn *c, const char *data, size_t len)
{
    struct upconn *up = c->up;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    if (conn_send(c, &b, 1) < 0)
        return len;
    if (up && len >= stream_read_size(&up->s))
        c->bulk = true;
    if (c->s.queued > 0 && up)
        stream_read(&up->s, false);
    else if (up)
        splice_start(c);
    return len;
}

static void maybe_finish(struct conn *c)
{
    if (c->tunnel_client_eof && c->tunnel_up_eof)
        conn_close(c);
}

void tunnel_client_end(struct conn *c, int status)
{
    if (status != UV_EOF || !c->up) {
        conn_close(c);
        return;
    }
    c->tunnel_client_eof = true;
    stream_shutdown(&c->up->s);
    maybe_finish(c);
}

void tunnel_up_end(struct conn *c, int status)
{
    if (status != UV_EOF) {
        conn_close(c);
        return;
    }
    c->tunnel_up_eof = true;
    stream_shutdown(&c->s);
    maybe_finish(c);
}

/*
 * With io_uring every write is queued until the kernel has sent it, so
 * input never finds both sides idle: the hand-over to splice is tried when
 * a side drains instead, before the other side is read again (a receive
 * started now would make the hand-over wait for its bytes).
 */
void tunnel_client_drained(struct conn *c)
{
    if (c->s.uring)
        splice_start(c);
    if (c->up)
        stream_read(&c->up->s, true);
}

void tunnel_up_drained(struct conn *c)
{
    if (c->s.uring && c->up)
        splice_start(c);
    stream_read(&c->s, true);
}

void tunnel_quiet(struct conn *c)
{
    /* Either it is handed over, or it waits for the other side's cancellation, or
     * (no longer wanted) splice_start has let both sides read again. */
    if (!c->s.closing && c->up)
        splice_start(c);
}
