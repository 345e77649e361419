// socbi/select.hpp -- fused uncertainty selection: one pass over a class-probability
// matrix that checks every row, scores it (least confidence, margin or entropy) and keeps
// the n most uncertain rows in a bounded heap. No score array and no copy of the matrix.
//
// Why a kernel: the plain numpy route (np.partition for the top two, then argpartition)
// reads the matrix once to copy it, once to partition each row, and the score array
// again; the probability check costs further passes. Here each row is read once, the
// check is a few compares on values already in registers, and a row that cannot enter
// the top n costs one compare against the heap's minimum.
//
// Ties: equal scores at the cut are resolved by a seeded hash of the sample id (a random
// permutation evaluated only for the tied candidates), so the answer does not depend on
// the thread count or on the order in which rows are read. Above the cut every row is
// taken, so ties there only decide the output order (same hash).
//
// Entropy prunes exactly: H(p) <= h(p_max) + (1 - p_max) log(C - 1) (Fano), which falls
// with p_max for p_max >= 1/C, so a row whose p_max exceeds the cut-off where that bound
// drops below the current n-th best score is skipped without a single log.
//
// Thread safety: select_uncertain() is a pure function of its arguments; with threads > 1
// it splits the rows into contiguous ranges, one std::thread each, and merges the heaps.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace socbi {
namespace select {

enum class Measure : int { least_confidence = 0, margin = 1, entropy = 2 };

// First bad input found (kind 0 = none). Rows are positions in the matrix.
enum class ErrorKind : int { none = 0, non_finite = 1, out_of_range = 2, bad_sum = 3, bad_row_id = 4 };
struct Error {
  ErrorKind kind = ErrorKind::none;
  int64_t row = -1;    // matrix row (or position in `rows` for bad_row_id)
  double value = 0.0;  // the offending value / row sum / id
};

struct Pick {
  double score;
  int64_t id;
};

// splitmix64: the tie-break key of a sample id under a seed.
inline uint64_t tie_key(uint64_t seed, int64_t id) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(id) + 0x632BE59BD9B4E5ADULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The n largest scores seen, plus every candidate tied with the smallest of them.
class TopN {
 public:
  explicit TopN(std::size_t n) : n_(n) { heap_.reserve(n); }

  // Smallest score that can still enter (-inf until n candidates were seen; +inf for n = 0,
  // where nothing enters and the heap has no front to read).
  double threshold() const {
    if (n_ == 0) return std::numeric_limits<double>::infinity();
    return heap_.size() < n_ ? -std::numeric_limits<double>::infinity() : heap_.front().score;
  }

  void offer(double s, int64_t id) {
    if (n_ == 0) return;
    if (heap_.size() < n_) {
      heap_.push_back({s, id});
      std::push_heap(heap_.begin(), heap_.end(), greater_);
      return;
    }
    const double lo = heap_.front().score;
    if (s < lo) return;
    if (s == lo) {
      add_tie(lo, id);
      return;
    }
    std::pop_heap(heap_.begin(), heap_.end(), greater_);
    const Pick out = heap_.back();
    heap_.back() = {s, id};
    std::push_heap(heap_.begin(), heap_.end(), greater_);
    add_tie(out.score, out.id);
    if (heap_.front().score > tie_value_) ties_.clear();  // the evicted ones fell below the cut
  }

  // Folds another TopN (another thread's rows) into this one.
  void merge(const TopN& o) {
    for (const Pick& p : o.heap_) offer(p.score, p.id);
    if (o.heap_.size() == o.n_ && !o.ties_.empty())
      for (int64_t id : o.ties_) offer(o.tie_value_, id);
  }

  // The answer: min(n, seen) ids, largest score first; ties by tie_key(seed, id).
  std::vector<Pick> finish(uint64_t seed) const {
    std::vector<Pick> out(heap_);
    if (out.empty()) return out;
    const double t = heap_.front().score;
    // Candidates at the cut: those in the heap plus the recorded ties.
    std::vector<Pick> above, at;
    for (const Pick& p : out) (p.score > t ? above : at).push_back(p);
    if (heap_.size() == n_ && tie_value_ == t)
      for (int64_t id : ties_) at.push_back({t, id});
    const std::size_t need = out.size() - above.size();
    auto by_key = [seed](const Pick& a, const Pick& b) {
      const uint64_t ka = tie_key(seed, a.id), kb = tie_key(seed, b.id);
      return ka != kb ? ka < kb : a.id < b.id;
    };
    if (at.size() > need) {
      std::nth_element(at.begin(), at.begin() + static_cast<std::ptrdiff_t>(need), at.end(), by_key);
      at.resize(need);
    }
    above.insert(above.end(), at.begin(), at.end());
    std::sort(above.begin(), above.end(), [&](const Pick& a, const Pick& b) {
      if (a.score != b.score) return a.score > b.score;
      return by_key(a, b);
    });
    return above;
  }

