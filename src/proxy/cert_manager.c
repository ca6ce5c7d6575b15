/* SPDX-License-Identifier: MIT */
/*
 * cert_manager.c - the certificate thread (see cert_manager.h).
 *
 * Every 2 s the thread looks at the certificate file; a changed file with
 * a usable certificate that differs from the one served is installed (so
 * a proxy that lost the lease race serves what the winner wrote). With
 * ACME, once the certificate is within 30 days of its end (or on
 * SIGUSR1): take the lease, look at the file once more (the holder before
 * us may have just renewed), order, publish each challenge's TXT value
 * through the controller, write the file, install, release the lease.
 *
 * Unlike Plane, the lease is released when an order ends (Plane lets it
 * lapse after a minute), so a renewal asked for right after an order, or
 * by another proxy, need not wait; failures are retried after 30 s,
 * doubling up to 10 minutes, whatever step failed; nothing is restarted
 * on a controller reconnect.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "../common/buf.h"
#include "../common/clock.h"
#include "../common/log.h"
#include "../common/wire.h"
#include "../common/xalloc.h"
#include "cert_file.h"
#include "cert_manager.h"
#include "ctrl_link.h"
#include "tls.h"

struct cert_manager {
    char *cluster, *wildcard;  /* owned: the names ordered (§16.5) */
    char *cert_path;           /* owned, or NULL */
    bool acme;
    struct acme_client *client; /* with acme */
    struct tls_ctx *tls;       /* borrowed */
    struct ctrl_link *link;    /* borrowed */
    cert_installed_fn *installed;
    void *installed_arg;
    uv_async_t notify;         /* a certificate was installed */
    uv_thread_t thread;

    uv_mutex_t lock;           /* guards what follows, with wake */
    uv_cond_t wake;
    atomic_bool stop;
    bool force;                /* renew now */
    const char *waiting_for;   /* the reply tag asked for, or NULL */
    bool replied, accepted;

    /* The thread's own. */
    char *chain;               /* served now, or NULL */
    int64_t not_after;         /* of chain, epoch ms */
    int64_t renew_at;          /* of chain, epoch ms (cert_renew_at) */
    struct stat file_seen;     /* the file as last read */
    int64_t next_attempt;      /* epoch ms */
    int64_t failure_delay;
};

/* ---- waiting ---- */


static bool sleep_hook(void *arg, unsigned ms)
{
    struct cert_manager *m = arg;
    int64_t until = clock_epoch_ms() + ms;
    bool going = true;

    uv_mutex_lock(&m->lock);
    while (going && clock_epoch_ms() < until) {
        if (!atomic_load(&m->stop))
            uv_cond_timedwait(&m->wake, &m->lock, (uint64_t)(until - clock_epoch_ms()) * 1000000);
        going = !atomic_load(&m->stop);
    }
    uv_mutex_unlock(&m->lock);
    return going;
}

static bool cancelled_hook(void *arg)
{
    struct cert_manager *m = arg;

    return atomic_load(&m->stop);
}

/*
 * Sends a CertManagerRequest (stolen) and waits for the reply tagged tag.
 * 0 with *accepted; -ENOTCONN without a controller, -ETIMEDOUT, -ECANCELED.
 */
static int ask(struct cert_manager *m, json_t *request, const char *tag, bool *accepted)
{
    int64_t until = clock_epoch_ms() + CERT_REPLY_TIMEOUT_MS;
    int rc;

    uv_mutex_lock(&m->lock);
    m->waiting_for = tag;
    m->replied = false;
    uv_mutex_unlock(&m->lock);
    if (ctrl_link_send(m->link, wire_variant("CertManagerRequest", request)) < 0)
        return -ENOTCONN;
    uv_mutex_lock(&m->lock);
    while (!m->replied && !atomic_load(&m->stop) && clock_epoch_ms() < until)
        uv_cond_timedwait(&m->wake, &m->lock, (uint64_t)(until - clock_epoch_ms()) * 1000000);
    rc = m->replied ? 0 : atomic_load(&m->stop) ? -ECANCELED : -ETIMEDOUT;
    *accepted = m->accepted;
    m->waiting_for = NULL;
    uv_mutex_unlock(&m->lock);
    return rc;
}

void cert_manager_response(struct cert_manager *m, const char *tag, bool accepted)
{
    uv_mutex_lock(&m->lock);
    if (m->waiting_for && strcmp(m->waiting_for, tag) == 0) {
        m->replied = true;
        m->accepted = accepted;
        uv_cond_broadcast(&m->wake);
    } else {
        log_debug("certificate: an unexpected %s", tag);
    }
    uv_mutex_unlock(&m->lock);
}

void cert_manager_renew_now(struct cert_manager *m)
{
    uv_mutex_lock(&m->lock);
    m->force = true;
    uv_cond_broadcast(&m->wake);
    uv_mutex_unlock(&m->lock);
}

