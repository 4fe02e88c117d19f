#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

int dmf_log_threshold = DMF_LOG_INFO;
static const char *component = "damselfly";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int dmf_log_set_level(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            dmf_log_threshold = i;
            return 0;
        }
    }
    return -EINVAL;
}

void dmf_log_set_component(const char *name)
{
    component = name;
}

void dmf_log_write(int level, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    va_list ap;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)tv.tv_usec / 1000, component,
                     level_names[level < 0   ? 0
                                 : level > 3 ? 3
                                             : level]);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* Keep one event on one line whatever the message carried. */
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s\n", line);
    pthread_mutex_unlock(&log_lock);
}

int dmf_header_is_secret(const char *name)
{
    static const char *const secret[] = {"authorization", "proxy-authorization", "cookie",
                                         "set-cookie",    "x-registry-auth",     "x-auth-token",
                                         "x-api-key"};
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
        if (strcasecmp(name, secret[i]) == 0)
            return 1;
    /* Anything that looks like a credential is treated as one. */
    return strcasestr(name, "token") != NULL || strcasestr(name, "secret") != NULL ||
           strcasestr(name, "password") != NULL;
}

const char *dmf_log_header_value(const char *name, const char *value)
{
    return dmf_header_is_secret(name) ? "<redacted>" : value;
}
