// socbi/baselines.hpp — the structures socbi is measured against (C++17, header-only).
//
// WHAT IS HERE
//   The baselines of the So-CBI paper (§4.4.2, Tables 7 and 8), written the way a C++
//   user would write them, so that `socbi bench` can time them next to
//   socbi::SemiOrderedIndex through the same Python bindings (same argument checks,
//   same GIL release):
//     * ArrayIndex: a dense score array (one double per id, plus a presence byte) and,
//       per query, one of
//         Method::kSort         gather the present (score, id) items, std::sort them all
//                               ("array + full sort");
//         Method::kHeap         gather, std::make_heap (O(n)), then pop n ("array + heap");
//         Method::kPartialSort  gather, std::partial_sort of the first n (O(n log n_q));
//         Method::kSelect       gather, std::nth_element, sort the n winners (the C++ twin
//                               of numpy's argpartition: the strongest array baseline).
//     * SetIndex: std::set of (score, id) keys plus the score array (an ordered tree;
//       every update is erase + insert, O(log n)).
//   Keys are (score, id) pairs, so ties break by id exactly as in SemiOrderedIndex:
//   bottom() is (score, id) ascending, top() is (score, id) descending.
//
// QUERY PHASES (the paper's T_sort and T_search)
//   top(n)/bottom(n) == prepare(from_top) then take(n, from_top). prepare() does the
//   n-independent work (gather; for kSort the full sort, for kHeap the heap build);
//   take() the rest (pops, partial sort, selection, copying out). SetIndex::prepare is
//   a no-op: the tree is always ordered.
//
// CONCURRENCY (Sync)
//   * kNone:   single-threaded; update(..., threads > 1) throws std::invalid_argument.
//   * kAtomic: ArrayIndex only. update() with threads > 1 adds with a compare-and-swap
//              loop on std::atomic<double> (lock-free; what a careful user writes for an
//              array); update() calls may overlap each other, nothing else may overlap.
//              With threads == 1 an add is a relaxed load + store (no read-modify-write).
//   * kMutex:  one std::mutex guards the whole structure, taken once per item by update
//              threads and once per call by everything else: the non-concurrent
//              structure shared "as a user would have to". Every method may then be
//              called from many threads at once.
//   There is no finer locking on purpose: these are the baselines, not contenders.
//
// PRECONDITIONS (checked by the Python bindings for a whole batch before any change;
// violating them here is undefined): ids < capacity; insert: ids absent and distinct;
// update/assign/erase/score: ids present; scores and deltas finite.
//
// USAGE
//   socbi::baselines::ArrayIndex a(1000, socbi::baselines::Method::kSelect,
//                                  socbi::baselines::Sync::kAtomic);
//   std::vector<uint32_t> ids = {1, 2, 3};
//   std::vector<double> zero(3, 0.0), one(3, 1.0);
//   a.insert(ids.data(), zero.data(), 3);
//   a.update(ids.data(), one.data(), 3, /*threads=*/2);
//   uint32_t out_ids[2]; double out_scores[2];
//   size_t k = a.top(2, out_ids, out_scores);   // k == 2: ids 3, 2 (score 1, ties by id)

#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <socbi/semi_ordered_index.hpp>  // detail::parallel_for

namespace socbi {
namespace baselines {

enum class Method { kSort, kHeap, kPartialSort, kSelect };
enum class Sync { kNone, kAtomic, kMutex };

inline const char* method_name(Method m) {
  switch (m) {
    case Method::kSort: return "sort";
    case Method::kHeap: return "heap";
    case Method::kPartialSort: return "partial_sort";
    case Method::kSelect: return "select";
  }
  return "?";
}

inline const char* sync_name(Sync s) {
  switch (s) {
    case Sync::kNone: return "none";
    case Sync::kAtomic: return "atomic";
    case Sync::kMutex: return "mutex";
  }
  return "?";
}

struct Item {
  double score;
  uint32_t id;
};
inline bool operator<(const Item& a, const Item& b) noexcept {
  return a.score < b.score || (a.score == b.score && a.id < b.id);
}

namespace detail {

// fn(begin, end) over [0, n) split into `threads` contiguous parts: the core's thread
// runner (worker exceptions re-thrown on the caller), without the thread index.
template <class Fn>
void parallel_for(size_t n, unsigned threads, Fn&& fn) {
  socbi::detail::parallel_for(n, threads, [&](unsigned, size_t b, size_t e) { fn(b, e); });
}

// A lock that is a no-op unless the structure is kMutex.
class MaybeLock {
 public:
  MaybeLock(std::mutex& mu, bool on) : mu_(mu), on_(on) {
    if (on_) mu_.lock();
  }
  ~MaybeLock() {
    if (on_) mu_.unlock();
  }
  MaybeLock(const MaybeLock&) = delete;
  MaybeLock& operator=(const MaybeLock&) = delete;

