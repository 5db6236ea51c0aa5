/* SPDX-License-Identifier: MIT */
/*
 * shim-none.c — msegd without a service manager: it always creates its own
 * socket and has nobody to notify (see shim.h).
 */
#include "shim.h"

int shim_listen_fd(void) {
        return -1;
}

void shim_notify(const char *state) {
        (void) state;
}
