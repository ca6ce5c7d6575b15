/* SPDX-License-Identifier: MIT */
/*
 * runtime_oci.c - backends as OCI containers run by crun, without a
 * container daemon: a flavour of the process runtime's machinery
 * (runtime_process.h) whose command is `crun run` of a bundle.
 *
 * The executable is {"image": "name:tag"} or {"rootfs": "/abs/dir"}, with
 * optional "command", "env", "cwd" and "resource_limits" (oci_bundle.h).
 * prepare exports an image's filesystem once per image id into
 * <data_dir>/oci/images/ (oci_image.h, on the thread pool); spawn writes
 * <data_dir>/oci/bundles/<id>/config.json (oci_bundle.h). crun runs in the
 * foreground as the backend's leader: it forwards the soft terminate's
 * SIGTERM to the container and exits with its exit code.
 *
 * crun creates no cgroup (--cgroup-manager=disabled): crun enters the
 * backend's cgroup, made by the machinery with the limits applied, before
 * it execs, so the container is in it from its first instruction, and
 * metrics, freezing and killing work as for the process runtime. On a
 * hybrid host whose cgroup2 mount has controllers (crun refuses those),
 * crun starts in a mount namespace without /sys/fs/cgroup/unified.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "../common/list.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "oci_bundle.h"
#include "oci_image.h"
#include "runtime_process.h"

struct image_entry {
    struct list_node node; /* in oci_data.images */
    char *name;            /* owned: the reference prepare was given */
    struct oci_image img;
};

struct oci_data {
    struct process_flavour flavour; /* ours, with the host's hide_cgroup2 */
    char *crun;                     /* owned: absolute path */
    char *docker_socket;            /* owned */
    char *state_dir;                /* crun --root: <data>/oci/state */
    char *bundles_dir;              /* <data>/oci/bundles */
    char *images_dir;               /* <data>/oci/images */
    struct list_node images;        /* of struct image_entry: what prepare found, by name */
    struct list_node fetches;       /* of struct fetch in flight */
};

/* An image fetch on the thread pool; it outlives the runtime if the runtime closes first. */
struct fetch {
    uv_work_t work;
    struct list_node node;   /* in oci_data.fetches */
    struct oci_data *d;      /* NULL once the runtime has closed */
    struct runtime_op *op;   /* NULL once the runtime has closed */
    char *socket, *cache, *name; /* owned copies: the thread reads only these */
    struct oci_image img;
    struct buf err;
    int rc;
};

static struct image_entry *image_find(struct oci_data *d, const char *name)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &d->images) {
        struct image_entry *ie = list_entry(pos, struct image_entry, node);
        if (strcmp(ie->name, name) == 0)
            return ie;
    }
    return NULL;
}

static void image_entry_free(struct image_entry *ie)
{
    list_remove(&ie->node);
    oci_image_release(&ie->img);
    free(ie->name);
    free(ie);
}

/* ---- prepare ---- */

static void fetch_work(uv_work_t *w)
{
    struct fetch *f = container_of(w, struct fetch, work);

    f->rc = oci_image_fetch(f->socket, f->cache, f->name, &f->img, &f->err);
}

static void fetch_done(uv_work_t *w, int status)
{
    struct fetch *f = container_of(w, struct fetch, work);
    struct oci_data *d = f->d;

    (void)status;
    list_remove(&f->node);
    if (d) {
        if (f->rc == 0) {
            /* The name now means this image (a tag may have moved since the last prepare). */
            struct image_entry *ie = image_find(d, f->name);
            if (ie)
                image_entry_free(ie);
            ie = xcalloc(1, sizeof(*ie));
            ie->name = xstrdup(f->name);
            ie->img = f->img;
            memset(&f->img, 0, sizeof(f->img));
            list_insert_tail(&d->images, &ie->node);
            log_info("oci runtime: image '%s' is %s", ie->name, ie->img.id);
            runtime_op_complete(f->op, 0, NULL);
        } else {
            runtime_op_complete(f->op, f->rc, "%s", buf_cstr(&f->err));
        }
    }
    oci_image_release(&f->img);
    buf_release(&f->err);
    free(f->socket);
    free(f->cache);
    free(f->name);
    free(f);
}

