/* SPDX-License-Identifier: MIT */
/*
 * fuzz_dns_message.c - libFuzzer target for the DNS path of `plane dns`
 * (spec §17): any bytes as a query (the first byte picks a zone or none),
 * and every answer built for it must parse again as a response to the same
 * id, fit the size it was given, and carry the TXT value when one was set.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "../../src/dns/dns_msg.h"

static void check_answer(const struct dns_query *q, int rcode, const char *txt, size_t max)
{
    size_t len;
    uint8_t *wire = dns_answer(q, rcode, txt, max, &len);
    ldns_pkt *p = NULL;

    if (!wire)
        abort();
    if (ldns_wire2pkt(&p, wire, len) != LDNS_STATUS_OK)
        abort();
    if (ldns_pkt_id(p) != q->id || !ldns_pkt_qr(p) || ldns_pkt_get_rcode(p) != rcode)
        abort();
    if (len > max && !(ldns_pkt_tc(p) && ldns_pkt_ancount(p) == 0))
        abort();
    if (txt && !ldns_pkt_tc(p) && ldns_pkt_ancount(p) != 1)
        abort();
    ldns_pkt_free(p);
    free(wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const zones[] = {NULL, "acme.example", "example"};
    struct dns_query q;
    enum dns_verdict v;

    if (size < 1)
        return 0;
    v = dns_query_read(data + 1, size - 1, zones[data[0] % 3], &q);
    switch (v) {
    case DNS_DROP:
        break;
    case DNS_ANSWER:
        check_answer(&q, q.rcode, NULL, dns_udp_limit(&q));
        break;
    case DNS_LOOKUP:
        if (!q.cluster[0] || strlen(q.cluster) >= sizeof(q.cluster))
            abort();
        check_answer(&q, LDNS_RCODE_NOERROR, "0123456789012345678901234567890123456789abc", dns_udp_limit(&q));
        check_answer(&q, LDNS_RCODE_NOERROR, NULL, 512);
        check_answer(&q, LDNS_RCODE_SERVFAIL, NULL, 65535);
        break;
    }
    dns_query_release(&q);
    return 0;
}
