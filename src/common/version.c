/* SPDX-License-Identifier: MIT */
/*
 * version.c - build-time facts (see version.h).
 */
#include "version.h"

#ifndef PLANE_GIT_HASH
#define PLANE_GIT_HASH ""
#endif

const char *plane_git_hash(void)
{
    return PLANE_GIT_HASH[0] ? PLANE_GIT_HASH : "unknown";
}
