/* SPDX-License-Identifier: MIT */
/*
 * dns.c - `plane dns` (see dns.h): flags, the UDP and TCP listeners, and
 * the lookups waiting for the controller.
 *
 * A TXT query for a cluster becomes a TxtRecordRequest on the controller
 * link (spec §9); every query waiting for the same cluster is answered by
 * the first TxtRecordResponse for it, and one that waits 5 s, or whose link
 * drops, gets SERVFAIL. Unlike Plane (§17 quirk 19), queries for different
 * clusters never displace each other. Names outside what we serve are
 * REFUSED and other types NOTIMP without asking anyone (dns_msg.c).
 *
 * TCP (RFC 7766): two-byte length prefixes, several queries per
 * connection, answers in any order, closed after 10 s without a query.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>
#include <uv.h>

#include "../common/buf.h"
#include "../common/controller_urls.h"
#include "../common/json_util.h"
#include "../common/list.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/net.h"
#include "../common/node_link.h"
#include "../common/run_loop.h"
#include "../common/wire.h"
#include "../common/xalloc.h"
#include "dns.h"
#include "dns_msg.h"

#define ANSWER_TIMEOUT_MS 5000  /* §19 */
#define TCP_IDLE_MS 10000       /* §19 */
#define TICK_MS 250             /* how often deadlines are checked */
#define MAX_LOOKUPS 4096        /* waiting at once; more get SERVFAIL */
#define MAX_TCP_CONNS 512
#define TCP_MSG_MAX 65535

struct tcp_conn;

struct dns_server {
    uv_loop_t *loop;             /* borrowed */
    char *name, *zone;           /* owned; zone may be NULL */
    struct node_link *link;
    uv_udp_t udp;
    uv_tcp_t tcp;
    uv_timer_t tick;
    struct list_node lookups;    /* of struct lookup, oldest first */
    unsigned nlookups;
    struct list_node conns;      /* of struct tcp_conn */
    unsigned nconns;
    bool stopping;
};

struct lookup {
    struct list_node node;
    struct dns_query q;
    uint64_t deadline;
    struct tcp_conn *conn;       /* a reference, or NULL for UDP */
    struct sockaddr_storage peer; /* UDP */
};

struct tcp_conn {
    struct list_node node;
    uv_tcp_t tcp;
    struct dns_server *srv;
    struct buf in;               /* bytes of queries not yet complete */
    uint64_t last_query;
    unsigned refs;               /* the connection itself, and each lookup on it */
    bool closed;
};

struct write_req {
    uv_write_t req;
    uint8_t data[];
};

/* ---- answering ---- */

static void conn_put(struct tcp_conn *c);

static void write_done(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void tcp_send(struct tcp_conn *c, const uint8_t *msg, size_t len)
{
    struct write_req *w;
    uv_buf_t b;

    if (c->closed)
        return;
    w = xmalloc(sizeof(*w) + len + 2);
    w->data[0] = (uint8_t)(len >> 8);
    w->data[1] = (uint8_t)len;
    memcpy(w->data + 2, msg, len);
    b = uv_buf_init((char *)w->data, (unsigned)(len + 2));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_done) < 0)
        free(w);
}

/* Sends the answer to q over UDP (to peer) or TCP (conn). */
static void respond(struct dns_server *srv, const struct dns_query *q, struct tcp_conn *conn,
                    const struct sockaddr_storage *peer, int rcode, const char *txt)
{
    size_t len;
    uint8_t *wire = dns_answer(q, rcode, txt, conn ? TCP_MSG_MAX : dns_udp_limit(q), &len);

    if (!wire) {
        log_warn("dns: TXT value for %s is too long for one string; SERVFAIL", q->name);
        wire = dns_answer(q, LDNS_RCODE_SERVFAIL, NULL, DNS_UDP_MAX, &len);
    }
    if (conn) {
        tcp_send(conn, wire, len);
    } else {
        uv_buf_t b = uv_buf_init((char *)wire, (unsigned)len);
        int r = uv_udp_try_send(&srv->udp, &b, 1, (const struct sockaddr *)peer);
        if (r < 0)
            log_debug("dns: cannot answer over UDP: %s", uv_strerror(r)); /* the client asks again */
    }
    free(wire);
}

