/* SPDX-License-Identifier: MIT */
/*
 * admin.c - `plane admin` (see admin.h): blocking HTTP with libcurl, which
 * is right for a command that does one thing and exits. Status streams are
 * read as server-sent events line by line. Any API error prints one line
 * on stderr and exits 1 (§2.5).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "../common/backend_state.h"
#include "../common/buf.h"
#include "../common/json_util.h"
#include "../common/controller_urls.h"
#include "../common/url.h"
#include "../common/version.h"
#include "../common/xalloc.h"
#include "admin.h"

struct admin {
    size_t n, at;  /* controllers given; the one that answered last */
    char **base;   /* scheme://authority each, without a trailing slash */
    char **bearer; /* from each URL's user part, or NULL */
    bool json;
};

#define BASE(a) ((a)->base[(a)->at])

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;

    fputs("plane admin: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    buf_append(arg, p, size * n);
    return size * n;
}

/* One request to the current controller: CURLE_OK with the HTTP status in *status, or curl's error. */
static CURLcode request_one(struct admin *a, const char *method, const char *path, const char *json_body,
                            struct buf *body, long *status, char *errbuf)
{
    CURL *curl = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    char *url = xasprintf("%s%s", BASE(a), path);

    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
    if (json_body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json_body);
    }
    if (a->bearer[a->at] && strncmp(path, "/ctrl/", 6) == 0) {
        char *h = xasprintf("Authorization: Bearer %s", a->bearer[a->at]);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    free(url);
    return rc;
}

/*
 * One request; returns the HTTP status and fills body. A controller that
 * cannot be reached is skipped for the next one given; when none answers,
 * it dies.
 */
static long request(struct admin *a, const char *method, const char *path, const char *json_body, struct buf *body)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    long status = 0;
    CURLcode rc = CURLE_OK;

    for (size_t tried = 0; tried < a->n; tried++, a->at = (a->at + 1) % a->n) {
        errbuf[0] = '\0';
        buf_reset(body);
        rc = request_one(a, method, path, json_body, body, &status, errbuf);
        /* Only a controller never reached is skipped: a request that got through may have acted. */
        if (rc != CURLE_COULDNT_CONNECT && rc != CURLE_COULDNT_RESOLVE_HOST)
            break;
    }
    if (rc != CURLE_OK) {
        buf_release(body);
        die("cannot reach the controller at %s: %s", BASE(a), errbuf[0] ? errbuf : curl_easy_strerror(rc));
    }
    return status;
}

/* The JSON answer of a successful call; an error answer dies with its message. */
static json_t *call(struct admin *a, const char *method, const char *path, const char *json_body)
{
    struct buf body = BUF_INIT;
    long status = request(a, method, path, json_body, &body);
    json_t *j = json_loadb(buf_cstr(&body), body.len, JSON_DECODE_ANY, NULL);

    if (status < 200 || status >= 300 || !j) {
        const char *msg = json_get_str(j, "message");
        const char *kind = json_get_str(j, "kind");
        char *line = msg ? xasprintf("%s (%s, HTTP %ld)", msg, kind ? kind : "error", status)
                     : status < 200 || status >= 300
                         ? xasprintf("HTTP %ld from %s%s%.200s", status, path, body.len ? ": " : "", buf_cstr(&body))
                         : xasprintf("the controller answered %s with something that is not JSON", path);
        json_decref(j);
        buf_release(&body);
        fprintf(stderr, "plane admin: %s\n", line);
        free(line);
        exit(1);
    }
    buf_release(&body);
    return j;
}

static void print_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);

    puts(s);
    free(s);
}

static char *format_time(int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char out[64];

    gmtime_r(&t, &tm);
    strftime(out, sizeof(out), "%Y-%m-%d %H:%M:%S", &tm);
    return xasprintf("%s.%03d UTC", out, (int)(ms % 1000));
}

/* ---- status streams ---- */

struct follow {
    struct admin *a;
    struct buf line;
    enum backend_status until;
    bool done;
};

static size_t stream_chunk(char *p, size_t size, size_t n, void *arg)
{
    struct follow *f = arg;
    size_t len = size * n;

    for (size_t i = 0; i < len && !f->done; i++) {
        if (p[i] != '\n') {
            buf_append(&f->line, p + i, 1);
            continue;
        }
        if (strncmp(buf_cstr(&f->line), "data:", 5) == 0) {
            json_t *e = json_loads(buf_cstr(&f->line) + 5, 0, NULL);
            const char *s = json_get_str(e, "status");
            enum backend_status st;
            if (e && s && backend_status_parse(s, &st) == 0) {
                if (f->a->json) {
                    char *t = json_dumps(e, JSON_COMPACT);
                    puts(t);
                    free(t);
                } else {
                    char *when = format_time(json_integer_value(json_object_get(e, "time")));
                    printf("Status: %s at %s\n", s, when);
                    free(when);
                }
                fflush(stdout);
                if (st >= f->until)
                    f->done = true;
            }
            json_decref(e);
        }
        buf_reset(&f->line);
    }
    return f->done ? 0 : len; /* 0 ends the transfer */
}

