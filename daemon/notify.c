/* SPDX-License-Identifier: MIT */
/*
 * notify.c — what msegd tells its service manager while it serves: a
 * one-line STATUS= with its segment and client counts, and WATCHDOG=1 pings
 * (sd_notify(3); the transport is shim.h).
 *
 * READY=1 and STOPPING=1 belong to main.c, which knows when serving starts
 * and ends. Status is polled, not pushed: a timer compares the counts once
 * a second and sends a line only when they changed, so a burst of creates
 * or connections costs one datagram, and a quiet daemon sends none. The
 * watchdog pings at half of $WATCHDOG_USEC from the loop itself, so a loop
 * that stalls stops pinging and systemd restarts msegd (the descriptor
 * store keeps its segments). Both timers are unreferenced: they never keep
 * the loop alive on their own, and notify_stop() closes them.
 */
#include <stdio.h>

#include "msegd.h"
#include "shim.h"

#define STATUS_INTERVAL_MS 1000

static uv_timer_t status_timer, watchdog_timer;
static bool status_on, watchdog_on;
static const struct segtable *tab;
static const struct server *srv;
static uint64_t last_segments = UINT64_MAX, last_bytes, last_clients;

static void send_status(void) {
        char line[160];

        if (tab->segments == last_segments && tab->bytes == last_bytes && srv->nconns == last_clients)
                return;
        last_segments = tab->segments;
        last_bytes = tab->bytes;
        last_clients = srv->nconns;
        snprintf(line, sizeof(line), "STATUS=%llu segment%s (%llu bytes), %llu client%s",
                 (unsigned long long) last_segments, last_segments == 1 ? "" : "s",
                 (unsigned long long) last_bytes, (unsigned long long) last_clients,
                 last_clients == 1 ? "" : "s");
        shim_notify(line);
}

static void on_status(uv_timer_t *t) {
        (void) t;
        send_status();
}

static void on_watchdog(uv_timer_t *t) {
        (void) t;
        shim_notify("WATCHDOG=1");
}

void notify_start(uv_loop_t *loop, const struct segtable *t, const struct server *s) {
        uint64_t usec, ms;

        if (!shim_notify_enabled())
                return;
        tab = t;
        srv = s;
        send_status();
        if (uv_timer_init(loop, &status_timer) == 0) {
                status_on = true;
                uv_timer_start(&status_timer, on_status, STATUS_INTERVAL_MS, STATUS_INTERVAL_MS);
                uv_unref((uv_handle_t *) &status_timer);
        }
        usec = shim_watchdog_usec();
        if (usec == 0)
                return;
        ms = usec / 2000;
        if (ms == 0)
                ms = 1;
        shim_notify("WATCHDOG=1");
        if (uv_timer_init(loop, &watchdog_timer) == 0) {
                watchdog_on = true;
                uv_timer_start(&watchdog_timer, on_watchdog, ms, ms);
                uv_unref((uv_handle_t *) &watchdog_timer);
        }
        log_info("watchdog: pinging every %llu ms", (unsigned long long) ms);
}

void notify_stop(void) {
        if (status_on) {
                status_on = false;
                uv_timer_stop(&status_timer);
                uv_close((uv_handle_t *) &status_timer, NULL);
        }
        if (watchdog_on) {
                watchdog_on = false;
                uv_timer_stop(&watchdog_timer);
                uv_close((uv_handle_t *) &watchdog_timer, NULL);
        }
}
