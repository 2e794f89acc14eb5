// The packed batch path for C handlers (contract 0.2.0, world
// `packed-handler`): read a batch from the one buffer `handle-packed` gets,
// write its effects into the one buffer it returns. Layouts v1, as
// docs/contract-0.2.md gives them: little-endian, unaligned.
//
//   lc_batch_t batch;
//   if (!lc_batch_open(&batch, buf, len)) ...          // not "LCB1"
//   lc_record_t r;
//   while (lc_batch_next(&batch, &r)) { ... r.value, r.value_len ... }
//   if (batch.bad) ...                                  // truncated buffer
//
//   lc_effects_t fx;
//   lc_effects_init(&fx);
//   lc_emit(&fx, topic, topic_len, key, key_len, value, value_len);
//   lc_state_set(&fx, key, key_len, value, value_len);
//   ... return fx.ptr / fx.len as the result's list (malloc'ed: the
//   bindings' post-return frees it).
//
// Records point into the batch buffer: keep it until the last record is
// used. Nothing here allocates per record.
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const uint8_t *p, *end;
  uint32_t remaining;  // records not read yet
  const uint8_t *topic;
  uint32_t topic_len;
  uint32_t partition;
  bool bad;  // the buffer ended inside a record
} lc_batch_t;

typedef struct {
  uint64_t offset;
  int64_t timestamp_ms;
  const uint8_t *key;  // NULL when the record has no key
  int32_t key_len;     // -1 when the record has no key
  const uint8_t *value;
  uint32_t value_len;
  uint16_t header_count;
  const uint8_t *headers;  // header_count times: u16 len, name, u32 len, value
} lc_record_t;

static inline uint16_t lc_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t lc_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t lc_u64(const uint8_t *p) { return (uint64_t)lc_u32(p) | (uint64_t)lc_u32(p + 4) << 32; }

// Takes `n` bytes, or marks the batch bad.
static inline const uint8_t *lc_take(lc_batch_t *b, size_t n) {
  if (b->bad || (size_t)(b->end - b->p) < n) {
    b->bad = true;
    return NULL;
  }
  const uint8_t *at = b->p;
  b->p += n;
  return at;
}

static inline bool lc_batch_open(lc_batch_t *b, const uint8_t *buf, size_t len) {
  *b = (lc_batch_t){.p = buf, .end = buf + len};
  const uint8_t *head = lc_take(b, 12);
  if (!head || memcmp(head, "LCB1", 4) != 0) return false;
  b->remaining = lc_u32(head + 4);
  b->topic_len = lc_u32(head + 8);
  b->topic = lc_take(b, b->topic_len);
  const uint8_t *partition = lc_take(b, 4);
  if (!partition) return false;
  b->partition = lc_u32(partition);
  return true;
}

// The next record; false at the end of the batch (or when it is malformed:
// then `bad` is set).
static inline bool lc_batch_next(lc_batch_t *b, lc_record_t *r) {
  if (b->remaining == 0 || b->bad) return false;
  const uint8_t *fixed = lc_take(b, 20);
  if (!fixed) return false;
  r->offset = lc_u64(fixed);
  r->timestamp_ms = (int64_t)lc_u64(fixed + 8);
  r->key_len = (int32_t)lc_u32(fixed + 16);
  r->key = r->key_len < 0 ? NULL : lc_take(b, (size_t)r->key_len);
  const uint8_t *value_len = lc_take(b, 4);
  if (!value_len) return false;
  r->value_len = lc_u32(value_len);
  r->value = lc_take(b, r->value_len);
  const uint8_t *count = lc_take(b, 2);
  if (!count) return false;
  r->header_count = lc_u16(count);
  r->headers = b->p;
  for (uint16_t i = 0; i < r->header_count; i++) {
    const uint8_t *name_len = lc_take(b, 2);
    if (!name_len || !lc_take(b, lc_u16(name_len))) return false;
    const uint8_t *len = lc_take(b, 4);
    if (!len || !lc_take(b, lc_u32(len))) return false;
  }
  if (b->bad) return false;
  b->remaining--;
  return true;
}

// The effects buffer a call returns.
typedef struct {
  uint8_t *ptr;
  size_t len, cap;
} lc_effects_t;

static inline void lc_put(lc_effects_t *e, const void *bytes, size_t n) {
  if (e->len + n > e->cap) {
    e->cap = (e->len + n) * 2 + 64;
    e->ptr = realloc(e->ptr, e->cap);
    if (!e->ptr) abort();
  }
  memcpy(e->ptr + e->len, bytes, n);
  e->len += n;
}
static inline void lc_put_u8(lc_effects_t *e, uint8_t v) { lc_put(e, &v, 1); }
static inline void lc_put_u16(lc_effects_t *e, uint16_t v) {
  uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
  lc_put(e, b, 2);
}
static inline void lc_put_u32(lc_effects_t *e, uint32_t v) {
  uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  lc_put(e, b, 4);
}
static inline void lc_put_u64(lc_effects_t *e, uint64_t v) {
  lc_put_u32(e, (uint32_t)v);
  lc_put_u32(e, (uint32_t)(v >> 32));
}

static inline void lc_effects_init(lc_effects_t *e) {
  *e = (lc_effects_t){0};
  lc_put(e, "LCE1", 4);
}

// Emits a record to `topic` with no headers; `key` NULL (key_len ignored)
// for no key; `timestamp_ms` < 0 for the time the batch commits.
static inline void lc_emit(lc_effects_t *e, const uint8_t *topic, uint32_t topic_len,
                           const uint8_t *key, int32_t key_len, const uint8_t *value,
                           uint32_t value_len, int64_t timestamp_ms) {
  lc_put_u8(e, 1);
  lc_put_u32(e, topic_len);
  lc_put(e, topic, topic_len);
  if (key) {
    lc_put_u32(e, (uint32_t)key_len);
    lc_put(e, key, (size_t)key_len);
  } else {
    lc_put_u32(e, (uint32_t)-1);
  }
  lc_put_u32(e, value_len);
  lc_put(e, value, value_len);
  lc_put_u16(e, 0);
  if (timestamp_ms < 0) {
    lc_put_u8(e, 0);
  } else {
    lc_put_u8(e, 1);
    lc_put_u64(e, (uint64_t)timestamp_ms);
  }
}

// Writes `value` under `key` in the partition's state.
static inline void lc_state_set(lc_effects_t *e, const uint8_t *key, uint32_t key_len,
                                const uint8_t *value, uint32_t value_len) {
  lc_put_u8(e, 2);
  lc_put_u32(e, key_len);
  lc_put(e, key, key_len);
  lc_put_u32(e, value_len);
  lc_put(e, value, value_len);
}

// Deletes `key` from the partition's state.
static inline void lc_state_delete(lc_effects_t *e, const uint8_t *key, uint32_t key_len) {
  lc_put_u8(e, 4);
  lc_put_u32(e, key_len);
  lc_put(e, key, key_len);
}