 private:
  std::mutex& mu_;
  bool on_;
};

// Dense per-id storage shared by both baselines: the score and a presence byte.
class ScoreTable {
 public:
  explicit ScoreTable(uint64_t capacity)
      : capacity_(capacity), score_(new std::atomic<double>[capacity]), present_(new uint8_t[capacity]()) {
    for (uint64_t i = 0; i < capacity; ++i) score_[i].store(0.0, std::memory_order_relaxed);
  }
  uint64_t capacity() const noexcept { return capacity_; }
  uint64_t size() const noexcept { return size_; }
  bool contains(uint32_t id) const noexcept { return present_[id] != 0; }
  double get(uint32_t id) const noexcept { return score_[id].load(std::memory_order_relaxed); }
  void set(uint32_t id, double s) noexcept { score_[id].store(s, std::memory_order_relaxed); }
  void add_plain(uint32_t id, double d) noexcept { set(id, get(id) + d); }
  void add_atomic(uint32_t id, double d) noexcept {
    double cur = score_[id].load(std::memory_order_relaxed);
    while (!score_[id].compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
    }
  }
  void mark(uint32_t id, bool on) noexcept {
    if (bool(present_[id]) == on) return;
    present_[id] = on ? 1 : 0;
    size_ += on ? 1 : -1;
  }
  // Appends every present (score, id), in id order.
  void gather(std::vector<Item>& out) const {
    out.clear();
    out.reserve(size_t(size_));
    if (size_ == capacity_) {
      for (uint64_t i = 0; i < capacity_; ++i) out.push_back(Item{get(uint32_t(i)), uint32_t(i)});
    } else {
      for (uint64_t i = 0; i < capacity_; ++i)
        if (present_[i]) out.push_back(Item{get(uint32_t(i)), uint32_t(i)});
    }
  }
  uint64_t memory_bytes() const noexcept { return capacity_ * (sizeof(std::atomic<double>) + 1); }

 private:
  uint64_t capacity_;
  uint64_t size_ = 0;
  std::unique_ptr<std::atomic<double>[]> score_;
  std::unique_ptr<uint8_t[]> present_;
};

inline void check_capacity(uint64_t capacity) {
  if (capacity == 0 || capacity > 0xFFFFFFFFull)
    throw std::invalid_argument("capacity must be in [1, 4294967295], got " + std::to_string(capacity));
}

}  // namespace detail

// ---------------------------------------------------------------------------------- array
class ArrayIndex {
 public:
  ArrayIndex(uint64_t capacity, Method method, Sync sync)
      : table_((detail::check_capacity(capacity), capacity)), method_(method), sync_(sync) {}

  ArrayIndex(const ArrayIndex&) = delete;
  ArrayIndex& operator=(const ArrayIndex&) = delete;

  uint64_t capacity() const noexcept { return table_.capacity(); }
  uint64_t size() const noexcept { return table_.size(); }
  Method method() const noexcept { return method_; }
  Sync sync() const noexcept { return sync_; }
  bool contains(uint32_t id) const noexcept { return table_.contains(id); }
  double score(uint32_t id) const noexcept { return table_.get(id); }

