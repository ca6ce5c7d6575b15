/* SPDX-License-Identifier: MIT */
/*
 * version.c - build-time facts (see version.h).
 */
#include "version.h"

#ifdef PLANE_HAVE_GIT_HASH
#include "git_hash.h" /* written by the Makefile */
#endif
#ifndef PLANE_GIT_HASH
#define PLANE_GIT_HASH ""
#endif

const char *plane_git_hash(void)
{
    return PLANE_GIT_HASH[0] ? PLANE_GIT_HASH : "unknown";
}
