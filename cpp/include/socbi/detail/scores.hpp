// socbi/detail/scores.hpp -- how a score is keyed and stored: Key (score, id) and its order, order_bits (the
// unsigned image of the double order), stored_score / saturating_add (the finite, +0.0
// form every store goes through), splitmix64 and the bit casts. Pure functions.
// Part of socbi/semi_ordered_index.hpp, the one header users include.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace socbi {
namespace detail {

struct Key {
  double score;
  uint32_t id;
};
inline bool operator<(const Key& a, const Key& b) noexcept {
  return a.score < b.score || (a.score == b.score && a.id < b.id);
}
inline bool operator<=(const Key& a, const Key& b) noexcept { return !(b < a); }
// a comes before b in the order a query at `end` returns: bottom() (end < 0) ascending,
// top() descending.
inline bool before_at(int end, const Key& a, const Key& b) noexcept { return end < 0 ? a < b : b < a; }

// The score as a uint64 whose unsigned order is the double order (-0.0 folded into
// +0.0): the sort key of pack() and the coordinate QuantileBucketing cuts into cells.
inline uint64_t order_bits(double s) noexcept {
  if (s == 0.0) s = 0.0;
  uint64_t b;
  std::memcpy(&b, &s, sizeof b);
  return (b >> 63) ? ~b : (b | (uint64_t(1) << 63));
}

inline uint64_t splitmix64(uint64_t& state) noexcept {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The form every score is stored in: finite, and +0.0 for either zero. A non-finite value
// that reaches a store anyway (a C++ caller breaking the precondition, or a caller's buffer
// rewritten after the bindings checked it) is read as 0.0 if NaN and saturates at
// +/-DBL_MAX if infinite: a NaN key lies in no node's range, so placing it would never end.
// -0.0 becomes +0.0 because queries return scores through an order-preserving key that
// cannot tell the two apart, and score() must agree with top()/bottom().
inline double stored_score(double v) noexcept {
  if (std::isfinite(v)) return v + 0.0;  // -0.0 + 0.0 == +0.0; every other value unchanged
  return std::isnan(v) ? 0.0 : (v > 0 ? DBL_MAX : -DBL_MAX);
}

// a + b in stored form; a NaN b adds nothing.
inline double saturating_add(double a, double b) noexcept {
  double r = a + b;
  if (std::isfinite(r)) return r + 0.0;
  if (std::isnan(r)) return a;  // a NaN delta (or inf - inf)
  return r > 0 ? DBL_MAX : -DBL_MAX;
}

inline uint64_t bits_of(double v) noexcept {
  uint64_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}
inline double double_of(uint64_t b) noexcept {
  double v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

}  // namespace detail
}  // namespace socbi
