/* shim.c: the few things httpd and APR offer only as macros or static inline functions
 * (bucket-brigade insertion, the module's log index). Runs in the httpd child. */
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_filter.h"
#include "scoreboard.h"
#include "apr_buckets.h"
#include "apr_portable.h"
#include <stdint.h>
#include <strings.h>
#include <unistd.h>

/* Pass `len` bytes as a transient bucket (optionally followed by a flush bucket) down the
 * output filter chain, then empty the brigade for reuse. */
apr_status_t rwsgi_shim_pass_data(request_rec *r, apr_bucket_brigade *bb, const char *data,
                                  apr_size_t len, int flush)
{
    apr_bucket_alloc_t *ba = r->connection->bucket_alloc;
    apr_status_t rv;
    if (len > 0) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(data, len, ba));
    }
    if (flush) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(ba));
    }
    if (APR_BRIGADE_EMPTY(bb)) {
        return APR_SUCCESS;
    }
    rv = ap_pass_brigade(r->output_filters, bb);
    apr_brigade_cleanup(bb);
    return rv;
}

/* Send `len` bytes of an open APR file from `offset` as file buckets. */
apr_status_t rwsgi_shim_pass_file(request_rec *r, apr_bucket_brigade *bb, apr_file_t *file,
                                  apr_off_t offset, apr_off_t len)
{
    apr_status_t rv;
    apr_brigade_insert_file(bb, file, offset, len, r->pool);
    rv = ap_pass_brigade(r->output_filters, bb);
    apr_brigade_cleanup(bb);
    return rv;
}

static apr_status_t rwsgi_close_fd(void *data)
{
    close((int)(intptr_t)data);
    return APR_SUCCESS;
}

/* Send `len` bytes from `offset` of the open file `fd` (received from a daemon process) as
 * file buckets. The request pool takes the descriptor over and closes it when the request
 * ends, which is after every bucket before the end-of-request bucket has been written. */
apr_status_t rwsgi_shim_pass_fd(request_rec *r, apr_bucket_brigade *bb, int fd,
                                apr_off_t offset, apr_off_t len, int sendfile)
{
    apr_file_t *file = NULL;
    apr_os_file_t os = fd;
    apr_int32_t flags = APR_FOPEN_READ | (sendfile ? APR_FOPEN_SENDFILE_ENABLED : 0);
    apr_status_t rv = apr_os_file_put(&file, &os, flags, r->pool);
    if (rv != APR_SUCCESS) {
        close(fd);
        return rv;
    }
    apr_pool_cleanup_register(r->pool, (void *)(intptr_t)fd, rwsgi_close_fd,
                              apr_pool_cleanup_null);
    return rwsgi_shim_pass_file(r, bb, file, offset, len);
}

/* End the response, after the last `len` body bytes (if any): EOS, or (abort != 0) an error
 * bucket first, which makes httpd close the connection without a clean end (no last chunk), so
 * the client sees a truncated response. */
apr_status_t rwsgi_shim_finish(request_rec *r, apr_bucket_brigade *bb, const char *data,
                               apr_size_t len, int abort)
{
    apr_bucket_alloc_t *ba = r->connection->bucket_alloc;
    apr_status_t rv;
    if (len > 0) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(data, len, ba));
    }
    if (abort) {
        r->connection->keepalive = AP_CONN_CLOSE;
        APR_BRIGADE_INSERT_TAIL(bb, ap_bucket_error_create(HTTP_BAD_GATEWAY, NULL, r->pool, ba));
    }
    else {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(ba));
    }
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(ba));
    rv = ap_pass_brigade(r->output_filters, bb);
    apr_brigade_cleanup(bb);
    return rv;
}

/* Read up to `len` bytes of the request body (already dechunked by the HTTP input filter).
 * Returns the count, 0 at the end of the body, or -1 on error. */
long rwsgi_shim_read_body(request_rec *r, char *buf, apr_size_t len)
{
    return ap_get_client_block(r, buf, len);
}

/* WebSocket: send the 101 (Switching Protocols) with `accept` and, when not NULL, the
 * subprotocol; the application's extra headers were put into r->headers_out by the caller.
 * The interim response goes through the connection's filters (mod_ssl included) and is
 * flushed; then the connection is switched to a tunnel: no request-read timeout (mod_reqtimeout
 * would cut a quiet WebSocket), no keep-alive after it, and r->status stays 101 for the
 * access log. */
