/* SPDX-License-Identifier: MIT */
/*
 * dns_msg.c - reading queries and writing answers with ldns (see dns_msg.h).
 *
 * Unparseable bytes that still carry a header get FORMERR with the query's
 * id, so a resolver stops waiting; fewer than a header's 12 bytes, and any
 * message with the QR bit set, get nothing: answering a response could
 * start a loop between two servers.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "../common/xalloc.h"
#include "dns_msg.h"

#define DNS_HEADER_LEN 12
#define ACME_PREFIX "_acme-challenge."

/* The lower-case presentation form of a name, without the root's dot; false if it does not fit out. */
static bool name_text(const ldns_rdf *owner, char *out, size_t cap)
{
    ldns_rdf *lower = ldns_rdf_clone(owner);
    char *text;
    size_t n;
    bool ok;

    if (!lower)
        abort();
    ldns_dname2canonical(lower);
    text = ldns_rdf2str(lower);
    ldns_rdf_deep_free(lower);
    if (!text)
        abort();
    n = strlen(text);
    if (n > 1 && text[n - 1] == '.')
        text[--n] = '\0';
    ok = n < cap;
    if (ok)
        memcpy(out, text, n + 1);
    free(text);
    return ok;
}

/* A cluster name as a DNS name can spell it: non-empty labels of [a-z0-9-] (escapes never qualify). */
static bool cluster_name_ok(const char *s)
{
    size_t label = 0;

    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-') {
            label++;
        } else {
            return false;
        }
    }
    return label > 0;
}

/* Maps a question name to the cluster it asks about (§17): DNS_ANSWER with rcode when it names none. */
static enum dns_verdict name_to_cluster(struct dns_query *q, const char *zone)
{
    const char *rest;
    size_t n = strlen(q->name), z;

    if (!zone) {
        /* Without a zone (as Plane's test mode): "_acme-challenge.<cluster>". */
        if (strncmp(q->name, ACME_PREFIX, strlen(ACME_PREFIX)) != 0) {
            q->rcode = LDNS_RCODE_REFUSED;
            return DNS_ANSWER;
        }
        rest = q->name + strlen(ACME_PREFIX);
        n = strlen(rest);
    } else {
        /* "<cluster>.<zone>"; unlike Plane, only at a label boundary. */
        z = strlen(zone);
        if (n == z && strcmp(q->name, zone) == 0) {
            q->rcode = LDNS_RCODE_NOERROR; /* the apex: it exists, and has no TXT of ours */
            return DNS_ANSWER;
        }
        if (n <= z + 1 || strcmp(q->name + n - z, zone) != 0 || q->name[n - z - 1] != '.') {
            q->rcode = LDNS_RCODE_REFUSED;
            return DNS_ANSWER;
        }
        rest = q->name;
        n -= z + 1;
    }
    memcpy(q->cluster, rest, n);
    q->cluster[n] = '\0';
    if (!cluster_name_ok(q->cluster)) {
        q->rcode = LDNS_RCODE_NXDOMAIN;
        return DNS_ANSWER;
    }
    return DNS_LOOKUP;
}

enum dns_verdict dns_query_read(const uint8_t *wire, size_t len, const char *zone, struct dns_query *q)
{
    ldns_rr *question;

    memset(q, 0, sizeof(*q));
    if (len < DNS_HEADER_LEN || (wire[2] & 0x80))
        return DNS_DROP;
    q->id = (uint16_t)(wire[0] << 8 | wire[1]);
    q->opcode = (wire[2] >> 3) & 0x0f;
    if (q->opcode != LDNS_PACKET_QUERY) {
        q->rcode = LDNS_RCODE_NOTIMPL;
        return DNS_ANSWER;
    }
    if (ldns_wire2pkt(&q->pkt, wire, len) != LDNS_STATUS_OK) {
        q->pkt = NULL;
        q->rcode = LDNS_RCODE_FORMERR;
        return DNS_ANSWER;
    }
    if (ldns_pkt_qdcount(q->pkt) != 1 || ldns_rr_list_rr_count(ldns_pkt_question(q->pkt)) != 1) {
        q->rcode = LDNS_RCODE_FORMERR;
        return DNS_ANSWER;
    }
    question = ldns_rr_list_rr(ldns_pkt_question(q->pkt), 0);
    if (!name_text(ldns_rr_owner(question), q->name, sizeof(q->name))) {
        q->rcode = LDNS_RCODE_FORMERR;
        return DNS_ANSWER;
    }
    if (ldns_rr_get_class(question) != LDNS_RR_CLASS_IN) {
        q->rcode = LDNS_RCODE_REFUSED;
        return DNS_ANSWER;
    }
    if (ldns_rr_get_type(question) != LDNS_RR_TYPE_TXT) {
        q->rcode = LDNS_RCODE_NOTIMPL; /* §17: only TXT is served */
        return DNS_ANSWER;
    }
    return name_to_cluster(q, zone);
}

