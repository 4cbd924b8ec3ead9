/* SPDX-License-Identifier: Apache-2.0 */
/* dd_sha256.h - SHA-256 (FIPS 180-4), for checking remote configuration files against the
 * hashes the agent signs them with (dd_rc.c). APR has only SHA-1; this is small enough to
 * carry rather than link a TLS library's for it. */
#ifndef DD_SHA256_H
#define DD_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* The digest of data[0..len) into out. */
void dd_sha256(const void *data, size_t len, uint8_t out[32]);

/* The same as 64 lowercase hex digits and a NUL. */
void dd_sha256_hex(const void *data, size_t len, char out[65]);

#endif
