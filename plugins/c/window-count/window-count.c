// window-count, in C (contract 0.2.0): byte for byte what the Rust
// `window-count` plugin does. Counts records per key in tumbling event-time
// windows of route config `window_ms` (epoch-aligned); when the watermark
// reaches a window's end, emits "<key>:<window-start-ms>:<count>" keyed by
// the key (none for the empty key) and timestamped with the window's end,
// to the topic named by route config `output`. A record whose window
// already closed is late: `late = "dead-letter"` (default) poisons it,
// `late = "drop"` drops it and counts it under state key `late`.

#include <stdlib.h>
#include <string.h>

#include "handler.h"
#include "../text.h"

static handler_string_t output;
static int64_t window_ms;
static bool drop_late;

static bool str_is(handler_string_t *s, const char *text) {
  size_t n = strlen(text);
  return s->len == n && memcmp(s->ptr, text, n) == 0;
}

bool exports_linecook_handler_guest_init(exports_linecook_handler_guest_context_t *context,
                                         handler_string_t *err) {
  bool has_output = false, has_window = false;
  const char *problem = NULL;
  window_ms = 0;
  drop_late = false;
  for (size_t i = 0; i < context->config.len; i++) {
    handler_tuple2_string_string_t *kv = &context->config.ptr[i];
    if (str_is(&kv->f0, "output")) {
      handler_string_dup_n(&output, (const char *)kv->f1.ptr, kv->f1.len);
      has_output = true;
    } else if (str_is(&kv->f0, "window_ms")) {
      has_window = true;
      for (size_t j = 0; j < kv->f1.len && window_ms >= 0; j++) {
        uint8_t d = kv->f1.ptr[j];
        window_ms = d < '0' || d > '9' || window_ms > INT64_MAX / 10 ? -1 : window_ms * 10 + (d - '0');
      }
      if (window_ms <= 0) problem = "route config `window_ms` must be a positive number of milliseconds";
    } else if (str_is(&kv->f0, "late")) {
      if (str_is(&kv->f1, "drop")) drop_late = true;
      else if (!str_is(&kv->f1, "dead-letter")) problem = "route config `late` must be `dead-letter` or `drop`";
    }
  }
  exports_linecook_handler_guest_context_free(context);
  if (!has_output) problem = "window-count needs route config `output`: the topic to write to";
  else if (!has_window) problem = "window-count needs route config `window_ms`: the window size";
  if (problem) {
    handler_string_dup(err, problem);
    return false;
  }
  return true;
}

// The state key of a window's count: "w" then the window key.
static buf_t count_key(const uint8_t *window_key, size_t n) {
  buf_t b = {0};
  push(&b, (const uint8_t *)"w", 1);
  push(&b, window_key, n);
  return b;
}

static uint64_t read_count(uint8_t *key, size_t n) {
  handler_list_u8_t k = {key, n}, value;
  if (!linecook_handler_state_get(&k, &value)) return 0;
  uint64_t count = 0;
  bool ok = value.len > 0;
  for (size_t i = 0; i < value.len && ok; i++) {
    uint8_t d = value.ptr[i];
    if (d < '0' || d > '9') ok = false;
    else count = count * 10 + (d - '0');
  }
  handler_list_u8_free(&value);
  return ok ? count : 0;
}

static void write_count(uint8_t *key, size_t n, uint64_t count) {
  char digits[20];
  handler_list_u8_t k = {key, n}, v = {(uint8_t *)digits, decimal(count, digits)};
  linecook_handler_state_set(&k, &v);
}

