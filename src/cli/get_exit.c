/* Exit codes of `damselfly get`; see get_exit.h. */
#include "cli/get_exit.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define GRPC_DEADLINE_EXCEEDED 4
#define GRPC_PERMISSION_DENIED 7

static bool has(const char *msg, const char *word)
{
    return strcasestr(msg, word) != NULL;
}

enum dmf_get_exit dmf_get_exit_for_daemon(int status, const char *msg)
{
    if (msg == NULL)
        msg = "";
    if (status == GRPC_PERMISSION_DENIED)
        return DMF_GET_EXIT_REFUSED; /* a block list, or the origin policy of the rpc port */
    if (status == GRPC_DEADLINE_EXCEEDED || has(msg, "timed out"))
        return DMF_GET_EXIT_TIMEOUT;
    if (has(msg, "digest mismatch") || has(msg, "differs from the one the cluster holds"))
        return DMF_GET_EXIT_INTEGRITY;
    if (has(msg, "answered HTTP") || has(msg, "returned error"))
        return DMF_GET_EXIT_HTTP;
    if (has(msg, "resolve") || has(msg, "connect") || has(msg, "unreachable") || has(msg, "SSL") ||
        has(msg, "TLS"))
        return DMF_GET_EXIT_NETWORK;
    if (has(msg, "No space left") || has(msg, "quota"))
        return DMF_GET_EXIT_DISK_FULL;
    return DMF_GET_EXIT_FAILED;
}

enum dmf_get_exit dmf_get_exit_for_write(int err)
{
    if (err == -ENOSPC || err == -EDQUOT)
        return DMF_GET_EXIT_DISK_FULL;
    return DMF_GET_EXIT_OUTPUT;
}

static const struct {
    int code;
    const char *what;
} table[] = {
    {DMF_GET_EXIT_OK, "the output is complete and verified"},
    {DMF_GET_EXIT_FAILED, "any other failure"},
    {DMF_GET_EXIT_USAGE, "bad arguments"},
    {DMF_GET_EXIT_OUTPUT, "the output path is refused or cannot be written (nothing downloaded)"},
    {DMF_GET_EXIT_HTTP, "the origin answered an HTTP error (the message has the status)"},
    {DMF_GET_EXIT_NETWORK, "the origin cannot be reached (DNS, connection, TLS)"},
    {DMF_GET_EXIT_TIMEOUT, "--timeout expired"},
    {DMF_GET_EXIT_INTEGRITY, "the content does not match its digest (no output is written)"},
    {DMF_GET_EXIT_DISK_FULL, "no space or quota left for the output"},
    {DMF_GET_EXIT_NO_DAEMON, "no daemon at --socket, and --no-back-to-source"},
    {DMF_GET_EXIT_DENIED, "permission denied on --socket: not in the daemon's --socket-group"},
    {DMF_GET_EXIT_REFUSED, "refused by the cluster's policy: the URL or the --application is on "
                           "its block list (not fetched from the origin either)"},
    {DMF_GET_EXIT_SIGHUP, "SIGHUP (129), SIGINT (130), SIGTERM (143): the temp file is removed"},
};

void dmf_get_exit_print(FILE *f)
{
    fprintf(f, "\nExit codes:\n");
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        fprintf(f, "  %3d  %s\n", table[i].code, table[i].what);
}
