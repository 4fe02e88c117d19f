/* Application names; see application.h. */
#include "common/application.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int dmf_application_check(const char *name, char *err, size_t errlen)
{
    if (name == NULL || name[0] == '\0')
        return 0;
    size_t n = strnlen(name, DMF_APPLICATION_MAX + 1);
    if (n > DMF_APPLICATION_MAX) {
        snprintf(err, errlen, "an application name is at most %d bytes", DMF_APPLICATION_MAX);
        return -EINVAL;
    }
    if (!alnum(name[0])) {
        snprintf(err, errlen, "an application name starts with a letter or a digit");
        return -EINVAL;
    }
    for (size_t i = 1; i < n; i++) {
        char c = name[i];
        if (!alnum(c) && c != '.' && c != '_' && c != '-') {
            snprintf(err, errlen,
                     "an application name holds only letters, digits, '.', '_' and '-' "
                     "(byte %zu is not one)",
                     i + 1);
            return -EINVAL;
        }
    }
    return 0;
}