void rwsgi_shim_ws_switch(request_rec *r, const char *accept, const char *protocol)
{
    conn_rec *c = r->connection;
    ap_filter_t *f;
    apr_table_setn(r->headers_out, "Upgrade", "websocket");
    apr_table_setn(r->headers_out, "Connection", "Upgrade");
    apr_table_setn(r->headers_out, "Sec-WebSocket-Accept", accept);
    if (protocol != NULL) {
        apr_table_setn(r->headers_out, "Sec-WebSocket-Protocol", protocol);
    }
    r->status = HTTP_SWITCHING_PROTOCOLS;
    ap_send_interim_response(r, 1);
    for (f = c->input_filters; f != NULL; f = f->next) {
        if (f->frec != NULL && f->frec->name != NULL && strcasecmp(f->frec->name, "reqtimeout") == 0) {
            ap_remove_input_filter(f);
            break;
        }
    }
    c->keepalive = AP_CONN_CLOSE;
}

/* WebSocket: read what the client has sent, through the connection's input filters, without
 * waiting. Returns the byte count, 0 when nothing is there yet, -1 at the end or on an error. */
long rwsgi_shim_ws_read(request_rec *r, apr_bucket_brigade *bb, char *buf, apr_size_t len)
{
    conn_rec *c = r->connection;
    apr_status_t rv;
    apr_size_t got = len;
    int eos = 0;
    apr_bucket *e;
    rv = ap_get_brigade(c->input_filters, bb, AP_MODE_READBYTES, APR_NONBLOCK_READ, len);
    if (APR_STATUS_IS_EAGAIN(rv)) {
        apr_brigade_cleanup(bb);
        return 0;
    }
    if (rv != APR_SUCCESS) {
        apr_brigade_cleanup(bb);
        return -1;
    }
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb); e = APR_BUCKET_NEXT(e)) {
        if (APR_BUCKET_IS_EOS(e)) {
            eos = 1;
        }
    }
    rv = apr_brigade_flatten(bb, buf, &got);
    apr_brigade_cleanup(bb);
    if (rv != APR_SUCCESS) {
        return -1;
    }
    if (got == 0 && eos) {
        return -1;
    }
    return (long)got;
}

/* WebSocket: write `len` bytes to the client through the connection's output filters and
 * flush them. */
apr_status_t rwsgi_shim_ws_write(request_rec *r, apr_bucket_brigade *bb, const char *data,
                                 apr_size_t len)
{
    conn_rec *c = r->connection;
    apr_status_t rv;
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(data, len, c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
    rv = ap_pass_brigade(c->output_filters, bb);
    apr_brigade_cleanup(bb);
    return rv;
}

/* The descriptor of the request's client socket, to watch for the client going away; -1 on a
 * connection that has no socket of its own (an HTTP/2 stream) or none at all. */
int rwsgi_shim_client_fd(request_rec *r)
{
    conn_rec *c = r->connection;
    apr_socket_t *s;
    apr_os_sock_t fd;
    if (c == NULL || c->master != NULL)
        return -1;
    s = ap_get_conn_socket(c);
    if (s == NULL || apr_os_sock_get(&fd, s) != APR_SUCCESS)
        return -1;
    return (int)fd;
}

/* sizeof guards: compared with bindgen's layout of the same structs by pre_config, so a
 * build whose bindgen flags disagree with the C compiler's stops at start (and at -t) instead
 * of reading the wrong fields. */
apr_size_t rwsgi_shim_sizeof_request_rec(void) { return sizeof(request_rec); }
apr_size_t rwsgi_shim_sizeof_server_rec(void) { return sizeof(server_rec); }
apr_size_t rwsgi_shim_sizeof_conn_rec(void) { return sizeof(conn_rec); }
apr_size_t rwsgi_shim_sizeof_sockaddr(void) { return sizeof(apr_sockaddr_t); }
apr_size_t rwsgi_shim_sizeof_finfo(void) { return sizeof(apr_finfo_t); }
apr_size_t rwsgi_shim_sizeof_table_entry(void) { return sizeof(apr_table_entry_t); }
apr_size_t rwsgi_shim_sizeof_worker_score(void) { return sizeof(worker_score); }
apr_size_t rwsgi_shim_sizeof_process_score(void) { return sizeof(process_score); }
apr_size_t rwsgi_shim_sizeof_global_score(void) { return sizeof(global_score); }

/* mod_status's optional status_hook (a macro-built registration): `fn` adds mod_rwsgi's
 * section to server-status. Harmless when mod_status is not loaded (never called). */
#include "mod_status.h"
void rwsgi_shim_hook_status(int (*fn)(request_rec *, int))
{
    APR_OPTIONAL_HOOK(ap, status_hook, fn, NULL, NULL, APR_HOOK_MIDDLE);
}

/* Writes `len` bytes of a server-status section (mod_status's own way: ap_rwrite). */
int rwsgi_shim_rwrite(request_rec *r, const char *data, apr_size_t len)
{
    return ap_rwrite(data, (int)len, r);
}

/* The AP_STATUS_SHORT flag (`?auto`). */
int rwsgi_shim_status_short(void)
{
    return AP_STATUS_SHORT;
}
