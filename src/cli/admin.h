/* SPDX-License-Identifier: MIT */
/*
 * admin.h - `plane admin`: a command-line client of the controller's API
 * with Plane's output (spec §2.5), plus --json.
 */
#ifndef PLANE_ADMIN_H
#define PLANE_ADMIN_H

int admin_main(int argc, char **argv);

#endif