 private:
  void add_tie(double v, int64_t id) {
    if (v != tie_value_) {
      ties_.clear();
      tie_value_ = v;
    }
    ties_.push_back(id);
  }
  static bool greater_(const Pick& a, const Pick& b) { return a.score > b.score; }

  std::size_t n_;
  std::vector<Pick> heap_;
  std::vector<int64_t> ties_;
  double tie_value_ = -std::numeric_limits<double>::infinity();
};

// ln(x) for normal x > 0 within 1.3e-4 absolute, one table load and no libm call:
// x = m 2^e, m in [1, 2); ln m is read at the midpoint of m's bucket of width 2^-12, so
// the error is at most ln(1 + 2^-13) < 1.23e-4. Used only to screen rows; a row that
// survives the screen gets the exact std::log entropy.
constexpr int kLogTableBits = 12;
constexpr double kFastLogError = 1.3e-4;
inline const double* log_table() {
  static const std::vector<double> table = [] {
    std::vector<double> t(std::size_t(1) << kLogTableBits);
    for (std::size_t i = 0; i < t.size(); ++i)
      t[i] = std::log1p((static_cast<double>(i) + 0.5) / static_cast<double>(t.size()));
    return t;
  }();
  return table.data();
}
inline double fast_log(double x, const double* table) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const int64_t e = static_cast<int64_t>((bits >> 52) & 0x7ff) - 1023;
  return static_cast<double>(e) * 0.6931471805599453 + table[(bits >> (52 - kLogTableBits)) & ((1u << kLogTableBits) - 1)];
}

// Fano bound h(p) + (1 - p) log(C - 1) on the entropy of a row whose largest entry is p.
inline double entropy_bound(double p, double log_c1) {
  double h = 0.0;
  if (p > 0.0 && p < 1.0) h = -p * std::log(p) - (1.0 - p) * std::log1p(-p);
  return h + (1.0 - p) * log_c1;
}

// Smallest p_max above which the bound is below t (rows above it cannot reach t);
// +inf when no p_max in [1/C, 1] qualifies.
inline double entropy_cutoff(double t, int64_t C) {
  const double log_c1 = std::log(static_cast<double>(C - 1));
  if (!(t > 0.0)) return std::numeric_limits<double>::infinity();
  double lo = 1.0 / static_cast<double>(C), hi = 1.0;  // bound(lo) = log C >= t, bound(1) = 0 < t
  if (entropy_bound(lo, log_c1) < t) return lo;
  for (int it = 0; it < 60 && hi - lo > 1e-15; ++it) {
    const double mid = 0.5 * (lo + hi);
    (entropy_bound(mid, log_c1) < t ? hi : lo) = mid;
  }
  return hi;
}

struct Options {
  Measure measure = Measure::margin;
  std::size_t n = 0;
  uint64_t seed = 0;
  double range_tol = 1e-6;  // entries may lie in [-tol, 1 + tol]
  double sum_tol = 1e-3;    // rows must sum to 1 within this
};

