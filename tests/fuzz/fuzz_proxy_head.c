/* SPDX-License-Identifier: MIT */
/*
 * fuzz_proxy_head.c - libFuzzer target for the proxy's head parser and
 * rewriters (src/proxy/h1.c, rules.c). The input is parsed as a request and
 * as a response, whole and split at a point the input chooses (the two must
 * agree); a complete request head goes through the §16.1 decisions and is
 * rewritten for the upstream, a response head for the client, and each
 * rewritten head must parse again as one complete head with the fields the
 * contract promises: exactly our x-verified-* fields, one x-forwarded-for,
 * one server field, one x-plane-backend-id. Then the body after the head is
 * run through the framing parser in pieces.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../src/common/buf.h"
#include "../../src/proxy/h1.h"
#include "../../src/proxy/rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned count_fields(const struct h1_parser *p, const char *head, const char *lower, bool prefix)
{
    unsigned n = 0;
    size_t l = strlen(lower);

    for (unsigned i = 0; i < p->nfields; i++) {
        struct h1_span s = p->fields[i].name;
        if (prefix ? (s.len >= l && strncasecmp(head + s.off, lower, l) == 0) : h1_span_is(head, s, lower))
            n++;
    }
    return n;
}

/* Parses whole and split at cut; both must agree. Returns the result of the whole parse. */
static int parse_both(struct h1_parser *p, enum h1_kind kind, bool head_req, const char *d, size_t n, size_t cut)
{
    static struct h1_parser q;
    int r1, r2;

    h1_init(p, kind, head_req);
    r1 = h1_parse_head(p, d, n);
    h1_init(&q, kind, head_req);
    r2 = h1_parse_head(&q, d, cut);
    if (r2 == H1_MORE)
        r2 = h1_parse_head(&q, d, n);
    if (r1 != r2)
        abort();
    if (r1 == H1_DONE) {
        if (p->head_len != q.head_len || p->nfields != q.nfields || p->head_len > n)
            abort();
        for (unsigned i = 0; i < p->nfields; i++)
            if (memcmp(&p->fields[i], &q.fields[i], sizeof(p->fields[i])) != 0)
                abort();
        if (memcmp(&p->target, &q.target, sizeof(p->target)) != 0)
            abort();
    }
    return r1;
}

/* Feeds a body step bytes at a time: -1 if it is refused, else where it ended (n + 1: not yet). */
static long body_in_pieces(struct h1_parser *p, const char *d, size_t n, size_t step)
{
    size_t pos = 0;
    bool complete = false;

    if (step == 0)
        step = 1;
    for (;;) {
        size_t k = n - pos < step ? n - pos : step;
        ssize_t used = h1_parse_body(p, d + pos, k, &complete);
        if (used < 0)
            return -1;
        if ((size_t)used > k)
            abort();
        pos += (size_t)used;
        if (complete || pos == n)
            break;
        if (used == 0 && k > 0)
            abort(); /* no progress with bytes offered: a caller would spin */
    }
    if (!complete) {
        (void)h1_parse_eof(p);
        return (long)n + 1;
    }
    return (long)pos;
}

static void request(const char *d, size_t n, size_t cut, size_t step)
{
    static struct h1_parser p, again;
    struct rules_target t;
    struct h1_request_out o;
    struct buf out = BUF_INIT;
    const char *pre = "x-verified-username: alice\r\nx-verified-user-data: {\"a\":1}\r\n";
    const char *post = "x-verified-backend: b1\r\nx-verified-secret: s\r\n";

    if (parse_both(&p, H1_REQUEST, false, d, n, cut) != H1_DONE)
        return;
    if (rules_split_target(d + p.target.off, p.target.len, &t) == RULES_TOKEN) {
        if (t.token_len == 0 || t.fwd_path_len == 0 || t.fwd_path[0] != '/')
            abort();
        if (p.host >= 0)
            (void)rules_check_host(d + p.fields[p.host].value.off, p.fields[p.host].value.len, "localhost:9090",
                                   (d[0] & 1) ? "sub" : NULL);
        memset(&o, 0, sizeof(o));
        o.target = t.fwd_path;
        o.target_len = t.fwd_path_len;
        o.target2 = t.query;
        o.target2_len = t.query_len;
        o.client_ip = "127.0.0.1";
        o.proto = "http";
        o.verified_pre = pre;
        o.verified_post = post;
        o.verified_path = t.path;
        o.verified_path_len = t.path_len;
        o.upgrade = p.conn_upgrade;
        h1_write_request(&p, d, &o, &out);
        h1_init(&again, H1_REQUEST, false);
        again.max_fields = H1_MAX_FIELDS; /* the next hop sees our fields too */
        if (h1_parse_head(&again, out.data, out.len) != H1_DONE || again.head_len != out.len)
            abort();
        if (count_fields(&again, out.data, "x-verified-", true) != 5 ||
            count_fields(&again, out.data, "x-forwarded-for", false) != 1 ||
            count_fields(&again, out.data, "x-forwarded-proto", false) != 1 ||
            again.hp.method != p.hp.method || again.hp.http_minor != p.hp.http_minor)
            abort();
        /* Framing the upstream sees is the framing we forward the body with. */
        if (!o.upgrade && (h1_has_body(&again) != h1_has_body(&p)))
            abort();
        buf_release(&out);
    }
    if (h1_has_body(&p) && !p.conn_upgrade) {
        /* However the body arrives, it is refused or ends at the same place. */
        static struct h1_parser whole;
        whole = p;
        long a = body_in_pieces(&p, d + p.head_len, n - p.head_len, step);
        long b = body_in_pieces(&whole, d + p.head_len, n - p.head_len, n);
        if (a != b)
            abort();
    }
}

static void response(const char *d, size_t n, size_t cut, size_t step, bool head_req)
{
    static struct h1_parser p, again;
    struct buf out = BUF_INIT;
    struct h1_response_out o = {.server = "Plane/0.5.5-test", .backend_id = "b1"};
    unsigned st;

    if (parse_both(&p, H1_RESPONSE, head_req, d, n, cut) != H1_DONE)
        return;
    st = h1_status(&p);
    o.upgrade = st == 101;
    o.close = (d[0] & 2) != 0;
    o.keep_alive = !o.close && (d[0] & 4);
    h1_write_response(&p, d, &o, &out);
    h1_init(&again, H1_RESPONSE, head_req);
    again.max_fields = H1_MAX_FIELDS;
    if (h1_parse_head(&again, out.data, out.len) != H1_DONE || again.head_len != out.len)
        abort();
    if (count_fields(&again, out.data, "server", false) != 1 ||
        count_fields(&again, out.data, "x-plane-backend-id", false) != 1 || h1_status(&again) != st)
        abort();
    buf_release(&out);
    if (st >= 200 || st == 101)
        body_in_pieces(&p, d + p.head_len, n - p.head_len, step);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    char *s;

    if (size < 2)
        return 0;
    size_t cut = data[0] % size;
    size_t step = data[1] % 64 + 1;
    d += 2;
    size -= 2;
    if (cut > size)
        cut = size;
    request(d, size, cut, step);
    response(d, size, cut, step, (data[1] & 0x80) != 0);
    /* The URL helpers on the same bytes as text. */
    s = malloc(size + 1);
    memcpy(s, d, size);
    s[size] = '\0';
    free(rules_normalize_url(s));
    char *loc = rules_https_location(s, strcspn(s, "\n"), "/p?q", 4);
    free(loc);
    free(s);
    return 0;
}
