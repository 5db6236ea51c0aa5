/* SPDX-License-Identifier: MIT */
/* registry.c — placeholder; being written (see internal.h for its contract). */
#include "internal.h"
