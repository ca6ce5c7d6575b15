/* SPDX-License-Identifier: MIT */
/*
 * dev.h - `plane dev`: a controller, a drone and a proxy in one process on
 * 127.0.0.1, with SQLite files under one data
 * directory and the process runtime: Plane without Docker or a database
 * server, for trying it and for development.
 */
#ifndef PLANE_DEV_H
#define PLANE_DEV_H

int dev_main(int argc, char **argv);

#endif