// One thread's share: positions [begin, end) of the candidate list (or of the rows).
// M is a template parameter so that the row loop carries no per-row switch.
template <Measure M, class T>
void scan(const T* P, int64_t n_rows, int64_t C, const uint8_t* skip, const int64_t* rows, const int64_t* labels,
          int64_t begin, int64_t end, const Options& opt, TopN& top, Error& err) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  double cut_t = -inf, p_cut = inf;  // entropy: rows with p_max > p_cut cannot reach cut_t
  int64_t last_refresh = begin;
  const double* table = M == Measure::entropy ? log_table() : nullptr;
  const double lo_ok = -opt.range_tol, hi_ok = 1.0 + opt.range_tol;
  for (int64_t pos = begin; pos < end; ++pos) {
    int64_t i = pos;
    if (rows != nullptr) {
      i = rows[pos];
      if (i < 0 || i >= n_rows) {
        err = {ErrorKind::bad_row_id, pos, static_cast<double>(i)};
        return;
      }
    }
    if (skip != nullptr && skip[i]) continue;
    const T* r = P + i * C;
    // Branch-free row statistics: sum (NaN/inf show up in it), min, max and second max.
    double s = 0.0, mx = -inf, second = -inf, mn = inf;
    for (int64_t c = 0; c < C; ++c) {
      const double v = static_cast<double>(r[c]);
      s += v;
      mn = std::min(mn, v);
      if (M == Measure::margin) second = std::max(second, std::min(mx, v));
      mx = std::max(mx, v);
    }
    if (!std::isfinite(s)) {
      err = {ErrorKind::non_finite, i, s};
      return;
    }
    if (mn < lo_ok || mx > hi_ok) {
      err = {ErrorKind::out_of_range, i, mn < lo_ok ? mn : mx};
      return;
    }
    if (std::fabs(s - 1.0) > opt.sum_tol) {
      err = {ErrorKind::bad_sum, i, s};
      return;
    }
    double score;
    if (M == Measure::least_confidence) {
      score = 1.0 - mx;
    } else if (M == Measure::margin) {
      score = second - mx;
    } else {
      const double t = top.threshold();
      // Refresh the skip rule now and then (a stale one only skips less); the slack keeps
      // rows that tie with the cut or sit within rounding of it.
      if (t != cut_t && (pos - last_refresh >= 1024 || cut_t == -inf)) {
        cut_t = t;
        last_refresh = pos;
        p_cut = entropy_cutoff(t - 1e-4, C);
      }
      if (mx > p_cut && mn >= 0.0 && std::fabs(s - 1.0) <= 1e-6) continue;
      if (t > -inf) {  // screen with the cheap log: |approx - H| <= kFastLogError * sum |v|
        double ha = 0.0;
        for (int64_t c = 0; c < C; ++c) {
          const double v = static_cast<double>(r[c]);
          ha -= v > 1e-300 ? v * fast_log(v, table) : 0.0;  // v log v < 1e-297 below that
        }
        if (ha + 2.0 * kFastLogError * (s + 1.0) < t) continue;
      }
      double h = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const double v = static_cast<double>(r[c]);
        if (v > 0.0) h -= v * std::log(v);
      }
      score = h;
    }
    if (score >= top.threshold()) top.offer(score, labels != nullptr ? labels[i] : i);
  }
}

template <class T>
void scan_any(const T* P, int64_t n_rows, int64_t C, const uint8_t* skip, const int64_t* rows, const int64_t* labels,
              int64_t begin, int64_t end, const Options& opt, TopN& top, Error& err) {
  switch (opt.measure) {
    case Measure::least_confidence:
      return scan<Measure::least_confidence>(P, n_rows, C, skip, rows, labels, begin, end, opt, top, err);
    case Measure::margin:
      return scan<Measure::margin>(P, n_rows, C, skip, rows, labels, begin, end, opt, top, err);
    default:
      return scan<Measure::entropy>(P, n_rows, C, skip, rows, labels, begin, end, opt, top, err);
  }
}

// The opt.n most uncertain rows of the (n_rows, C) row-major matrix P, most uncertain
// first. Rows with skip[i] != 0 are left out (skip may be null); with `rows` non-null only
// rows[0..n_cand) are considered (ids into P). Row i is reported (and its ties hashed) as
// labels[i] when labels is non-null (ids of a gathered block), else as i. On bad input returns an empty vector and
// fills `err` with the first problem (smallest row). O(rows * C) time, O(n * threads)
// memory, plus the tied candidates at the cut.
template <class T>
std::vector<Pick> select_uncertain(const T* P, int64_t n_rows, int64_t C, const uint8_t* skip, const int64_t* rows,
                                   int64_t n_cand, const int64_t* labels, const Options& opt, int threads,
                                   Error& err) {
  const int64_t total = rows != nullptr ? n_cand : n_rows;
  int nt = std::max(1, threads);
  if (total < 65536) nt = 1;  // a thread costs more than it saves on small inputs
  std::vector<TopN> tops(static_cast<std::size_t>(nt), TopN(opt.n));
  std::vector<Error> errs(static_cast<std::size_t>(nt));
  if (nt == 1) {
    scan_any(P, n_rows, C, skip, rows, labels, 0, total, opt, tops[0], errs[0]);
  } else {
    std::vector<std::thread> pool;
    for (int t = 0; t < nt; ++t) {
      const int64_t b = total * t / nt, e = total * (t + 1) / nt;
      pool.emplace_back([&, t, b, e] { scan_any(P, n_rows, C, skip, rows, labels, b, e, opt, tops[t], errs[t]); });
    }
    for (auto& th : pool) th.join();
  }
  err = Error{};
  for (const Error& e : errs)  // threads cover increasing ranges: the first error found is the smallest
    if (e.kind != ErrorKind::none) {
      err = e;
      return {};
    }
  for (int t = 1; t < nt; ++t) tops[0].merge(tops[static_cast<std::size_t>(t)]);
  return tops[0].finish(opt.seed);
}

}  // namespace select
}  // namespace socbi
