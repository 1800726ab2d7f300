/*
 * auth.c — API keys and the admin key.
 *
 * Secrets
 *   Account keys: "lk_" + 24 hex digits of key id + "_" + 43 characters of
 *   base64url: 256 bits from libsodium's CSPRNG (randombytes_buf).  Carrying
 *   the id in the secret lets authentication find the one candidate key
 *   instead of hashing against every key.  The id is not secret (POST
 *   /v1/keys returns it); the random part is.
 *   A generated admin key: "ladm_" + 43 base64url characters (256 bits).
 *   A configured admin key (option / LEDGERD_ADMIN_KEY) is whatever the
 *   operator chose, 1..1024 bytes.
 *
 * Hashes
 *   Stored: a 16-byte random salt per key and BLAKE2b-256 of the whole
 *   secret keyed with that salt (crypto_generichash).  A slow password hash
 *   (argon2) buys nothing for 256-bit random secrets, and authentication
 *   runs on every request.  The secret itself is never stored; the admin
 *   secret appears once, in its file.  Comparisons use sodium_memcmp
 *   (constant time), and authentication hashes against the admin key every
 *   time, so its timing does not reveal which kind of key was presented.
 *
 * The admin key, at open (on the committer goroutine, before serving)
 *   1. configured: hash it with a fresh salt, keep the hash in memory only
 *      (the configuration is where it lives); a stored generated key is
 *      then ignored;
 *   2. else a stored generated key (meta admin_salt / admin_hash): use it;
 *   3. else generate one: write the secret to admin_key_file with mode 0600
 *      (written to "<file>.tmp", fsync'd, renamed, directory fsync'd), and
 *      only then commit its hash.  A crash between the two leaves a file
 *      whose hash was never stored, and the next open simply generates
 *      again and replaces the file; the opposite order could store a hash
 *      whose secret nobody ever saw.
 */
#include "ledger_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ACCOUNT_SECRET_LEN (3 + LEDGER_KEY_ID_LEN + 1 + 43)
#define ADMIN_SECRET_MAX 1024

void auth_hash(const uint8_t salt[LEDGER_SALT_BYTES], const char *secret, size_t len,
               uint8_t out[LEDGER_HASH_BYTES]) {
    crypto_generichash(out, LEDGER_HASH_BYTES, (const unsigned char *)secret, len,
                       salt, LEDGER_SALT_BYTES);
}

void auth_make_key(lkey *k, char secret[LEDGER_SECRET_MAX + 1]) {
    uint8_t idb[LEDGER_KEY_ID_LEN / 2], rnd[32];
    randombytes_buf(idb, sizeof idb);
    randombytes_buf(rnd, sizeof rnd);
    ledger_hex(idb, sizeof idb, k->id);
    char b64[64];
    ledger_b64url(rnd, sizeof rnd, b64, sizeof b64);
    snprintf(secret, LEDGER_SECRET_MAX + 1, "lk_%s_%s", k->id, b64);
    randombytes_buf(k->salt, sizeof k->salt);
    auth_hash(k->salt, secret, strlen(secret), k->hash);
    k->node.key = k->id;
    k->node.klen = strlen(k->id);
    sodium_memzero(rnd, sizeof rnd);
    sodium_memzero(b64, sizeof b64);
}

/* Write secret + "\n" to path, mode 0600, durably (tmp, fsync, rename,
 * fsync the directory). */
static int write_secret_file(ledger *l, const char *path, const char *secret) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    char *dircopy = strdup(path);
    if (!tmp || !dircopy) {
        free(tmp);
        free(dircopy);
        return LEDGER_ENOMEM;
    }
    snprintf(tmp, plen + 5, "%s.tmp", path);
    int rc = LEDGER_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    const char *what = "open";
    if (fd >= 0) {
        /* The umask can only narrow the mode; an existing file keeps its
         * old one, so set it explicitly. */
        size_t n = strlen(secret);
        if (fchmod(fd, 0600) != 0) what = "chmod";
        else if (write(fd, secret, n) != (ssize_t)n || write(fd, "\n", 1) != 1) what = "write";
        else if (fsync(fd) != 0) what = "fsync";
        else what = NULL;
        if (close(fd) != 0 && !what) what = "close";
        if (!what && rename(tmp, path) != 0) what = "rename";
    }
    if (what) {
        ledger_errf(l->open_err, sizeof l->open_err, "admin key file %s: %s: %s", path, what, strerror(errno));
        unlink(tmp);
        rc = LEDGER_EIO;
    } else {
        int dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    free(tmp);
    free(dircopy);
    return rc;
}

