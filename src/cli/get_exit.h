/* The exit codes of `damselfly get`, one per kind of failure a script may act on. The
 * table below is printed by `get --help` and documented in README.md. */
#ifndef DMF_GET_EXIT_H
#define DMF_GET_EXIT_H

#include <stdio.h>

enum dmf_get_exit {
    DMF_GET_EXIT_OK = 0,
    DMF_GET_EXIT_FAILED = 1,    /* any other failure */
    DMF_GET_EXIT_USAGE = 2,     /* bad arguments */
    DMF_GET_EXIT_OUTPUT = 3,    /* the output path is refused or cannot be written */
    DMF_GET_EXIT_HTTP = 4,      /* the origin answered an HTTP error */
    DMF_GET_EXIT_NETWORK = 5,   /* the origin cannot be reached (DNS, connection, TLS) */
    DMF_GET_EXIT_TIMEOUT = 6,   /* --timeout expired */
    DMF_GET_EXIT_INTEGRITY = 7, /* the content does not match its digest */
    DMF_GET_EXIT_DISK_FULL = 8, /* no space (or quota) left for the output */
    DMF_GET_EXIT_NO_DAEMON = 9, /* no daemon at the socket, and --no-back-to-source */
    DMF_GET_EXIT_DENIED = 10,   /* the daemon's socket refused this user (its group) */
    DMF_GET_EXIT_REFUSED = 11,  /* the cluster's policy refused it (block list of URLs or
                                 * applications) */
    DMF_GET_EXIT_SIGHUP = 129,  /* 128 + the signal: the temp file is removed */
    DMF_GET_EXIT_SIGINT = 130,
    DMF_GET_EXIT_SIGTERM = 143,
};

/* The exit code for a download the daemon ended with gRPC status status and reason msg
 * (pure: the daemon's reasons name what failed). */
enum dmf_get_exit dmf_get_exit_for_daemon(int status, const char *msg);
/* The exit code for a failure writing the output with -errno err. */
enum dmf_get_exit dmf_get_exit_for_write(int err);
/* Prints the table of exit codes (for --help). */
void dmf_get_exit_print(FILE *f);

#endif
