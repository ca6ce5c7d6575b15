/* SPDX-License-Identifier: MIT */
/*
 * h1.c - HTTP/1.x heads for the proxy (see h1.h). http-parser does the
 * parsing; its callbacks only record offsets. The parser is paused at the
 * end of the head, so the caller can decide what to do (ask for a route,
 * answer locally) before any body byte is looked at, and again at the end
 * of the message, so pipelined bytes after it stay with the caller.
 *
 * Pausing in on_headers_complete leaves the head's final LF unconsumed
 * (http-parser re-executes that byte in its next state), so that byte is
 * replayed from a constant before the body is parsed: body bytes are never
 * handed to http-parser twice and the head can be dropped as soon as it is
 * rewritten.
 */
#include <stdio.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "../common/buf.h"
#include "h1.h"

#define CB_NONE 0
#define CB_NAME 1
#define CB_VALUE 2

/* RFC 9110 5.6.2 tchar. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1,
    ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
    ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static struct h1_parser *parser_of(http_parser *hp)
{
    return (struct h1_parser *)hp; /* hp is the first member */
}

static int last_cb(const struct h1_parser *p)
{
    return p->last_cb;
}

static void set_last_cb(struct h1_parser *p, int cb)
{
    p->last_cb = (uint8_t)cb;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    struct h1_parser *p = parser_of(hp);
    size_t off = (size_t)(at - p->base);

    if (p->head_done)
        return 0;
    if (p->target.len == 0)
        p->target.off = (uint16_t)off;
    p->target.len = (uint16_t)(off + len - p->target.off);
    return 0;
}

static int on_status(http_parser *hp, const char *at, size_t len)
{
    struct h1_parser *p = parser_of(hp);
    size_t off = (size_t)(at - p->base);

    if (p->head_done)
        return 0;
    if (p->reason.len == 0)
        p->reason.off = (uint16_t)off;
    p->reason.len = (uint16_t)(off + len - p->reason.off);
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct h1_parser *p = parser_of(hp);
    size_t off = (size_t)(at - p->base);
    struct h1_field *f;

    if (p->head_done)
        return 0; /* trailer fields of a chunked body: forwarded raw, not recorded */
    f = p->nfields ? &p->fields[p->nfields - 1] : NULL;
    /* A name split across two feeds arrives in two adjacent pieces. */
    if (f && last_cb(p) == CB_NAME && off == (size_t)f->name.off + f->name.len) {
        f->name.len = (uint16_t)(f->name.len + len);
        return 0;
    }
    if (p->nfields == H1_MAX_FIELDS) {
        p->error = 431;
        return -1;
    }
    f = &p->fields[p->nfields++];
    f->name.off = (uint16_t)off;
    f->name.len = (uint16_t)len;
    f->value.off = (uint16_t)(off + len);
    f->value.len = 0;
    set_last_cb(p, CB_NAME);
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct h1_parser *p = parser_of(hp);
    size_t off = (size_t)(at - p->base);
    struct h1_field *f;

    if (p->head_done || p->nfields == 0)
        return 0;
    f = &p->fields[p->nfields - 1];
    if (last_cb(p) == CB_VALUE) {
        /* Split across feeds, or an obs-fold: the span covers both pieces. */
        f->value.len = (uint16_t)(off + len - f->value.off);
    } else {
        f->value.off = (uint16_t)off;
        f->value.len = (uint16_t)len;
    }
    set_last_cb(p, CB_VALUE);
    return 0;
}

bool h1_span_is(const char *head, struct h1_span s, const char *lower)
{
    size_t n = strlen(lower);

    return s.len == n && strncasecmp(head + s.off, lower, n) == 0;
}

static bool span_has_prefix(const char *head, struct h1_span s, const char *lower)
{
    size_t n = strlen(lower);

    return s.len >= n && strncasecmp(head + s.off, lower, n) == 0;
}

bool h1_value_is_legal(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
    }
    return true;
}

static bool name_is_token(const char *head, struct h1_span s)
{
    if (s.len == 0)
        return false;
    for (unsigned i = 0; i < s.len; i++)
        if (!tchar[(unsigned char)head[s.off + i]])
            return false;
    return true;
}

