/* SPDX-License-Identifier: MIT */
/*
 * oci_image.c - root filesystems exported from Docker images, cached per
 * image id (see oci_image.h). Blocking libcurl calls to the Engine API on its
 * Unix socket, and a `tar -x` child fed straight from the export stream, so
 * the image never sits in memory or in a temporary tar file.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/names.h"
#include "../common/xalloc.h"
#include "docker_client.h"
#include "oci_image.h"

#define INSPECT_TIMEOUT_S 30L
#define STALL_TIMEOUT_S 60L /* an export that sends nothing this long is given up */

/* Where the export of one call goes: a file descriptor (the tar child), or memory. */
struct sink {
    CURL *easy;
    int fd;          /* -1: collect into body */
    struct buf body; /* the body, or an error body of a streamed call */
    int write_errno; /* why writing to fd failed */
};

static size_t sink_write(char *data, size_t size, size_t n, void *arg)
{
    struct sink *s = arg;
    size_t len = size * n;
    long status = 0;

    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (s->fd == -1 || status != 200) {
        if (s->body.len + len > (4u << 20))
            return 0; /* no answer we read is this big */
        buf_append(&s->body, data, len);
        return len;
    }
    for (size_t done = 0; done < len;) {
        ssize_t w = write(s->fd, data + done, len - done);
        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1) {
            s->write_errno = errno;
            return 0;
        }
        done += (size_t)w;
    }
    return len;
}

/*
 * One Engine API call. Returns the HTTP status, or -errno when no answer
 * came (a line in err). The body goes to fd on a 200 when fd != -1, else
 * into s->body.
 */
static int engine_call(const char *sock, const char *method, const char *path, const char *body, int fd,
                       struct sink *s, struct buf *err)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char *url = xasprintf("http://localhost/" DOCKER_API_VERSION "%s", path);
    char errbuf[CURL_ERROR_SIZE] = "";
    long status = 0;
    CURLcode cc;

    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->easy = curl_easy_init();
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(s->easy, CURLOPT_UNIX_SOCKET_PATH, sock);
    curl_easy_setopt(s->easy, CURLOPT_URL, url);
    curl_easy_setopt(s->easy, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    if (fd == -1) {
        curl_easy_setopt(s->easy, CURLOPT_TIMEOUT, INSPECT_TIMEOUT_S);
    } else {
        curl_easy_setopt(s->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(s->easy, CURLOPT_LOW_SPEED_TIME, STALL_TIMEOUT_S);
    }
    if (body)
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, body);
    else if (strcmp(method, "POST") == 0)
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, "");
    cc = curl_easy_perform(s->easy);
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(s->easy);
    s->easy = NULL;
    curl_slist_free_all(h);
    free(url);
    if (cc != CURLE_OK) {
        if (s->write_errno) {
            buf_printf(err, "cannot unpack the image: %s", strerror(s->write_errno));
            return -s->write_errno;
        }
        buf_printf(err, "Docker Engine at '%s': %s", sock, *errbuf ? errbuf : curl_easy_strerror(cc));
        return cc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED : -EIO;
    }
    return (int)status;
}

/* Docker's own "message" of an error body, else the body. */
static const char *engine_message(struct sink *s, json_t **hold)
{
    *hold = json_loads(buf_cstr(&s->body), 0, NULL);
    const char *m = json_string_value(json_object_get(*hold, "message"));
    return m ? m : buf_cstr(&s->body);
}

bool oci_image_name_ok(const char *name)
{
    static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@";

    return name && *name && strlen(name) <= 512 && strspn(name, allowed) == strlen(name) && name[0] != '/' &&
           !strstr(name, "..");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) == -1 && errno != ENOENT ? -1 : 0;
}

int oci_remove_tree(const char *path)
{
    struct stat st;

    if (lstat(path, &st) == -1)
        return errno == ENOENT ? 0 : -errno;
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) == -1 ? -errno : 0;
}

/*
 * Mount points a read-only root cannot have made for it: created once here,
 * so the runtime never writes into the shared root.
 */
static void add_mount_points(const char *rootfs)
{
    static const char *const dirs[] = {"proc", "dev", "sys", "tmp", "etc", "run"};
    static const char *const files[] = {"etc/hosts", "etc/resolv.conf", "etc/hostname"};

    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
        char *p = xasprintf("%s/%s", rootfs, dirs[i]);
        mkdir(p, 0755);
        free(p);
    }
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        char *p = xasprintf("%s/%s", rootfs, files[i]);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd != -1)
            close(fd);
        free(p);
    }
}

/* `tar -x` into dir, reading from the returned *in_fd. 0 or -errno. */
static int tar_start(const char *dir, pid_t *pid, int *in_fd)
{
    const char *argv[] = {"tar", "-x", "-p", "--numeric-owner", "-f", "-", "-C", dir, NULL};
    const char *env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", NULL};
    posix_spawn_file_actions_t fa;
    int p[2];
    int rc;

    if (pipe2(p, O_CLOEXEC) == -1)
        return -errno;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    rc = -posix_spawnp(pid, "tar", &fa, NULL, (char *const *)argv, (char *const *)env);
    posix_spawn_file_actions_destroy(&fa);
    close(p[0]);
    if (rc < 0) {
        close(p[1]);
        return rc;
    }
    *in_fd = p[1];
    return 0;
}

