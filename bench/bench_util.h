/* SPDX-License-Identifier: MIT */
/*
 * bench_util.h - what the C benchmarks share: a monotonic clock in ms, the
 * §14.8 readiness probe done blocking, percentiles, and the RSS and open
 * descriptors of the benchmark process (for leak checks). Header-only:
 * each benchmark is one program.
 */
#ifndef PLANE_BENCH_UTIL_H
#define PLANE_BENCH_UTIL_H

#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char probe[] = "HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n";

static inline double now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static inline int probe_once(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 1};
    char got[5];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ok = 0;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && write(fd, probe, sizeof(probe) - 1) > 0 &&
        recv(fd, got, 5, MSG_WAITALL) == 5)
        ok = memcmp(got, "HTTP/", 5) == 0;
    close(fd);
    return ok;
}

static inline int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static inline double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    int i = (int)(n * p);
    return v[i >= n ? n - 1 : i];
}

static inline long rss_kb(void)
{
    char line[256];
    long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");

    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static inline int count_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    int n = 0;

    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    if (d)
        closedir(d);
    return n;
}

#endif