/* Connection: close, keep-alive, upgrade, and the names of other hop-by-hop fields. */
static void parse_connection(struct h1_parser *p, const char *head, struct h1_span v)
{
    size_t i = v.off, end = (size_t)v.off + v.len;

    while (i < end) {
        size_t s = i, e;
        while (i < end && head[i] != ',')
            i++;
        e = i++;
        while (s < e && (head[s] == ' ' || head[s] == '\t'))
            s++;
        while (e > s && (head[e - 1] == ' ' || head[e - 1] == '\t'))
            e--;
        if (e == s)
            continue;
        struct h1_span t = {(uint16_t)s, (uint16_t)(e - s)};
        if (h1_span_is(head, t, "close"))
            p->conn_close = true;
        else if (h1_span_is(head, t, "keep-alive"))
            p->conn_keep_alive = true;
        else if (h1_span_is(head, t, "upgrade"))
            p->conn_upgrade = true;
        else if (p->nconn_tokens < H1_MAX_CONN_TOKENS)
            p->conn_tokens[p->nconn_tokens++] = t;
    }
}

/* Fills the derived fields; for requests, 0 or the status to refuse the head with. */
static int derive(struct h1_parser *p)
{
    const char *head = p->base;

    p->host = -1;
    /* What we pass on must still fit a parser like ours once our fields are added. */
    if (p->nfields > p->max_fields)
        return 431;
    for (unsigned i = 0; i < p->nfields; i++) {
        struct h1_field *f = &p->fields[i];
        if (h1_span_is(head, f->name, "host"))
            p->host = p->host == -1 ? (int)i : -2;
        else if (h1_span_is(head, f->name, "connection"))
            parse_connection(p, head, f->value);
        else if (h1_span_is(head, f->name, "access-control-allow-origin") ||
                 h1_span_is(head, f->name, "access-control-allow-methods") ||
                 h1_span_is(head, f->name, "access-control-allow-headers"))
            p->cors = true;
        if (p->kind != H1_REQUEST)
            continue;
        /* Requests are rebuilt field by field: refuse what could be read two ways. */
        if (!name_is_token(head, f->name) || !h1_value_is_legal(head + f->value.off, f->value.len))
            return 400;
        /* http-parser takes "Transfer-Encodingx" for Transfer-Encoding (it matches a prefix). */
        if ((span_has_prefix(head, f->name, "transfer-encoding") && f->name.len > 17) ||
            (span_has_prefix(head, f->name, "content-length") && f->name.len > 14))
            return 400;
    }
    if (p->kind != H1_REQUEST)
        return 0;
    if (p->hp.http_major != 1 || p->hp.http_minor > 1)
        return 400;
    if (p->target.len == 0)
        return 400;
    for (unsigned i = 0; i < p->target.len; i++) {
        unsigned char ch = (unsigned char)head[p->target.off + i];
        if (ch <= 0x20 || ch == 0x7f)
            return 400;
    }
    /* RFC 9112 6.3: a request whose last transfer coding is not chunked has no knowable length. */
    if (p->hp.uses_transfer_encoding && !(p->hp.flags & F_CHUNKED))
        return 400;
    /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 cannot be trusted (a 1.0 backend ignores it). */
    if (p->hp.uses_transfer_encoding && p->hp.http_minor == 0)
        return 400;
    /* CONNECT has no place behind a reverse proxy, and http-parser ends it after the head
     * whatever Content-Length says: the two ends would disagree on where the next request starts. */
    if (p->hp.method == HTTP_CONNECT)
        return 405;
    /* An upgrade goes upstream without its body (§16.1 step 8); one that has a body would
     * see it taken for the new protocol's bytes. */
    if (p->conn_upgrade && h1_has_body(p))
        return 400;
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    struct h1_parser *p = parser_of(hp);
    int st;

    if (p->head_done)
        return 0;
    p->head_done = true;
    st = derive(p);
    if (st && (p->kind == H1_REQUEST || st == 431)) {
        p->error = st;
        return -1;
    }
    http_parser_pause(hp, 1);
    p->check_chunks = p->kind == H1_REQUEST && (hp->flags & F_CHUNKED);
    if (p->kind == H1_RESPONSE) {
        /* RFC 9112 6.3: no body after HEAD, 1xx, 204 and 304, whatever the head says. */
        unsigned code = hp->status_code;
        return p->head_request || code / 100 == 1 || code == 204 || code == 304 ? 1 : 0;
    }
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    struct h1_parser *p = parser_of(hp);

    p->msg_done = true;
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

void h1_init(struct h1_parser *p, enum h1_kind kind, bool head_request)
{
    /* Only what a parse reads is reset: fields[] is written before it is read. */
    http_parser_init(&p->hp, kind == H1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
    set_last_cb(p, CB_NONE);
    p->base = NULL;
    p->fed = 0;
    p->kind = (uint8_t)kind;
    p->head_request = head_request;
    p->head_done = p->msg_done = p->refeed_lf = false;
    p->error = 0;
    p->max_fields = H1_MAX_FIELDS - H1_FIELDS_ADDED;
    p->head_len = 0;
    p->target.off = p->target.len = 0;
    p->reason.off = p->reason.len = 0;
    p->nfields = 0;
    p->host = -1;
    p->conn_close = p->conn_keep_alive = p->conn_upgrade = p->cors = false;
    p->nconn_tokens = 0;
    memset(&p->chunk, 0, sizeof(p->chunk)); /* CK_SIZE0 */
    p->check_chunks = false;
}

int h1_parse_head(struct h1_parser *p, const char *data, size_t len)
{
    size_t n, r;
    bool capped = false;
    enum http_errno e;

    if (p->head_done)
        return p->error ? -p->error : H1_DONE;
    if (len <= p->fed)
        return H1_MORE;
    n = len - p->fed;
    if (p->fed + n > H1_MAX_HEAD) {
        n = H1_MAX_HEAD - p->fed;
        capped = true;
    }
    p->base = data;
    r = http_parser_execute(&p->hp, &settings, data + p->fed, n);
    e = HTTP_PARSER_ERRNO(&p->hp);
    if (e == HPE_PAUSED && p->head_done) {
        /* Paused on the head's final LF, which is data[fed + r]. */
        p->head_len = p->fed + (uint32_t)r + 1;
        p->fed = p->head_len;
        p->base = NULL;
        http_parser_pause(&p->hp, 0);
        p->refeed_lf = true;
        return H1_DONE;
    }
    p->base = NULL;
    if (e != HPE_OK) {
        if (!p->error)
            p->error = e == HPE_HEADER_OVERFLOW ? 431 : 400;
        p->head_done = true; /* sticky: the connection is finished */
        return -p->error;
    }
    p->fed += (uint32_t)r;
    if (capped || p->fed >= H1_MAX_HEAD) {
        p->error = 431;
        p->head_done = true;
        return -431;
    }
    return H1_MORE;
}

/* ---- strict chunked framing (see h1.h) ---- */

enum {
    CK_SIZE0,      /* the first hex digit of a size line */
    CK_SIZE,       /* more digits, BWS, ';' or CR */
    CK_BWS,        /* after the digits: spaces, then ';' or CR */
    CK_EXT,        /* extensions: anything visible up to CR */
    CK_SIZE_LF,
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TRAILER,    /* the start of a trailer line: CR (the end) or a field name */
    CK_TNAME,
    CK_TVALUE,
    CK_TVALUE_LF,
    CK_END_LF,
    CK_DONE,
    CK_BAD,
};

#define CK_MAX_LINE 4096          /* a size line with its extensions */
#define CK_MAX_TRAILER (32 * 1024) /* the whole trailer section */

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Whether the field name s[0..len) is name (lower case, '-'), reading s's
 * letters in any case and '_' as '-'; prefix: s may go on. */
static bool spelled_as(const char *s, size_t len, const char *name, bool prefix)
{
    size_t n = strlen(name);

    if (len < n || (!prefix && len != n))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        ch = ch == '_' ? '-' : (unsigned char)tolower(ch);
        if (ch != (unsigned char)name[i])
            return false;
    }
    return true;
}

/* x-verified-*, x-forwarded-for and -proto are the proxy's to set, also when
 * spelled with '_' for '-' (CGI-style backends read X_Verified_User as
 * X-Verified-User). */
static bool reserved_field(const char *s, size_t len)
{
    return spelled_as(s, len, "x-verified-", true) || spelled_as(s, len, "x-forwarded-for", false) ||
           spelled_as(s, len, "x-forwarded-proto", false);
}

/* Trailer fields a backend must never take from a client: the proxy's own,
 * and framing and routing fields (RFC 9110 6.5.1), which some servers merge
 * into the head. */
static bool protected_trailer(const struct h1_chunk_check *k)
{
    static const char *const framing[] = {"content-length", "transfer-encoding", "host", "connection", "upgrade"};

    if (reserved_field(k->name, k->name_len))
        return true;
    for (size_t i = 0; i < sizeof(framing) / sizeof(framing[0]); i++)
        if (spelled_as(k->name, k->name_len, framing[i], false))
            return true;
    return false;
}

/* Checks data[0..len); false when the framing is not strictly valid. */
static bool chunk_check(struct h1_chunk_check *k, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)data[i];
        int v;

        switch (k->state) {
        case CK_SIZE0:
        case CK_SIZE:
            if ((v = hexval(ch)) >= 0) {
                if (++k->digits > 15) /* 2^60: far more than anyone sends, and no overflow */
                    goto bad;
                k->left = k->left * 16 + (uint64_t)v;
                k->state = CK_SIZE;
                break;
            }
            if (k->state == CK_SIZE0)
                goto bad;
            /* the end of the digits */
            __attribute__((fallthrough));
        case CK_BWS:
            if (ch == ' ' || ch == '\t')
                k->state = CK_BWS;
            else if (ch == ';')
                k->state = CK_EXT;
            else if (ch == '\r')
                k->state = CK_SIZE_LF;
            else
                goto bad;
            break;
        case CK_EXT:
            if (ch == '\r')
                k->state = CK_SIZE_LF;
            else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                goto bad;
            break;
        case CK_SIZE_LF:
            if (ch != '\n')
                goto bad;
            k->line = 0;
            k->digits = 0;
            k->state = k->left ? CK_DATA : CK_TRAILER;
            continue;
        case CK_DATA: {
            size_t take = len - i < k->left ? len - i : (size_t)k->left;
            k->left -= take;
            i += take - 1;
            if (k->left == 0)
                k->state = CK_DATA_CR;
            continue;
        }
        case CK_DATA_CR:
            if (ch != '\r')
                goto bad;
            k->state = CK_DATA_LF;
            continue;
        case CK_DATA_LF:
            if (ch != '\n')
                goto bad;
            k->state = CK_SIZE0;
            continue;
        case CK_TRAILER:
            if (ch == '\r') {
                k->state = CK_END_LF;
            } else if (tchar[ch]) {
                k->name_len = 0;
                k->state = CK_TNAME;
                i--; /* the name's first byte */
                continue;
            } else {
                goto bad;
            }
            break;
        case CK_TNAME:
            if (ch == ':') {
                if (k->name_len == 0 || protected_trailer(k))
                    goto bad;
                k->state = CK_TVALUE;
            } else if (!tchar[ch]) {
                goto bad;
            } else if (k->name_len < sizeof(k->name)) {
                k->name[k->name_len++] = (char)ch;
            }
            break;
        case CK_TVALUE:
            if (ch == '\r')
                k->state = CK_TVALUE_LF;
            else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                goto bad;
            break;
        case CK_TVALUE_LF:
            if (ch != '\n')
                goto bad;
            k->state = CK_TRAILER;
            break;
        case CK_END_LF:
            if (ch != '\n')
                goto bad;
            k->state = CK_DONE;
            break;
        default: /* CK_DONE: bytes past the end; CK_BAD */
            goto bad;
        }
        if (++k->line > (k->state >= CK_TRAILER ? CK_MAX_TRAILER : CK_MAX_LINE))
            goto bad;
    }
    return true;
