/* SPDX-License-Identifier: MIT */
/*
 * dns_msg.h - the DNS messages of `plane dns` (spec §17), read and written
 * with ldns: a query is taken apart into what the answer depends on (its
 * question, the cluster it asks about), and every answer is built from the
 * query it answers. Nothing here does I/O; these bytes come from anyone on
 * the network (fuzzed: tests/fuzz/fuzz_dns_message.c).
 */
#ifndef PLANE_DNS_MSG_H
#define PLANE_DNS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_TXT_TTL 1             /* §17: seconds */
#define DNS_UDP_MAX 512           /* a UDP answer without EDNS larger than this is truncated (TC) */
#define DNS_EDNS_SIZE 1232        /* the UDP size we announce and accept at most with EDNS */
#define DNS_TXT_MAX 255           /* one character-string */

enum dns_verdict {
    DNS_DROP,      /* not worth an answer (too short, or itself a response) */
    DNS_ANSWER,    /* answer at once with q.rcode */
    DNS_LOOKUP,    /* a TXT query for q.cluster: ask the controller */
};

struct dns_query {
    struct ldns_struct_pkt *pkt; /* owned; the parsed query, NULL when unparseable */
    uint16_t id;
    uint8_t opcode;
    int rcode;                   /* for DNS_ANSWER */
    char name[256];              /* lower-case presentation of the question name, no trailing dot */
    char cluster[256];           /* for DNS_LOOKUP */
};

/*
 * Reads a query (wire bytes, len) and decides what it gets (spec §17): not
 * a query of opcode QUERY -> NOTIMP; not exactly one question -> FORMERR;
 * a class other than IN -> REFUSED; a type other than TXT -> NOTIMP; a name
 * outside the zone (zone NULL: not "_acme-challenge.<cluster>") -> REFUSED;
 * inside it but not a cluster name -> NXDOMAIN. Release q afterwards
 * whatever the verdict.
 */
enum dns_verdict dns_query_read(const uint8_t *wire, size_t len, const char *zone, struct dns_query *q);
void dns_query_release(struct dns_query *q);

/* How large a UDP answer to q may be: 512, or what its EDNS record asks (512-1232). */
size_t dns_udp_limit(const struct dns_query *q);
/*
 * The answer to q in wire form (owned; free()), with rcode, and the TXT
 * record txt when txt is not NULL (NOERROR only). max is the size limit of
 * the transport: a bigger answer loses its records and gets TC. NULL for a
 * TXT value longer than DNS_TXT_MAX.
 */
uint8_t *dns_answer(const struct dns_query *q, int rcode, const char *txt, size_t max, size_t *len);

#endif
