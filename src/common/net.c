/* SPDX-License-Identifier: MIT */
/*
 * net.c - address parsing and free-port picking (see net.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net.h"

static int parse_port(const char *s, uint16_t *out)
{
    char *end;
    long v;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > 65535)
        return -EINVAL;
    *out = (uint16_t)v;
    return 0;
}

int net_addr_parse(const char *address, struct sockaddr_storage *sa)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *colon;
    uint16_t port;
    size_t n;

    memset(sa, 0, sizeof(*sa));
    if (address[0] == '[') {
        const char *close = strchr(address, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        n = (size_t)(close - address - 1);
        if (n == 0 || n >= sizeof(host))
            return -EINVAL;
        memcpy(host, address + 1, n);
        host[n] = '\0';
        if (parse_port(close + 2, &port) < 0)
            return -EINVAL;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        return inet_pton(AF_INET6, host, &s6->sin6_addr) == 1 ? 0 : -EINVAL;
    }
    colon = strrchr(address, ':');
    if (!colon)
        return -EINVAL;
    n = (size_t)(colon - address);
    if (n == 0 || n >= sizeof(host))
        return -EINVAL;
    memcpy(host, address, n);
    host[n] = '\0';
    if (parse_port(colon + 1, &port) < 0)
        return -EINVAL;
    struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    return inet_pton(AF_INET, host, &s4->sin_addr) == 1 ? 0 : -EINVAL;
}

void net_addr_format(char *out, const char *ip, uint16_t port)
{
    if (strchr(ip, ':'))
        snprintf(out, NET_ADDR_LEN, "[%s]:%u", ip, port);
    else
        snprintf(out, NET_ADDR_LEN, "%s:%u", ip, port);
}

int net_pick_free_port(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char probe[NET_ADDR_LEN];
    int fd;
    int rc;

    net_addr_format(probe, ip, 1);
    if (net_addr_parse(probe, &ss) < 0)
        return -EINVAL;
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    if (bind(fd, (struct sockaddr *)&ss,
             ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) == -1 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) == -1) {
        rc = -errno;
        close(fd);
        return rc;
    }
    close(fd);
    return ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                   : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}
