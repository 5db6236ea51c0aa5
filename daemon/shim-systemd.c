/* SPDX-License-Identifier: MIT */
/*
 * shim-systemd.c — msegd's seam (shim.h) on top of libsystemd: socket
 * activation, sd_notify, the descriptor store and the watchdog.
 *
 * Passed descriptors (sd_listen_fds(3)) start at fd 3: the socket unit's
 * first, then the store's, in any order, deduplicated by systemd. We tell
 * them apart by what they are, not by position: the first listening
 * SOCK_SEQPACKET AF_UNIX socket is msegd's listener, every other socket is
 * closed (msegd's units pass exactly one), and everything else is a stored
 * descriptor that fdstore.c validates by its name and its contents.
 * sd_listen_fds_with_names() has already checked LISTEN_PID, set
 * FD_CLOEXEC on each and cleared the LISTEN_* variables.
 *
 * The notify calls send one datagram each to $NOTIFY_SOCKET and return 0
 * when it is unset, so msegd runs unchanged outside systemd. They block only
 * while the manager's receive queue is full, which PID 1 drains at once.
 * This file is the only one in mseg that includes a systemd header; only
 * msegd links it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "msegd.h"
#include "shim.h"

static bool collected;
static int listener = -1;
static struct shim_fd *stored;
static int nstored;

bool shim_managed(void) {
        const char *pid = getenv("LISTEN_PID");

        if (shim_notify_enabled())
                return true;
        return pid && strtol(pid, NULL, 10) == (long) getpid();
}

bool shim_notify_enabled(void) {
        const char *e = getenv("NOTIFY_SOCKET");

        return e && *e;
}

static void collect(void) {
        char **names = NULL, q[600];
        int n;

        collected = true;
        n = sd_listen_fds_with_names(1, &names);
        if (n < 0) {
                log_error("cannot read the descriptors passed by the service manager: %s", strerror(-n));
                return;
        }
        if (n > 0)
                stored = calloc((size_t) n, sizeof(*stored));
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "unknown";

                if (sd_is_socket(fd, AF_UNIX, 0, -1) > 0) {
                        if (listener < 0 && sd_is_socket_unix(fd, SOCK_SEQPACKET, 1, NULL, 0) > 0) {
                                listener = fd;
                                log_debug("using the listening socket passed as fd %d (%s)", fd,
                                          log_quote(name, q, sizeof(q)));
                                continue;
                        }
                        log_warning("closing passed socket fd %d (%s): not a listening SOCK_SEQPACKET "
                                    "socket, or not the first", fd, log_quote(name, q, sizeof(q)));
                        close(fd);
                        continue;
                }
                if (!stored) {
                        close(fd);
                        continue;
                }
                snprintf(stored[nstored].name, sizeof(stored[nstored].name), "%s", name);
                stored[nstored++].fd = fd;
        }
        if (names) {
                for (int i = 0; i < n; i++)
                        free(names[i]);
                free(names);
        }
        if (nstored == 0) {
                free(stored);
                stored = NULL;
        }
}

int shim_listen_fd(void) {
        int fd;

        if (!collected)
                collect();
        fd = listener;
        listener = -1;
        return fd;
}

int shim_stored_fds(struct shim_fd **ret) {
        int n;

        if (!collected)
                collect();
        *ret = stored;
        n = nstored;
        stored = NULL;
        nstored = 0;
        return n;
}

void shim_notify(const char *state) {
        int r = sd_notify(0, state);

        if (r < 0)
                log_client(LOG_WARNING, "cannot notify the service manager (%.40s): %s", state, strerror(-r));
}

int shim_fdstore_add(const char *name, int fd) {
        char state[sizeof("FDSTORE=1\nFDNAME=") + SHIM_FDNAME_MAX];
        int r;

        snprintf(state, sizeof(state), "FDSTORE=1\nFDNAME=%s", name);
        r = sd_pid_notify_with_fds(0, 0, state, &fd, 1);
        return r < 0 ? r : 0;
}

int shim_fdstore_remove(const char *name) {
        char state[sizeof("FDSTOREREMOVE=1\nFDNAME=") + SHIM_FDNAME_MAX];
        int r;

        snprintf(state, sizeof(state), "FDSTOREREMOVE=1\nFDNAME=%s", name);
        r = sd_notify(0, state);
        return r < 0 ? r : 0;
}

uint64_t shim_watchdog_usec(void) {
        uint64_t usec = 0;

        return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}