bool exports_linecook_handler_guest_handle(exports_linecook_handler_guest_list_stream_record_t *batch,
                                           exports_linecook_handler_guest_handler_error_t *err) {
  bool has_mark = false;
  int64_t mark = 0;
  has_mark = linecook_handler_timers_watermark(&mark);
  int64_t lateness = (int64_t)linecook_handler_timers_allowed_lateness_ms();
  bool ok = true;
  for (size_t i = 0; i < batch->len && ok; i++) {
    exports_linecook_handler_guest_stream_record_t *r = &batch->ptr[i];
    int64_t ts = r->timestamp_ms, seen = ts - lateness;
    if (!has_mark || seen > mark) mark = seen;
    has_mark = true;
    int64_t rem = ts % window_ms;
    if (rem < 0) rem += window_ms;
    int64_t start = ts - rem, end = start + window_ms;
    if (mark >= end) {
      if (drop_late) {
        uint8_t late[] = "late";
        write_count(late, 4, read_count(late, 4) + 1);
        continue;
      }
      buf_t m = {0};
      push(&m, (const uint8_t *)"late: window ", 13);
      push_signed(&m, start);
      push(&m, (const uint8_t *)"..", 2);
      push_signed(&m, end);
      push(&m, (const uint8_t *)" closed at watermark ", 21);
      push_signed(&m, mark);
      err->tag = LINECOOK_HANDLER_TYPES_HANDLER_ERROR_POISON;
      err->val.poison.index = (uint32_t)i;
      handler_string_dup_n(&err->val.poison.message, (const char *)m.ptr, m.len);
      free(m.ptr);
      ok = false;
      break;
    }
    // The window key: the record key, then the start as 8 big-endian
    // bytes with the sign bit flipped (ordered like the number).
    buf_t wkey = {0};
    if (r->key.is_some) push(&wkey, r->key.val.ptr, r->key.val.len);
    uint64_t s = (uint64_t)start ^ (1ULL << 63);
    for (int b = 7; b >= 0; b--) {
      uint8_t byte = (uint8_t)(s >> (8 * b));
      push(&wkey, &byte, 1);
    }
    buf_t ck = count_key(wkey.ptr, wkey.len);
    write_count(ck.ptr, ck.len, read_count(ck.ptr, ck.len) + 1);
    handler_list_u8_t timer_key = {wkey.ptr, wkey.len};
    linecook_handler_timers_set(&timer_key, LINECOOK_HANDLER_TYPES_TIME_DOMAIN_EVENT, end);
    free(ck.ptr);
    free(wkey.ptr);
  }
  exports_linecook_handler_guest_list_stream_record_free(batch);
  return ok;
}

bool exports_linecook_handler_guest_on_timers(exports_linecook_handler_guest_list_due_timer_t *due,
                                              exports_linecook_handler_guest_handler_error_t *err) {
  (void)err;
  for (size_t i = 0; i < due->len; i++) {
    exports_linecook_handler_guest_due_timer_t *t = &due->ptr[i];
    if (t->key.len < 8) continue;
    size_t key_len = t->key.len - 8;
    uint64_t s = 0;
    for (size_t b = 0; b < 8; b++) s = (s << 8) | t->key.ptr[key_len + b];
    int64_t start = (int64_t)(s ^ (1ULL << 63));
    buf_t ck = count_key(t->key.ptr, t->key.len);
    uint64_t count = read_count(ck.ptr, ck.len);
    handler_list_u8_t k = {ck.ptr, ck.len};
    linecook_handler_state_delete(&k);
    free(ck.ptr);
    buf_t line = {0};
    push_lossy(&line, t->key.ptr, key_len);
    push(&line, (const uint8_t *)":", 1);
    push_signed(&line, start);
    push(&line, (const uint8_t *)":", 1);
    push_signed(&line, (int64_t)count);
    linecook_handler_emit_output_record_t out = {0};
    out.topic = output;
    out.key.is_some = key_len > 0;
    out.key.val = (handler_list_u8_t){t->key.ptr, key_len};
    out.value = (handler_list_u8_t){line.ptr, line.len};
    out.timestamp_ms.is_some = true;
    out.timestamp_ms.val = start + window_ms;
    linecook_handler_emit_send(&out);
    free(line.ptr);
  }
  exports_linecook_handler_guest_list_due_timer_free(due);
  return true;
}
