/* Secret query parameters: signatures and tokens that authorise a URL (a pre-signed S3 or
 * GCS link, an Azure SAS, a CloudFront policy, ?token=). They are needed to fetch from the
 * origin, so they stay in memory with the request, but they are never stored, logged or
 * returned: what is shown is dmf_url_redact()'s form, and they are left out of the task
 * ID (filtered query parameters, taskid.h). See docs/operations.md, "Secrets". */
#ifndef DMF_URL_SECRETS_H
#define DMF_URL_SECRETS_H

#include "common/config.h"

/* The default --secret-query list, comma-separated (a DMF_OPT_LIST default). */
#define DMF_SECRET_QUERY_DEFAULT                                                                   \
    "token,access_token,id_token,api_key,apikey,password,X-Amz-Signature,X-Amz-Credential,"        \
    "X-Amz-Security-Token,Signature,sig,se,sp,sv,Expires,Policy,Key-Pair-Id,X-Goog-Signature,"     \
    "X-Goog-Credential"

#define DMF_URL_REDACTED "REDACTED"

/* url with the value of every query parameter named in names (compared without regard to
 * case) replaced by DMF_URL_REDACTED, any user:password@ and the fragment removed;
 * everything else byte for byte. A new string (caller frees); NULL gives "". Never fails. */
char *dmf_url_redact(const char *url, const struct dmf_strlist *names);

/* Appends to dst each entry of src it does not hold yet (exact match). */
void dmf_strlist_merge(struct dmf_strlist *dst, const struct dmf_strlist *src);

#endif
