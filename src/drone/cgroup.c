/* SPDX-License-Identifier: MIT */
/*
 * cgroup.c - per-backend control groups, v1 and v2 (see cgroup.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "cgroup.h"
#include "procfs.h"
#include "runtime.h"

#define CGROUP_FS "/sys/fs/cgroup"

static int write_file(const char *dir, const char *name, const char *value)
{
    char *path = xasprintf("%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int rc = 0;

    if (fd == -1 || write(fd, value, strlen(value)) == -1)
        rc = -errno;
    if (fd != -1)
        close(fd);
    free(path);
    return rc;
}

/* Reads a small file into buf (NUL-terminated). Returns bytes or -errno. */
static ssize_t read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd == -1)
        return -errno;
    n = read(fd, buf, size - 1);
    if (n == -1)
        n = -errno;
    else
        buf[n] = '\0';
    close(fd);
    return n;
}

/* Our own group in the hierarchy whose controller list contains ctl ("" for v2). */
static char *self_group(const char *ctl)
{
    char line[512];
    FILE *f = fopen("/proc/self/cgroup", "re");
    char *found = NULL;

    if (!f)
        return NULL;
    while (!found && fgets(line, sizeof(line), f)) {
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        char *path = c2 + 1;
        const char *ctls = c1 + 1;
        path[strcspn(path, "\n")] = '\0';
        if (*ctl == '\0') {
            /* v2's line is "0::/path". */
            if (*ctls == '\0')
                found = xstrdup(path);
            continue;
        }
        /* ctls is a comma-separated list such as "cpu,cpuacct". */
        char *copy = xstrdup(ctls);
        for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (strcmp(t, ctl) == 0)
                found = xstrdup(path);
        free(copy);
    }
    fclose(f);
    return found;
}

static char *join_base(const char *mount, const char *self)
{
    return xasprintf("%s%s%splane", mount, self, strcmp(self, "/") == 0 ? "" : "/");
}

static bool dir_writable(const char *path)
{
    return access(path, W_OK) == 0;
}

void cgroup_host_detect(struct cgroup_host *h)
{
    char *self;

    memset(h, 0, sizeof(*h));
    if (access(CGROUP_FS "/memory/cgroup.procs", F_OK) == 0) {
        self = self_group("memory");
        if (!self) {
            h->why_not = xstrdup("cannot find our memory cgroup in /proc/self/cgroup");
            return;
        }
        char *mount = xstrdup(CGROUP_FS "/memory");
        char *parent = xasprintf("%s%s", mount, self);
        if (!dir_writable(parent)) {
            h->why_not = xasprintf("memory cgroup '%s' is not writable", parent);
        } else {
            h->version = 1;
            h->mem_base = join_base(mount, self);
            char *cself = self_group("cpu");
            const char *cpumount = access(CGROUP_FS "/cpu/cpu.cfs_quota_us", F_OK) == 0
                                       ? CGROUP_FS "/cpu"
                                       : CGROUP_FS "/cpu,cpuacct";
            if (cself)
                h->cpu_base = join_base(cpumount, cself);
            free(cself);
            char *fself = self_group("freezer");
            if (fself && access(CGROUP_FS "/freezer/cgroup.procs", F_OK) == 0)
                h->freezer_base = join_base(CGROUP_FS "/freezer", fself);
            free(fself);
        }
        free(parent);
        free(mount);
        free(self);
        return;
    }
    if (access(CGROUP_FS "/cgroup.controllers", F_OK) == 0) {
        self = self_group("");
        if (!self) {
            h->why_not = xstrdup("cannot find our cgroup v2 group in /proc/self/cgroup");
            return;
        }
        h->version = 2;
        h->mem_base = join_base(CGROUP_FS, self);
        free(self);
        return;
    }
    h->why_not = xstrdup("no cgroup filesystem at " CGROUP_FS);
}

void cgroup_host_release(struct cgroup_host *h)
{
    free(h->mem_base);
    free(h->cpu_base);
    free(h->freezer_base);
    free(h->why_not);
    memset(h, 0, sizeof(*h));
}

static int ensure_dir(const char *path)
{
    if (mkdir(path, 0755) == -1 && errno != EEXIST)
        return -errno;
    return 0;
}

/* base/id in a v1 hierarchy of its own (cpu, freezer), into *path. 0, or -errno with a line in err. */
static int make_v1_group(const char *base, const char *id, char **path, struct buf *err)
{
    int rc = ensure_dir(base);

    *path = xasprintf("%s/%s", base, id);
    if (rc == 0)
        rc = ensure_dir(*path);
    if (rc < 0)
        buf_printf(err, "cannot create cgroup '%s': %s", *path, strerror(-rc));
    return rc;
}

int cgroup_create(const struct cgroup_host *h, const char *id, const struct cgroup_limits *l,
                  struct cgroup *out, struct buf *err)
{
    char val[64];
    int rc;