bad:
    k->state = CK_BAD;
    return false;
}

/* Request bodies in chunks are checked strictly beside http-parser, which must agree.
 * Decided once, with the head: http-parser clears F_CHUNKED while it reads a
 * Transfer-Encoding trailer field. */
static bool strict_chunks(const struct h1_parser *p)
{
    return p->check_chunks;
}

ssize_t h1_parse_body(struct h1_parser *p, const char *data, size_t len, bool *complete)
{
    size_t r;
    enum http_errno e;

    *complete = false;
    if (!p->head_done || p->error)
        return -1;
    if (p->msg_done) {
        *complete = true;
        return 0;
    }
    if (p->refeed_lf) {
        p->refeed_lf = false;
        http_parser_execute(&p->hp, &settings, "\n", 1);
        e = HTTP_PARSER_ERRNO(&p->hp);
        if (p->msg_done) {
            *complete = true;
            return 0;
        }
        if (e != HPE_OK)
            return -1;
    }
    if (len == 0)
        return 0;
    r = http_parser_execute(&p->hp, &settings, data, len);
    e = HTTP_PARSER_ERRNO(&p->hp);
    if (strict_chunks(p) && (!chunk_check(&p->chunk, data, r) || (p->chunk.state == CK_DONE) != p->msg_done))
        return -1;
    if (p->msg_done) {
        *complete = true;
        return (ssize_t)r;
    }
    if (e != HPE_OK)
        return -1;
    return (ssize_t)r;
}

