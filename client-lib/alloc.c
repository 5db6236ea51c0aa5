/* SPDX-License-Identifier: MIT */
/* alloc.c — placeholder; being written (see internal.h for its contract). */
#include "internal.h"
