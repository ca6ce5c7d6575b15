/* SPDX-License-Identifier: MIT */
/*
 * oci_bundle.h - what the oci runtime makes of an executable: the
 * executable's fields (untrusted: they come from whoever calls connect),
 * and the OCI runtime spec's config.json for one backend, from those fields,
 * the root filesystem and the image's config (Entrypoint, Cmd, Env,
 * WorkingDir, User).
 */
#ifndef PLANE_OCI_BUNDLE_H
#define PLANE_OCI_BUNDLE_H

#include <stdint.h>

#include <jansson.h>

#include "../common/buf.h"
#include "runtime.h"
#include "runtime_process.h"

/* The default PATH of a container, as Docker sets it. */
#define OCI_DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* What the executable says; strings borrowed from the JSON. */
struct oci_exec {
    const char *image;   /* or NULL */
    const char *rootfs;  /* or NULL */
    const json_t *command; /* array, or NULL: the image's */
    const json_t *env;   /* object, or NULL */
    const char *cwd;     /* or NULL */
    struct process_command limits; /* only its limits */
};

/* Reads and checks executable x. 0, or -errno with a line in err. */
int oci_exec_parse(const json_t *x, struct oci_exec *e, struct buf *err);
/*
 * config.json for spec's backend listening on port, with root rootfs (read
 * from for the image's user and host files) and image_config (may be NULL).
 * New reference, or NULL with a line in err.
 */
json_t *oci_bundle_config(const struct oci_exec *e, const char *rootfs, const json_t *image_config,
                          const struct spawn_spec *spec, uint16_t port, struct buf *err);

#endif
