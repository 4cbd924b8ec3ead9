/* SPDX-License-Identifier: Apache-2.0 */
/* dd_queue.h - a bounded, lock-free, multi-producer single-consumer queue of encoded chunks.
 *
 * Request threads push (never block, never take a lock); the flusher thread pops. Bounded both
 * in items and in bytes: a push that would pass either limit fails and the caller drops and
 * counts the chunk (CONTRACT §6). The queue owns the bytes of every item it holds.
 */
#ifndef DD_QUEUE_H
#define DD_QUEUE_H

#include <stddef.h>

typedef struct dd_queue dd_queue_t;

typedef enum {
    DD_QUEUE_OK = 0,
    DD_QUEUE_FULL_ITEMS, /* max_items already queued */
    DD_QUEUE_FULL_BYTES  /* the item would take the queue past max_bytes */
} dd_queue_rc_t;

/* max_items >= 1, max_bytes >= 1. Returns NULL when out of memory. */
dd_queue_t *dd_queue_create(size_t max_items, size_t max_bytes);
/* Frees the queue and every item still in it. No thread may use it any more. */
void dd_queue_destroy(dd_queue_t *q);

/* Any thread. On DD_QUEUE_OK the queue owns data (a malloc'd buffer); otherwise the caller
 * still owns it. */
dd_queue_rc_t dd_queue_push(dd_queue_t *q, char *data, size_t len);
/* The single consumer only. Returns 1 and hands over ownership of an item, or 0 if empty. */
int dd_queue_pop(dd_queue_t *q, char **data, size_t *len);

/* Approximate (racy but never torn) current size, for "past half full" decisions. */
size_t dd_queue_count(const dd_queue_t *q);
size_t dd_queue_bytes(const dd_queue_t *q);
size_t dd_queue_max_items(const dd_queue_t *q);
size_t dd_queue_max_bytes(const dd_queue_t *q);

#endif
