/* SPDX-License-Identifier: MIT */
/*
 * h1.h - HTTP/1.x messages as the proxy sees them: an incremental parser
 * (http-parser underneath) that records the head as offsets into the
 * caller's bytes and then only finds where the body ends, so bodies are
 * forwarded as they arrive, chunk framing included; and the writers that
 * rebuild a request head for the upstream and a response head for the
 * client (spec §16.1 steps 6, 7 and 9). Nothing here allocates except into
 * the caller's struct buf, and nothing knows about sockets, which is what
 * lets tests/fuzz/fuzz_proxy_head.c drive it directly.
 */
#ifndef PLANE_PROXY_H1_H
#define PLANE_PROXY_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <http_parser.h>

struct buf;

#define H1_MAX_HEAD 32768  /* bytes of a head; a larger request head is 431 */
#define H1_MAX_FIELDS 100  /* header fields the parser records */
#define H1_FIELDS_ADDED 10 /* room for the fields the proxy adds: a head may have this many fewer */
#define H1_MAX_CONN_TOKENS 8

enum h1_kind { H1_REQUEST, H1_RESPONSE };

/* Offsets into the head: it starts at offset 0 and is shorter than 64 KiB. */
struct h1_span {
    uint16_t off, len;
};

struct h1_field {
    struct h1_span name, value;
};

/*
 * Strict chunked framing (RFC 9112 7.1), checked beside http-parser on
 * request bodies: the proxy forwards the framing as it came, so it must
 * read it exactly as any backend would. http-parser as Debian builds it is
 * lenient (a bare LF ends a chunk line, any two bytes pass for the CRLF
 * after data), which a client could use to smuggle a second request past
 * the proxy's checks. Trailer fields may not name the proxy's own fields
 * (x-verified-*, x-forwarded-for/-proto) nor framing and routing ones.
 */
struct h1_chunk_check {
    uint8_t state;
    uint8_t digits;      /* hex digits of the chunk size so far */
    uint16_t name_len;   /* trailer field name bytes kept in name[] */
    uint32_t line;       /* bytes of the current size line or trailer section */
    uint64_t left;       /* data bytes left in the current chunk */
    char name[24];       /* the start of a trailer field name, as sent */
};

struct h1_parser {
    http_parser hp;
    struct h1_chunk_check chunk;
    bool check_chunks;   /* a chunked request body: chunk is checked beside http-parser */
    const char *base;    /* during a call only: where the head starts */
    uint32_t fed;        /* bytes of the head handed to http-parser so far */
    uint8_t kind;        /* enum h1_kind */
    bool head_request;   /* responses: the request was HEAD, so no body */
    uint8_t last_cb;     /* which data callback ran last (names and values come in pieces) */
    bool head_done;
    bool msg_done;
    bool refeed_lf;      /* the head's last LF must be replayed before the body */
    int error;           /* HTTP status a callback failed with (400, 431) */
    uint16_t max_fields; /* more fields is 431; h1_init leaves room for what the proxy adds */

    /* The head, valid once h1_parse_head() returned H1_DONE. */
    uint32_t head_len;
    struct h1_span target; /* requests: the request-target */
    struct h1_span reason; /* responses: the reason phrase */
    uint16_t nfields;
    struct h1_field fields[H1_MAX_FIELDS];

    /* Derived from the fields once the head is complete. */
    int host;              /* index of the Host field; -1 none; -2 more than one */
    bool conn_close, conn_keep_alive, conn_upgrade; /* Connection tokens */
    bool cors;             /* responses: any access-control-allow-{origin,methods,headers} */
    uint8_t nconn_tokens;  /* other Connection tokens: names of hop-by-hop fields */
    struct h1_span conn_tokens[H1_MAX_CONN_TOKENS];
};

enum { H1_MORE = 0, H1_DONE = 1 };

