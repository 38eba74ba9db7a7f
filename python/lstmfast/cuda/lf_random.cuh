// The device generator of dropout masks: Philox4x32-10 (Salmon et al., "Parallel random numbers:
// as easy as 1, 2, 3", SC'11), a counter-based generator: the four 32-bit words for a counter and
// a key are a pure function of both, so any thread computes any element's draw without state, and
// a draw is the same on every GPU and on the host (the tests compile this file with g++).
// Uniforms take the top 24 bits of a word: multiples of 2^-24 in [0, 1), exact in float and double.
#pragma once

#include "lf_math.cuh"

namespace lstmfast {

struct Philox4 {
  unsigned int w[4];
};

LF_HD void philox_mulhilo(unsigned int a, unsigned int b, unsigned int* hi, unsigned int* lo) {
  const unsigned long long p = (unsigned long long)a * (unsigned long long)b;
  *hi = (unsigned int)(p >> 32);
  *lo = (unsigned int)p;
}

// The ten rounds of Philox4x32 on counter c with key (k0, k1).
LF_HD Philox4 philox4x32_10(Philox4 c, unsigned int k0, unsigned int k1) {
  for (int round = 0; round < 10; ++round) {
    unsigned int hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c.w[0], &hi0, &lo0);
    philox_mulhilo(0xCD9E8D57u, c.w[2], &hi1, &lo1);
    const Philox4 next = {{hi1 ^ c.w[1] ^ k0, lo1, hi0 ^ c.w[3] ^ k1, lo0}};
    c = next;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// The four words of draw `draw` for group `group` of four elements: counter (group, draw) as two
// 64-bit halves, low words first.
LF_HD Philox4 dropout_words(unsigned long long group, unsigned long long draw, unsigned int k0, unsigned int k1) {
  const Philox4 c = {{(unsigned int)group, (unsigned int)(group >> 32), (unsigned int)draw, (unsigned int)(draw >> 32)}};
  return philox4x32_10(c, k0, k1);
}

// An inverted-dropout mask entry: scale where the word's uniform is >= rate, else 0.
template <typename T>
LF_HD T dropout_value(unsigned int word, double rate, T scale) {
  const double u = (double)(word >> 8) * (1.0 / 16777216.0);
  return u >= rate ? scale : T(0);
}

}  // namespace lstmfast