bool h1_parse_eof(struct h1_parser *p)
{
    bool complete;

    if (p->msg_done)
        return true;
    if (!p->head_done || p->error)
        return false;
    if (p->refeed_lf && (h1_parse_body(p, NULL, 0, &complete) < 0 || complete))
        return p->msg_done;
    http_parser_execute(&p->hp, &settings, NULL, 0);
    return p->msg_done;
}

bool h1_keep_alive(const struct h1_parser *p)
{
    if (p->conn_close)
        return false;
    return h1_is_http10(p) ? p->conn_keep_alive : true;
}

bool h1_body_until_eof(const struct h1_parser *p)
{
    unsigned st = p->hp.status_code;

    /* RFC 9112 6.3, as http-parser applies it (its own helper is not exported). */
    if (p->kind != H1_RESPONSE || st / 100 == 1 || st == 204 || st == 304 || p->head_request ||
        (p->hp.flags & F_SKIPBODY))
        return false;
    if (p->hp.flags & F_CHUNKED)
        return false;
    if (p->hp.uses_transfer_encoding)
        return true;
    return p->hp.content_length == UINT64_MAX;
}

bool h1_has_body(const struct h1_parser *p)
{
    return (p->hp.flags & F_CHUNKED) || (p->hp.content_length > 0 && p->hp.content_length != UINT64_MAX);
}