static void lookup_end(struct dns_server *srv, struct lookup *l, int rcode, const char *txt)
{
    respond(srv, &l->q, l->conn, &l->peer, rcode, txt);
    list_remove(&l->node);
    srv->nlookups--;
    dns_query_release(&l->q);
    if (l->conn)
        conn_put(l->conn);
    free(l);
}

static void fail_all(struct dns_server *srv)
{
    while (!list_empty(&srv->lookups))
        lookup_end(srv, list_entry(srv->lookups.next, struct lookup, node), LDNS_RCODE_SERVFAIL, NULL);
}

/* One query, from UDP (conn NULL, peer) or TCP. */
static void handle_query(struct dns_server *srv, const uint8_t *wire, size_t len, struct tcp_conn *conn,
                         const struct sockaddr_storage *peer)
{
    struct lookup *l;
    enum dns_verdict v;

    l = xcalloc(1, sizeof(*l));
    v = dns_query_read(wire, len, srv->zone, &l->q);
    if (v == DNS_LOOKUP && (!node_link_is_up(srv->link) || srv->nlookups >= MAX_LOOKUPS || srv->stopping)) {
        log_debug("dns: %s: the controller cannot be asked now; SERVFAIL", l->q.name);
        l->q.rcode = LDNS_RCODE_SERVFAIL;
        v = DNS_ANSWER;
    }
    if (v != DNS_LOOKUP) {
        if (v == DNS_ANSWER)
            respond(srv, &l->q, conn, peer, l->q.rcode, NULL);
        dns_query_release(&l->q);
        free(l);
        return;
    }
    l->deadline = uv_now(srv->loop) + ANSWER_TIMEOUT_MS;
    if (conn) {
        l->conn = conn;
        conn->refs++;
    } else {
        l->peer = *peer;
    }
    list_insert_tail(&srv->lookups, &l->node);
    srv->nlookups++;
    node_link_send(srv->link, wire_variant("TxtRecordRequest", json_pack("{s:s}", "cluster", l->q.cluster)));
}

/* ---- the controller ---- */

static void link_message(void *arg, const char *tag, json_t *payload)
{
    struct dns_server *srv = arg;
    const char *cluster = json_get_str(payload, "cluster");
    json_t *value = json_object_get(payload, "txt_value");
    struct list_node *pos, *tmp;

    if (strcmp(tag, "TxtRecordResponse") != 0 || !cluster || !(json_is_string(value) || json_is_null(value))) {
        log_warn("dns: dropped a '%s' message from the controller", tag);
        return;
    }
    list_for_each_safe(pos, tmp, &srv->lookups) {
        struct lookup *l = list_entry(pos, struct lookup, node);
        if (strcmp(l->q.cluster, cluster) == 0)
            lookup_end(srv, l, LDNS_RCODE_NOERROR, json_is_string(value) ? json_string_value(value) : NULL);
    }
}

static void link_down(void *arg)
{
    fail_all(arg); /* their requests may be lost with the connection */
}

static const struct node_link_handler link_handler = {.on_down = link_down, .on_message = link_message};

/* ---- UDP ---- */

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char space[TCP_MSG_MAX]; /* one loop, and each datagram is handled before the next read */

    (void)h;
    (void)suggested;
    *b = uv_buf_init(space, sizeof(space));
}

