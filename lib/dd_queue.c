/* SPDX-License-Identifier: Apache-2.0 */
/* dd_queue.c - the bounded lock-free MPSC queue between request threads and the flusher.
 *
 * A Vyukov bounded ring (a power-of-two array of cells, each with its own sequence number)
 * carries the items; two counters in front of it enforce the limits the user configured:
 * exactly max_items items (the ring itself may be larger, it is rounded up to a power of two)
 * and at most max_bytes bytes. A push takes a place in both counters first and only then
 * claims a cell, so the ring can never be full when a push reaches it.
 */
#include "dd_queue.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DD_CACHE_LINE 64

typedef struct {
    atomic_size_t seq; /* see the invariants below */
    char *data;
    size_t len;
} dd_cell_t;

/* Invariants and memory orders.
 *
 * Cells. For the cell at ring index i = pos & mask, seq tells whose turn it is:
 *   seq == pos             free for the producer that claims position pos;
 *   seq == pos + 1         holds the item of position pos, ready for the consumer;
 *   seq == pos + capacity  freed by the consumer, free for position pos + capacity.
 * A producer writes data/len only between claiming pos and storing seq = pos + 1; the
 * consumer reads them only after loading seq == pos + 1 and writes seq = pos + capacity when
 * it is done with them. Both seq stores are release and both seq loads are acquire, so the
 * plain data/len accesses are ordered by them and never race.
 *
 * enqueue_pos: written by producers only, always by CAS (they race for it). The CAS is
 *   acq_rel and its loads acquire, so a producer that sees position pos also sees everything
 *   the producers of earlier positions saw before their claim (in particular, the consumer
 *   releases that let them in; see count).
 * dequeue_pos: the consumer's alone; a plain size_t that no other thread reads.
 * count: items admitted and not yet released, 0 <= count <= max_items at all times. Producers
 *   raise it by CAS (acquire), so it never passes max_items, not even for an instant; the
 *   consumer lowers it by fetch_sub (release) after it has freed the cell. Since every write
 *   is a read-modify-write, a producer whose CAS succeeds synchronises with every release
 *   before it. Together with the acquire chain on enqueue_pos this makes "the cell at
 *   enqueue_pos is free" a theorem rather than a hope: if the cell of position pos had not
 *   been freed, the items of positions pos - capacity .. pos would all hold a place in count,
 *   capacity + 1 > max_items of them. The "ring full" branch of the push is therefore
 *   defensive only.
 * bytes: bytes admitted and not yet released, 0 <= bytes <= max_bytes, raised by CAS,
 *   lowered by the consumer's fetch_sub. It orders nothing (relaxed): it only bounds memory.
 *
 * A push that passes count but not bytes gives its count place back; for that instant
 * another push may see one item too many and fail. The limits are never exceeded; a push can
 * at worst be refused because of a concurrent push that is itself refused.
 *
 * Progress: a push never waits for another thread. It loops only when a CAS loses, which
 * means another push made progress. A producer stopped between claiming its cell and
 * publishing it hides the items behind it from the consumer (pop says "empty") until it runs
 * again; nothing is lost.
 */
struct dd_queue {
    alignas(DD_CACHE_LINE) atomic_size_t enqueue_pos;
    alignas(DD_CACHE_LINE) atomic_size_t count;
    alignas(DD_CACHE_LINE) atomic_size_t bytes;
    alignas(DD_CACHE_LINE) size_t dequeue_pos;
    /* Read-only after creation. */
    alignas(DD_CACHE_LINE) size_t mask; /* capacity - 1 */
    size_t max_items;
    size_t max_bytes;
    dd_cell_t *cells;
};

/* Reserves n units of counter c, never letting it pass max. Returns 1 on success. */
static int reserve(atomic_size_t *c, size_t n, size_t max, memory_order success)
{
    size_t cur = atomic_load_explicit(c, memory_order_relaxed);
    do {
        if (cur > max || n > max - cur) {
            return 0;
        }
    } while (
        !atomic_compare_exchange_weak_explicit(c, &cur, cur + n, success, memory_order_relaxed));
    return 1;
}

