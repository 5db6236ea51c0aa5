/* SPDX-License-Identifier: MIT */
/* broker.c — placeholder; being written (see internal.h for its contract). */
#include "internal.h"
