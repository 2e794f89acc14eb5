// uppercase, packed: the same handler as ../uppercase (each record's value
// ASCII-upper-cased, same key, to the route config's `output` topic), also
// exporting contract 0.2.0's packed batch path. The host then calls
// `handle-packed` with the whole batch in one buffer and takes the outputs
// back in one: no list per record, no host call per output.
//
// Bindings: `linecook sdk c-bindings --contract 0.2.0 --packed` writes
// packed_handler.h (world `packed-handler`); ../packed.h reads the batch and
// writes the effects. `guest.handle` stays: the host uses it for a batch the
// packed layout cannot carry (more than 65,535 headers on a record).

#include <string.h>

#include "../packed.h"
#include "packed_handler.h"

static packed_handler_string_t output;

bool exports_linecook_handler_guest_init(exports_linecook_handler_guest_context_t *context,
                                         packed_handler_string_t *err) {
  bool found = false;
  for (size_t i = 0; i < context->config.len; i++) {
    packed_handler_tuple2_string_string_t *kv = &context->config.ptr[i];
    if (kv->f0.len == 6 && memcmp(kv->f0.ptr, "output", 6) == 0) {
      packed_handler_string_dup_n(&output, (const char *)kv->f1.ptr, kv->f1.len);
      found = true;
    }
  }
  exports_linecook_handler_guest_context_free(context);
  if (!found) {
    packed_handler_string_dup(err, "uppercase needs route config `output`: the topic to write to");
    return false;
  }
  return true;
}

static void upper(uint8_t *bytes, size_t n) {
  for (size_t j = 0; j < n; j++) {
    uint8_t c = bytes[j];
    if (c >= 'a' && c <= 'z') bytes[j] = c - ('a' - 'A');
  }
}

bool exports_linecook_handler_packed_handle_packed(packed_handler_list_u8_t *batch,
                                                   packed_handler_list_u8_t *ret,
                                                   exports_linecook_handler_packed_handler_error_t *err) {
  (void)err;
  lc_batch_t b;
  lc_effects_t fx;
  lc_effects_init(&fx);
  if (lc_batch_open(&b, batch->ptr, batch->len)) {
    lc_record_t r;
    while (lc_batch_next(&b, &r)) {
      // The batch buffer is ours: upper-case in place, then copy once into
      // the effects buffer.
      upper((uint8_t *)r.value, r.value_len);
      lc_emit(&fx, output.ptr, (uint32_t)output.len, r.key, r.key_len, r.value, r.value_len, -1);
    }
  }
  packed_handler_list_u8_free(batch);
  ret->ptr = fx.ptr;
  ret->len = fx.len;
  return true;
}

// The typed path, for batches the packed layout cannot carry.
bool exports_linecook_handler_guest_handle(exports_linecook_handler_guest_list_stream_record_t *batch,
                                           exports_linecook_handler_guest_handler_error_t *err) {
  (void)err;
  for (size_t i = 0; i < batch->len; i++) {
    exports_linecook_handler_guest_stream_record_t *r = &batch->ptr[i];
    upper(r->value.ptr, r->value.len);
    linecook_handler_emit_output_record_t out = {
        .topic = output, .key = r->key, .value = r->value, .headers = {NULL, 0}};
    linecook_handler_emit_send(&out);
  }
  exports_linecook_handler_guest_list_stream_record_free(batch);
  return true;
}

bool exports_linecook_handler_guest_on_timers(exports_linecook_handler_guest_list_due_timer_t *due,
                                              exports_linecook_handler_guest_handler_error_t *err) {
  (void)err;
  exports_linecook_handler_guest_list_due_timer_free(due);
  return true;
}