static void udp_read(uv_udp_t *u, ssize_t n, const uv_buf_t *b, const struct sockaddr *addr, unsigned flags)
{
    struct dns_server *srv = u->data;
    struct sockaddr_storage peer;

    if (n <= 0 || !addr || (flags & UV_UDP_PARTIAL))
        return;
    memset(&peer, 0, sizeof(peer));
    memcpy(&peer, addr, addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    handle_query(srv, (const uint8_t *)b->base, (size_t)n, NULL, &peer);
}

/* ---- TCP ---- */

static void conn_closed(uv_handle_t *h)
{
    conn_put(h->data);
}

static void conn_put(struct tcp_conn *c)
{
    if (--c->refs > 0)
        return;
    buf_release(&c->in);
    free(c);
}

static void conn_close(struct tcp_conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    list_remove(&c->node);
    c->srv->nconns--;
    uv_close((uv_handle_t *)&c->tcp, conn_closed); /* drops the connection's own reference */
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char space[16384];

    (void)h;
    (void)suggested;
    *b = uv_buf_init(space, sizeof(space));
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct tcp_conn *c = s->data;

    if (n < 0) {
        conn_close(c);
        return;
    }
    if (buf_append(&c->in, b->base, (size_t)n) < 0) {
        conn_close(c);
        return;
    }
    while (c->in.len >= 2 && !c->closed) {
        size_t len = (size_t)((uint8_t)c->in.data[0] << 8 | (uint8_t)c->in.data[1]);
        if (c->in.len < len + 2)
            break;
        c->last_query = uv_now(c->srv->loop);
        handle_query(c->srv, (const uint8_t *)c->in.data + 2, len, c, NULL);
        buf_consume(&c->in, len + 2);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct dns_server *srv = server->data;
    struct tcp_conn *c;

    if (status < 0)
        return;
    c = xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->refs = 1;
    buf_init(&c->in, 2 * (TCP_MSG_MAX + 2)); /* a partial message and one read */
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    list_insert_tail(&srv->conns, &c->node);
    srv->nconns++;
    c->last_query = uv_now(srv->loop);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || srv->nconns > MAX_TCP_CONNS) {
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

/* ---- deadlines ---- */

static void tick_cb(uv_timer_t *t)
{
    struct dns_server *srv = t->data;
    uint64_t now = uv_now(srv->loop);
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &srv->lookups) {
        struct lookup *l = list_entry(pos, struct lookup, node);
        if (l->deadline > now)
            break; /* oldest first */
        log_warn("dns: no answer from the controller for %s in time; SERVFAIL", l->q.cluster);
        lookup_end(srv, l, LDNS_RCODE_SERVFAIL, NULL);
    }
    list_for_each_safe(pos, tmp, &srv->conns) {
        struct tcp_conn *c = list_entry(pos, struct tcp_conn, node);
        if (now - c->last_query >= TCP_IDLE_MS && c->refs == 1)
            conn_close(c);
    }
}

/* ---- start and stop ---- */

static void stop_cb(void *arg)
{
    struct dns_server *srv = arg;

    srv->stopping = true;
    fail_all(srv);
    while (!list_empty(&srv->conns))
        conn_close(list_entry(srv->conns.next, struct tcp_conn, node));
    uv_close((uv_handle_t *)&srv->udp, NULL);
    uv_close((uv_handle_t *)&srv->tcp, NULL);
    uv_timer_stop(&srv->tick);
    uv_close((uv_handle_t *)&srv->tick, NULL);
    node_link_free(srv->link);
    srv->link = NULL;
}

static int bind_both(struct dns_server *srv, const char *host, int port, struct buf *err)
{
    struct sockaddr_storage ss;
    char addr[NET_ADDR_LEN];
    int r;

    uv_udp_init(srv->loop, &srv->udp);
    uv_tcp_init(srv->loop, &srv->tcp);
    srv->udp.data = srv->tcp.data = srv;
    net_addr_format(addr, host, (uint16_t)port);
    if (net_addr_parse(addr, &ss) < 0) {
        buf_printf(err, "invalid --host '%s' (an IP address)", host);
        return -EINVAL;
    }
    if ((r = uv_udp_bind(&srv->udp, (struct sockaddr *)&ss, 0)) < 0 ||
        (r = uv_udp_recv_start(&srv->udp, udp_alloc, udp_read)) < 0) {
        buf_printf(err, "cannot listen on UDP %s: %s", addr, uv_strerror(r));
        return r;
    }
    if ((r = uv_tcp_bind(&srv->tcp, (struct sockaddr *)&ss, 0)) < 0 ||
        (r = uv_listen((uv_stream_t *)&srv->tcp, 128, on_connection)) < 0) {
        buf_printf(err, "cannot listen on TCP %s: %s", addr, uv_strerror(r));
        return r;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: plane dns --controller-url URL [options]\n"
               "\n"
               "  --controller-url URL  the controller (http://[TOKEN@]host:port/); more than once: several,\n"
               "                        tried in turn\n"
               "  --zone ZONE           answer <cluster>.<ZONE>; without it, _acme-challenge.<cluster>\n"
               "  --port N              UDP and TCP port (default 53)\n"
               "  --host IP             listen address (default 0.0.0.0)\n"
               "  --name NAME           ns-...; random by default\n");
}

int dns_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"name", required_argument, NULL, 'n'},
        {"controller-url", required_argument, NULL, 'u'},
        {"zone", required_argument, NULL, 'z'},
        {"port", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    static char *urls; /* kept to the end of the process, like the other commands' */
    const char *name = NULL, *url = NULL, *zone = NULL, *host = "0.0.0.0";
    struct dns_server srv = {0};
    struct buf err = BUF_INIT;
    uv_loop_t loop;
    long port = 53;
    char *end;
    int opt;

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'n': name = optarg; break;
        case 'u': /* more than once: several controllers, tried in turn */
            urls = controller_urls_append(urls, optarg);
            url = urls;
            break;
        case 'z': zone = optarg; break;
        case 'H': host = optarg; break;
        case 'p':
            port = strtol(optarg, &end, 10);
            if (end == optarg || *end || port < 1 || port > 65535) {
                fprintf(stderr, "plane dns: invalid port '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "plane dns: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!url) {
        fprintf(stderr, "plane dns: --controller-url is required\n");
        return 2;
    }
    if (name && !name_is_valid(name, "ns")) {
        fprintf(stderr, "plane dns: invalid --name '%s' (ns..., [a-z0-9-], at most 45 chars)\n", name);
        return 2;
    }
    srv.name = name ? xstrdup(name) : name_random("ns");
    if (zone) {
        /* Compared with lower-case names without the root's dot. */
        size_t n = strlen(zone);
        srv.zone = xstrdup(zone);
        for (size_t i = 0; i < n; i++)
            srv.zone[i] = (char)tolower((unsigned char)srv.zone[i]);
        if (n > 1 && srv.zone[n - 1] == '.')
            srv.zone[n - 1] = '\0';
    }
    list_init(&srv.lookups);
    list_init(&srv.conns);
    uv_loop_init(&loop);
    srv.loop = &loop;
    if (bind_both(&srv, host, (int)port, &err) < 0 ||
        !(srv.link = node_link_new(&loop, url, "/ctrl/dns-socket", srv.name, &link_handler, &srv, &err))) {
        fprintf(stderr, "plane dns: %s\n", buf_cstr(&err));
        uv_close((uv_handle_t *)&srv.udp, NULL);
        uv_close((uv_handle_t *)&srv.tcp, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        buf_release(&err);
        free(srv.name);
        free(srv.zone);
        return 1;
    }
    uv_timer_init(&loop, &srv.tick);
    srv.tick.data = &srv;
    uv_timer_start(&srv.tick, tick_cb, TICK_MS, TICK_MS);
    log_info("%s: answering ACME TXT queries for %s on %s port %ld (UDP and TCP)", srv.name,
             srv.zone ? srv.zone : "_acme-challenge.<cluster>", host, port);
    run_until_signal(&loop, stop_cb, &srv);
    free(srv.name);
    free(srv.zone);
    buf_release(&err);
    return 0;
}
