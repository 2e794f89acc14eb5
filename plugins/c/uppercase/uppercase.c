// uppercase, in C: emits each record's value ASCII-upper-cased, with the
// same key, to the topic named by route config `output` — byte for byte what
// the Rust `uppercase` plugin emits.
//
// Bindings come from `linecook sdk c-bindings` (gen/handler.h). The canonical ABI hands
// exported functions their arguments to own: each export frees them.

#include <string.h>

#include "handler.h"

// One instance serves one partition; `init` runs once, before any batch.
static handler_string_t output;

bool exports_handler_init(handler_context_t *context, handler_string_t *err) {
  bool found = false;
  for (size_t i = 0; i < context->config.len; i++) {
    handler_tuple2_string_string_t *kv = &context->config.ptr[i];
    if (kv->f0.len == 6 && memcmp(kv->f0.ptr, "output", 6) == 0) {
      handler_string_dup_n(&output, (const char *)kv->f1.ptr, kv->f1.len);
      found = true;
    }
  }
  handler_context_free(context);
  if (!found) {
    handler_string_dup(err, "uppercase needs route config `output`: the topic to write to");
    return false;
  }
  return true;
}

bool exports_handler_handle(handler_list_stream_record_t *batch, handler_handler_error_t *err) {
  (void)err;
  for (size_t i = 0; i < batch->len; i++) {
    handler_stream_record_t *r = &batch->ptr[i];
    // ASCII letters only, like Rust's make_ascii_uppercase.
    for (size_t j = 0; j < r->value.len; j++) {
      uint8_t c = r->value.ptr[j];
      if (c >= 'a' && c <= 'z') r->value.ptr[j] = c - ('a' - 'A');
    }
    linecook_handler_emit_output_record_t out = {
        .topic = output,
        .key = r->key,
        .value = r->value,
        .headers = {NULL, 0},
    };
    linecook_handler_emit_send(&out);
  }
  handler_list_stream_record_free(batch);
  return true;
}
