/* SPDX-License-Identifier: MIT */
/*
 * proxy.c - `plane proxy`: flags and the port table (spec §2.3), the
 * certificate's start (§16.5: with HTTPS no listener opens before there is
 * one; cert_manager.c keeps it current), and the process layout: the main thread runs the
 * control loop (controller link, keepalive schedule, signals), and one
 * worker loop per core serves traffic on its own SO_REUSEPORT sockets.
 *
 * Why one controller link and a shared cache rather than a link per
 * worker: the controller sees one proxy node, as in Plane; a route looked
 * up by one worker serves every worker; and two lookups for the same token
 * from different workers share one RouteInfoRequest. The price is a mutex
 * on the cache, held for a hash lookup; keep-alive connections mostly skip
 * even that, because each connection remembers its last route.
 *
 * Graceful shutdown (§16.7): on SIGINT/SIGTERM the workers stop accepting
 * and close idle connections; exchanges in progress finish (their
 * responses say "connection: close"); after 10 s whatever is left is
 * closed. Then the controller link goes, and the process exits.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "../common/buf.h"
#include "../common/http_server.h"
#include "../common/controller_urls.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/run_loop.h"
#include "../common/version.h"
#include "../common/xalloc.h"
#include "cert_manager.h"
#include "ctrl_link.h"
#include "monitor.h"
#include "proxy.h"
#include "stats.h"
#include "stream.h"
#include "route_cache.h"
#include "rules.h"
#include "tls.h"
#include "worker.h"

#define SHUTDOWN_GRACE_MS 10000 /* §19 */
#define MAX_WORKERS ROUTE_CACHE_MAX_WORKERS

static void usage(FILE *f)
{
    fprintf(f, "usage: plane proxy --controller-url URL --cluster NAME [options]\n"
               "\n"
               "  --controller-url URL     the controller (http://[TOKEN@]host:port/); more than once: several,\n"
               "                           tried in turn\n"
               "  --cluster NAME           the cluster this proxy serves (host[:port])\n"
               "  --name NAME              px-...; random by default\n"
               "  --http-port N            HTTP port (default 9090; 80 with HTTPS)\n"
               "  --https                  serve HTTPS (default port 443; HTTP then only redirects)\n"
               "  --https-port N           HTTPS port (implies --https)\n"
               "  --cert-path FILE         certificate file: {\"cert\": PEM chain, \"key\": PEM key}\n"
               "  --root-redirect-url URL  where a request for / is sent (301)\n"
               "  --acme-endpoint URL      obtain and renew the certificate from this ACME directory (DNS-01)\n"
               "  --acme-email EMAIL       ACME account contact (also --acme-mailto)\n"
               "  --acme-eab-kid ID, --acme-eab-hmac-key KEY   External Account Binding\n"
               "                           (also --acme-eab-keypair ID:KEY); KEY is base64url\n"
               "  --acme-ca-cert FILE      CA certificates that verify the ACME server (default: the system's)\n"
               "  --acme-account-key FILE  the ACME account key (default: <cert-path>.account.pem)\n"
               "  --acme-dns-wait SECONDS  wait after publishing a TXT record (default 15)\n"
               "  --host IP                listen address (default 0.0.0.0)\n"
               "  --workers N              event loops, one per core by default\n"
               "  --keepalive-interval S   seconds between KeepAlives of a backend in use (default 7)\n"
               "  --metrics-port N         serve Prometheus metrics at http://127.0.0.1:N/metrics\n"
               "  --no-splice              copy tunnel bytes through the proxy instead of splice(2)\n"
               "  --io uring|epoll         how plain TCP connections do their I/O (default: $PLANE_PROXY_IO,\n"
               "                           else io_uring where the kernel allows it, else epoll)\n");
}

void proxy_wake_worker(struct proxy *px, unsigned idx)
{
    struct worker *w;

    if (idx >= px->nworkers)
        return;
    w = px->workers[idx];
    uv_mutex_lock(&px->wake_lock);
    if (w && w->alive)
        worker_wake(w);
    uv_mutex_unlock(&px->wake_lock);
}

