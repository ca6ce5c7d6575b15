/* SPDX-License-Identifier: MIT */
/*
 * net.h - socket addresses as the protocol writes them ("IP:PORT", IPv6 as
 * "[IP]:PORT", spec §0) and picking a free local port for a backend.
 */
#ifndef PLANE_NET_H
#define PLANE_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NET_ADDR_LEN 64 /* longest "[IPv6]:PORT" plus NUL, rounded up */

/* Parses "IP:PORT" or "[IPv6]:PORT" (port 1-65535). 0 or -EINVAL. */
int net_addr_parse(const char *address, struct sockaddr_storage *sa);
/* Writes "IP:PORT" for ip (a literal) and port into out[NET_ADDR_LEN]. */
void net_addr_format(char *out, const char *ip, uint16_t port);
/*
 * Checks that TCP port (0: any, chosen by the kernel) on ip can be bound,
 * by binding it and letting go. Returns the port, or -errno (-EADDRINUSE).
 * The port is free now; a backend binds it a moment later.
 */
int net_pick_free_port(const char *ip, uint16_t port);

#endif