static void oci_prepare(struct runtime *rt, struct runtime_op *op, const json_t *executable)
{
    struct oci_data *d = process_runtime_data(rt);
    struct buf err = BUF_INIT;
    struct oci_exec e;
    struct stat st;
    int rc;

    rc = oci_exec_parse(executable, &e, &err);
    if (rc == 0 && e.rootfs && (stat(e.rootfs, &st) == -1 || !S_ISDIR(st.st_mode))) {
        rc = errno ? -errno : -ENOTDIR;
        buf_printf(&err, "executable.rootfs '%s' is not a directory", e.rootfs);
    }
    if (rc < 0 || e.rootfs) {
        if (rc < 0)
            runtime_op_complete(op, rc, "%s", buf_cstr(&err));
        else
            runtime_op_complete(op, 0, NULL);
        buf_release(&err);
        return;
    }
    buf_release(&err);
    struct fetch *f = xcalloc(1, sizeof(*f));
    f->d = d;
    f->op = op;
    f->socket = xstrdup(d->docker_socket);
    f->cache = xstrdup(d->images_dir);
    f->name = xstrdup(e.image);
    list_insert_tail(&d->fetches, &f->node);
    uv_queue_work(rt->loop, &f->work, fetch_work, fetch_done);
}

static char *bundle_dir(struct oci_data *d, const char *id)
{
    return xasprintf("%s/%s", d->bundles_dir, id);
}

static int oci_command(struct runtime *rt, const struct spawn_spec *spec, uint16_t port, const char *dir,
                       struct process_command *out, struct buf *err)
{
    struct oci_data *d = process_runtime_data(rt);
    const json_t *image_config = NULL;
    const char *rootfs;
    struct oci_exec e;
    json_t *config = NULL;
    char *bundle = NULL, *path = NULL;
    int rc;

    (void)dir;
    rc = oci_exec_parse(spec->executable, &e, err);
    if (rc < 0)
        return rc;
    if (e.image) {
        struct image_entry *ie = image_find(d, e.image);
        if (!ie) {
            buf_printf(err, "image '%s' was not prepared here", e.image);
            return -ENOENT;
        }
        rootfs = ie->img.rootfs;
        image_config = ie->img.config;
    } else {
        rootfs = e.rootfs;
    }
    config = oci_bundle_config(&e, rootfs, image_config, spec, port, err);
    if (!config)
        return -EINVAL;
    bundle = bundle_dir(d, spec->backend_id);
    path = xasprintf("%s/config.json", bundle);
    if ((rc = process_ensure_dir(d->bundles_dir, 0700)) < 0 || (rc = process_ensure_dir(bundle, 0700)) < 0) {
        buf_printf(err, "cannot create bundle '%s': %s", bundle, strerror(-rc));
        goto out;
    }
    if (json_dump_file(config, path, JSON_COMPACT) == -1) {
        rc = -EIO;
        buf_printf(err, "cannot write '%s'", path);
        goto out;
    }
    const char *const argv[] = {d->crun, "--cgroup-manager=disabled", "--root", d->state_dir, "run", "--bundle",
                                bundle, spec->backend_id, NULL};
    out->argv = xcalloc(ARRAY_SIZE(argv), sizeof(*out->argv));
    for (size_t i = 0; argv[i]; i++)
        out->argv[i] = xstrdup(argv[i]);
    out->program = xstrdup(d->crun);
    out->env = xcalloc(2, sizeof(*out->env));
    out->env[0] = xstrdup(OCI_DEFAULT_PATH);
    out->cwd = xstrdup(bundle);
    out->limits = e.limits.limits;
    out->cpu_time_limit = e.limits.cpu_time_limit;
    rc = 0;
out:
    json_decref(config);
    free(bundle);
    free(path);
    return rc;
}

/* The bundle and crun's state of a backend that is gone. */
static void oci_forget(void *data, const char *backend_id)
{
    struct oci_data *d = data;
    char *bundle = bundle_dir(d, backend_id);
    char *state = xasprintf("%s/%s", d->state_dir, backend_id);

    oci_remove_tree(bundle);
    /* crun removes its state when it exits; not when it is killed. */
    oci_remove_tree(state);
    free(bundle);
    free(state);
}

static void oci_close(struct runtime *rt)
{
    struct oci_data *d = process_runtime_data(rt);
    struct list_node *pos, *tmp;

    /* Fetches still running finish on their own and tell nobody. */
    list_for_each_safe(pos, tmp, &d->fetches) {
        struct fetch *f = list_entry(pos, struct fetch, node);
        f->d = NULL;
        f->op = NULL;
        list_remove(&f->node);
        list_init(&f->node);
    }
}

static void oci_free(void *data)
{
    struct oci_data *d = data;
    struct list_node *pos, *tmp;

    if (!d)
        return;
    list_for_each_safe(pos, tmp, &d->images)
        image_entry_free(list_entry(pos, struct image_entry, node));
    free(d->crun);
    free(d->docker_socket);
    free(d->state_dir);
    free(d->bundles_dir);
    free(d->images_dir);
    free(d);
}