  void insert(const uint32_t* ids, const double* scores, size_t n) {
    detail::MaybeLock g(mu_, locked());
    for (size_t i = 0; i < n; ++i) {
      table_.set(ids[i], scores[i]);
      table_.mark(ids[i], true);
    }
    prepared_ = false;
  }
  void erase(const uint32_t* ids, size_t n) {
    detail::MaybeLock g(mu_, locked());
    for (size_t i = 0; i < n; ++i) table_.mark(ids[i], false);
    prepared_ = false;
  }
  void assign(const uint32_t* ids, const double* scores, size_t n) {
    detail::MaybeLock g(mu_, locked());
    for (size_t i = 0; i < n; ++i) table_.set(ids[i], scores[i]);
    prepared_ = false;
  }
  // deltas == nullptr: add `scalar` to every id.
  void update(const uint32_t* ids, const double* deltas, double scalar, size_t n, unsigned threads = 1) {
    if (threads > 1 && sync_ == Sync::kNone)
      throw std::invalid_argument("this baseline was built with sync='none'; use 'atomic' or 'mutex' for threads > 1");
    auto delta = [&](size_t i) { return deltas ? deltas[i] : scalar; };
    if (sync_ == Sync::kMutex) {
      detail::parallel_for(n, threads, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) {
          std::lock_guard<std::mutex> g(mu_);
          table_.add_plain(ids[i], delta(i));
        }
      });
    } else if (threads > 1) {
      detail::parallel_for(n, threads, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) table_.add_atomic(ids[i], delta(i));
      });
    } else {
      for (size_t i = 0; i < n; ++i) table_.add_plain(ids[i], delta(i));
    }
    prepared_ = false;
  }

  // T_sort: the work that does not depend on n.
  void prepare(bool from_top) {
    detail::MaybeLock g(mu_, locked());
    prepare_locked(from_top);
  }
  // T_search: the rest; a take() not preceded by prepare() for the same end prepares.
  size_t take(size_t n, bool from_top, uint32_t* out_ids, double* out_scores) {
    detail::MaybeLock g(mu_, locked());
    return take_locked(n, from_top, out_ids, out_scores);
  }
  size_t top(size_t n, uint32_t* out_ids, double* out_scores) { return query(n, true, out_ids, out_scores); }
  size_t bottom(size_t n, uint32_t* out_ids, double* out_scores) { return query(n, false, out_ids, out_scores); }

  uint64_t memory_bytes() const noexcept { return table_.memory_bytes() + work_.capacity() * sizeof(Item); }

 private:
  bool locked() const noexcept { return sync_ == Sync::kMutex; }

  size_t query(size_t n, bool from_top, uint32_t* out_ids, double* out_scores) {
    detail::MaybeLock g(mu_, locked());
    prepare_locked(from_top);
    return take_locked(n, from_top, out_ids, out_scores);
  }

  void prepare_locked(bool from_top) {
    table_.gather(work_);
    if (method_ == Method::kSort) {
      if (from_top)
        std::sort(work_.begin(), work_.end(), [](const Item& a, const Item& b) { return b < a; });
      else
        std::sort(work_.begin(), work_.end());
    } else if (method_ == Method::kHeap) {
      // top: a max-heap (front is the largest); bottom: a min-heap.
      if (from_top)
        std::make_heap(work_.begin(), work_.end());
      else
        std::make_heap(work_.begin(), work_.end(), [](const Item& a, const Item& b) { return b < a; });
    }
    prepared_ = true;
    prepared_top_ = from_top;
  }

  size_t take_locked(size_t n, bool from_top, uint32_t* out_ids, double* out_scores) {
    if (!prepared_ || prepared_top_ != from_top) prepare_locked(from_top);
    prepared_ = false;  // take() may reorder work_: the next take prepares again
    const size_t k = std::min(n, work_.size());
    auto before = [from_top](const Item& a, const Item& b) { return from_top ? b < a : a < b; };
    switch (method_) {
      case Method::kSort:
        break;
      case Method::kHeap: {
        // pop_heap moves the front to the back of the shrinking range.
        auto heap_less = [from_top](const Item& a, const Item& b) { return from_top ? a < b : b < a; };
        auto end = work_.end();
        for (size_t i = 0; i < k; ++i, --end) {
          std::pop_heap(work_.begin(), end, heap_less);
          out_ids[i] = (end - 1)->id;
          out_scores[i] = (end - 1)->score;
        }
        return k;
      }
      case Method::kPartialSort:
        std::partial_sort(work_.begin(), work_.begin() + k, work_.end(), before);
        break;
      case Method::kSelect:
        if (k < work_.size()) std::nth_element(work_.begin(), work_.begin() + k, work_.end(), before);
        std::sort(work_.begin(), work_.begin() + k, before);
        break;
    }
    for (size_t i = 0; i < k; ++i) {
      out_ids[i] = work_[i].id;
      out_scores[i] = work_[i].score;
    }
    return k;
  }

  detail::ScoreTable table_;
  Method method_;
  Sync sync_;
  std::mutex mu_;
  std::vector<Item> work_;
  // update() threads clear it concurrently (sync kAtomic): an atomic flag, relaxed.
  std::atomic<bool> prepared_{false};
  bool prepared_top_ = true;
};

