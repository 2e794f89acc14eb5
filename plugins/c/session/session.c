// session, in C (contract 0.2.0): byte for byte what the Rust `session`
// plugin does. Session windows per key with a processing-time gap of route
// config `gap_ms`: each record joins its key's session (keyless records
// share the empty key) and moves the key's processing-time timer to now +
// `gap_ms`. When a key has had no record for `gap_ms`, its timer fires: the
// plugin emits "<key>:<records>:<first-ts>:<last-ts>" to the topic named by
// route config `output`, keyed by the key (none for the empty key), and
// forgets the session.

#include <stdlib.h>
#include <string.h>

#include "handler.h"
#include "../text.h"

static handler_string_t output;
static int64_t gap_ms;

static bool str_is(handler_string_t *s, const char *text) {
  size_t n = strlen(text);
  return s->len == n && memcmp(s->ptr, text, n) == 0;
}

bool exports_linecook_handler_guest_init(exports_linecook_handler_guest_context_t *context,
                                         handler_string_t *err) {
  bool has_output = false, has_gap = false;
  gap_ms = 0;
  for (size_t i = 0; i < context->config.len; i++) {
    handler_tuple2_string_string_t *kv = &context->config.ptr[i];
    if (str_is(&kv->f0, "output")) {
      handler_string_dup_n(&output, (const char *)kv->f1.ptr, kv->f1.len);
      has_output = true;
    } else if (str_is(&kv->f0, "gap_ms")) {
      has_gap = true;
      for (size_t j = 0; j < kv->f1.len && gap_ms >= 0; j++) {
        uint8_t d = kv->f1.ptr[j];
        gap_ms = d < '0' || d > '9' || gap_ms > (INT64_MAX - (d - '0')) / 10 ? -1 : gap_ms * 10 + (d - '0');
      }
      if (kv->f1.len == 0) gap_ms = -1;
    }
  }
  exports_linecook_handler_guest_context_free(context);
  const char *problem = NULL;
  if (!has_output) problem = "session needs route config `output`: the topic to write to";
  else if (!has_gap) problem = "session needs route config `gap_ms`: the inactivity gap";
  else if (gap_ms <= 0) problem = "route config `gap_ms` must be a positive number of milliseconds";
  if (problem) {
    handler_string_dup(err, problem);
    return false;
  }
  return true;
}

// A session in state: records, first and last timestamp, 8 bytes each,
// big-endian.
typedef struct {
  uint64_t records;
  int64_t first, last;
} session_t;

static uint64_t word(const uint8_t *b) {
  uint64_t w = 0;
  for (int i = 0; i < 8; i++) w = (w << 8) | b[i];
  return w;
}

static bool load(handler_list_u8_t *key, session_t *s) {
  handler_list_u8_t value;
  if (!linecook_handler_state_get(key, &value)) return false;
  bool ok = value.len == 24;
  if (ok) {
    s->records = word(value.ptr);
    s->first = (int64_t)word(value.ptr + 8);
    s->last = (int64_t)word(value.ptr + 16);
  }
  handler_list_u8_free(&value);
  return ok;
}

static void save(handler_list_u8_t *key, const session_t *s) {
  uint8_t bytes[24];
  uint64_t words[3] = {s->records, (uint64_t)s->first, (uint64_t)s->last};
  for (int w = 0; w < 3; w++)
    for (int i = 0; i < 8; i++) bytes[w * 8 + i] = (uint8_t)(words[w] >> (8 * (7 - i)));
  handler_list_u8_t value = {bytes, 24};
  linecook_handler_state_set(key, &value);
}

bool exports_linecook_handler_guest_handle(exports_linecook_handler_guest_list_stream_record_t *batch,
                                           exports_linecook_handler_guest_handler_error_t *err) {
  (void)err;
  int64_t expires = linecook_handler_timers_now_ms() + gap_ms;
  for (size_t i = 0; i < batch->len; i++) {
    exports_linecook_handler_guest_stream_record_t *r = &batch->ptr[i];
    handler_list_u8_t key = {NULL, 0};
    if (r->key.is_some) key = r->key.val;
    int64_t ts = r->timestamp_ms;
    session_t s;
    if (load(&key, &s)) {
      s.records += 1;
      if (ts < s.first) s.first = ts;
      if (ts > s.last) s.last = ts;
    } else {
      s = (session_t){1, ts, ts};
    }
    save(&key, &s);
    linecook_handler_timers_set(&key, LINECOOK_HANDLER_TYPES_TIME_DOMAIN_PROCESSING, expires);
  }
  exports_linecook_handler_guest_list_stream_record_free(batch);
  return true;
}

bool exports_linecook_handler_guest_on_timers(exports_linecook_handler_guest_list_due_timer_t *due,
                                              exports_linecook_handler_guest_handler_error_t *err) {
  (void)err;
  for (size_t i = 0; i < due->len; i++) {
    exports_linecook_handler_guest_due_timer_t *t = &due->ptr[i];
    session_t s;
    if (!load(&t->key, &s)) continue;
    linecook_handler_state_delete(&t->key);
    buf_t line = {0};
    char digits[20];
    push_lossy(&line, t->key.ptr, t->key.len);
    push(&line, (const uint8_t *)":", 1);
    push(&line, (const uint8_t *)digits, decimal(s.records, digits));
    push(&line, (const uint8_t *)":", 1);
    push_signed(&line, s.first);
    push(&line, (const uint8_t *)":", 1);
    push_signed(&line, s.last);
    linecook_handler_emit_output_record_t out = {0};
    out.topic = output;
    out.key.is_some = t->key.len > 0;
    out.key.val = t->key;
    out.value = (handler_list_u8_t){line.ptr, line.len};
    linecook_handler_emit_send(&out);
    free(line.ptr);
  }
  exports_linecook_handler_guest_list_due_timer_free(due);
  return true;
}
