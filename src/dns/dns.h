/* SPDX-License-Identifier: MIT */
/*
 * dns.h - `plane dns` (spec §2.4, §9, §17): an authoritative DNS server on
 * UDP and TCP that answers the TXT queries of ACME DNS-01 challenges with
 * the value a proxy of the cluster published through the controller.
 */
#ifndef PLANE_DNS_H
#define PLANE_DNS_H

/* `plane dns [options]`; returns the process exit status. */
int dns_main(int argc, char **argv);

#endif
