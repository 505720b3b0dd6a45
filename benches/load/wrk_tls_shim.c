/*
 * An LD_PRELOAD shim for wrk 4.x over https, used by run.sh --tls.
 *
 * wrk keeps one OpenSSL `SSL` object per connection slot and, when the server closes the
 * connection (`Connection: close`), calls SSL_shutdown + SSL_clear and connects again with the
 * same object. SSL_clear keeps the last session (with the TLS 1.3 ticket the server sent), so the
 * next handshake is a resumption (PSK + ECDHE, no certificate, no signature), not a full one.
 *
 * This shim wraps SSL_clear:
 *   - it counts, per completed connection, whether its handshake was a resumption
 *     (SSL_session_reused), and writes "full resumed" to $WRK_TLS_SHIM_COUNTS at exit;
 *   - with WRK_TLS_SHIM_FULL=1 it also drops the kept session (SSL_set_session(ssl, NULL)), so
 *     that every connection does a full handshake.
 *
 * Only a call on a connection whose handshake completed is counted: libssl itself calls SSL_clear
 * from SSL_new and again when a handshake starts. A process that never calls SSL_clear (`timeout`
 * around wrk) writes nothing.
 *
 * No OpenSSL headers are needed: the functions are looked up in the libssl that wrk loads.
 * Build: cc -O2 -shared -fPIC -o wrk_tls_shim.so wrk_tls_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

static int (*real_clear)(SSL *);
static int (*real_set_session)(SSL *, SSL_SESSION *);
static int (*real_session_reused)(const SSL *);
static int (*real_init_finished)(const SSL *);
static int drop_sessions, called;
static unsigned long full_count, resumed_count;

__attribute__((constructor)) static void shim_init(void) {
    const char *full = getenv("WRK_TLS_SHIM_FULL");
    drop_sessions = full != NULL && full[0] == '1';
    real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    real_set_session = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
    real_session_reused = (int (*)(const SSL *))dlsym(RTLD_NEXT, "SSL_session_reused");
    real_init_finished = (int (*)(const SSL *))dlsym(RTLD_NEXT, "SSL_is_init_finished");
}

int SSL_clear(SSL *ssl) {
    int rc;
    __atomic_store_n(&called, 1, __ATOMIC_RELAXED);
    if (real_session_reused != NULL && real_init_finished != NULL && real_init_finished(ssl)) {
        if (real_session_reused(ssl)) {
            __atomic_fetch_add(&resumed_count, 1, __ATOMIC_RELAXED);
        } else {
            __atomic_fetch_add(&full_count, 1, __ATOMIC_RELAXED);
        }
    }
    if (real_clear == NULL) {
        return 0;
    }
    rc = real_clear(ssl);
    if (drop_sessions && real_set_session != NULL) {
        real_set_session(ssl, NULL);
    }
    return rc;
}

__attribute__((destructor)) static void shim_fini(void) {
    const char *path = getenv("WRK_TLS_SHIM_COUNTS");
    FILE *f;
    if (path == NULL || path[0] == '\0' || !__atomic_load_n(&called, __ATOMIC_RELAXED)) {
        return;
    }
    f = fopen(path, "w");
    if (f == NULL) {
        return;
    }
    fprintf(f, "%lu %lu\n", __atomic_load_n(&full_count, __ATOMIC_RELAXED),
            __atomic_load_n(&resumed_count, __ATOMIC_RELAXED));
    fclose(f);
}