static int meta_blob(ledger *l, const char *name, uint8_t *out, int len, bool *found) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(l->wdb, "SELECT value FROM meta WHERE name = ?1", -1, &st, NULL);
    if (rc != SQLITE_OK) return ledger_sqlite_rc(rc);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    int ret = LEDGER_OK;
    *found = false;
    if (s == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) == len) {
            memcpy(out, sqlite3_column_blob(st, 0), (size_t)len);
            *found = true;
        } else {
            ledger_errf(l->open_err, sizeof l->open_err, "invariant violated: meta %s malformed", name);
            ret = LEDGER_ECORRUPT;
        }
    } else if (s != SQLITE_DONE) {
        ret = ledger_sqlite_rc(s);
    }
    sqlite3_finalize(st);
    return ret;
}

static int store_admin_hash(ledger *l) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_exec(l->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(l->wdb, "INSERT OR REPLACE INTO meta(name, value) VALUES(?1, ?2)", -1, &st, NULL);
    for (int i = 0; i < 2 && rc == SQLITE_OK; i++) {
        sqlite3_bind_text(st, 1, i == 0 ? "admin_salt" : "admin_hash", -1, SQLITE_STATIC);
        if (i == 0) sqlite3_bind_blob(st, 2, l->admin_salt, LEDGER_SALT_BYTES, SQLITE_STATIC);
        else sqlite3_bind_blob(st, 2, l->admin_hash, LEDGER_HASH_BYTES, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK) rc = sqlite3_exec(l->wdb, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        ledger_errf(l->open_err, sizeof l->open_err, "store admin key hash: %s", sqlite3_errmsg(l->wdb));
        sqlite3_exec(l->wdb, "ROLLBACK", NULL, NULL, NULL);
        return ledger_sqlite_rc(rc);
    }
    return LEDGER_OK;
}

int auth_setup_admin(ledger *l) {
    if (l->opts.admin_key) {
        randombytes_buf(l->admin_salt, sizeof l->admin_salt);
        auth_hash(l->admin_salt, l->opts.admin_key, strlen(l->opts.admin_key), l->admin_hash);
        l->admin_set = true;
        return LEDGER_OK;
    }
    bool have_salt, have_hash;
    int rc = meta_blob(l, "admin_salt", l->admin_salt, LEDGER_SALT_BYTES, &have_salt);
    if (!rc) rc = meta_blob(l, "admin_hash", l->admin_hash, LEDGER_HASH_BYTES, &have_hash);
    if (rc) return rc;
    if (have_salt && have_hash) {
        l->admin_set = true;
        return LEDGER_OK;
    }
    uint8_t rnd[32];
    char b64[64], secret[80];
    randombytes_buf(rnd, sizeof rnd);
    ledger_b64url(rnd, sizeof rnd, b64, sizeof b64);
    snprintf(secret, sizeof secret, "ladm_%s", b64);
    randombytes_buf(l->admin_salt, sizeof l->admin_salt);
    auth_hash(l->admin_salt, secret, strlen(secret), l->admin_hash);
    rc = write_secret_file(l, l->admin_key_file, secret);
    sodium_memzero(rnd, sizeof rnd);
    sodium_memzero(b64, sizeof b64);
    sodium_memzero(secret, sizeof secret);
    if (!rc) rc = store_admin_hash(l);
    if (!rc) {
        l->admin_set = true;
        l->admin_generated = true;
    }
    return rc;
}

int ledger_authenticate(ledger *l, const char *secret, size_t len, ledger_principal *out) {
    if (!l || !secret || len == 0 || len > ADMIN_SECRET_MAX || !out) return LEDGER_EUNAUTHORIZED;
    uint8_t h[LEDGER_HASH_BYTES];
    bool admin_ok = false, acct_ok = false;
    if (l->admin_set) {
        auth_hash(l->admin_salt, secret, len, h);
        admin_ok = sodium_memcmp(h, l->admin_hash, LEDGER_HASH_BYTES) == 0;
    }
    lkey k;
    bool found = false;
    if (len == ACCOUNT_SECRET_LEN && memcmp(secret, "lk_", 3) == 0 &&
        secret[3 + LEDGER_KEY_ID_LEN] == '_') {
        rt_mutex_lock(&l->mu);
        hent *e = htab_get(&l->keys, secret + 3, LEDGER_KEY_ID_LEN);
        if (e && container_of(e, lkey, node)->committed) {
            k = *container_of(e, lkey, node);
            found = true;
        }
        rt_mutex_unlock(&l->mu);
        if (found) {
            auth_hash(k.salt, secret, len, h);
            acct_ok = sodium_memcmp(h, k.hash, LEDGER_HASH_BYTES) == 0;
        }
    }
    memset(out, 0, sizeof *out);
    if (admin_ok) {
        out->kind = LEDGER_PRINCIPAL_ADMIN;
        snprintf(out->key_id, sizeof out->key_id, "%s", LEDGER_ADMIN_SCOPE);
        return LEDGER_OK;
    }
    if (acct_ok) {
        out->kind = LEDGER_PRINCIPAL_ACCOUNT;
        snprintf(out->key_id, sizeof out->key_id, "%s", k.id);
        snprintf(out->account, sizeof out->account, "%s", k.account);
        return LEDGER_OK;
    }
    return LEDGER_EUNAUTHORIZED;
}
