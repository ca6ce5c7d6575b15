/* SPDX-License-Identifier: MIT */
/*
 * cgroup.h - per-backend control groups for the process runtime: memory and
 * CPU limits, accounting for metrics, and killing everything a backend left
 * behind. Works with cgroup v1 (memory and cpu,cpuacct hierarchies) and v2
 * (the unified hierarchy). Groups are created under the drone's own group,
 * in a "plane" subgroup, so the drone never touches groups it did not make.
 */
#ifndef PLANE_CGROUP_H
#define PLANE_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common/buf.h"

struct backend_metrics;

struct cgroup_host {
    int version;     /* 1, 2, or 0 when the host offers no usable cgroups */
    char *mem_base;  /* v1: ".../memory/<self>/plane"; v2: ".../<self>/plane" */
    char *cpu_base;  /* v1: ".../cpu,cpuacct/<self>/plane" or NULL; v2: NULL */
    char *why_not;   /* when version is 0: why, for error messages */
};

struct cgroup_limits {
    int64_t memory_bytes;  /* 0: none */
    int64_t cpu_period_us; /* 0: the default 100000 */
    int cpu_percent;       /* 0: none; 100 = one full CPU */
};

struct cgroup {
    char *mem_path; /* owned; the group (v2: the only one) */
    char *cpu_path; /* owned; v1 cpu group, or NULL */
};

/* Finds where groups can be made; never fails (see why_not). */
void cgroup_host_detect(struct cgroup_host *h);
void cgroup_host_release(struct cgroup_host *h);
/*
 * Makes the group for backend id with limits applied. On error -errno is
 * returned, a line is written to err and nothing is left behind.
 */
int cgroup_create(const struct cgroup_host *h, const char *id, const struct cgroup_limits *l,
                  struct cgroup *out, struct buf *err);
/* Moves pid into the group. 0 or -errno. */
int cgroup_add_pid(const struct cgroup *cg, pid_t pid);
/* SIGKILLs every process still in the group; returns how many. */
int cgroup_kill_all(const struct cgroup *cg);
/* Removes the group (it must be empty) and frees the paths. */
void cgroup_destroy(struct cgroup *cg);
/* Fills the memory fields of m with the §14.7 formulas. 0 or -errno. */
int cgroup_sample(const struct cgroup *cg, struct backend_metrics *m);

#endif
