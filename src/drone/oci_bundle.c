/* SPDX-License-Identifier: MIT */
/*
 * oci_bundle.c - executables and bundles of the oci runtime (see
 * oci_bundle.h): a read-only root, tmpfs where a program writes, new pid,
 * mount, ipc and uts namespaces, the host's network, Docker's default
 * capabilities.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/xalloc.h"
#include "oci_bundle.h"
#include "oci_image.h"

#define MAX_ARGS 4096

int oci_exec_parse(const json_t *x, struct oci_exec *e, struct buf *err)
{
    const json_t *image = json_object_get(x, "image");
    const json_t *rootfs = json_object_get(x, "rootfs");

    memset(e, 0, sizeof(*e));
    if (!json_is_object(x)) {
        buf_printf(err, "executable must be an object with an \"image\" or a \"rootfs\"");
        return -EINVAL;
    }
    if (image && !json_is_null(image)) {
        if (!oci_image_name_ok(json_string_value(image))) {
            buf_printf(err, "executable.image must be an image reference");
            return -EINVAL;
        }
        e->image = json_string_value(image);
    }
    if (rootfs && !json_is_null(rootfs)) {
        if (!json_is_string(rootfs) || json_string_value(rootfs)[0] != '/' ||
            strlen(json_string_value(rootfs)) != json_string_length(rootfs)) {
            buf_printf(err, "executable.rootfs must be an absolute path");
            return -EINVAL;
        }
        e->rootfs = json_string_value(rootfs);
    }
    if (!e->image == !e->rootfs) {
        buf_printf(err, "executable needs exactly one of \"image\" and \"rootfs\"");
        return -EINVAL;
    }
    e->command = json_object_get(x, "command");
    if (e->command && json_is_null(e->command))
        e->command = NULL;
    if (e->command) {
        size_t i;
        const json_t *a;
        if (!json_is_array(e->command) || json_array_size(e->command) == 0 ||
            json_array_size(e->command) > MAX_ARGS) {
            buf_printf(err, "executable.command must be a non-empty array of strings");
            return -EINVAL;
        }
        json_array_foreach(e->command, i, a) {
            if (!json_is_string(a) || strlen(json_string_value(a)) != json_string_length(a)) {
                buf_printf(err, "executable.command[%zu] must be a string without NUL bytes", i);
                return -EINVAL;
            }
        }
    }
    return process_exec_common(x, &e->env, &e->cwd, &e->limits, err);
}

/* uid and gid of an image's User: numeric, or a name in the root's /etc/passwd and /etc/group. */
static int resolve_user(const char *rootfs, const char *user, uint32_t *uid, uint32_t *gid, struct buf *err)
{
    char *name = xstrdup(user ? user : "");
    char *group = strchr(name, ':');
    char *end;
    int rc = 0;

    *uid = *gid = 0;
    if (group)
        *group++ = '\0';
    if (*name) {
        unsigned long v = strtoul(name, &end, 10);
        if (*end == '\0') {
            *uid = (uint32_t)v;
        } else {
            char *path = xasprintf("%s/etc/passwd", rootfs);
            FILE *f = fopen(path, "re");
            struct passwd *pw;
            rc = -ENOENT;
            while (f && (pw = fgetpwent(f))) {
                if (strcmp(pw->pw_name, name) == 0) {
                    *uid = pw->pw_uid;
                    *gid = pw->pw_gid;
                    rc = 0;
                    break;
                }
            }
            if (f)
                fclose(f);
            free(path);
            if (rc < 0) {
                buf_printf(err, "user '%s' of the image is not in its /etc/passwd", name);
                goto out;
            }
        }
    }
    if (group && *group) {
        unsigned long v = strtoul(group, &end, 10);
        if (*end == '\0') {
            *gid = (uint32_t)v;
        } else {
            char *path = xasprintf("%s/etc/group", rootfs);
            FILE *f = fopen(path, "re");
            struct group *gr;
            rc = -ENOENT;
            while (f && (gr = fgetgrent(f))) {
                if (strcmp(gr->gr_name, group) == 0) {
                    *gid = gr->gr_gid;
                    rc = 0;
                    break;
                }
            }
            if (f)
                fclose(f);
            free(path);
            if (rc < 0)
                buf_printf(err, "group '%s' of the image is not in its /etc/group", group);
        }
    }
out:
    free(name);
    return rc;
}

static json_t *mount_entry(const char *dest, const char *type, const char *source, const char *options)
{
    json_t *m = json_pack("{s:s, s:s, s:s}", "destination", dest, "type", type, "source", source);
    json_t *opts = json_array();
    char *copy = xstrdup(options);

    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(opts, json_string(t));
    free(copy);
    json_object_set_new(m, "options", opts);
    return m;
}

