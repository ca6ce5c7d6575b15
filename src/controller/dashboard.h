/* SPDX-License-Identifier: MIT */
/*
 * dashboard.h - `GET /dashboard`: a live page of drones and backends for
 * operators. The page (HTML, JS and CSS embedded in the binary; nothing is
 * fetched from elsewhere) reads one server-sent event stream,
 * /dashboard/events: a snapshot of every drone and of the backends worth
 * showing, then batches of the rows that changed. Terminate and drain are
 * buttons that call the /ctrl API from the page.
 *
 * Access: forward auth (§5.3) guards every /dashboard path as it guards
 * /ctrl, asked with x-original-path set to the dashboard path. The buttons
 * are offered only to viewers the auth service also lets POST (asked as
 * `POST /dashboard`); without --forward-auth everyone may, as with /ctrl.
 */
#ifndef PLANE_DASHBOARD_H
#define PLANE_DASHBOARD_H

struct controller;
struct http_request;

#define DASHBOARD_FLUSH_MS 100        /* changed rows are sent together, at most this often */
#define DASHBOARD_REFRESH_MS 2000     /* drones and idle times are read again this often */
#define DASHBOARD_KEEPALIVE_MS 15000  /* a comment line keeps idle streams open through proxies */
#define DASHBOARD_TERMINATED_SHOWN 200 /* terminated backends kept on the page, most recent first */

/*
 * Answers a request whose path starts with the segment "dashboard"; seg and
 * n are the decoded segments after it. The page, its script and style, and
 * the event stream; anything else under /dashboard is a 404.
 */
void dashboard_route(struct controller *c, struct http_request *req, char **seg, int n);

/*
 * The x-original-path forward auth is asked about for a dashboard request:
 * its n decoded segments (the first is "dashboard") joined with '/', each
 * byte outside RFC 3986's pchar set percent-encoded, so that nothing a
 * client decoded into a segment (a CR, LF or NUL) reaches the header.
 * Owned by the caller.
 */
char *dashboard_auth_path(char *const *seg, int n);

/* Events may have been missed (the bus between controllers reconnected): pages are brought up to date. */
void dashboard_resync(struct controller *c);

/* Drones changed (a drain): pages hear of it now rather than at the next refresh. */
void dashboard_drones_changed(struct controller *c);

/* Ends every dashboard stream (the controller is stopping); frees the rest later. */
void dashboard_close(struct controller *c);

#endif