/* Exports image name into dir/rootfs (dir is new). 0 or -errno with a line in err. */
static int export_into(const char *sock, const char *name, const char *dir, struct buf *err)
{
    char *rootfs = xasprintf("%s/rootfs", dir);
    char *create_body = NULL, *path = NULL, *container = NULL;
    struct sink s = {0};
    json_t *hold = NULL;
    pid_t tar = -1;
    int tar_in = -1;
    int status, rc;

    if (mkdir(dir, 0755) == -1 || mkdir(rootfs, 0755) == -1) {
        rc = -errno;
        buf_printf(err, "cannot create '%s': %s", rootfs, strerror(-rc));
        goto out;
    }
    /* The entrypoint is never run: it only lets images without a command be created. */
    json_t *body = json_pack("{s:s, s:[s], s:{s:s}}", "Image", name, "Entrypoint", "/plane-export",
                             "Labels", "dev.plane.export", "true");
    create_body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    rc = engine_call(sock, "POST", "/containers/create", create_body, -1, &s, err);
    if (rc != 201) {
        if (rc > 0) {
            buf_printf(err, "cannot create a container of image '%s' to export: %s", name, engine_message(&s, &hold));
            rc = -EIO;
        }
        goto out;
    }
    json_t *created = json_loads(buf_cstr(&s.body), 0, NULL);
    const char *id = json_string_value(json_object_get(created, "Id"));
    container = id ? xstrdup(id) : NULL;
    json_decref(created);
    buf_release(&s.body);
    if (!container || strspn(container, "0123456789abcdef") != strlen(container)) {
        buf_printf(err, "the engine created a container without a usable id");
        rc = -EIO;
        goto out;
    }
    rc = tar_start(rootfs, &tar, &tar_in);
    if (rc < 0) {
        buf_printf(err, "cannot run tar: %s", strerror(-rc));
        goto out;
    }
    path = xasprintf("/containers/%s/export", container);
    rc = engine_call(sock, "GET", path, NULL, tar_in, &s, err);
    close(tar_in);
    tar_in = -1;
    if (rc > 0 && rc != 200) {
        buf_printf(err, "cannot export image '%s': %s", name, engine_message(&s, &hold));
        rc = -EIO;
    }
    if (waitpid(tar, &status, 0) == tar && rc == 200 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        buf_printf(err, "tar could not unpack image '%s' (status %d)", name, status);
        rc = -EIO;
    }
    tar = -1;
    if (rc == 200) {
        add_mount_points(rootfs);
        rc = 0;
    }
out:
    if (tar_in != -1)
        close(tar_in);
    if (tar > 0) {
        kill(tar, SIGKILL);
        waitpid(tar, NULL, 0);
    }
    if (container) {
        struct sink del;
        struct buf ignored = BUF_INIT;
        free(path);
        path = xasprintf("/containers/%s?force=1&v=1", container);
        engine_call(sock, "DELETE", path, NULL, -1, &del, &ignored);
        buf_release(&del.body);
        buf_release(&ignored);
    }
    json_decref(hold);
    buf_release(&s.body);
    free(create_body);
    free(container);
    free(path);
    free(rootfs);
    return rc;
}

int oci_image_fetch(const char *docker_socket, const char *cache_dir, const char *name, struct oci_image *out,
                    struct buf *err)
{
    char *path = NULL, *final = NULL, *tmp = NULL;
    json_t *info = NULL, *hold = NULL;
    struct sink s = {0};
    struct stat st;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!oci_image_name_ok(name)) {
        buf_printf(err, "invalid image name '%s'", name ? name : "");
        return -EINVAL;
    }
    path = xasprintf("/images/%s/json", name);
    rc = engine_call(docker_socket, "GET", path, NULL, -1, &s, err);
    if (rc == 404) {
        buf_printf(err, "image '%s' is not present on the Docker Engine (the oci runtime does not pull)", name);
        rc = -ENOENT;
        goto out;
    }
    if (rc != 200) {
        if (rc > 0) {
            buf_printf(err, "cannot inspect image '%s': %s", name, engine_message(&s, &hold));
            rc = -EIO;
        }
        goto out;
    }
    info = json_loads(buf_cstr(&s.body), 0, NULL);
    const char *id = json_string_value(json_object_get(info, "Id"));
    const char *hex = id && strncmp(id, "sha256:", 7) == 0 ? id + 7 : NULL;
    if (!hex || strlen(hex) != 64 || strspn(hex, "0123456789abcdef") != 64) {
        buf_printf(err, "image '%s' has no sha256 id", name);
        rc = -EIO;
        goto out;
    }
    if (mkdir(cache_dir, 0755) == -1 && errno != EEXIST) {
        rc = -errno;
        buf_printf(err, "cannot create '%s': %s", cache_dir, strerror(-rc));
        goto out;
    }
    final = xasprintf("%s/%s", cache_dir, hex);
    out->rootfs = xasprintf("%s/rootfs", final);
    if (stat(out->rootfs, &st) == -1) {
        uint32_t r;
        random_bytes(&r, sizeof(r));
        tmp = xasprintf("%s/.%s.%d.%08x", cache_dir, hex, (int)getpid(), r);
        rc = export_into(docker_socket, name, tmp, err);
        /* Another fetch may have won the race: its root is as good as ours. */
        if (rc == 0 && rename(tmp, final) == -1 && errno != EEXIST && errno != ENOTEMPTY) {
            rc = -errno;
            buf_printf(err, "cannot move the root of '%s' into '%s': %s", name, final, strerror(-rc));
        }
        oci_remove_tree(tmp);
        if (rc < 0)
            goto out;
    }
    out->id = xstrdup(id);
    out->config = json_incref(json_object_get(info, "Config"));
    if (!out->config)
        out->config = json_object();
    rc = 0;
out:
    if (rc < 0)
        oci_image_release(out);
    json_decref(info);
    json_decref(hold);
    buf_release(&s.body);
    free(path);
    free(final);
    free(tmp);
    return rc;
}

void oci_image_release(struct oci_image *img)
{
    free(img->id);
    free(img->rootfs);
    json_decref(img->config);
    memset(img, 0, sizeof(*img));
}