static json_t *strings(const char *const *v)
{
    json_t *a = json_array();

    for (size_t i = 0; v[i]; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

json_t *oci_bundle_config(const struct oci_exec *e, const char *rootfs, const json_t *image_config,
                          const struct spawn_spec *spec, uint16_t port, struct buf *err)
{
    /* Docker's default capabilities: what images expect of a container. */
    static const char *const caps[] = {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
        "CAP_KILL", "CAP_AUDIT_WRITE", NULL};
    static const char *const masked[] = {
        "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", NULL};
    static const char *const readonly[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
                                           NULL};
    const json_t *entrypoint = json_object_get(image_config, "Entrypoint");
    const json_t *cmd = json_object_get(image_config, "Cmd");
    const json_t *image_env = json_object_get(image_config, "Env");
    const char *workdir = json_string_value(json_object_get(image_config, "WorkingDir"));
    json_t *args = json_array();
    const char **base = NULL;
    char **env = NULL;
    uint32_t uid, gid;
    struct rlimit nofile;
    size_t i, n = 0;
    const json_t *a;

    if (e->command) {
        json_array_extend(args, (json_t *)e->command);
    } else {
        if (json_is_array(entrypoint))
            json_array_extend(args, (json_t *)entrypoint);
        if (json_is_array(cmd))
            json_array_extend(args, (json_t *)cmd);
    }
    json_array_foreach(args, i, a) {
        if (!json_is_string(a)) {
            buf_printf(err, "the image's entrypoint and cmd must be strings");
            json_decref(args);
            return NULL;
        }
    }
    if (json_array_size(args) == 0) {
        buf_printf(err, "no command: executable.command is not given and the image has no entrypoint or cmd");
        json_decref(args);
        return NULL;
    }
    if (resolve_user(rootfs, json_string_value(json_object_get(image_config, "User")), &uid, &gid, err) < 0) {
        json_decref(args);
        return NULL;
    }
    /* Environment: a default PATH, the image's, the user's, ours (process_env's order). */
    base = xcalloc(json_array_size(image_env) + 2, sizeof(*base));
    base[n++] = OCI_DEFAULT_PATH;
    json_array_foreach(image_env, i, a) {
        const char *kv = json_string_value(a);
        if (!kv || !strchr(kv, '='))
            continue;
        if (strncmp(kv, "PATH=", 5) == 0)
            base[0] = kv;
        else
            base[n++] = kv;
    }
    env = process_env(base, e->env, spec, port);
    free(base);
    /* The drone's own descriptor limit, as Docker passes dockerd's; "unlimited" is no number in the spec. */
    if (getrlimit(RLIMIT_NOFILE, &nofile) == -1)
        nofile.rlim_cur = nofile.rlim_max = 1024;
    if (nofile.rlim_max == RLIM_INFINITY || nofile.rlim_max > (1u << 20))
        nofile.rlim_max = 1u << 20;
    if (nofile.rlim_cur == RLIM_INFINITY || nofile.rlim_cur > nofile.rlim_max)
        nofile.rlim_cur = nofile.rlim_max;

    json_t *mounts = json_array();
    json_array_append_new(mounts, mount_entry("/proc", "proc", "proc", "nosuid,noexec,nodev"));
    json_array_append_new(mounts, mount_entry("/dev", "tmpfs", "tmpfs", "nosuid,strictatime,mode=755,size=65536k"));
    json_array_append_new(mounts, mount_entry("/dev/pts", "devpts", "devpts",
                                              "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620"));
    json_array_append_new(mounts, mount_entry("/dev/shm", "tmpfs", "shm", "nosuid,noexec,nodev,mode=1777,size=65536k"));
    json_array_append_new(mounts, mount_entry("/dev/mqueue", "mqueue", "mqueue", "nosuid,noexec,nodev"));
    json_array_append_new(mounts, mount_entry("/sys", "sysfs", "sysfs", "nosuid,noexec,nodev,ro"));
    json_array_append_new(mounts, mount_entry("/tmp", "tmpfs", "tmpfs", "nosuid,nodev,mode=1777"));
    json_array_append_new(mounts, mount_entry("/run", "tmpfs", "tmpfs", "nosuid,nodev,mode=755"));
    /* Host networking: the host's name resolution, where the root has a place for it. */
    static const char *const host_files[] = {"/etc/hosts", "/etc/resolv.conf", NULL};
    for (i = 0; host_files[i]; i++) {
        char *in_root = xasprintf("%s%s", rootfs, host_files[i]);
        struct stat st;
        if (stat(in_root, &st) == 0 && S_ISREG(st.st_mode) && access(host_files[i], R_OK) == 0)
            json_array_append_new(mounts, mount_entry(host_files[i], "bind", host_files[i], "rbind,ro,nosuid,nodev"));
        free(in_root);
    }

    json_t *capset = strings(caps);
    json_t *process = json_pack(
        "{s:b, s:{s:I, s:I}, s:o, s:o, s:s, s:{s:O, s:O, s:O}, s:[{s:s, s:I, s:I}]}", "terminal", 0, "user",
        "uid", (json_int_t)uid, "gid", (json_int_t)gid, "args", args, "env", strings((const char *const *)env), "cwd",
        e->cwd ? e->cwd : (workdir && *workdir == '/' ? workdir : "/"), "capabilities", "bounding", capset,
        "effective", capset, "permitted", capset, "rlimits", "type", "RLIMIT_NOFILE", "hard",
        (json_int_t)nofile.rlim_max, "soft", (json_int_t)nofile.rlim_cur);
    json_decref(capset);
    process_strv_free(env);
    json_t *linux_ = json_pack("{s:[{s:s}, {s:s}, {s:s}, {s:s}], s:o, s:o}", "namespaces", "type", "pid", "type",
                               "mount", "type", "ipc", "type", "uts", "maskedPaths", strings(masked),
                               "readonlyPaths", strings(readonly));
    json_t *config = json_pack("{s:s, s:o, s:{s:s, s:b}, s:s, s:o, s:o}", "ociVersion", "1.0.2", "process",
                               process, "root", "path", rootfs, "readonly", 1, "hostname", spec->backend_id,
                               "mounts", mounts, "linux", linux_);
    if (!config)
        buf_printf(err, "cannot build the bundle's config.json");
    return config;
}