/* ---- installing ---- */

static void format_time(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Serves chain and key unless chain is what is served already. 0, or -errno with a line in err. */
static int install(struct cert_manager *m, const char *chain, const char *key, const char *from, struct buf *err)
{
    int64_t not_before, not_after;
    char until[32];
    int rc;

    if (m->chain && strcmp(m->chain, chain) == 0)
        return 0;
    if ((rc = cert_validity(chain, &not_before, &not_after, err)) < 0 || (rc = tls_ctx_use(m->tls, chain, key, err)) < 0)
        return rc;
    free(m->chain);
    m->chain = xstrdup(chain);
    m->not_after = not_after;
    m->renew_at = cert_renew_at(not_before, not_after, CERT_RENEW_BEFORE_MS);
    format_time(not_after, until);
    log_info("certificate for %s from %s is served now (valid until %s)", m->cluster, from, until);
    uv_async_send(&m->notify);
    return 0;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Installs the file's certificate if the file changed since it was last read. 0, or -errno with a line in err. */
static int load_file(struct cert_manager *m, struct buf *err)
{
    char *chain = NULL, *key = NULL;
    struct stat st;
    int rc;

    if (!m->cert_path)
        return 0;
    if (stat(m->cert_path, &st) == -1) {
        rc = -errno;
        buf_printf(err, "cannot read certificate file '%s': %s", m->cert_path, strerror(-rc));
        return rc;
    }
    if (same_file(&st, &m->file_seen))
        return 0;
    m->file_seen = st;
    rc = cert_file_read(m->cert_path, &chain, &key, err);
    if (rc == 0)
        rc = install(m, chain, key, m->cert_path, err);
    if (rc < 0)
        buf_printf(err, " (in '%s')", m->cert_path);
    free(chain);
    free(key);
    return rc;
}

static void check_file(struct cert_manager *m)
{
    struct buf err = BUF_INIT;
    int rc = load_file(m, &err);

    if (rc < 0 && rc != -ENOENT)
        log_warn("certificate: %s", buf_cstr(&err));
    buf_release(&err);
}

/* ---- ordering ---- */

static int publish_txt(void *arg, const char *value, struct buf *err)
{
    struct cert_manager *m = arg;
    bool accepted = false;
    int rc = ask(m, wire_variant("SetTxtRecord", json_pack("{s:s}", "txt_value", value)), "SetTxtRecordResponse",
                 &accepted);

    if (rc == 0 && !accepted)
        rc = -EPERM;
    if (rc < 0)
        buf_printf(err, "the controller did not take the TXT record: %s",
                   rc == -EPERM ? "refused" : strerror(-rc));
    return rc;
}

enum attempt { ATTEMPT_DONE, ATTEMPT_NO_LEASE, ATTEMPT_FAILED };

static enum attempt attempt(struct cert_manager *m)
{
    const char *names[] = {m->cluster, m->wildcard};
    struct buf err = BUF_INIT;
    char *chain = NULL, *key = NULL;
    bool accepted = false;
    int rc;

    rc = ask(m, json_string("CertLeaseRequest"), "CertLeaseResponse", &accepted);
    if (rc < 0) {
        log_warn("certificate: no lease answer from the controller: %s", strerror(-rc));
        return ATTEMPT_FAILED;
    }
    if (!accepted) {
        log_info("certificate: another proxy holds the lease for %s; waiting", m->cluster);
        return ATTEMPT_NO_LEASE;
    }
    /* The proxy that held the lease before may have just written a new certificate. */
    check_file(m);
    uv_mutex_lock(&m->lock);
    bool forced = m->force;
    uv_mutex_unlock(&m->lock);
    if (!forced && m->chain && clock_epoch_ms() < m->renew_at) {
        ctrl_link_send(m->link, wire_variant("CertManagerRequest", json_string("ReleaseCertLease")));
        return ATTEMPT_DONE;
    }
    uv_mutex_lock(&m->lock);
    m->force = false;
    uv_mutex_unlock(&m->lock);
    log_info("certificate: ordering one for %s and %s", m->cluster, m->wildcard);
    rc = acme_order(m->client, names, 2, &chain, &key, &err);
    ctrl_link_send(m->link, wire_variant("CertManagerRequest", json_string("ReleaseCertLease")));
    if (rc == 0 && m->cert_path && cert_file_write(m->cert_path, chain, key, &err) < 0) {
        /* Served anyway; the file catches up with the next renewal. */
        log_error("certificate: %s", buf_cstr(&err));
        buf_reset(&err);
    } else if (rc == 0 && m->cert_path) {
        stat(m->cert_path, &m->file_seen);
    }
    if (rc == 0)
        rc = install(m, chain, key, "ACME", &err);
    if (rc < 0 && rc != -ECANCELED)
        log_error("certificate: order for %s failed: %s", m->cluster, buf_cstr(&err));
    free(chain);
    free(key);
    buf_release(&err);
    return rc == 0 ? ATTEMPT_DONE : ATTEMPT_FAILED;
}

static bool renewal_due(struct cert_manager *m, int64_t now)
{
    bool force;

    uv_mutex_lock(&m->lock);
    force = m->force;
    if (force && !m->acme) {
        /* Nothing to order: SIGUSR1 reads the file again. */
        m->force = false;
        memset(&m->file_seen, 0, sizeof(m->file_seen));
    } else if (force) {
        m->next_attempt = 0; /* asked for: now, whatever the backoff */
    }
    uv_mutex_unlock(&m->lock);
    /* A lease needs the controller: without it, wait (the file may still change). */
    return m->acme && now >= m->next_attempt && ctrl_link_is_up(m->link) &&
           (force || !m->chain || now >= m->renew_at);
}

static void thread_main(void *arg)
{
    struct cert_manager *m = arg;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the control loop's */
    while (!atomic_load(&m->stop)) {
        int64_t now = clock_epoch_ms();

        check_file(m);
        if (renewal_due(m, now)) {
            switch (attempt(m)) {
            case ATTEMPT_DONE:
                m->failure_delay = 0;
                break;
            case ATTEMPT_NO_LEASE:
                m->next_attempt = clock_epoch_ms() + CERT_LEASE_RETRY_MS;
                break;
            case ATTEMPT_FAILED:
                m->failure_delay = m->failure_delay ? m->failure_delay * 2 : CERT_FAILURE_RETRY_MS;
                if (m->failure_delay > CERT_FAILURE_RETRY_MAX_MS)
                    m->failure_delay = CERT_FAILURE_RETRY_MAX_MS;
                m->next_attempt = clock_epoch_ms() + m->failure_delay;
                if (!atomic_load(&m->stop))
                    log_info("certificate: next attempt in %lld s", (long long)m->failure_delay / 1000);
                break;
            }
            continue;
        }
        /* Until the next look at the file, or a renewal request, or stop. */
        uv_mutex_lock(&m->lock);
        if (!atomic_load(&m->stop))
            uv_cond_timedwait(&m->wake, &m->lock, (uint64_t)CERT_FILE_CHECK_MS * 1000000);
        uv_mutex_unlock(&m->lock);
    }
}

/* ---- life ---- */

static void notify_cb(uv_async_t *a)
{
    struct cert_manager *m = a->data;

    m->installed(m->installed_arg);
}

static void notify_closed(uv_handle_t *h)
{
    struct cert_manager *m = h->data;

    acme_client_free(m->client);
    uv_cond_destroy(&m->wake);
    uv_mutex_destroy(&m->lock);
    free(m->cluster);
    free(m->wildcard);
    free(m->cert_path);
    free(m->chain);
    free(m);
}

struct cert_manager *cert_manager_start(uv_loop_t *control, const struct cert_manager_config *cfg,
                                        struct tls_ctx *tls, struct ctrl_link *link, cert_installed_fn *installed,
                                        void *arg, struct buf *err)
{
    struct cert_manager *m = xcalloc(1, sizeof(*m));
    struct acme_hooks hooks = {.publish_txt = publish_txt, .sleep = sleep_hook, .cancelled = cancelled_hook, .arg = m};
    int r;

    m->cluster = xstrdup(cfg->cluster);
    m->wildcard = xasprintf("*.%s", cfg->cluster);
    m->cert_path = cfg->cert_path ? xstrdup(cfg->cert_path) : NULL;
    m->acme = cfg->acme;
    if (m->acme)
        m->client = acme_client_new(&cfg->acme_cfg, &hooks);
    m->tls = tls;
    m->link = link;
    m->installed = installed;
    m->installed_arg = arg;
    uv_mutex_init(&m->lock);
    uv_cond_init(&m->wake);
    atomic_init(&m->stop, false);
    uv_async_init(control, &m->notify, notify_cb);
    m->notify.data = m;
    /* So a proxy with a certificate serves at once; without ACME it must have one. */
    r = load_file(m, err);
    if (r < 0 && m->acme) {
        if (r != -ENOENT)
            log_warn("certificate: %s; ordering a new one", buf_cstr(err));
        buf_reset(err);
        r = 0;
    }
    if (r == 0 && (r = uv_thread_create(&m->thread, thread_main, m)) < 0)
        buf_printf(err, "cannot start the certificate thread: %s", uv_strerror(r));
    if (r < 0) {
        uv_close((uv_handle_t *)&m->notify, notify_closed);
        return NULL;
    }
    return m;
}

void cert_manager_stop(struct cert_manager *m)
{
    if (!m)
        return;
    uv_mutex_lock(&m->lock);
    atomic_store(&m->stop, true);
    uv_cond_broadcast(&m->wake);
    uv_mutex_unlock(&m->lock);
    uv_thread_join(&m->thread);
    uv_close((uv_handle_t *)&m->notify, notify_closed);
}