static void cache_wake(void *arg, unsigned worker)
{
    proxy_wake_worker(arg, worker);
}

static void send_keepalive(void *arg, const char *backend_id)
{
    struct proxy *px = arg;

    if (px->link)
        ctrl_link_keepalive(px->link, backend_id);
}

static int parse_port(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);

    /* Not 0: every worker binds the port itself, so it must be known. */
    if (end == s || *end || v < 1 || v > 65535)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

/* A bound TCP socket for host:port; with reuseport, one of several sharing it. -errno on failure. */
static int bind_socket(const char *host, int port, bool reuseport)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char addr[NET_ADDR_LEN];
    int fd, one = 1, rc;

    net_addr_format(addr, host, 1);
    if (net_addr_parse(addr, &ss) < 0)
        return -EINVAL;
    if (ss.ss_family == AF_INET) {
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
        len = sizeof(struct sockaddr_in);
    } else {
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        len = sizeof(struct sockaddr_in6);
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd == -1)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) ||
        bind(fd, (struct sockaddr *)&ss, len) == -1) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

/*
 * SO_REUSEPORT would let us share a port with another process of the same
 * user; a plain bind first makes "port in use" an error, as it should be.
 */
static int check_port_free(const char *host, int port)
{
    int fd = bind_socket(host, port, false);

    if (fd < 0)
        return fd;
    close(fd);
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;

    /* Every proxied connection is two descriptors: take what the hard limit allows. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- shutdown ---- */

static void handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void finish(struct proxy *px)
{
    /* First: the certificate thread sends through the link. */
    cert_manager_stop(px->certs);
    px->certs = NULL;
    if (px->tls)
        uv_close((uv_handle_t *)&px->renew, handle_closed);
    uv_timer_stop(&px->force);
    uv_close((uv_handle_t *)&px->force, handle_closed);
    uv_close((uv_handle_t *)&px->worker_done, handle_closed);
    ctrl_link_free(px->link);
    px->link = NULL;
    route_cache_free(px->cache);
    px->cache = NULL;
    monitor_free(px->mon);
    px->mon = NULL;
}

static void worker_done_cb(uv_async_t *a)
{
    struct proxy *px = a->data;
    unsigned done = 0;

    for (unsigned i = 0; i < px->nworkers; i++)
        if (atomic_load(&px->workers[i]->finished))
            done++;
    if (done < px->nworkers)
        return;
    /* Every worker has finished, but one may still be inside its last
     * uv_async_send to this loop: wait for the threads before the loop ends. */
    for (unsigned i = 0; i < px->nworkers; i++) {
        uv_thread_join(&px->workers[i]->thread);
        px->workers[i]->joined = true;
    }
    if (!px->stopping)
        log_error("the workers stopped on their own");
    px->stopping = true;
    finish(px);
}

static void force_cb(uv_timer_t *t)
{
    struct proxy *px = t->data;

    log_info("grace period over, closing the remaining connections");
    for (unsigned i = 0; i < px->nworkers; i++) {
        atomic_store(&px->workers[i]->want_force, true);
        proxy_wake_worker(px, i);
    }
}

static void stop_cb(void *arg)
{
    struct proxy *px = arg;

    if (px->stopping)
        return;
    px->stopping = true;
    if (px->metrics)
        http_server_close(px->metrics);
    px->metrics = NULL;
    if (!px->workers_started) {
        /* Still waiting for a certificate: nothing is being served. */
        finish(px);
        return;
    }
    for (unsigned i = 0; i < px->nworkers; i++) {
        atomic_store(&px->workers[i]->want_drain, true);
        proxy_wake_worker(px, i);
    }
    uv_timer_start(&px->force, force_cb, SHUTDOWN_GRACE_MS, 0);
}

/* ---- the certificate ---- */

static void start_workers(struct proxy *px);

bool proxy_io_valid(const char *io)
{
    return !io || strcmp(io, "uring") == 0 || strcmp(io, "epoll") == 0;
}

/* --io, else $PLANE_PROXY_IO, else io_uring if the kernel allows it; logged once. */
static int choose_io(struct proxy *px, const struct proxy_options *o, struct buf *err)
{
    const char *io = o->io ? o->io : getenv("PLANE_PROXY_IO");
    struct buf why = BUF_INIT;

    if (io && !*io)
        io = NULL;
    if (!proxy_io_valid(io)) {
        buf_printf(err, "invalid %s '%s' (uring or epoll)", o->io ? "--io" : "PLANE_PROXY_IO", io);
        return -EINVAL;
    }
    if (io && strcmp(io, "epoll") == 0) {
        log_info("%s: i/o through epoll (chosen)", px->name);
        return 0;
    }
    px->io_uring = stream_ring_probe(&why);
    if (px->io_uring)
        log_info("%s: i/o through io_uring", px->name);
    else
        log_warn("%s: i/o through epoll: %s", px->name, buf_cstr(&why));
    buf_release(&why);
    return 0;
}

static void cert_installed(void *arg)
{
    struct proxy *px = arg;

    if (!px->workers_started && !px->stopping)
        start_workers(px);
}

static void cert_response(void *arg, const char *tag, bool accepted)
{
    struct proxy *px = arg;

    if (px->certs)
        cert_manager_response(px->certs, tag, accepted);
}

static void renew_cb(uv_signal_t *h, int signum)
{
    struct proxy *px = h->data;

    (void)signum;
    log_info("SIGUSR1: renewing the certificate");
    if (px->certs)
        cert_manager_renew_now(px->certs);
}

/* ---- main ---- */

static int check_options(struct proxy_options *o, struct buf *err)
{
    if (!o->controller_url || !o->cluster) {
        buf_printf(err, "--controller-url and --cluster are required");
        return -EINVAL;
    }
    if (o->name && !name_is_valid(o->name, "px")) {
        buf_printf(err, "invalid --name '%s' (px..., [a-z0-9-], at most 45 chars)", o->name);
        return -EINVAL;
    }
    if (!*o->cluster || strpbrk(o->cluster, "/?# \t")) {
        buf_printf(err, "invalid --cluster '%s'", o->cluster);
        return -EINVAL;
    }
    if (!o->acme_endpoint && (o->acme_email || o->eab_kid || o->acme_ca_cert || o->acme_account_key)) {
        buf_printf(err, "ACME settings need --acme-endpoint");
        return -EINVAL;
    }
    if (!o->eab_kid != !o->eab_key) {
        buf_printf(err, "--acme-eab-kid and --acme-eab-hmac-key go together");
        return -EINVAL;
    }
    if (o->eab_key) {
        size_t n;
        unsigned char *k = base64url_decode(o->eab_key, &n);
        free(k);
        if (!k || n == 0) {
            buf_printf(err, "--acme-eab-hmac-key must be base64url");
            return -EINVAL;
        }
    }
    if (o->acme_endpoint && strncmp(o->acme_endpoint, "https://", 8) != 0 &&
        strncmp(o->acme_endpoint, "http://", 7) != 0) {
        buf_printf(err, "invalid --acme-endpoint '%s' (an https:// URL)", o->acme_endpoint);
        return -EINVAL;
    }
    return 0;
}

static void metrics_handler(void *arg, struct http_request *req)
{
    struct buf out = BUF_INIT;

    (void)arg;
    if (strcmp(req->path, "/metrics") != 0 || strcmp(req->method, "GET") != 0) {
        http_respond(req, 404, NULL, "", 0, NULL);
        return;
    }
    proxy_stats_render(&out);
    http_respond(req, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len, NULL);
    buf_release(&out);
}

/* Frees the configuration part of px, and px. */
static void proxy_free_config(struct proxy *px)
{
    tls_ctx_free(px->tls);
    free(px->name);
    free(px->cluster);
    free(px->server_header);
    free(px->root_redirect);
    free(px->bind_host);
    free(px);
}

int proxy_start(struct proxy **out, uv_loop_t *loop, const struct proxy_options *o, struct buf *err)
{
    struct proxy *px;
    int ports[2];
    bool tls_port[2], redirect_port[2];
    unsigned nports = 0;
    int rc = -EINVAL;

    *out = NULL;
    px = xcalloc(1, sizeof(*px));
    px->name = o->name ? xstrdup(o->name) : name_random("px");
    px->cluster = xstrdup(o->cluster);
    px->server_header = xasprintf("Plane/%s-%s", PLANE_VERSION, plane_git_hash());
    px->bind_host = xstrdup(o->host);
    px->splice = !o->no_splice;
    if ((rc = choose_io(px, o, err)) < 0)
        goto out;
    rc = -EINVAL;
    if (o->root_redirect && !(px->root_redirect = rules_normalize_url(o->root_redirect))) {
        buf_printf(err, "invalid --root-redirect-url '%s'", o->root_redirect);
        goto out;
    }
    /* §2.3's port table. */
    if (!o->https && o->https_port < 0) {
        px->http_port = o->http_port >= 0 ? o->http_port : 9090;
        px->https_port = -1;
    } else {
        px->https_port = o->https_port >= 0 ? o->https_port : 443;
        px->http_port = o->http_port >= 0 ? o->http_port : 80;
    }
    if (px->https_port >= 0) {
        if (!o->cert_path && !o->acme_endpoint) {
            buf_printf(err, "HTTPS needs --cert-path or --acme-endpoint");
            goto out;
        }
        px->tls = tls_ctx_new(); /* the certificate comes with cert_manager_start() */
        if (o->acme_endpoint)
            curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread uses curl */
    }
    if (px->http_port >= 0) {
        ports[nports] = px->http_port;
        tls_port[nports] = false;
        redirect_port[nports] = px->https_port >= 0;
        nports++;
    }
    if (px->https_port >= 0) {
        ports[nports] = px->https_port;
        tls_port[nports] = true;
        redirect_port[nports] = false;
        nports++;
    }
    for (unsigned i = 0; i < nports; i++) {
        int r = check_port_free(px->bind_host, ports[i]);
        if (r < 0) {
            buf_printf(err, "cannot listen on %s port %d: %s", px->bind_host, ports[i], strerror(-r));
            rc = r;
            goto out;
        }
    }
    raise_nofile();

    px->nworkers = o->workers ? (unsigned)o->workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if (px->nworkers < 1)
        px->nworkers = 1;
    if (px->nworkers > MAX_WORKERS)
        px->nworkers = MAX_WORKERS;
    px->workers = xcalloc(px->nworkers, sizeof(*px->workers));
    uv_mutex_init(&px->wake_lock);
    for (unsigned i = 0; i < px->nworkers; i++) {
        int fds[2] = {-1, -1};
        for (unsigned j = 0; j < nports; j++) {
            fds[j] = bind_socket(px->bind_host, ports[j], true);
            if (fds[j] < 0) {
                buf_printf(err, "cannot listen on %s port %d: %s", px->bind_host, ports[j], strerror(-fds[j]));
                for (unsigned k = 0; k < j; k++)
                    close(fds[k]);
                goto out_workers;
            }
        }
        px->workers[i] = worker_new(px, i, fds, tls_port, redirect_port, nports);
        if (!px->workers[i]) {
            rc = -errno;
            buf_printf(err, "cannot make worker %u: %s", i, strerror(errno));
            for (unsigned k = 0; k < nports; k++)
                close(fds[k]);
            goto out_workers;
        }
    }

    px->control = loop;
    px->cache = route_cache_new(ROUTE_CACHE_SIZE, px->nworkers, cache_wake, px);
    px->mon = monitor_new(loop, o->keepalive_ms, send_keepalive, px);
    px->link = ctrl_link_new(loop, o->controller_url, px->cluster, px->name, px->cache, px->mon, err);
    if (!px->link) {
        route_cache_free(px->cache);
        monitor_free(px->mon);
        goto out_workers;
    }
    if (px->tls) {
        struct cert_manager_config cc = {
            .cluster = px->cluster,
            .cert_path = o->cert_path,
            .acme = o->acme_endpoint != NULL,
            .acme_cfg = {.directory_url = o->acme_endpoint, .ca_file = o->acme_ca_cert, .email = o->acme_email,
                         .eab_kid = o->eab_kid, .eab_hmac_key = o->eab_key,
                         .txt_wait_ms = o->acme_dns_wait_ms >= 0 ? (unsigned)o->acme_dns_wait_ms : 15000},
        };
        char *account_key = o->acme_account_key ? xstrdup(o->acme_account_key)
                            : o->cert_path      ? xasprintf("%s.account.pem", o->cert_path)
                                                : NULL;
        cc.acme_cfg.account_key_path = account_key;
        px->certs = cert_manager_start(loop, &cc, px->tls, px->link, cert_installed, px, err);
        free(account_key);
        if (!px->certs) {
            ctrl_link_free(px->link);
            route_cache_free(px->cache);
            monitor_free(px->mon);
            goto out_workers;
        }
        ctrl_link_on_cert_response(px->link, cert_response, px);
        uv_signal_init(loop, &px->renew);
        px->renew.data = px;
        uv_signal_start(&px->renew, renew_cb, SIGUSR1);
    }
    uv_async_init(loop, &px->worker_done, worker_done_cb);
    px->worker_done.data = px;
    uv_timer_init(loop, &px->force);
    px->force.data = px;
    if (o->metrics_port) {
        px->metrics = http_server_new(loop, metrics_handler, px);
        if (http_server_listen(px->metrics, "127.0.0.1", o->metrics_port, err) < 0) {
            log_error("proxy: %s; serving no metrics", buf_cstr(err));
            buf_reset(err);
            http_server_close(px->metrics);
            px->metrics = NULL;
        }
    }
    if (!px->tls || tls_ctx_ready(px->tls))
        start_workers(px);
    else
        log_info("%s: cluster %s: waiting for a certificate before listening (§16.5)", px->name, px->cluster);
    *out = px;
    return 0;
out_workers:
    for (unsigned i = 0; px->workers && i < px->nworkers; i++)
        worker_free(px->workers[i]); /* made but never started */
    if (px->workers)
        uv_mutex_destroy(&px->wake_lock);
    free(px->workers);
out:
    proxy_free_config(px);
    return rc;
}

static void start_workers(struct proxy *px)
{
    for (unsigned i = 0; i < px->nworkers; i++) {
        if (worker_start(px->workers[i]) < 0)
            fatalx("cannot start worker thread %u", i);
    }
    px->workers_started = true;
    if (px->https_port >= 0)
        log_info("%s: cluster %s, HTTPS port %d, HTTP redirect port %d, %u workers", px->name,
                 px->cluster, px->https_port, px->http_port, px->nworkers);
    else
        log_info("%s: cluster %s, HTTP port %d, %u workers", px->name, px->cluster, px->http_port,
                 px->nworkers);
}

void proxy_stop(struct proxy *px)
{
    stop_cb(px);
}

void proxy_free(struct proxy *px)
{
    for (unsigned i = 0; i < px->nworkers; i++) {
        if (px->workers_started)
            worker_join_free(px->workers[i]);
        else
            worker_free(px->workers[i]);
    }
    uv_mutex_destroy(&px->wake_lock);
    free(px->workers);
    proxy_free_config(px);
}

int proxy_main(int argc, char **argv)
{
    static char *urls;
    static const struct option longopts[] = {
        {"name", required_argument, NULL, 'n'},
        {"controller-url", required_argument, NULL, 'u'},
        {"cluster", required_argument, NULL, 'c'},
        {"https", no_argument, NULL, 's'},
        {"http-port", required_argument, NULL, 'p'},
        {"https-port", required_argument, NULL, 'P'},
        {"cert-path", required_argument, NULL, 'C'},
        {"acme-endpoint", required_argument, NULL, 'a'},
        {"acme-email", required_argument, NULL, 'e'},
        {"acme-eab-kid", required_argument, NULL, 'k'},
        {"acme-eab-hmac-key", required_argument, NULL, 'K'},
        {"acme-mailto", required_argument, NULL, 'e'},
        {"acme-eab-keypair", required_argument, NULL, 'E'},
        {"acme-ca-cert", required_argument, NULL, 'A'},
        {"acme-account-key", required_argument, NULL, 'Y'},
        {"acme-dns-wait", required_argument, NULL, 'W'},
        {"root-redirect-url", required_argument, NULL, 'r'},
        {"host", required_argument, NULL, 'H'},
        {"workers", required_argument, NULL, 'w'},
        {"keepalive-interval", required_argument, NULL, 'i'},
        {"metrics-port", required_argument, NULL, 'M'},
        {"no-splice", no_argument, NULL, 'S'},
        {"io", required_argument, NULL, 'I'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct proxy_options o = {.http_port = -1, .https_port = -1, .host = "0.0.0.0", .acme_dns_wait_ms = -1};
    struct proxy *px = NULL;
    struct buf err = BUF_INIT;
    uv_loop_t loop;
    int opt, rc;
    char *end;

    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'n': o.name = optarg; break;
        case 'u': /* more than once: several controllers, tried in turn (kept to the end of the process) */
            urls = controller_urls_append(urls, optarg);
            o.controller_url = urls;
            break;
        case 'c': o.cluster = optarg; break;
        case 's': o.https = true; break;
        case 'C': o.cert_path = optarg; break;
        case 'a': o.acme_endpoint = optarg; break;
        case 'e': o.acme_email = optarg; break;
        case 'k': o.eab_kid = optarg; break;
        case 'K': o.eab_key = optarg; break;
        case 'A': o.acme_ca_cert = optarg; break;
        case 'Y': o.acme_account_key = optarg; break;
        case 'E': {
            char *colon = strchr(optarg, ':');
            if (!colon) {
                fprintf(stderr, "plane proxy: --acme-eab-keypair takes KID:HMAC_KEY\n");
                return 2;
            }
            *colon = '\0'; /* argv is ours to modify */
            o.eab_kid = optarg;
            o.eab_key = colon + 1;
            break;
        }
        case 'W': {
            double v = strtod(optarg, &end);
            if (end == optarg || *end || !(v >= 0 && v <= 600)) {
                fprintf(stderr, "plane proxy: invalid --acme-dns-wait '%s' (seconds)\n", optarg);
                return 2;
            }
            o.acme_dns_wait_ms = (int)(v * 1000);
            break;
        }
        case 'r': o.root_redirect = optarg; break;
        case 'H': o.host = optarg; break;
        case 'S': o.no_splice = true; break;
        case 'I':
            if (!proxy_io_valid(optarg)) {
                fprintf(stderr, "plane proxy: invalid --io '%s' (uring or epoll)\n", optarg);
                return 2;
            }
            o.io = optarg;
            break;
        case 'M':
            if (parse_port(optarg, &o.metrics_port) < 0) {
                fprintf(stderr, "plane proxy: invalid port '%s'\n", optarg);
                return 2;
            }
            break;
        case 'p':
        case 'P':
            if (parse_port(optarg, opt == 'p' ? &o.http_port : &o.https_port) < 0) {
                fprintf(stderr, "plane proxy: invalid port '%s'\n", optarg);
                return 2;
            }
            break;
        case 'w':
            o.workers = strtol(optarg, &end, 10);
            if (*end || o.workers < 1 || o.workers > MAX_WORKERS) {
                fprintf(stderr, "plane proxy: invalid --workers '%s' (1-%d)\n", optarg, MAX_WORKERS);
                return 2;
            }
            break;
        case 'i': {
            double v = strtod(optarg, &end);
            if (end == optarg || *end || !(v >= 0.1 && v <= 3600)) {
                fprintf(stderr, "plane proxy: invalid --keepalive-interval '%s' (seconds)\n", optarg);
                return 2;
            }
            o.keepalive_ms = (unsigned)(v * 1000);
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "plane proxy: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (check_options(&o, &err) < 0) {
        fprintf(stderr, "plane proxy: %s\n", buf_cstr(&err));
        buf_release(&err);
        return 2;
    }

    uv_loop_init(&loop);
    rc = proxy_start(&px, &loop, &o, &err);
    if (rc < 0) {
        fprintf(stderr, "plane proxy: %s\n", buf_cstr(&err));
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        buf_release(&err);
        return 1;
    }
    run_until_signal(&loop, stop_cb, px);
    proxy_free(px);
    buf_release(&err);
    return 0;
}