/* Starts a message. head_request: for a response, the request was HEAD. */
void h1_init(struct h1_parser *p, enum h1_kind kind, bool head_request);
/*
 * Parses the head of a message that starts at data[0]; len is every byte
 * available so far (those given before included: the head must stay where
 * it is, or move as a whole). Returns H1_MORE, H1_DONE (head_len and the
 * fields are set; body bytes start at data[head_len]), or a negative HTTP
 * status for a malformed (-400) or oversized (-431) head.
 */
int h1_parse_head(struct h1_parser *p, const char *data, size_t len);
/*
 * After H1_DONE: finds the end of the body in data[0..len). Returns how many
 * of those bytes belong to this message (all of them unless it ended), and
 * sets *complete once it has ended. Call it once even with len 0 right after
 * the head: a message without a body completes then. -1 on bad framing.
 */
ssize_t h1_parse_body(struct h1_parser *p, const char *data, size_t len, bool *complete);
/* The peer closed: true if that ends the message properly (a body read until EOF). */
bool h1_parse_eof(struct h1_parser *p);

/* Accessors once the head is done. */
static inline unsigned h1_status(const struct h1_parser *p) { return p->hp.status_code; }
static inline unsigned h1_method(const struct h1_parser *p) { return p->hp.method; }
static inline bool h1_is_http10(const struct h1_parser *p) { return p->hp.http_major == 1 && p->hp.http_minor == 0; }
/* Request: the client allows the connection to be reused after this exchange. */
bool h1_keep_alive(const struct h1_parser *p);
/* Response: the body runs until the connection closes. */
bool h1_body_until_eof(const struct h1_parser *p);
/* Request: it has a body (Content-Length > 0 or chunked). */
bool h1_has_body(const struct h1_parser *p);
/* Case-insensitive comparison of a span of head with a lower-case name. */
bool h1_span_is(const char *head, struct h1_span s, const char *lower);

/* What replaces the client's request head on its way to the upstream (§16.1 steps 6-7). */
struct h1_request_out {
    const char *target;          /* request-target sent upstream: target then target2 */
    size_t target_len;
    const char *target2;         /* (the query, kept apart from the path) */
    size_t target2_len;
    const char *client_ip;       /* x-forwarded-for */
    const char *proto;           /* x-forwarded-proto: "http" or "https" */
    const char *verified_pre;    /* rendered "x-verified-...: v\r\n" lines before the path */
    const char *verified_path;   /* x-verified-path value */
    size_t verified_path_len;
    const char *verified_post;   /* rendered lines after the path */
    bool upgrade;                /* keep Connection/Upgrade and drop any body framing */
};
/*
 * Appends the upstream request head: same method and version, the new
 * target, every field except x-verified-*, x-forwarded-for/-proto and the
 * hop-by-hop ones, then ours. head is the bytes the parser saw.
 */
void h1_write_request(const struct h1_parser *p, const char *head, const struct h1_request_out *o,
                      struct buf *out);

/* What a response head gets on its way to the client (§16.1 step 9). */
struct h1_response_out {
    const char *server;     /* the server field value */
    const char *backend_id; /* x-plane-backend-id, or NULL */
    bool close;             /* say "connection: close" */
    bool keep_alive;        /* say "connection: keep-alive" (HTTP/1.0 clients) */
    bool upgrade;           /* a 101: keep Connection/Upgrade */
};
/* Appends the client's response head built from an upstream response head. */
void h1_write_response(const struct h1_parser *p, const char *head, const struct h1_response_out *o,
                       struct buf *out);
/*
 * Appends a whole response made by the proxy itself: status line, the
 * extra lines given ("name: v\r\n"..., or NULL), CORS and server fields
 * when server is not NULL, x-plane-backend-id when backend_id is not NULL,
 * content-length, the connection field, and body unless head_only.
 */
void h1_write_local(struct buf *out, unsigned status, const char *extra, const char *server,
                    const char *backend_id, bool close, bool keep_alive, const char *body, bool head_only);
/* The reason phrase we use for a status. */
const char *h1_reason(unsigned status);
/* A legal field value: no control characters but HTAB (obs-text allowed). */
bool h1_value_is_legal(const char *v, size_t n);

#endif
