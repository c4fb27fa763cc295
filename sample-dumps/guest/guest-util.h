/*
 * What the factory's guest programs share: markers on the serial console (and a second
 * file, marker_fd) that sample-dumps/generate reads as "DUMPKIT: ...", a fatal error that
 * says what failed in one line, and a monotonic clock. Define GUEST_PROGRAM (the name in
 * error lines) before including it.
 */
#ifndef DUMPKIT_GUEST_UTIL_H
#define DUMPKIT_GUEST_UTIL_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int marker_fd = -1;

static void marker(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	int tty = open("/dev/ttyS0", O_WRONLY | O_NOCTTY);
	if (tty >= 0) {
		dprintf(tty, "DUMPKIT: %s\n", msg);
		close(tty);
	}
	if (marker_fd >= 0)
		dprintf(marker_fd, "DUMPKIT: %s\n", msg);
}

static void die(const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, GUEST_PROGRAM ": error: %s\n", msg);
	marker("error: " GUEST_PROGRAM ": %s", msg);
	exit(1);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

#endif
