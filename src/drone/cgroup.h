/* SPDX-License-Identifier: MIT */
/*
 * cgroup.h - per-backend control groups for the runtimes whose backends are
 * child processes (process, oci): memory and CPU limits, accounting for
 * metrics, freezing, and killing everything a backend left behind. Works with cgroup v1 (memory and cpu,cpuacct hierarchies) and v2
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
    char *freezer_base; /* v1: ".../freezer/<self>/plane" or NULL; v2: NULL (cgroup.freeze) */
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
    char *freezer_path; /* owned; v1 freezer group, or NULL */
    int version;    /* of the host's hierarchy */
};

/* How many cgroup.procs files a group has at most (v1: memory, cpu, freezer). */
#define CGROUP_MAX_PROCS_FILES 3

/* Finds where groups can be made; never fails (see why_not). */
void cgroup_host_detect(struct cgroup_host *h);
void cgroup_host_release(struct cgroup_host *h);
/*
 * Makes the group for backend id with limits applied. On error -errno is
 * returned, a line is written to err and nothing is left behind.
 */
int cgroup_create(const struct cgroup_host *h, const char *id, const struct cgroup_limits *l,
                  struct cgroup *out, struct buf *err);
/* The groups cgroup_create() makes for id, those that exist (to clean up after a previous run). */
void cgroup_find(const struct cgroup_host *h, const char *id, struct cgroup *out);
/*
 * Opens the group's cgroup.procs files for writing, into fds: a process
 * that writes "0" to each enters the group. Returns how many, or -errno.
 */
int cgroup_open_procs(const struct cgroup *cg, int fds[CGROUP_MAX_PROCS_FILES]);
/* CPU time of the processes in the group now (from /proc), in ns. */
uint64_t cgroup_cpu_ns(const struct cgroup *cg);
/* Whether the group can be frozen (v2, or v1 with the freezer hierarchy). */
bool cgroup_can_freeze(const struct cgroup *cg);
/*
 * Freezes or thaws every process of the group. Freezing waits (at most
 * about a second) until the kernel says the group is frozen. 0 or -errno.
 */
int cgroup_freeze(const struct cgroup *cg, bool frozen);
/* SIGKILLs every process still in the group; returns how many. */
int cgroup_kill_all(const struct cgroup *cg);
/* Removes the group (it must be empty) and frees the paths. */
void cgroup_destroy(struct cgroup *cg);
/* Fills the memory fields of m with the §14.7 formulas. 0 or -errno. */
int cgroup_sample(const struct cgroup *cg, struct backend_metrics *m);

#endif
