/* SPDX-License-Identifier: MIT */
/*
 * version.h - the version we report everywhere Plane reports one (spec
 * §2.5): plane-common's, so version checks of Plane's clients pass.
 */
#ifndef PLANE_VERSION_H
#define PLANE_VERSION_H

#define PLANE_VERSION "0.5.5"

/* First 8 chars of the git HEAD at build time, or "unknown". */
const char *plane_git_hash(void);

#endif
