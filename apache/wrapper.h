/* wrapper.h: the one include point for bindgen over the httpd 2.4 and APR headers.
 * Runs at build time only; the flags come from `apxs -q` (see build.rs). */
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_main.h"
#include "http_protocol.h"
#include "http_request.h"
#include "mod_auth.h"
#include "scoreboard.h"
#include "ap_mpm.h"
#include "ap_mmn.h"
#include "util_filter.h"
#include "util_script.h"
#include "unixd.h"
#include "mpm_common.h"
#include "ap_listen.h"
#include "apr_strings.h"
#include "apr_buckets.h"
#include "apr_file_io.h"
#include "apr_network_io.h"
#include "apr_optional.h"

#if !AP_MODULE_MAGIC_AT_LEAST(20120211, 0)
#error "mod_rwsgi needs Apache httpd 2.4 or later"
#endif