dd_queue_t *dd_queue_create(size_t max_items, size_t max_bytes)
{
    size_t cap = 1;
    dd_queue_t *q;

    if (max_items < 1 || max_bytes < 1 || max_items > SIZE_MAX / 2 / sizeof(dd_cell_t)) {
        return NULL;
    }
    while (cap < max_items) {
        cap <<= 1;
    }
    q = aligned_alloc(DD_CACHE_LINE, sizeof(*q)); /* sizeof is a multiple of the alignment */
    if (q == NULL) {
        return NULL;
    }
    memset(q, 0, sizeof(*q));
    q->cells = malloc(cap * sizeof(dd_cell_t));
    if (q->cells == NULL) {
        free(q);
        return NULL;
    }
    for (size_t i = 0; i < cap; i++) {
        atomic_init(&q->cells[i].seq, i);
        q->cells[i].data = NULL;
        q->cells[i].len = 0;
    }
    atomic_init(&q->enqueue_pos, 0);
    atomic_init(&q->count, 0);
    atomic_init(&q->bytes, 0);
    q->dequeue_pos = 0;
    q->mask = cap - 1;
    q->max_items = max_items;
    q->max_bytes = max_bytes;
    return q;
}

void dd_queue_destroy(dd_queue_t *q)
{
    char *data;
    size_t len;

    if (q == NULL) {
        return;
    }
    while (dd_queue_pop(q, &data, &len)) {
        free(data);
    }
    free(q->cells);
    free(q);
}

dd_queue_rc_t dd_queue_push(dd_queue_t *q, char *data, size_t len)
{
    dd_cell_t *cell;
    size_t pos;

    if (!reserve(&q->count, 1, q->max_items, memory_order_acquire)) {
        return DD_QUEUE_FULL_ITEMS;
    }
    if (!reserve(&q->bytes, len, q->max_bytes, memory_order_relaxed)) {
        atomic_fetch_sub_explicit(&q->count, 1, memory_order_release);
        return DD_QUEUE_FULL_BYTES;
    }

    pos = atomic_load_explicit(&q->enqueue_pos, memory_order_acquire);
    for (;;) {
        cell = &q->cells[pos & q->mask];
        size_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
        intptr_t diff = (intptr_t)seq - (intptr_t)pos;
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->enqueue_pos, &pos, pos + 1,
                                                      memory_order_acq_rel, memory_order_acquire)) {
                break;
            }
            /* Lost the race: pos now holds the current position; try that. */
        } else if (diff < 0) {
            /* Not yet freed by the consumer. Unreachable while count holds (see above). */
            atomic_fetch_sub_explicit(&q->bytes, len, memory_order_relaxed);
            atomic_fetch_sub_explicit(&q->count, 1, memory_order_release);
            return DD_QUEUE_FULL_ITEMS;
        } else {
            /* Another producer took this position since we read it. */
            pos = atomic_load_explicit(&q->enqueue_pos, memory_order_acquire);
        }
    }

    cell->data = data;
    cell->len = len;
    atomic_store_explicit(&cell->seq, pos + 1, memory_order_release);
    return DD_QUEUE_OK;
}

int dd_queue_pop(dd_queue_t *q, char **data, size_t *len)
{
    size_t pos = q->dequeue_pos;
    dd_cell_t *cell = &q->cells[pos & q->mask];
    size_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
    size_t n;

    if (seq != pos + 1) {
        return 0; /* empty, or the next item's producer has not published it yet */
    }
    *data = cell->data;
    *len = n = cell->len;
    cell->data = NULL;
    atomic_store_explicit(&cell->seq, pos + q->mask + 1, memory_order_release);
    q->dequeue_pos = pos + 1;
    atomic_fetch_sub_explicit(&q->bytes, n, memory_order_relaxed);
    atomic_fetch_sub_explicit(&q->count, 1, memory_order_release);
    return 1;
}

size_t dd_queue_count(const dd_queue_t *q)
{
    return atomic_load_explicit(&((dd_queue_t *)q)->count, memory_order_relaxed);
}

size_t dd_queue_bytes(const dd_queue_t *q)
{
    return atomic_load_explicit(&((dd_queue_t *)q)->bytes, memory_order_relaxed);
}

size_t dd_queue_max_items(const dd_queue_t *q)
{
    return q->max_items;
}

size_t dd_queue_max_bytes(const dd_queue_t *q)
{
    return q->max_bytes;
}