/* ---- writers ---- */

static void put(struct buf *out, const char *s, size_t n)
{
    buf_append(out, s, n);
}

static void puts_(struct buf *out, const char *s)
{
    buf_append(out, s, strlen(s));
}

static void put_span(struct buf *out, const char *head, struct h1_span s)
{
    buf_append(out, head + s.off, s.len);
}

static bool listed_in_connection(const struct h1_parser *p, const char *head, struct h1_span name)
{
    /* Framing and routing fields stay whatever Connection says: dropping them would change the message. */
    if (h1_span_is(head, name, "content-length") || h1_span_is(head, name, "transfer-encoding") ||
        h1_span_is(head, name, "host"))
        return false;
    for (unsigned i = 0; i < p->nconn_tokens; i++) {
        struct h1_span t = p->conn_tokens[i];
        if (t.len == name.len && strncasecmp(head + t.off, head + name.off, t.len) == 0)
            return true;
    }
    return false;
}

/* Hop-by-hop fields (RFC 9110 7.6.1) that never travel through the proxy. */
static bool hop_by_hop(const char *head, struct h1_span name)
{
    return h1_span_is(head, name, "keep-alive") || h1_span_is(head, name, "proxy-connection") ||
           h1_span_is(head, name, "te") || h1_span_is(head, name, "trailer") ||
           h1_span_is(head, name, "proxy-authenticate") || h1_span_is(head, name, "proxy-authorization");
}

void h1_write_request(const struct h1_parser *p, const char *head, const struct h1_request_out *o,
                      struct buf *out)
{
    const char *method = http_method_str((enum http_method)p->hp.method);

    puts_(out, method);
    put(out, " ", 1);
    put(out, o->target, o->target_len);
    if (o->target2_len)
        put(out, o->target2, o->target2_len);
    puts_(out, p->hp.http_minor ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
    for (unsigned i = 0; i < p->nfields; i++) {
        const struct h1_field *f = &p->fields[i];
        if (reserved_field(head + f->name.off, f->name.len) || hop_by_hop(head, f->name))
            continue;
        if (h1_span_is(head, f->name, "connection") || h1_span_is(head, f->name, "upgrade")) {
            if (!o->upgrade)
                continue;
        } else if (o->upgrade && (h1_span_is(head, f->name, "content-length") ||
                                  h1_span_is(head, f->name, "transfer-encoding"))) {
            continue; /* §16.1 step 8: an upgrade is forwarded with an empty body */
        } else if (listed_in_connection(p, head, f->name)) {
            continue;
        }
        put_span(out, head, f->name);
        put(out, ": ", 2);
        put_span(out, head, f->value);
        put(out, "\r\n", 2);
    }
    if (!o->upgrade && h1_is_http10(p) && h1_keep_alive(p))
        puts_(out, "connection: keep-alive\r\n");
    puts_(out, "x-forwarded-for: ");
    puts_(out, o->client_ip);
    puts_(out, "\r\nx-forwarded-proto: ");
    puts_(out, o->proto);
    puts_(out, "\r\n");
    if (o->verified_pre)
        puts_(out, o->verified_pre);
    puts_(out, "x-verified-path: ");
    put(out, o->verified_path, o->verified_path_len);
    puts_(out, "\r\n");
    if (o->verified_post)
        puts_(out, o->verified_post);
    put(out, "\r\n", 2);
}

static void put_cors_server(struct buf *out, bool cors, const char *server)
{
    if (!cors)
        puts_(out, "access-control-allow-origin: *\r\n"
                   "access-control-allow-methods: *\r\n"
                   "access-control-allow-headers: *, Authorization\r\n");
    puts_(out, "server: ");
    puts_(out, server);
    puts_(out, "\r\n");
}

/* Appends a value with any obs-fold line break turned into spaces (RFC 9112 5.2). */
static void put_value(struct buf *out, const char *v, size_t n)
{
    size_t start = out->len;

    buf_append(out, v, n);
    if (memchr(v, '\r', n) || memchr(v, '\n', n))
        for (size_t i = start; i < out->len; i++)
            if (out->data[i] == '\r' || out->data[i] == '\n')
                out->data[i] = ' ';
}

static bool response_value_ok(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t' && ch != '\r' && ch != '\n') || ch == 0x7f)
            return false;
    }
    return true;
}

