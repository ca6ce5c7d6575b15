/* SPDX-License-Identifier: MIT */
/*
 * procfs.c - small readers of /proc (see procfs.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "procfs.h"
#include "runtime.h"

/* Reads a small file into buf (NUL-terminated); false if it cannot be read. */
static bool read_small(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    size_t n;

    if (!f)
        return false;
    n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return true;
}

/* Field (1-based, >= 3) of /proc/PID/stat, or NULL; points into buf. */
static const char *stat_field(int pid, int field, char *buf, size_t size)
{
    char path[64];
    char *p;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if (!read_small(path, buf, size))
        return NULL;
    /* The command name (field 2) may hold spaces and parentheses: count from the last ")". */
    p = strrchr(buf, ')');
    if (!p)
        return NULL;
    p += 2; /* field 3 */
    for (int i = 3; i < field && p; i++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    return p;
}

static uint64_t ticks_to_ns(unsigned long long ticks)
{
    return ticks * (1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK));
}

unsigned long long procfs_start_time(int pid)
{
    char text[1024];
    const char *p = stat_field(pid, 22, text, sizeof(text));

    return p ? strtoull(p, NULL, 10) : 0;
}

uint64_t procfs_cpu_ns(int pid)
{
    char text[1024];
    const char *p = stat_field(pid, 14, text, sizeof(text));
    unsigned long long ut, st, cut, cst;

    if (!p || sscanf(p, "%llu %llu %llu %llu", &ut, &st, &cut, &cst) != 4)
        return 0;
    return ticks_to_ns(ut + st + cut + cst);
}

uint64_t procfs_host_cpu_ns(void)
{
    char text[512];
    unsigned long long v[8] = {0};
    unsigned long long sum = 0;

    if (!read_small("/proc/stat", text, sizeof(text)) ||
        sscanf(text, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
               &v[6], &v[7]) < 4)
        return 0;
    for (int i = 0; i < 8; i++) /* guest time is already counted in user */
        sum += v[i];
    return ticks_to_ns(sum);
}

static uint64_t kb_field(const char *text, const char *name)
{
    const char *p = strstr(text, name);

    return p ? strtoull(p + strlen(name), NULL, 10) * 1024 : 0;
}

void procfs_memory(int pid, struct backend_metrics *m)
{
    char path[64], text[4096];

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if (read_small(path, text, sizeof(text))) {
        m->mem_used = kb_field(text, "VmRSS:");
        m->mem_total = m->mem_used;
        m->mem_active = m->mem_used;
        m->mem_unevictable = kb_field(text, "VmLck:");
    }
    if (read_small("/proc/meminfo", text, sizeof(text)))
        m->mem_limit = kb_field(text, "MemTotal:");
}