static void follow_status(struct admin *a, const char *backend, enum backend_status until)
{
    struct follow f = {.a = a, .until = until};
    CURL *curl = curl_easy_init();
    char *url = xasprintf("%s/pub/b/%s/status-stream", BASE(a), backend);

    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, stream_chunk);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &f);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_cleanup(curl);
    buf_release(&f.line);
    free(url);
    if (rc != CURLE_OK && !f.done)
        die("status stream of %s ended: %s", backend, curl_easy_strerror(rc));
}

/* ---- commands ---- */

static int cmd_connect(struct admin *a, int argc, char **argv)
{
    static const struct option opts[] = {
        {"cluster", required_argument, NULL, 'c'}, {"image", required_argument, NULL, 'i'},
        {"command", required_argument, NULL, 'C'}, {"key", required_argument, NULL, 'k'},
        {"immediate", no_argument, NULL, 'I'}, {"max-idle-seconds", required_argument, NULL, 'm'},
        {"id", required_argument, NULL, 'd'}, {"static-token", no_argument, NULL, 's'},
        {"pool", required_argument, NULL, 'p'}, {"mount", required_argument, NULL, 'M'},
        {"subdomain", required_argument, NULL, 'S'}, {0},
    };
    json_t *spawn = json_object(), *exe = NULL, *req = json_object();
    const char *key = NULL;
    bool immediate = false;
    int opt;
    long idle = 500;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': json_object_set_new(spawn, "cluster", json_string(optarg)); break;
        case 'i': exe = json_pack("{s:s}", "image", optarg); break;
        case 'C': exe = json_pack("{s:[s,s,s]}", "command", "sh", "-c", optarg); break;
        case 'k': key = optarg; break;
        case 'I': immediate = true; break;
        case 'm': idle = strtol(optarg, NULL, 10); break;
        case 'd': json_object_set_new(spawn, "id", json_string(optarg)); break;
        case 's': json_object_set_new(spawn, "use_static_token", json_true()); break;
        case 'p': json_object_set_new(spawn, "pool", json_string(optarg)); break;
        case 'M': break; /* volume mounts are a Docker runtime matter; accepted */
        case 'S': json_object_set_new(spawn, "subdomain", json_string(optarg)); break;
        default: die("connect: unknown option (see 'plane admin --help')");
        }
    }
    if (!exe && optind < argc) {
        /* Everything after "--" is the command, for the process runtime. */
        exe = json_object();
        json_t *cmd = json_array();
        for (int i = optind; i < argc; i++)
            json_array_append_new(cmd, json_string(argv[i]));
        json_object_set_new(exe, "command", cmd);
    }
    if (!exe)
        die("connect needs --image IMAGE, --command 'CMD', or -- CMD ARGS...");
    json_object_set_new(spawn, "executable", exe);
    json_object_set_new(spawn, "max_idle_seconds", json_integer(idle));
    if (key)
        json_object_set_new(req, "key", json_pack("{s:s}", "name", key));
    json_object_set_new(req, "spawn_config", spawn);
    char *body = json_dumps(req, JSON_COMPACT);
    json_t *r = call(a, "POST", "/ctrl/connect", body);
    const char *id = json_get_str(r, "backend_id");
    if (a->json) {
        print_json(r);
    } else {
        printf("%s backend: %s\n", json_is_true(json_object_get(r, "spawned")) ? "Created" : "Reusing", id);
        printf("URL: %s\nStatus URL: %s\n", json_get_str(r, "url"), json_get_str(r, "status_url"));
        if (json_get_str(r, "drone"))
            printf("Drone: %s\n", json_get_str(r, "drone"));
        fflush(stdout);
    }
    if (!immediate && id)
        follow_status(a, id, BACKEND_READY);
    json_decref(r);
    json_decref(req);
    free(body);
    return 0;
}

static int cmd_terminate(struct admin *a, int argc, char **argv)
{
    static const struct option opts[] = {
        {"hard", no_argument, NULL, 'h'}, {"immediate", no_argument, NULL, 'i'}, {0},
    };
    bool hard = false, immediate = false;
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'h')
            hard = true;
        else if (opt == 'i')
            immediate = true;
        else
            die("terminate: unknown option");
    }
    if (optind != argc - 1)
        die("usage: plane admin terminate BACKEND [--hard] [--immediate]");
    char *path = xasprintf("/ctrl/b/%s/%s-terminate", argv[optind], hard ? "hard" : "soft");
    json_decref(call(a, "POST", path, NULL));
    free(path);
    printf("Sent termination signal %s\n", argv[optind]);
    fflush(stdout);
    if (!immediate)
        follow_status(a, argv[optind], BACKEND_TERMINATED);
    return 0;
}