void h1_write_response(const struct h1_parser *p, const char *head, const struct h1_response_out *o,
                       struct buf *out)
{
    unsigned status = p->hp.status_code;
    char line[32];

    if (status >= 100 && status <= 999) {
        /* The usual three digits without printf: this runs for every response. */
        memcpy(line, "HTTP/1.1 ", 9);
        line[9] = (char)('0' + status / 100);
        line[10] = (char)('0' + status / 10 % 10);
        line[11] = (char)('0' + status % 10);
        line[12] = ' ';
        put(out, line, 13);
    } else {
        snprintf(line, sizeof(line), "HTTP/1.1 %u ", status);
        puts_(out, line);
    }
    if (p->reason.len && h1_value_is_legal(head + p->reason.off, p->reason.len))
        put_span(out, head, p->reason);
    else
        puts_(out, h1_reason(status));
    put(out, "\r\n", 2);
    for (unsigned i = 0; i < p->nfields; i++) {
        const struct h1_field *f = &p->fields[i];
        if (!name_is_token(head, f->name) || !response_value_ok(head + f->value.off, f->value.len))
            continue;
        if (h1_span_is(head, f->name, "connection")) {
            if (!o->upgrade)
                continue;
        } else if (h1_span_is(head, f->name, "upgrade")) {
            if (!o->upgrade && p->conn_upgrade)
                continue;
        } else if (hop_by_hop(head, f->name) || h1_span_is(head, f->name, "server") ||
                   h1_span_is(head, f->name, "x-plane-backend-id") || listed_in_connection(p, head, f->name)) {
            continue;
        }
        put_span(out, head, f->name);
        put(out, ": ", 2);
        put_value(out, head + f->value.off, f->value.len);
        put(out, "\r\n", 2);
    }
    put_cors_server(out, p->cors, o->server);
    if (o->backend_id) {
        puts_(out, "x-plane-backend-id: ");
        puts_(out, o->backend_id);
        puts_(out, "\r\n");
    }
    if (!o->upgrade) {
        if (o->close)
            puts_(out, "connection: close\r\n");
        else if (o->keep_alive)
            puts_(out, "connection: keep-alive\r\n");
    }
    put(out, "\r\n", 2);
}

const char *h1_reason(unsigned status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

void h1_write_local(struct buf *out, unsigned status, const char *extra, const char *server,
                    const char *backend_id, bool close, bool keep_alive, const char *body, bool head_only)
{
    size_t blen = body ? strlen(body) : 0;

    buf_printf(out, "HTTP/1.1 %u %s\r\n", status, h1_reason(status));
    if (extra)
        puts_(out, extra);
    if (server)
        put_cors_server(out, false, server);
    if (backend_id)
        buf_printf(out, "x-plane-backend-id: %s\r\n", backend_id);
    if (blen)
        puts_(out, "content-type: text/plain; charset=utf-8\r\n");
    buf_printf(out, "content-length: %zu\r\n", blen);
    if (close)
        puts_(out, "connection: close\r\n");
    else if (keep_alive)
        puts_(out, "connection: keep-alive\r\n");
    put(out, "\r\n", 2);
    if (blen && !head_only)
        put(out, body, blen);
}
