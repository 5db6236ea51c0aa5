/* SPDX-License-Identifier: MIT */
/* slot.c — placeholder; being written (see internal.h for its contract). */
#include "internal.h"