    memset(out, 0, sizeof(*out));
    out->version = h->version;
    if (h->version == 0) {
        buf_printf(err, "resource limits need cgroups: %s", h->why_not ? h->why_not : "unavailable");
        return -ENOTSUP;
    }
    if (h->version == 2) {
        /* v2 needs the controllers enabled in the parent before a child can use them. */
        char *parent = xstrdup(h->mem_base);
        *strrchr(parent, '/') = '\0';
        write_file(parent, "cgroup.subtree_control", "+memory +cpu");
        free(parent);
    }
    rc = ensure_dir(h->mem_base);
    if (rc == 0 && h->version == 2)
        write_file(h->mem_base, "cgroup.subtree_control", "+memory +cpu");
    if (rc < 0) {
        buf_printf(err, "cannot create cgroup '%s': %s", h->mem_base, strerror(-rc));
        return rc;
    }
    out->mem_path = xasprintf("%s/%s", h->mem_base, id);
    rc = ensure_dir(out->mem_path);
    if (rc < 0) {
        buf_printf(err, "cannot create cgroup '%s': %s", out->mem_path, strerror(-rc));
        goto fail;
    }
    if (h->version == 1 && h->cpu_base && l->cpu_percent > 0 &&
        (rc = make_v1_group(h->cpu_base, id, &out->cpu_path, err)) < 0)
        goto fail;
    if (h->version == 1 && h->freezer_base && (rc = make_v1_group(h->freezer_base, id, &out->freezer_path, err)) < 0)
        goto fail;
    if (l->memory_bytes > 0) {
        snprintf(val, sizeof(val), "%lld", (long long)l->memory_bytes);
        rc = write_file(out->mem_path, h->version == 1 ? "memory.limit_in_bytes" : "memory.max", val);
        if (rc < 0) {
            buf_printf(err, "cannot set memory limit %s in '%s': %s", val, out->mem_path, strerror(-rc));
            goto fail;
        }
    }
    if (l->cpu_percent > 0) {
        long long period = l->cpu_period_us > 0 ? l->cpu_period_us : 100000;
        long long quota = period * l->cpu_percent / 100; /* §14.3 CpuQuota */
        if (h->version == 1) {
            if (!out->cpu_path) {
                buf_printf(err, "cpu limit requested but no cpu cgroup hierarchy is mounted");
                rc = -ENOTSUP;
                goto fail;
            }
            snprintf(val, sizeof(val), "%lld", period);
            rc = write_file(out->cpu_path, "cpu.cfs_period_us", val);
            snprintf(val, sizeof(val), "%lld", quota);
            if (rc == 0)
                rc = write_file(out->cpu_path, "cpu.cfs_quota_us", val);
        } else {
            snprintf(val, sizeof(val), "%lld %lld", quota, period);
            rc = write_file(out->mem_path, "cpu.max", val);
        }
        if (rc < 0) {
            buf_printf(err, "cannot set cpu limit in cgroup for '%s': %s", id, strerror(-rc));
            goto fail;
        }
    }
    return 0;
fail:
    cgroup_destroy(out);
    return rc;
}

void cgroup_find(const struct cgroup_host *h, const char *id, struct cgroup *out)
{
    const char *bases[] = {h->mem_base, h->cpu_base, h->freezer_base};
    char **paths[] = {&out->mem_path, &out->cpu_path, &out->freezer_path};

    memset(out, 0, sizeof(*out));
    out->version = h->version;
    for (size_t i = 0; i < ARRAY_SIZE(bases); i++) {
        char *p = bases[i] ? xasprintf("%s/%s", bases[i], id) : NULL;
        if (p && access(p, F_OK) == 0)
            *paths[i] = p;
        else
            free(p);
    }
}

int cgroup_open_procs(const struct cgroup *cg, int fds[CGROUP_MAX_PROCS_FILES])
{
    const char *dirs[CGROUP_MAX_PROCS_FILES] = {cg->mem_path, cg->cpu_path, cg->freezer_path};
    int n = 0;

    for (int i = 0; i < CGROUP_MAX_PROCS_FILES; i++) {
        if (!dirs[i])
            continue;
        char *path = xasprintf("%s/cgroup.procs", dirs[i]);
        fds[n] = open(path, O_WRONLY | O_CLOEXEC);
        free(path);
        if (fds[n] == -1) {
            int rc = -errno;
            while (n > 0)
                close(fds[--n]);
            return rc;
        }
        n++;
    }
    return n;
}

uint64_t cgroup_cpu_ns(const struct cgroup *cg)
{
    char *path = xasprintf("%s/cgroup.procs", cg->mem_path);
    FILE *f = fopen(path, "re");
    uint64_t sum = 0;
    int pid;

    free(path);
    if (!f)
        return 0;
    while (fscanf(f, "%d", &pid) == 1)
        sum += procfs_cpu_ns(pid);
    fclose(f);
    return sum;
}

bool cgroup_can_freeze(const struct cgroup *cg)
{
    return cg->mem_path && (cg->version == 2 || cg->freezer_path);
}

