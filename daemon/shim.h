/* SPDX-License-Identifier: MIT */
/*
 * shim.h — the seam between msegd and its service manager.
 *
 * main.c asks the shim for a listening socket the manager passed in (socket
 * activation) before creating its own, and tells it about readiness, status
 * and shutdown. Without systemd support (shim-none.c) there is no passed
 * socket and notifications go nowhere; the systemd build (issue 5) provides
 * the same functions on top of libsystemd. libmseg never links any of it.
 */
#ifndef MSEGD_SHIM_H
#define MSEGD_SHIM_H

#include <stdbool.h>

/* A listening SOCK_SEQPACKET socket passed by the service manager, or -1.
 * The descriptor is the caller's. */
int shim_listen_fd(void);

/* "READY=1", "STOPPING=1", "STATUS=..." (sd_notify(3) syntax). */
void shim_notify(const char *state);

#endif /* MSEGD_SHIM_H */
