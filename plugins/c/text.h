// Text helpers the C handlers share: a growable buffer, UTF-8 decoding as
// Rust's String::from_utf8_lossy does it, and decimal numbers without
// snprintf (wasi-libc's stdio would import WASI functions).
#pragma once

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// A growable byte buffer.
typedef struct {
  uint8_t *ptr;
  size_t len, cap;
} buf_t;

static inline void push(buf_t *b, const uint8_t *bytes, size_t n) {
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2 + 16;
    b->ptr = realloc(b->ptr, b->cap);
    if (!b->ptr) abort();
  }
  memcpy(b->ptr + b->len, bytes, n);
  b->len += n;
}

static const uint8_t REPLACEMENT[3] = {0xEF, 0xBF, 0xBD};

// Appends `s` decoded as UTF-8, each maximal invalid subpart replaced by
// U+FFFD — the rule Rust's String::from_utf8_lossy follows.
static inline void push_lossy(buf_t *b, const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      push(b, &c, 1);
      i++;
      continue;
    }
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      push(b, REPLACEMENT, 3);
      i++;
      continue;
    }
    size_t k = 1;
    while (k < need && i + k < n) {
      uint8_t t = s[i + k];
      uint8_t tlo = k == 1 ? lo : 0x80, thi = k == 1 ? hi : 0xBF;
      if (t < tlo || t > thi) break;
      k++;
    }
    if (k == need) {
      push(b, s + i, need);
    } else {
      push(b, REPLACEMENT, 3);
    }
    i += k;
  }
}

// Writes `n` in decimal to `out` (at least 20 bytes); returns the length.
// (Not snprintf: wasi-libc's stdio would import WASI functions.)
static inline size_t decimal(uint64_t n, char *out) {
  char tmp[20];
  size_t len = 0;
  do {
    tmp[len++] = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  for (size_t i = 0; i < len; i++) out[i] = tmp[len - 1 - i];
  return len;
}

// Appends `n` in decimal, with a sign when negative.
static inline void push_signed(buf_t *b, int64_t n) {
  char digits[20];
  uint64_t magnitude = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
  if (n < 0) push(b, (const uint8_t *)"-", 1);
  push(b, (const uint8_t *)digits, decimal(magnitude, digits));
}
