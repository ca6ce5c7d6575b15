/* SPDX-License-Identifier: MIT */
/*
 * oci_image.h - root filesystems for the oci runtime, from Docker images. The
 * image is inspected through the Engine API; the first time its id (the
 * digest of its config) is seen, its filesystem is exported once (a
 * container created from it, never started, exported as one tar and
 * removed) and unpacked into <cache>/<hex id>/rootfs, where every later
 * backend of that image finds it. Unpacking goes to a temporary directory
 * renamed into place, so a half-written root is never used and two
 * concurrent fetches of one image cannot collide.
 *
 * These calls block (the Engine, tar): run them off the loop, on libuv's
 * thread pool.
 */
#ifndef PLANE_OCI_IMAGE_H
#define PLANE_OCI_IMAGE_H

#include <stdbool.h>

#include <jansson.h>

#include "../common/buf.h"

struct oci_image {
    char *id;       /* "sha256:…", owned */
    char *rootfs;   /* absolute path of the unpacked root, owned */
    json_t *config; /* the image's Config (Entrypoint, Cmd, Env, WorkingDir, User), owned */
};

/* Whether name is a plausible image reference (letters, digits and ._-/:@). */
bool oci_image_name_ok(const char *name);
/*
 * Finds image name on the engine at docker_socket and makes sure its root
 * is unpacked under cache_dir (absolute). 0 with *out filled, or -errno with
 * a line in err: -ENOENT when the engine has no such image (nothing is
 * pulled), -ECONNREFUSED and friends when no engine answers.
 */
int oci_image_fetch(const char *docker_socket, const char *cache_dir, const char *name, struct oci_image *out,
                    struct buf *err);
void oci_image_release(struct oci_image *img);
/* Removes path and everything below it (no symlink is followed). 0 or -errno. */
int oci_remove_tree(const char *path);

#endif
