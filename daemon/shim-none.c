/* SPDX-License-Identifier: MIT */
/*
 * shim-none.c — msegd without a service manager: it always creates its own
 * socket, has nothing stored and nobody to notify (see shim.h). Segments
 * then live as long as msegd's process; persistent ones in their state
 * files.
 */
#include <stdlib.h>

#include "shim.h"

bool shim_managed(void) {
        return false;
}

bool shim_notify_enabled(void) {
        return false;
}

int shim_listen_fd(void) {
        return -1;
}

int shim_stored_fds(struct shim_fd **ret) {
        *ret = NULL;
        return 0;
}

void shim_notify(const char *state) {
        (void) state;
}

int shim_fdstore_add(const char *name, int fd) {
        (void) name;
        (void) fd;
        return 0;
}

int shim_fdstore_remove(const char *name) {
        (void) name;
        return 0;
}

uint64_t shim_watchdog_usec(void) {
        return 0;
}
