/* SPDX-License-Identifier: MIT */
/*
 * test_dns_msg.c - unit tests of `plane dns`'s message handling (spec §17):
 * the verdict for each kind of query, and the answers' shape.
 */
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "../../src/dns/dns_msg.h"
#include "test.h"

/* A query's wire form (owned), built by ldns. */
static uint8_t *query(const char *name, ldns_rr_type type, ldns_rr_class cls, size_t *len)
{
    ldns_pkt *p = NULL;
    uint8_t *wire = NULL;

    if (ldns_pkt_query_new_frm_str(&p, name, type, cls, LDNS_RD) != LDNS_STATUS_OK)
        abort();
    ldns_pkt_set_id(p, 4242);
    if (ldns_pkt2wire(&wire, p, len) != LDNS_STATUS_OK)
        abort();
    ldns_pkt_free(p);
    return wire;
}

static enum dns_verdict verdict(const char *name, ldns_rr_type type, ldns_rr_class cls, const char *zone,
                                struct dns_query *q)
{
    size_t len;
    uint8_t *wire = query(name, type, cls, &len);
    enum dns_verdict v = dns_query_read(wire, len, zone, q);

    free(wire);
    return v;
}

TEST(dns_query_verdicts)
{
    static const struct {
        const char *name;
        ldns_rr_type type;
        ldns_rr_class cls;
        const char *zone;
        enum dns_verdict verdict;
        int rcode;           /* DNS_ANSWER */
        const char *cluster; /* DNS_LOOKUP */
    } cases[] = {
        {"_acme-challenge.plane.test", LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, NULL, DNS_LOOKUP, 0, "plane.test"},
        {"_ACME-Challenge.Plane.Test.", LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, NULL, DNS_LOOKUP, 0, "plane.test"},
        {"_acme-challenge.plane.test", LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, NULL, DNS_ANSWER, LDNS_RCODE_NOTIMPL, NULL},
        {"_acme-challenge.plane.test", LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_CH, NULL, DNS_ANSWER, LDNS_RCODE_REFUSED, NULL},
        {"plane.test", LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, NULL, DNS_ANSWER, LDNS_RCODE_REFUSED, NULL},
        {"_acme-challenge.a_b.test", LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, NULL, DNS_ANSWER, LDNS_RCODE_NXDOMAIN, NULL},
        /* With a zone: <cluster>.<zone>, at a label boundary; the apex exists. */
        {"foo.bar.baz.example.com", LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, "example.com", DNS_LOOKUP, 0, "foo.bar.baz"},
        {"fooexample.com", LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, "example.com", DNS_ANSWER, LDNS_RCODE_REFUSED, NULL},
        {"example.com", LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, "example.com", DNS_ANSWER, LDNS_RCODE_NOERROR, NULL},
    };
    struct dns_query q;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ASSERT_EQ(verdict(cases[i].name, cases[i].type, cases[i].cls, cases[i].zone, &q), cases[i].verdict);
        ASSERT_EQ(q.id, 4242);
        if (cases[i].verdict == DNS_ANSWER)
            ASSERT_EQ(q.rcode, cases[i].rcode);
        else
            ASSERT_STR_EQ(q.cluster, cases[i].cluster);
        dns_query_release(&q);
    }
}

TEST(dns_bad_messages)
{
    struct dns_query q;
    uint8_t header_only[12] = {0x01, 0x02, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    uint8_t response[12] = {0x01, 0x02, 0x81, 0x00, 0, 0, 0, 0, 0, 0, 0, 0};
    uint8_t update[12] = {0x01, 0x02, 0x28, 0x00, 0, 0, 0, 0, 0, 0, 0, 0};
    size_t len;
    uint8_t *wire;

    ASSERT_EQ(dns_query_read(header_only, 5, NULL, &q), DNS_DROP);
    dns_query_release(&q);
    ASSERT_EQ(dns_query_read(response, sizeof(response), NULL, &q), DNS_DROP);
    dns_query_release(&q);
    ASSERT_EQ(dns_query_read(update, sizeof(update), NULL, &q), DNS_ANSWER);
    ASSERT_EQ(q.rcode, LDNS_RCODE_NOTIMPL);
    dns_query_release(&q);
    /* One question announced, none there. */
    ASSERT_EQ(dns_query_read(header_only, sizeof(header_only), NULL, &q), DNS_ANSWER);
    ASSERT_EQ(q.rcode, LDNS_RCODE_FORMERR);
    wire = dns_answer(&q, q.rcode, NULL, DNS_UDP_MAX, &len);
    ASSERT_EQ(len, 12);
    ASSERT_EQ(wire[0], 0x01);
    ASSERT_EQ(wire[1], 0x02);
    ASSERT_EQ(wire[3] & 0x0f, LDNS_RCODE_FORMERR);
    free(wire);
    dns_query_release(&q);
}

TEST(dns_answers_carry_the_value_and_truncate)
{
    struct dns_query q;
    char value[256];
    ldns_pkt *p = NULL;
    size_t len;
    uint8_t *wire;

    ASSERT_EQ(verdict("_acme-challenge.plane.test", LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, NULL, &q), DNS_LOOKUP);
    wire = dns_answer(&q, LDNS_RCODE_NOERROR, "abc", DNS_UDP_MAX, &len);
    ASSERT_EQ(ldns_wire2pkt(&p, wire, len), LDNS_STATUS_OK);
    ASSERT_EQ(ldns_pkt_id(p), 4242);
    ASSERT_TRUE(ldns_pkt_aa(p) && ldns_pkt_qr(p) && ldns_pkt_rd(p));
    ASSERT_EQ(ldns_pkt_ancount(p), 1);
    ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(p), 0);
    ASSERT_EQ(ldns_rr_get_type(rr), LDNS_RR_TYPE_TXT);
    ASSERT_EQ(ldns_rr_ttl(rr), DNS_TXT_TTL);
    char *text = ldns_rdf2str(ldns_rr_rdf(rr, 0));
    ASSERT_STR_EQ(text, "\"abc\"");
    free(text);
    ldns_pkt_free(p);
    free(wire);
    /* Too big for the transport: no records, TC. */
    memset(value, 'v', 255);
    value[255] = '\0';
    wire = dns_answer(&q, LDNS_RCODE_NOERROR, value, 100, &len);
    ASSERT_EQ(ldns_wire2pkt(&p, wire, len), LDNS_STATUS_OK);
    ASSERT_TRUE(ldns_pkt_tc(p));
    ASSERT_EQ(ldns_pkt_ancount(p), 0);
    ldns_pkt_free(p);
    free(wire);
    /* Longer than one character-string: refused. */
    char *huge = malloc(300);
    memset(huge, 'h', 299);
    huge[299] = '\0';
    ASSERT_NULL(dns_answer(&q, LDNS_RCODE_NOERROR, huge, 65535, &len));
    free(huge);
    ASSERT_EQ(dns_udp_limit(&q), DNS_UDP_MAX);
    dns_query_release(&q);
}
