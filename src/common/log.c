/* SPDX-License-Identifier: MIT */
/*
 * log.c - stderr logging in text or JSON lines (see log.h). Each line is
 * formatted into one buffer and written with a single write(2) so lines
 * from several threads or processes sharing stderr do not interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

static enum log_level min_level = LOG_LEVEL_INFO;
static bool json_lines;
static const char *component = "plane";

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *name)
{
    const char *lv = getenv("PLANE_LOG");
    const char *js = getenv("PLANE_LOG_JSON");

    component = name;
    if (lv) {
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
            if (strcasecmp(lv, level_names[i]) == 0)
                min_level = (enum log_level)i;
        if (strcasecmp(lv, "warning") == 0)
            min_level = LOG_LEVEL_WARN;
    }
    json_lines = js && *js && strcmp(js, "false") != 0 && strcmp(js, "0") != 0;
}

bool log_enabled(enum log_level level)
{
    return level >= min_level;
}

static void json_escape(struct buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            buf_printf(b, "\\%c", c);
        else if (c < 0x20)
            buf_printf(b, "\\u%04x", c);
        else
            buf_append(b, s, 1);
    }
}

static void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
    struct buf line = BUF_INIT;
    struct buf msg = BUF_INIT;
    struct timeval tv;
    struct tm tm;
    char ts[32];

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    buf_vprintf(&msg, fmt, ap);
    if (json_lines) {
        buf_printf(&line, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"component\":\"%s\",\"message\":\"",
                   ts, (long)(tv.tv_usec / 1000), level_names[level], component);
        json_escape(&line, buf_cstr(&msg));
        buf_append_str(&line, "\"}\n");
    } else {
        buf_printf(&line, "%s.%03ldZ %-5s %s: %s\n", ts, (long)(tv.tv_usec / 1000),
                   level_names[level], component, buf_cstr(&msg));
    }
    if (write(STDERR_FILENO, line.data, line.len) == -1) {
        /* Nowhere left to report it. */
    }
    buf_release(&line);
    buf_release(&msg);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

void fatal(const char *fmt, ...)
{
    int saved = errno;
    struct buf b = BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    log_msg(LOG_LEVEL_ERROR, "%s: %s", buf_cstr(&b), strerror(saved));
    buf_release(&b);
    exit(1);
}

void fatalx(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vmsg(LOG_LEVEL_ERROR, fmt, ap);
    va_end(ap);
    exit(1);
}

void bug_at(const char *file, int line, const char *fmt, ...)
{
    struct buf b = BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    log_msg(LOG_LEVEL_ERROR, "BUG at %s:%d: %s", file, line, buf_cstr(&b));
    abort();
}