int cgroup_freeze(const struct cgroup *cg, bool frozen)
{
    char state[32];
    int rc;

    if (!cgroup_can_freeze(cg))
        return -ENOTSUP;
    if (cg->version == 2) {
        /* cgroup.freeze answers at once; "frozen 1" in cgroup.events follows. */
        rc = write_file(cg->mem_path, "cgroup.freeze", frozen ? "1" : "0");
        if (rc < 0 || !frozen)
            return rc;
        char *events = xasprintf("%s/cgroup.events", cg->mem_path);
        char text[512];
        rc = -ETIMEDOUT;
        for (int i = 0; i < 1000; i++) {
            if (read_file(events, text, sizeof(text)) > 0 && strstr(text, "frozen 1")) {
                rc = 0;
                break;
            }
            usleep(1000);
        }
        free(events);
        return rc;
    }
    /* v1: FREEZING until every task has stopped; THAWED is immediate. */
    rc = write_file(cg->freezer_path, "freezer.state", frozen ? "FROZEN" : "THAWED");
    if (rc < 0 || !frozen)
        return rc;
    char *path = xasprintf("%s/freezer.state", cg->freezer_path);
    rc = -ETIMEDOUT;
    for (int i = 0; i < 1000; i++) {
        if (read_file(path, state, sizeof(state)) > 0 && strncmp(state, "FROZEN", 6) == 0) {
            rc = 0;
            break;
        }
        usleep(1000);
    }
    free(path);
    return rc;
}

int cgroup_kill_all(const struct cgroup *cg)
{
    char *path;
    FILE *f;
    int pid;
    int n = 0;

    if (!cg->mem_path)
        return 0;
    path = xasprintf("%s/cgroup.procs", cg->mem_path);
    f = fopen(path, "re");
    free(path);
    if (!f)
        return 0;
    while (fscanf(f, "%d", &pid) == 1)
        if (pid > 1 && kill(pid, SIGKILL) == 0)
            n++;
    fclose(f);
    /* v1 freezes SIGKILL too: a frozen group dies only once thawed (v2 lets it through). */
    if (cg->freezer_path)
        write_file(cg->freezer_path, "freezer.state", "THAWED");
    return n;
}

void cgroup_destroy(struct cgroup *cg)
{
    /* A frozen v1 group cannot empty: thaw it so its killed tasks can die. */
    if (cg->freezer_path)
        write_file(cg->freezer_path, "freezer.state", "THAWED");
    /* rmdir fails while the last killed process is still being reaped; retry briefly. */
    for (int i = 0; cg->mem_path && i < 50; i++) {
        if (rmdir(cg->mem_path) == 0 || errno == ENOENT)
            break;
        usleep(1000);
    }
    if (cg->cpu_path)
        rmdir(cg->cpu_path);
    if (cg->freezer_path) {
        for (int i = 0; i < 50; i++) {
            if (rmdir(cg->freezer_path) == 0 || errno == ENOENT)
                break;
            usleep(1000);
        }
    }
    free(cg->mem_path);
    free(cg->cpu_path);
    free(cg->freezer_path);
    memset(cg, 0, sizeof(*cg));
}

static uint64_t stat_field(const char *text, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return strtoull(p + n + 1, NULL, 10);
    }
    return 0;
}

static uint64_t file_u64(const char *dir, const char *name)
{
    char *path = xasprintf("%s/%s", dir, name);
    char buf[64];
    uint64_t v = 0;

    if (read_file(path, buf, sizeof(buf)) > 0)
        v = strncmp(buf, "max", 3) == 0 ? UINT64_MAX : strtoull(buf, NULL, 10);
    free(path);
    return v;
}

int cgroup_sample(const struct cgroup *cg, struct backend_metrics *m)
{
    char text[8192];
    char *path = xasprintf("%s/memory.stat", cg->mem_path);
    ssize_t n = read_file(path, text, sizeof(text));
    bool v1;

    free(path);
    if (n < 0)
        return (int)n;
    v1 = strstr(text, "total_rss ") != NULL;
    if (v1) {
        uint64_t usage = file_u64(cg->mem_path, "memory.usage_in_bytes");
        uint64_t inactive_file = stat_field(text, "total_inactive_file");
        m->mem_active = stat_field(text, "total_active_anon") + stat_field(text, "total_active_file");
        m->mem_total = stat_field(text, "total_rss") + stat_field(text, "total_cache");
        m->mem_unevictable = stat_field(text, "total_unevictable");
        m->mem_inactive = stat_field(text, "total_inactive_anon") + inactive_file;
        m->mem_used = usage > inactive_file ? usage - inactive_file : 0;
        m->mem_limit = file_u64(cg->mem_path, "memory.limit_in_bytes");
    } else {
        uint64_t usage = file_u64(cg->mem_path, "memory.current");
        uint64_t inactive_file = stat_field(text, "inactive_file");
        m->mem_active = stat_field(text, "active_anon") + stat_field(text, "active_file");
        m->mem_total = stat_field(text, "file") + stat_field(text, "anon") + stat_field(text, "kernel_stack") +
                       stat_field(text, "sock") + stat_field(text, "slab");
        m->mem_unevictable = stat_field(text, "unevictable");
        m->mem_inactive = stat_field(text, "inactive_anon") + inactive_file;
        m->mem_used = usage > inactive_file ? usage - inactive_file : 0;
        m->mem_limit = file_u64(cg->mem_path, "memory.max");
    }
    return 0;
}
