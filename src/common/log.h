/* SPDX-License-Identifier: MIT */
/*
 * log.h - one line per event on stderr: time, level, binary, message.
 * PLANE_LOG=debug|info|warn|error picks the level (default info);
 * PLANE_LOG_JSON=1 (anything but "false"/"0") writes JSON lines instead.
 * The level is checked before any formatting is done.
 */
#ifndef PLANE_LOG_H
#define PLANE_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* Reads the environment; name is the component shown on every line. */
void log_init(const char *name);
bool log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);                                                 \
    } while (0)
#define log_info(...)                                                                              \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_INFO))                                                           \
            log_msg(LOG_LEVEL_INFO, __VA_ARGS__);                                                  \
    } while (0)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

/* Logs the message with ": strerror(errno)" appended and exits 1. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Logs the message and exits 1. */
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* An impossible state: report file:line and abort. */
void bug_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
#define BUG(...) bug_at(__FILE__, __LINE__, __VA_ARGS__)

#endif