void dns_query_release(struct dns_query *q)
{
    ldns_pkt_free(q->pkt);
    q->pkt = NULL;
}

/* The record carries the name as asked, in its case (Plane lower-cases it, §17): 0x20 resolvers compare. */
static ldns_rr *txt_record(const ldns_rr *question, const char *txt)
{
    size_t n = strlen(txt);
    ldns_rr *rr = ldns_rr_new();
    ldns_rdf *owner = ldns_rdf_clone(ldns_rr_owner(question));
    uint8_t data[1 + DNS_TXT_MAX];
    ldns_rdf *str;

    data[0] = (uint8_t)n;
    memcpy(data + 1, txt, n);
    str = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_STR, n + 1, data);
    if (!rr || !owner || !str)
        abort();
    ldns_rr_set_owner(rr, owner);
    ldns_rr_set_type(rr, LDNS_RR_TYPE_TXT);
    ldns_rr_set_class(rr, LDNS_RR_CLASS_IN);
    ldns_rr_set_ttl(rr, DNS_TXT_TTL);
    ldns_rr_push_rdf(rr, str);
    return rr;
}

size_t dns_udp_limit(const struct dns_query *q)
{
    size_t asked = q->pkt && ldns_pkt_edns(q->pkt) ? ldns_pkt_edns_udp_size(q->pkt) : DNS_UDP_MAX;

    return asked < DNS_UDP_MAX ? DNS_UDP_MAX : asked > DNS_EDNS_SIZE ? DNS_EDNS_SIZE : asked;
}

uint8_t *dns_answer(const struct dns_query *q, int rcode, const char *txt, size_t max, size_t *len)
{
    ldns_pkt *p;
    const ldns_rr_list *questions = q->pkt ? ldns_pkt_question(q->pkt) : NULL;
    uint8_t *wire = NULL;
    bool truncated = false;

    if (txt && strlen(txt) > DNS_TXT_MAX)
        return NULL;
    for (;;) {
        p = ldns_pkt_new();
        if (!p)
            abort();
        ldns_pkt_set_id(p, q->id);
        ldns_pkt_set_qr(p, true);
        ldns_pkt_set_opcode(p, (ldns_pkt_opcode)q->opcode);
        ldns_pkt_set_rcode(p, (uint8_t)rcode);
        if (q->pkt) {
            ldns_pkt_set_rd(p, ldns_pkt_rd(q->pkt));
            ldns_pkt_set_cd(p, ldns_pkt_cd(q->pkt));
        }
        /* Authoritative for what it answers; a refusal speaks for no zone. */
        ldns_pkt_set_aa(p, rcode == LDNS_RCODE_NOERROR || rcode == LDNS_RCODE_NXDOMAIN);
        if (questions && ldns_rr_list_rr_count(questions) == 1 && rcode != LDNS_RCODE_FORMERR) {
            const ldns_rr *question = ldns_rr_list_rr(questions, 0);
            ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, ldns_rr_clone(question));
            if (txt && !truncated)
                ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, txt_record(question, txt));
        }
        if (q->pkt && ldns_pkt_edns(q->pkt)) {
            /* EDNS(0) (RFC 6891): say what we take, without options. */
            ldns_pkt_set_edns_udp_size(p, DNS_EDNS_SIZE);
            ldns_pkt_set_edns_version(p, 0);
        }
        ldns_pkt_set_tc(p, truncated);
        if (ldns_pkt2wire(&wire, p, len) != LDNS_STATUS_OK)
            abort(); /* only without memory */
        ldns_pkt_free(p);
        if (*len <= max || truncated || !txt)
            return wire;
        free(wire);
        truncated = true;
    }
}
