/* Logging: one line per event, with context; formatting is skipped when the level is off.
 * Secrets never reach the log: pass header values through dmf_log_header_value(). */
#ifndef DMF_LOG_H
#define DMF_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum dmf_log_level { DMF_LOG_DEBUG = 0, DMF_LOG_INFO, DMF_LOG_WARN, DMF_LOG_ERROR };

extern int dmf_log_threshold;

/* Sets the threshold from "debug", "info", "warn" or "error"; returns 0 or -EINVAL. */
int dmf_log_set_level(const char *name);
/* Prefixes every line with the component name (borrowed: must outlive the process). */
void dmf_log_set_component(const char *name);

void dmf_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define dmf_log(level, ...)                                                                        \
    do {                                                                                           \
        if ((level) >= dmf_log_threshold)                                                          \
            dmf_log_write((level), __VA_ARGS__);                                                   \
    } while (0)

#define dmf_debug(...) dmf_log(DMF_LOG_DEBUG, __VA_ARGS__)
#define dmf_info(...)  dmf_log(DMF_LOG_INFO, __VA_ARGS__)
#define dmf_warn(...)  dmf_log(DMF_LOG_WARN, __VA_ARGS__)
#define dmf_error(...) dmf_log(DMF_LOG_ERROR, __VA_ARGS__)

/* True when a header of this name carries credentials (Authorization, Cookie, tokens...). */
int dmf_header_is_secret(const char *name);
/* The value to log for a header: "<redacted>" for secret headers, else the value itself
 * (borrowed). */
const char *dmf_log_header_value(const char *name, const char *value);

#endif
