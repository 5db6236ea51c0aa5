/* SPDX-License-Identifier: MIT */
/*
 * shim.h — the seam between msegd and its service manager.
 *
 * main.c asks the shim for a listening socket the manager passed in (socket
 * activation) before creating its own, and tells it about readiness, status
 * and shutdown. fdstore.c hands it every memory segment's descriptor to keep
 * across a restart of msegd and gets them back, with their names, at the
 * next start. Without systemd support (shim-none.c) there is no passed
 * socket, nothing is stored and notifications go nowhere; the systemd build
 * (shim-systemd.c) provides the same functions on top of libsystemd
 * (sd_listen_fds(3), sd_notify(3)). libmseg never links any of it.
 *
 * Names of stored descriptors are FDNAMEs: at most 255 printable ASCII
 * characters, no ':' (systemd.socket(5) FileDescriptorName=); callers
 * encode whatever they need into that alphabet.
 */
#ifndef MSEGD_SHIM_H
#define MSEGD_SHIM_H

#include <stdbool.h>
#include <stdint.h>

#define SHIM_FDNAME_MAX 255

/* A descriptor passed back from the manager's store, with its name. */
struct shim_fd {
        char name[SHIM_FDNAME_MAX + 1];
        int fd;
};

/* True when a service manager started msegd: it listens for notifications
 * or passed descriptors to this very process. msegd then stays in the
 * foreground (the manager tracks its main process). Call before forking. */
bool shim_managed(void);

/* True when notifications reach someone ($NOTIFY_SOCKET is set). */
bool shim_notify_enabled(void);

/* A listening SOCK_SEQPACKET socket passed by the service manager, or -1.
 * The descriptor is the caller's. The first call takes every passed
 * descriptor; the ones that are not the listener wait for
 * shim_stored_fds(). */
int shim_listen_fd(void);

/* The other passed descriptors (the manager's store), once: *ret is a
 * malloc'ed array of the returned count, NULL when there are none; the
 * array and the descriptors are the caller's. Returns the count or -ENOMEM. */
int shim_stored_fds(struct shim_fd **ret);

/* "READY=1", "STOPPING=1", "STATUS=...", "WATCHDOG=1" (sd_notify(3)). */
void shim_notify(const char *state);

/* Keep @fd in the manager's store under @name (FDSTORE=1); the caller keeps
 * its own @fd. FDSTOREREMOVE=1 for every stored descriptor named @name.
 * Both return 0 when sent or when nobody listens, -errno on failure. */
int shim_fdstore_add(const char *name, int fd);
int shim_fdstore_remove(const char *name);

/* The manager's watchdog timeout in microseconds ($WATCHDOG_USEC for this
 * process), 0 when there is none. msegd pings at half of it. */
uint64_t shim_watchdog_usec(void);

#endif /* MSEGD_SHIM_H */