// ----------------------------------------------------------------------------- std::set
class SetIndex {
 public:
  SetIndex(uint64_t capacity, Sync sync) : table_((detail::check_capacity(capacity), capacity)), sync_(sync) {
    if (sync == Sync::kAtomic)
      throw std::invalid_argument("std::set has no lock-free update; use sync='none' or 'mutex'");
  }

  SetIndex(const SetIndex&) = delete;
  SetIndex& operator=(const SetIndex&) = delete;

  uint64_t capacity() const noexcept { return table_.capacity(); }
  uint64_t size() const noexcept { return table_.size(); }
  Sync sync() const noexcept { return sync_; }
  bool contains(uint32_t id) const noexcept { return table_.contains(id); }
  double score(uint32_t id) const noexcept { return table_.get(id); }

  void insert(const uint32_t* ids, const double* scores, size_t n) {
    detail::MaybeLock g(mu_, locked());
    for (size_t i = 0; i < n; ++i) {
      table_.set(ids[i], scores[i]);
      table_.mark(ids[i], true);
      set_.insert(Item{scores[i], ids[i]});
    }
  }
  void erase(const uint32_t* ids, size_t n) {
    detail::MaybeLock g(mu_, locked());
    for (size_t i = 0; i < n; ++i) {
      set_.erase(Item{table_.get(ids[i]), ids[i]});
      table_.mark(ids[i], false);
    }
  }
  void assign(const uint32_t* ids, const double* scores, size_t n) {
    detail::MaybeLock g(mu_, locked());
    for (size_t i = 0; i < n; ++i) move(ids[i], scores[i]);
  }
  void update(const uint32_t* ids, const double* deltas, double scalar, size_t n, unsigned threads = 1) {
    if (threads > 1 && sync_ != Sync::kMutex)
      throw std::invalid_argument("this baseline was built with sync='none'; use 'mutex' for threads > 1");
    auto delta = [&](size_t i) { return deltas ? deltas[i] : scalar; };
    if (sync_ == Sync::kMutex) {
      detail::parallel_for(n, threads, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) {
          std::lock_guard<std::mutex> g(mu_);
          move(ids[i], table_.get(ids[i]) + delta(i));
        }
      });
    } else {
      for (size_t i = 0; i < n; ++i) move(ids[i], table_.get(ids[i]) + delta(i));
    }
  }

  void prepare(bool) {}  // always ordered: no T_sort
  size_t take(size_t n, bool from_top, uint32_t* out_ids, double* out_scores) {
    detail::MaybeLock g(mu_, locked());
    const size_t k = std::min<size_t>(n, set_.size());
    size_t i = 0;
    if (from_top) {
      for (auto it = set_.rbegin(); i < k; ++it, ++i) {
        out_ids[i] = it->id;
        out_scores[i] = it->score;
      }
    } else {
      for (auto it = set_.begin(); i < k; ++it, ++i) {
        out_ids[i] = it->id;
        out_scores[i] = it->score;
      }
    }
    return k;
  }
  size_t top(size_t n, uint32_t* out_ids, double* out_scores) { return take(n, true, out_ids, out_scores); }
  size_t bottom(size_t n, uint32_t* out_ids, double* out_scores) { return take(n, false, out_ids, out_scores); }

  // The score table plus, per item, one red-black tree node: libstdc++ puts a 32-byte
  // header before the 16-byte key, and glibc malloc serves 48 bytes from a 64-byte chunk.
  uint64_t memory_bytes() const noexcept { return table_.memory_bytes() + uint64_t(set_.size()) * 64; }

 private:
  bool locked() const noexcept { return sync_ == Sync::kMutex; }

  void move(uint32_t id, double s) {
    const double old = table_.get(id);
    if (old == s) return;
    auto node = set_.extract(Item{old, id});  // C++17 node handle: no reallocation
    node.value().score = s;
    set_.insert(std::move(node));
    table_.set(id, s);
  }

  detail::ScoreTable table_;
  Sync sync_;
  std::mutex mu_;
  std::set<Item> set_;
};

}  // namespace baselines
}  // namespace socbi