/* Removes what fetches of a killed drone left half unpacked (.<id>.<pid>.<random>). */
static void remove_partial_roots(const char *images_dir)
{
    DIR *d = opendir(images_dir);
    struct dirent *de;

    while (d && (de = readdir(d))) {
        if (de->d_name[0] != '.' || strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char *path = xasprintf("%s/%s", images_dir, de->d_name);
        log_info("oci runtime: removing the partial root '%s'", path);
        oci_remove_tree(path);
        free(path);
    }
    if (d)
        closedir(d);
}

/* crun refuses a hybrid host whose cgroup2 mount has controllers of its own. */
static bool needs_hidden_cgroup2(void)
{
    struct statfs fs;
    char text[256] = "";
    int fd;

    if (statfs("/sys/fs/cgroup", &fs) == -1 || fs.f_type == 0x63677270 /* CGROUP2_SUPER_MAGIC */)
        return false;
    fd = open("/sys/fs/cgroup/unified/cgroup.controllers", O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return false;
    ssize_t n = read(fd, text, sizeof(text) - 1);
    close(fd);
    return n > 0 && text[0] != '\n';
}

/* The crun program: name as given (a path), or found on PATH. */
static char *find_crun(const char *name)
{
    if (strchr(name, '/'))
        return access(name, X_OK) == 0 ? realpath(name, NULL) : NULL;
    char *paths = xstrdup(getenv("PATH") ? getenv("PATH") : "/usr/local/bin:/usr/bin:/bin");
    char *found = NULL;
    for (char *save = NULL, *dir = strtok_r(paths, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
        char *p = xasprintf("%s/%s", dir, name);
        if (access(p, X_OK) == 0)
            found = p;
        else
            free(p);
    }
    free(paths);
    return found;
}

static const struct process_flavour oci_flavour = {
    .prepare = oci_prepare,
    .command = oci_command,
    .forget = oci_forget,
    .close = oci_close,
    .free = oci_free,
    .always_cgroup = true,
    .soft_to_leader = true,
};

static int oci_open(struct runtime **out, const struct runtime_config *cfg, struct buf *err)
{
    const char *crun = cfg->oci_runtime ? cfg->oci_runtime : "crun";
    struct oci_data *d;
    char *oci_dir, *abs_data;
    int rc;

    if (!cfg->data_dir) {
        buf_printf(err, "the oci runtime needs a data directory");
        return -EINVAL;
    }
    if ((rc = process_ensure_dir(cfg->data_dir, 0750)) < 0 || !(abs_data = realpath(cfg->data_dir, NULL))) {
        rc = rc < 0 ? rc : -errno;
        buf_printf(err, "cannot use data directory '%s': %s", cfg->data_dir, strerror(-rc));
        return rc;
    }
    d = xcalloc(1, sizeof(*d));
    d->flavour = oci_flavour;
    d->flavour.hide_cgroup2 = needs_hidden_cgroup2();
    list_init(&d->images);
    list_init(&d->fetches);
    d->docker_socket = xstrdup(cfg->docker_socket ? cfg->docker_socket : "/var/run/docker.sock");
    oci_dir = xasprintf("%s/oci", abs_data);
    d->state_dir = xasprintf("%s/state", oci_dir);
    d->bundles_dir = xasprintf("%s/bundles", oci_dir);
    d->images_dir = xasprintf("%s/images", oci_dir);
    free(abs_data);
    d->crun = find_crun(crun);
    if (!d->crun) {
        buf_printf(err, "oci runtime: cannot find '%s' (install the crun package, or give --oci-runtime PATH)", crun);
        free(oci_dir);
        oci_free(d);
        return -ENOENT;
    }
    if ((rc = process_ensure_dir(oci_dir, 0700)) < 0 || (rc = process_ensure_dir(d->state_dir, 0700)) < 0 ||
        (rc = process_ensure_dir(d->bundles_dir, 0700)) < 0) {
        buf_printf(err, "cannot create '%s': %s", oci_dir, strerror(-rc));
        free(oci_dir);
        oci_free(d);
        return rc;
    }
    free(oci_dir);
    remove_partial_roots(d->images_dir);
    /* Fetches call libcurl from the thread pool: initialise it here, on the loop's thread. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (d->flavour.hide_cgroup2)
        log_info("oci runtime: cgroup2 has controllers on this hybrid host; crun starts without it in view");
    return process_runtime_open(out, cfg, &d->flavour, d, err);
}

const struct runtime_ops runtime_oci_ops = {
    .name = "oci",
    .open = oci_open,
    PROCESS_RUNTIME_OPS,
};
