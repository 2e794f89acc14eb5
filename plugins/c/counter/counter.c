// counter, in C: keeps a per-key count in partition state and, for each
// record, emits "<key>:<count>" (the count after this record; the key as
// UTF-8 with invalid sequences replaced by U+FFFD, keyless records counted
// under the empty key) with the same key to the topic named by route config
// `output` — byte for byte what the Rust `counter` plugin emits.
//
// Optional route config `fail_on`: a batch containing a record whose value
// equals it fails with `retry`, after having written state and emitted
// records for the records before it, which the host then discards.

#include <stdlib.h>
#include <string.h>

#include "handler.h"
#include "../text.h"

static handler_string_t output;
static bool has_fail_on;
static handler_string_t fail_on;

static bool key_is(handler_string_t *s, const char *name) {
  size_t n = strlen(name);
  return s->len == n && memcmp(s->ptr, name, n) == 0;
}

bool exports_handler_init(handler_context_t *context, handler_string_t *err) {
  bool found = false;
  for (size_t i = 0; i < context->config.len; i++) {
    handler_tuple2_string_string_t *kv = &context->config.ptr[i];
    if (key_is(&kv->f0, "output")) {
      handler_string_dup_n(&output, (const char *)kv->f1.ptr, kv->f1.len);
      found = true;
    } else if (key_is(&kv->f0, "fail_on")) {
      handler_string_dup_n(&fail_on, (const char *)kv->f1.ptr, kv->f1.len);
      has_fail_on = true;
    }
  }
  handler_context_free(context);
  if (!found) {
    handler_string_dup(err, "counter needs route config `output`: the topic to write to");
    return false;
  }
  return true;
}

// The stored count, or 0 if absent or not a number.
static uint64_t stored_count(handler_list_u8_t *key) {
  handler_list_u8_t value;
  if (!linecook_handler_state_get(key, &value)) return 0;
  uint64_t n = 0;
  bool ok = value.len > 0;
  for (size_t i = 0; i < value.len && ok; i++) {
    uint8_t d = value.ptr[i];
    if (d < '0' || d > '9') ok = false;
    else n = n * 10 + (d - '0');
  }
  handler_list_u8_free(&value);
  return ok ? n : 0;
}

bool exports_handler_handle(handler_list_stream_record_t *batch, handler_handler_error_t *err) {
  bool ok = true;
  for (size_t i = 0; i < batch->len; i++) {
    handler_stream_record_t *r = &batch->ptr[i];
    if (has_fail_on && r->value.len == fail_on.len &&
        memcmp(r->value.ptr, fail_on.ptr, fail_on.len) == 0) {
      buf_t message = {0};
      const char *before = "record at offset ", *after = " matches fail_on";
      char digits[20];
      push(&message, (const uint8_t *)before, strlen(before));
      push(&message, (const uint8_t *)digits, decimal(r->offset, digits));
      push(&message, (const uint8_t *)after, strlen(after));
      err->tag = LINECOOK_HANDLER_TYPES_HANDLER_ERROR_RETRY;
      // The host frees the error's string: hand it the buffer.
      err->val.retry = (handler_string_t){message.ptr, message.len};
      ok = false;
      break;
    }
    handler_list_u8_t key = r->key.is_some ? r->key.val : (handler_list_u8_t){NULL, 0};
    uint64_t count = stored_count(&key) + 1;
    char digits[20];
    size_t len = decimal(count, digits);
    handler_list_u8_t value = {(uint8_t *)digits, len};
    linecook_handler_state_set(&key, &value);

    buf_t line = {0};
    push_lossy(&line, key.ptr, key.len);
    push(&line, (const uint8_t *)":", 1);
    push(&line, (const uint8_t *)digits, len);
    linecook_handler_emit_output_record_t out = {
        .topic = output,
        .key = r->key,
        .value = {line.ptr, line.len},
        .headers = {NULL, 0},
    };
    linecook_handler_emit_send(&out);
    free(line.ptr);
  }
  handler_list_stream_record_free(batch);
  return ok;
}