static int cmd_drain(struct admin *a, int argc, char **argv)
{
    static const struct option opts[] = {{"cluster", required_argument, NULL, 'c'},
                                         {"drone", required_argument, NULL, 'd'}, {0}};
    const char *cluster = NULL, *drone = NULL;
    int opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'c')
            cluster = optarg;
        else if (opt == 'd')
            drone = optarg;
        else
            die("drain: unknown option");
    }
    if (!cluster || !drone)
        die("usage: plane admin drain --cluster CLUSTER --drone DRONE");
    char *path = xasprintf("/ctrl/c/%s/d/%s/drain", cluster, drone);
    json_t *r = call(a, "POST", path, NULL);
    if (a->json)
        print_json(r);
    else if (json_is_true(json_object_get(r, "updated")))
        printf("Drone %s draining initiated.\n", drone);
    else
        printf("Drone %s was already draining.\n", drone);
    json_decref(r);
    free(path);
    return 0;
}

static int cmd_status(struct admin *a)
{
    json_t *r = call(a, "GET", "/ctrl/status", NULL);

    if (a->json)
        print_json(r);
    else
        printf("Status: %s\nVersion: %s (client: %s)\nHash: %s (client: %s)\n", json_get_str(r, "status"),
               json_get_str(r, "version"), PLANE_VERSION, json_get_str(r, "hash"), plane_git_hash());
    json_decref(r);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: plane admin [--controller URL] [--json] COMMAND ...\n"
               "\n"
               "  connect [--key K] [--cluster C] [--image IMG | --command 'CMD' | -- CMD ARGS...]\n"
               "          [--immediate] [--max-idle-seconds N] [--id ID] [--static-token] [--pool P] [--subdomain S]\n"
               "  terminate BACKEND [--hard] [--immediate]\n"
               "  backend-status BACKEND     follow its status until terminated\n"
               "  cluster-state CLUSTER\n"
               "  drain --cluster C --drone D\n"
               "  status\n"
               "\n"
               "--controller defaults to $PLANE_CONTROLLER or http://127.0.0.1:8080; a bearer token may be\n"
               "given as the URL's user part (http://TOKEN@host:8080/). Given more than once (or as URLs\n"
               "separated by commas), a controller that cannot be reached is skipped for the next.\n");
}

int admin_main(int argc, char **argv)
{
    const char *controller = getenv("PLANE_CONTROLLER") ? getenv("PLANE_CONTROLLER") : "http://127.0.0.1:8080";
    char *controllers = NULL; /* each --controller given */
    struct admin a = {0};
    struct url u;
    int i = 1;

    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--controller") == 0 && i + 1 < argc)
            controllers = controller_urls_append(controllers, argv[++i]);
        else if (strncmp(argv[i], "--controller=", 13) == 0)
            controllers = controller_urls_append(controllers, argv[i] + 13);
        else if (strcmp(argv[i], "--json") == 0)
            a.json = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return usage(stdout), 0;
        else
            die("unknown option '%s'", argv[i]);
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    char *list = xstrdup(controllers ? controllers : controller), *save = NULL;
    for (char *one = strtok_r(list, ",", &save); one; one = strtok_r(NULL, ",", &save)) {
        if (url_parse(one, &u) < 0 || (strcmp(u.scheme, "http") && strcmp(u.scheme, "https")))
            die("invalid controller URL '%s'", one);
        char *auth = url_authority(&u);
        a.base = xrealloc(a.base, (a.n + 1) * sizeof(*a.base));
        a.bearer = xrealloc(a.bearer, (a.n + 1) * sizeof(*a.bearer));
        a.base[a.n] = xasprintf("%s://%s", u.scheme, auth);
        a.bearer[a.n++] = u.user ? xstrdup(u.user) : NULL;
        free(auth);
        url_release(&u);
    }
    free(list);
    free(controllers);
    if (a.n == 0)
        die("no controller URL given");
    curl_global_init(CURL_GLOBAL_DEFAULT);

    const char *cmd = argv[i];
    int sub_argc = argc - i;
    char **sub_argv = argv + i;
    int rc;
    if (strcmp(cmd, "connect") == 0) {
        rc = cmd_connect(&a, sub_argc, sub_argv);
    } else if (strcmp(cmd, "terminate") == 0) {
        rc = cmd_terminate(&a, sub_argc, sub_argv);
    } else if (strcmp(cmd, "drain") == 0) {
        rc = cmd_drain(&a, sub_argc, sub_argv);
    } else if (strcmp(cmd, "status") == 0) {
        rc = cmd_status(&a);
    } else if (strcmp(cmd, "backend-status") == 0 && sub_argc == 2) {
        follow_status(&a, sub_argv[1], BACKEND_TERMINATED);
        rc = 0;
    } else if (strcmp(cmd, "cluster-state") == 0 && sub_argc == 2) {
        char *path = xasprintf("/ctrl/c/%s/state", sub_argv[1]);
        json_t *r = call(&a, "GET", path, NULL);
        print_json(r);
        json_decref(r);
        free(path);
        rc = 0;
    } else {
        usage(stderr);
        rc = 2;
    }
    curl_global_cleanup();
    for (size_t k = 0; k < a.n; k++) {
        free(a.base[k]);
        free(a.bearer[k]);
    }
    free(a.base);
    free(a.bearer);
    return rc;
}
