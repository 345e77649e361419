// socbi/semi_ordered_index.hpp — a concurrent semi-ordered score index (C++17, header-only).
//
// WHAT IT IS
//   A ranked set of sample ids 0..capacity-1, each with a float64 score, that many
//   threads update at once and that answers "the N best (or worst) ids now" in
//   O(N + B) without sorting the pool. It follows the So-CBI semi-ordered index
//   (Journal of Software 35(3), 2024, §3.3, Algorithm 1), itself after S3 (PVLDB 2019).
//
// HOW IT IS BUILT
//   * Status table: one 16-byte entry per id: the score (atomic double) and a 64-bit
//     meta word packing status (ABSENT / IDLE / UPDATING), the node and slot that hold
//     the id, and a 12-bit tag that changes whenever a node split or rebuild touches the
//     item (so a stale decision can never be committed; why a wrapped tag cannot either:
//     see Entry).
//   * Nodes hold up to B ids (default 2048) *unordered*; removal leaves a tombstone and
//     a bit in the node's hole bitmap, so a move touches no other id's entry. Node keys
//     are (score, id) pairs, a total order, so ties (e.g. every count starts at 0) split
//     by id like any other keys and never degrade a query to O(n). Node i owns the key range [lo_i, lo_{i+1}); the
//     nodes form a chain ordered by key, with skip-list towers (p = 1/4) over the chain
//     to find the node for a key in O(log #nodes).
//   * update(id, delta) is Algorithm 1: add delta to the score atomically; if the item is
//     UPDATING its owner will see the new score, so stop; else take ownership
//     (IDLE -> UPDATING CAS), read the score, and if it still lies in its node's range
//     (most small increments) nothing moves; otherwise find the target node (neighbours
//     first: finger search; then the skip list), lock both nodes and move the id. Release
//     (UPDATING -> IDLE CAS) and re-read the score: if it changed meanwhile, take
//     ownership again and go round. No increment is ever lost: an adder that saw
//     UPDATING wrote its delta before the owner's release, so the owner's re-read sees it.
//     The common move skips ownership (issue 17): an adder that finds the id IDLE and its
//     new key outside its node moves it itself under the two node locks, as a split
//     relocates ids (move_unowned); a sorted batch keeps the target node locked across a
//     run of such moves (HeldLock). About 90-110 ns per +1 on tied counts at n = 10^6,
//     batch sorting included (bench/bench_round.py --increments), against ~190 before.
//   * top(n)/bottom(n) walk nodes from the matching end of the chain, take whole nodes
//     while they fit, select inside the boundary node and sort the n results. Lazy
//     refinement, as in S3: a walk that meets an oversized boundary node (after a bulk
//     rebuild) splits it by median key, and a node that a query meets unchanged since
//     the previous query is sorted in place, so later queries read it in order (after
//     checking the order, which in-place updates may have disturbed) and skip the sort.
//   * Bulk path: a batch touching a large share of the pool is applied to the status
//     table in one pass that also checks it (id range, presence, finite result) and logs
//     each old score, so a refused batch is rolled back bit for bit; with T threads each
//     owns a hashed share of the ids (no CAS; sums in batch order, the same for any T).
//     Then the chain is rebuilt by bucketing keys: a parallel counting sort over a scan
//     of the status table in id order (no full sort, no random status-table writes).
//     One team of threads serves the whole call, and its passes divide work dynamically
//     (the placement pass from both ends of each thread's part), so a core slowed by a
//     neighbour on a shared machine costs its share only. Scratch (one 8-byte word and
//     one 4-byte id per batch item: the undo log, or the per-owner buckets whose words
//     become the undo log as they are applied, beside a log of the applied ids) stays
//     with the index between calls, up to 16 bytes per id of capacity (plus apply_counted's
//     byte per id), and counts in
//     stats().memory_bytes.
//   * Each update batch takes the path its estimated cost picks (choose_path): item moves,
//     the bulk rebuild, or the lazy apply: the bulk apply pass alone, leaving the chain
//     stale (ids past their nodes' ranges on one side). A query at the end the deltas
//     moved ids away from (bottom() after increments: the So-CBI round) walks the stale
//     chain, stopping once n keys lie below the next node's lo (query_dirty); once a
//     walk would read more than a scan costs, that query and the later ones on the same
//     stale chain scan the status table instead (query_scan, ~1 ns an id, sequential). A
//     query at the other end, or queries between two batches that would cost more than
//     a rebuild, rebuild first. Erase batches of 64+ ids run exclusively, without
//     per-id locks.
//   * The apply pass of a one-thread batch of one integer delta over kCountedShare (25 %) of
//     the capacity or more (the So-CBI round at large b) counts each id's repeats in a
//     byte per id, then adds count * delta to every status entry in one sequential pass
//     (apply_counted): a byte increment per item instead of a random 16-byte entry
//     access. The same sums bit for bit; the byte counts (1 byte per id) stay allocated
//     and count in stats().scratch_bytes. A lazy counted batch also keeps the stale
//     end's kCandidates best keys, which it sees in that pass; the next query of n <=
//     kCandidates at that end copies them (query_candidates) until any change to a score
//     or to membership drops them.
//   * The status table is 2 MiB-aligned and asks Linux for transparent huge pages: each
//     update is a random access into it, and 4 KiB pages would add a TLB miss to most.
//
// CONCURRENCY (what is lock-free, what is not, and why)
//   * An update whose new score stays in its node's range is lock-free: a few atomic
//     operations on the id's status entry plus a seqlock read of the node's range.
//   * A move locks the two nodes involved (per-node spinlocks, always taken in
//     descending key order, so there is no deadlock); threads moving ids between other
//     nodes run in parallel. Node split and removal of an empty node lock the node and
//     its skip-list predecessors (the lazy skip list of Herlihy et al. 2007).
//   * The adder that changed an IDLE id's score may move it without taking ownership:
//     under both locks the id cannot leave its node, and its meta word is CASed to the
//     new place keeping its status (an owner or eraser that got in meanwhile re-checks,
//     as after a split); later adders see IDLE and place their own deltas. The CAS also
//     succeeds if an adder took the id, judged its newer score in x's range and released
//     it in between (an equal word again), so the mover reads the score after its CAS
//     and, if t's range does not hold it, places the id by the owner protocol once it
//     has unlocked; a split does the same for the ids it sends up. A batch keeps
//     the target node's lock across up to kHeldRun consecutive moves into it, only while
//     the next source node comes after it in the lock order, and never across a pin, a
//     split, a node removal or the owner protocol.
//   * A split re-reads every id of the node after narrowing its range: ids going up and
//     ids whose owner is in flight are relocated by CAS (tag bumped); idle ids that stay
//     are left as they are, and a seq_cst fence after the narrowing (with seq_cst loads
//     of hi in the lock-free range check) makes their next owner see the new range.
//   * Queries take no lock on the normal path: they read node contents under a per-node
//     seqlock and retry; a node that changes under a reader 4 times in a row is read
//     under its lock (bounded, never waits on a queue of updaters).
//   * There is no global lock for these operations. The exclusive operations are the bulk
//     paths (a batch the cost model sends to the rebuild or the lazy apply, a batch erase
//     of kLazyMin+ ids, the rebuild of a stale chain that a query asks for, and check()):
//     they wait for in-flight batches to leave and block new ones for their duration.
//     bulk=0 per call, or bulk_fraction = 0, keeps updates off them.
//   * Memory reclamation: epoch-based with two reader counters (SRCU-like). Every batch
//     pins an epoch (re-pinned every 1024 items); removed nodes are reused only after
//     the epoch has advanced twice, i.e. when no pinned reader can still hold them. A
//     thread's finger (the node it last moved an id into) is trusted only under the pin
//     it was taken in, for the same reason.
//   * Caller buffers (ids, scores, deltas, query outputs) are used in place, without a
//     lock and without a copy; see CAVEATS for what a caller may do with them meanwhile.
//
// CAVEATS
//   * ids are dense: capacity is fixed at construction (16 bytes per id up front).
//   * Buffers during a call. A C++ caller may read its input buffers while a call runs
//     but must not write them (nor read the output buffers of a query) until it
//     returns: that is a data race, undefined behaviour in C++. The core is nonetheless
//     built so that a buffer rewritten mid-call (the Python bindings read numpy arrays in
//     place with the GIL released, and another Python thread can write them) cannot
//     crash, hang or corrupt the index: each id and value is read once where it is used
//     (the bulk path logs the ids it applied, so its undo never reads the buffer again),
//     ids are range-checked on the read that is used, and every value passes through the
//     stored form (below) before it is stored. Which of the values the buffer held were
//     applied is then unspecified, and update_checked may apply a delta that arrived
//     after its check (saturated, or nothing for a NaN) instead of refusing it.
//   * Stored form: every stored score is finite, and -0.0 is stored as +0.0 (score()
//     agrees with top()/bottom()). A value that breaks the preconditions is stored as
//     +/-DBL_MAX for +/-inf and 0.0 for NaN; a NaN delta adds nothing.
//   * An update racing with erase()/insert() of the *same* id is ordered arbitrarily:
//     it may apply to the old item (then vanish with it) or be dropped. Updates to
//     present ids are never lost.
//   * Scores must be finite. update_checked() refuses a delta whose result would not be
//     finite (on the bulk path: the running sum of a repeated id); plain update() and
//     assign() (item by item or bulk) saturate such a result at +/-DBL_MAX, and on the
//     bulk path skip an absent id, as item by item; an id out of range there throws
//     std::out_of_range with nothing changed.
//   * During concurrent updates a query returns, for each id, a score it held at some
//     instant during the call (ids sorted by those scores, no duplicates); with no
//     mutation in flight the answer is exact.
//   * Ties are broken by id: bottom() orders by (score, id) ascending, top() by
//     (score, id) descending.
//   * A bulk call with threads = T starts T - 1 helper threads for its length. Between
//     its passes they spin for up to ~0.5 ms (not when T exceeds the machine's cores),
//     then sleep; on a core shared with other work that spinning costs the other work.
//
// WHERE THINGS ARE
//   Users include this header only. It holds the status table, nodes and chain, the
//   epochs, the update protocol and the queries (the class and its state). Kept apart by
//   concern, each opening with what it owns:
//     detail/sync.hpp       spinning, the node SpinLock, the test hooks
//     detail/scores.hpp     Key order, order_bits, the stored (finite, +0.0) score form
//     detail/team.hpp       the bulk call's thread team, parallel_for, scratch arrays
//     detail/bulk_path.hpp  path by cost, bulk/lazy/counted apply with undo, bulk insert, rebuild
//     detail/check.hpp      the O(n) invariant check
//
// USAGE
//   socbi::SemiOrderedIndex idx(1000000);            // capacity; node size B = 2048
//   std::vector<uint32_t> ids = {1, 2, 3};
//   std::vector<double> zero(3, 0.0), one(3, 1.0);
//   idx.insert(ids.data(), zero.data(), ids.size());
//   idx.update(ids.data(), one.data(), ids.size(), /*threads=*/4);
//   std::vector<uint32_t> out_ids(10); std::vector<double> out_scores(10);
//   size_t k = idx.top(10, out_ids.data(), out_scores.data());   // k = min(10, size)
//   idx.check();                                                 // throws on a broken invariant

#pragma once


#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>


#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "detail/scores.hpp"
#include "detail/sync.hpp"
#include "detail/team.hpp"

namespace socbi {


struct TestAccess;  // defined by the C++ tests only

struct IndexStats {
  uint64_t size = 0;
  uint64_t capacity = 0;
  uint64_t node_size = 0;
  uint64_t nodes = 0;           // live nodes in the chain
  uint64_t empty_nodes = 0;     // live nodes with no items (head included)
  uint64_t oversized_nodes = 0; // nodes larger than node_size (awaiting lazy refinement)
  uint64_t max_level = 0;
  uint64_t moves = 0;
  uint64_t in_place_updates = 0;
  uint64_t splits = 0;
  uint64_t node_removals = 0;
  uint64_t rebuilds = 0;
  uint64_t query_retries = 0;
  uint64_t memory_bytes = 0;
  uint64_t scratch_bytes = 0;   // bulk-path scratch kept for the next bulk call (in memory_bytes)
  uint64_t lazy_updates = 0;    // batches applied lazily (status table only; the chain left stale)
  uint64_t counted_updates = 0; // bulk batches applied by counting repeats (one integer delta)
  uint64_t candidate_queries = 0; // stale-end queries answered from the counted batch's candidates
  uint64_t stale = 0;           // 1 while the chain is stale from a lazy batch
  uint64_t stale_scans = 0;     // queries on a stale chain answered by scanning the status table
};

class SemiOrderedIndex {
  friend struct TestAccess;

 public:
  static constexpr uint32_t kNil = 0x3FFFFFFFu;  // 30-bit node index "none"
  static constexpr int kMaxLevel = 12;  // lo + tower fill one cache line; 4^12 nodes
  static constexpr uint32_t kMaxNodeCap = 1u << 20;  // slot field is 20 bits
  static constexpr uint64_t kMaxCapacity = 0xFFFFFFFEull;

  enum Status : uint64_t { ABSENT = 0, IDLE = 1, UPDATING = 2 };
  // Status 3, only inside an exclusive erase_checked: checked earlier in the same batch.
  static constexpr uint64_t kCheckMark = 3;

  // capacity: ids are 0..capacity-1. node_size: B, items per node (8..65536). The default,
  // 2048, was chosen by measurement (bench: 10M unit increments at n = 1M with a top-1000
  // every 1000): larger nodes mean fewer skip-list levels to search per move, smaller
  // ones a cheaper boundary node per query; 1024-4096 were within noise, 256 was 2.4x slower.
  static constexpr uint32_t kDefaultNodeSize = 2048;
  // bulk_fraction: < 0 (the default, kAutoBulk) chooses each batch's path by its estimated
  // cost (see choose_path): item moves, the exclusive rebuild, or the lazy apply. > 0:
  // batches with at least bulk_fraction * size() items take the exclusive rebuild path,
  // the others item moves (the rule before issue 17). 0 disables the exclusive paths.
  static constexpr double kAutoBulk = -1.0;
  // Batches below this size are never applied lazily (they stay item moves, which need no
  // exclusive section), unless the cost model would rebuild them.
  static constexpr size_t kLazyMin = 1024;
  // Erase batches of this size or more run exclusively (erase_exclusive). Measured per id
  // at n = 10^6 (C++, CPU time, medians of 40; item by item / exclusive): 64 ids 70 / 60 ns
  // warm, 400 / 320 ns with cold caches; 1,000 ids 49 / 15 and 154 / 85 ns. Below ~64 the
  // exclusive section's fixed cost (~1.5 us cold) eats the gain.
  static constexpr size_t kExclusiveEraseMin = 64;
  explicit SemiOrderedIndex(uint64_t capacity, uint32_t node_size = kDefaultNodeSize, double bulk_fraction = kAutoBulk)
      : capacity_(capacity), node_size_(node_size), bulk_fraction_(bulk_fraction) {
    if (capacity == 0 || capacity > kMaxCapacity)
      throw std::invalid_argument("capacity must be in [1, 4294967294], got " + std::to_string(capacity));
    if (node_size < 8 || node_size > 65536)
      throw std::invalid_argument("node_size must be in [8, 65536], got " + std::to_string(node_size));
    entries_ = std::unique_ptr<Entry[], EntriesDeleter>(allocate_entries(capacity), EntriesDeleter{capacity});
    max_nodes_ = capacity * 2 + 4096;
    chunk_count_ = (max_nodes_ + kChunk - 1) / kChunk;
    chunks_.reset(new std::atomic<Node*>[chunk_count_]);
    for (uint64_t i = 0; i < chunk_count_; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
    head_ = alloc_node(node_size_);
    Node& h = node(head_);
    h.lo = detail::Key{-std::numeric_limits<double>::infinity(), 0};
    h.height = kMaxLevel;
    h.set_hi(kPlusInf);
    tail_.store(head_, std::memory_order_relaxed);
  }

  ~SemiOrderedIndex() {
    for (uint64_t c = 0; c < chunk_count_; ++c) {
      Node* chunk = chunks_[c].load(std::memory_order_relaxed);
      if (!chunk) continue;
      for (uint32_t i = 0; i < kChunk; ++i) chunk[i].release();
      delete[] chunk;
    }
  }

  SemiOrderedIndex(const SemiOrderedIndex&) = delete;
  SemiOrderedIndex& operator=(const SemiOrderedIndex&) = delete;

  uint64_t capacity() const noexcept { return capacity_; }
  uint32_t node_size() const noexcept { return node_size_; }

  // O(#shards). Exact when no insert/erase is in flight.
  uint64_t size() const noexcept {
    int64_t s = 0;
    for (const auto& sh : shards_) s += sh.size.load(std::memory_order_relaxed);
    return s < 0 ? 0 : uint64_t(s);
  }

  // O(1), lock-free. Precondition: id < capacity.
  bool contains(uint32_t id) const noexcept {
    return status_of(entries_[id].meta.load(std::memory_order_acquire)) != ABSENT;
  }
  // O(1), lock-free: the current score (meaningful only if contains(id)).
  double score(uint32_t id) const noexcept { return entries_[id].score.load(std::memory_order_acquire); }

  // Batch validation for callers that must refuse a whole batch before changing anything.
  // Returns the first i whose id is absent (sets *absent) or whose score + delta would not
  // be finite (deltas may be null: then `delta` is used for every id); n if all pass.
  // O(n), with prefetching, lock-free (racing erases are the caller's business).
  size_t find_bad_update(const uint32_t* ids, const double* deltas, double delta, size_t n, bool* absent,
                         unsigned threads = 1) const {
    const unsigned T = unsigned(std::max<size_t>(1, std::min<size_t>(threads, n / kMinPerThread)));
    if (T > 1) {  // chunks in parallel; the first bad index overall wins
      std::vector<size_t> first(T, n);
      std::vector<char> why(T, 0);
      detail::parallel_for(n, T, [&](unsigned t, size_t b, size_t e) {
        bool a = false;
        const size_t i = find_bad_update(ids + b, deltas ? deltas + b : nullptr, delta, e - b, &a, 1);
        if (i < e - b) {
          first[t] = b + i;
          why[t] = a;
        }
      });
      for (unsigned t = 0; t < T; ++t)
        if (first[t] < n) {
          *absent = why[t];
          return first[t];
        }
      return n;
    }
    for (size_t i = 0; i < n; ++i) {
#if defined(__GNUC__)
      if (i + 64 < n) __builtin_prefetch(&entries_[ids[i + 64]], 0, 1);  // ~a DRAM round trip ahead
#endif
      const Entry& e = entries_[ids[i]];
      if (status_of(e.meta.load(std::memory_order_acquire)) == ABSENT) {
        *absent = true;
        return i;
      }
      const double d = deltas ? deltas[i] : delta;
      if (!std::isfinite(e.score.load(std::memory_order_relaxed) + d)) {
        *absent = false;
        return i;
      }
    }
    return n;
  }
  // Why a checked batch was refused: the first bad position and what was wrong there.
  enum class BadInput : uint8_t { kNone, kOutOfRange, kAbsent, kNotFinite, kRepeated };
  struct BatchError {
    size_t index;  // n when the batch was applied
    BadInput what;
  };

  // Checked update straight from the caller's id buffer, of any integer type (no
  // conversion copy). Every id must lie in [0, capacity) and be present, and every
  // resulting score must be finite; otherwise nothing changes and the first bad position
  // is returned. deltas may be null: then `delta` is added to every id.
  // On the bulk path (see use_bulk) the checks ride along with the apply pass, which keeps
  // an undo log, so a refused batch is rolled back exactly; each thread owns a pseudo-random
  // share of the id space, so repeated ids are summed in batch order and the result does
  // not depend on `threads`. Otherwise the ids are checked first, then applied.
  // Thread safety as update().
  template <class IdT>
  BatchError update_checked(const IdT* ids, const double* deltas, double delta, size_t n, unsigned threads = 1,
                            int bulk = -1) {
    static_assert(std::is_integral<IdT>::value, "ids must be integers");
    const int sign = delta_sign(deltas, delta, n);
    const Path path = choose_path(n, bulk, sign);
    if (path != Path::kMoves)
      return bulk_apply(ids, deltas, delta, n, threads, /*assign=*/false, /*lenient=*/false,
                        path == Path::kLazy ? sign : 0);
    std::vector<uint32_t> v(n);
    for (size_t i = 0; i < n; ++i) {
      if (!id_in_range(ids[i])) return {i, BadInput::kOutOfRange};
      v[i] = uint32_t(ids[i]);
    }
    if (!deltas && n >= kSortedBatch) {
      // One delta for all: the check rides along with order_by_target's pass over the
      // status entries (one id, one verdict, whatever its repeats); only a refused batch
      // runs find_bad_update, for the first bad position in batch order.
      std::vector<uint32_t> sid;
      std::vector<double> sd;
      sort_and_combine(v.data(), nullptr, delta, n, sid, sd);
      if (!order_by_target(sid, sd, &delta)) {
        bool absent = false;
        const size_t bad = find_bad_update(v.data(), nullptr, delta, n, &absent, threads);
        if (bad < n) return {bad, absent ? BadInput::kAbsent : BadInput::kNotFinite};
        order_by_target(sid, sd);  // a racing insert made the batch good meanwhile
      }
      apply_adds(sid.data(), sd.data(), sid.size(), threads);
      return {n, BadInput::kNone};
    }
    bool absent = false;
    const size_t bad = find_bad_update(v.data(), deltas, delta, n, &absent, threads);
    if (bad < n) return {bad, absent ? BadInput::kAbsent : BadInput::kNotFinite};
    if (deltas) {
      update(v.data(), deltas, n, threads, 0);
    } else {
      update_scalar(v.data(), delta, n, threads, 0);
    }
    return {n, BadInput::kNone};
  }
  template <class IdT>
  bool id_in_range(IdT id) const noexcept {
    return uint64_t(id) < capacity_;  // a negative signed id converts to a huge value
  }

  // The first i with ids[i] absent (present_wanted) or present (!present_wanted); n if none.
  size_t find_status(const uint32_t* ids, size_t n, bool present_wanted) const {
    for (size_t i = 0; i < n; ++i) {
#if defined(__GNUC__)
      if (i + 64 < n) __builtin_prefetch(&entries_[ids[i + 64]], 0, 1);  // ~a DRAM round trip ahead
#endif
      if (contains(ids[i]) != present_wanted) return i;
    }
    return n;
  }

  // ---- mutations. Preconditions (the Python bindings check them for a whole batch
  // before calling): ids < capacity; insert: ids absent and distinct; update/assign/
  // erase: ids present; values finite. ----

  // Adds deltas[i] to the score of ids[i]. O(1) expected per in-place update, O(log #nodes)
  // for a move. Thread-safe; `threads` > 1 splits the batch over a C++ thread pool.
  // Batches of kSortedBatch or more are first combined (sorted by id, repeats summed in
  // batch order), then ordered by the key each id is headed for (both LSD radix sorts):
  // updates commute, and in that order consecutive moves land in the same or the next
  // node (the finger, and the target lock kept across a run), while threads get disjoint
  // key ranges.
  void update(const uint32_t* ids, const double* deltas, size_t n, unsigned threads = 1,
              int bulk = -1 /* -1 auto, 0 never, 1 always */) {
    const int sign = delta_sign(deltas, 0.0, n);
    const Path path = choose_path(n, bulk, sign);
    if (path != Path::kMoves) {
      bulk_update(ids, deltas, 0.0, n, threads, /*assign=*/false, path == Path::kLazy ? sign : 0);
      return;
    }
    if (n >= kSortedBatch) {
      std::vector<uint32_t> sid;
      std::vector<double> sd;
      sort_and_combine(ids, deltas, 0.0, n, sid, sd);
      order_by_target(sid, sd);
      apply_adds(sid.data(), sd.data(), sid.size(), threads);
      return;
    }
    apply_adds(ids, deltas, n, threads);
  }
  // Same as update with one delta for every id.
  void update_scalar(const uint32_t* ids, double delta, size_t n, unsigned threads = 1, int bulk = -1) {
    const int sign = delta_sign(nullptr, delta, n);
    const Path path = choose_path(n, bulk, sign);
    if (path != Path::kMoves) {
      bulk_update(ids, nullptr, delta, n, threads, /*assign=*/false, path == Path::kLazy ? sign : 0);
      return;
    }
    std::vector<uint32_t> sid;
    std::vector<double> sd;
    if (n >= kSortedBatch) {
      sort_and_combine(ids, nullptr, delta, n, sid, sd);
      order_by_target(sid, sd);
    } else {
      sid.assign(ids, ids + n);
      sd.assign(n, delta);
    }
    apply_adds(sid.data(), sd.data(), sid.size(), threads);
  }

  // Sets the score of ids[i] to scores[i] (a concurrent update lands before or after).
  void assign(const uint32_t* ids, const double* scores, size_t n, unsigned threads = 1, int bulk = -1) {
    if (use_bulk(n, bulk)) {
      bulk_update(ids, scores, 0.0, n, threads, /*assign=*/true);
      return;
    }
    detail::parallel_for(n, threads, [&](unsigned, size_t b, size_t e) {
      run_pinned(b, e, [&](size_t i) { set(ids[i], scores[i]); });
    });
  }

  // Inserts absent ids with their scores. O(log #nodes) each; a large batch takes the
  // bulk path (O(n) bucketing).
  void insert(const uint32_t* ids, const double* scores, size_t n, unsigned threads = 1, int bulk = -1) {
    if (use_bulk(n, bulk) || (bulk == -1 && n >= 4096 && size() == 0)) {
      bulk_insert(ids, scores, n, threads);
      return;
    }
    detail::parallel_for(n, threads, [&](unsigned, size_t b, size_t e) {
      run_pinned(b, e, [&](size_t i) { insert_one(ids[i], scores[i]); });
    });
  }

  // Removes present ids. O(1) each plus an occasional O(log #nodes) node removal. A batch
  // of kExclusiveEraseMin or more (unless bulk_fraction = 0) runs exclusively: no
  // ownership CAS and no node locks, the status entries and node slots prefetched ahead
  // (see kExclusiveEraseMin for the costs); smaller batches are lock-free per id except
  // for the node lock.
  void erase(const uint32_t* ids, size_t n) {
    if (n >= kExclusiveEraseMin && bulk_fraction_ != 0) {
      erase_exclusive(ids, n);
      return;
    }
    run_pinned(0, n, [&](size_t i) {
      prefetch_entry(ids, i + 8, n);
      erase_one(ids[i]);
    });
  }

  // erase() that first checks every id is present and, with refuse_repeats, that no id
  // comes twice: returns {n, kNone} with every id erased, or the first bad position with
  // nothing erased (kAbsent; kRepeated: the id came earlier in the batch). A batch that
  // erase() runs exclusively is checked inside the same exclusive section, so the check
  // cannot go stale: the check pass marks each id's status entry (a repeat finds its
  // mark: no sort or bitmap of the batch; a refused batch gets its entries back) and
  // keeps its meta word, so the erase pass prefetches node slots from that copy and finds
  // the entries in cache (1e5 ids at n = 1e6: 1.3 ms, against 0.36 + 1.04 ms as two
  // calls). A smaller batch is checked first (repeats by a sorted copy), then erased item
  // by item (an erase racing with it may make some of its ids absent by then: those are
  // skipped, as erase() does). Without refuse_repeats a repeat counts as present and is
  // skipped by the erase.
  BatchError erase_checked(const uint32_t* ids, size_t n, bool refuse_repeats) {
    if (n < kExclusiveEraseMin || bulk_fraction_ == 0) {
      if (refuse_repeats && n > 1) {
        std::vector<uint32_t> sorted(ids, ids + n);
        std::sort(sorted.begin(), sorted.end());
        const auto it = std::adjacent_find(sorted.begin(), sorted.end());
        if (it != sorted.end()) {
          size_t i = 0;
          while (ids[i] != *it) ++i;
          ++i;
          while (ids[i] != *it) ++i;
          return {i, BadInput::kRepeated};
        }
      }
      const size_t bad = find_status(ids, n, true);
      if (bad < n) return {bad, BadInput::kAbsent};
      erase(ids, n);
      return {n, BadInput::kNone};
    }
    ExclusiveGuard ex(*this);
    drop_candidates();
    // The meta words go to the bulk path's scratch (exclusive here too): a fresh vector
    // per call zero-filled and faulted in its pages every time.
    if (scratch_.buffers.empty()) scratch_.use(1);
    detail::ScratchLog<uint64_t>& words = scratch_.words(0);
    words.clear();
    words.reserve(n);
    uint64_t* const metas = words.data();
    BatchError bad{n, BadInput::kNone};
    size_t i = 0;
    for (; i < n; ++i) {
      if (i + 64 < n) __builtin_prefetch(&entries_[ids[i + 64]], 1, 1);
      std::atomic<uint64_t>& mm = entries_[ids[i]].meta;
      const uint64_t m = mm.load(std::memory_order_relaxed);
      if (status_of(m) == kCheckMark) {
        if (refuse_repeats) {
          bad = {i, BadInput::kRepeated};
          break;
        }
        metas[i] = metas[0];  // a repeat: the erase pass finds it absent and skips it
        continue;
      }
      if (status_of(m) == ABSENT) {
        bad = {i, BadInput::kAbsent};
        break;
      }
      metas[i] = m;
      mm.store(with_status(m, kCheckMark), std::memory_order_relaxed);
      // The node's slot bookkeeping (count, hwm, slot and hole pointers: one line) for
      // the erase pass: with cold caches its miss sat in front of every slot prefetch.
      __builtin_prefetch(reinterpret_cast<const char*>(&node(node_of(m))) + kNodeSlotLine, 1, 1);
    }
    if (bad.index < n) {  // give the marked entries back (a repeat's slot holds metas[0])
      for (size_t j = 0; j < i; ++j) {
        std::atomic<uint64_t>& mm = entries_[ids[j]].meta;
        if (status_of(mm.load(std::memory_order_relaxed)) == kCheckMark) mm.store(metas[j], std::memory_order_relaxed);
      }
    } else {
      erase_exclusive_locked(ids, n, metas);
    }
    trim_scratch();
    return bad;
  }
  // erase_checked without refusing repeats: returns n, or the first absent id's position.
  size_t erase_present(const uint32_t* ids, size_t n) { return erase_checked(ids, n, false).index; }

  // ---- queries ----

  // Writes the min(n, size) smallest (score, id) keys, ascending, to out_ids/out_scores
  // and returns how many. O(n log n + B) (+ a one-off O(M) split of an oversized node).
  // IdT: any integer type wide enough for ids (uint32_t, int64_t for numpy output, ...).
  template <class IdT>
  size_t bottom(size_t n, IdT* out_ids, double* out_scores) {
    return query(n, false, out_ids, out_scores);
  }
  // The min(n, size) largest keys, descending.
  template <class IdT>
  size_t top(size_t n, IdT* out_ids, double* out_scores) {
    return query(n, true, out_ids, out_scores);
  }

  // Verifies every invariant in O(capacity + size + #nodes * levels); throws
  // std::logic_error naming the first broken one. Runs exclusively (waits for batches).
  void check() {
    ExclusiveGuard ex(*this);
    check_locked();
  }

  // O(#nodes + #chunks). Safe to call at any time; counters are approximate while
  // other threads run.
  IndexStats stats() {
    Pin pin(*this);
    IndexStats st;
    st.size = size();
    st.capacity = capacity_;
    st.node_size = node_size_;
    for (const auto& sh : shards_) {
      st.moves += sh.moves.load(std::memory_order_relaxed);
      st.in_place_updates += sh.in_place.load(std::memory_order_relaxed);
      st.splits += sh.splits.load(std::memory_order_relaxed);
      st.node_removals += sh.removals.load(std::memory_order_relaxed);
      st.query_retries += sh.query_retries.load(std::memory_order_relaxed);
    }
    st.rebuilds = rebuilds_.load(std::memory_order_relaxed);
    st.lazy_updates = lazy_updates_.load(std::memory_order_relaxed);
    st.counted_updates = counted_updates_.load(std::memory_order_relaxed);
    st.candidate_queries = candidate_queries_.load(std::memory_order_relaxed);
    st.stale_scans = stale_scans_.load(std::memory_order_relaxed);
    st.stale = dirty_.load(std::memory_order_relaxed) != 0;
    uint64_t items_bytes = 0;
    for (uint32_t x = head_; x != kNil; x = node(x).next[0].load(std::memory_order_acquire)) {
      const Node& nd = node(x);
      ++st.nodes;
      uint32_t c = nd.count.load(std::memory_order_relaxed);
      if (c == 0) ++st.empty_nodes;
      if (c > node_size_) ++st.oversized_nodes;
      st.max_level = std::max<uint64_t>(st.max_level, nd.height);
    }
    uint64_t chunks = 0;
    for (uint64_t c = 0; c < chunk_count_; ++c)
      if (chunks_[c].load(std::memory_order_acquire)) ++chunks;
    // Counted as nodes get their slots, not read off the nodes: a free node's slot array
    // may be reallocated by a split while this runs.
    items_bytes = uint64_t(std::max<int64_t>(0, slot_bytes_.load(std::memory_order_relaxed)));
    st.scratch_bytes = scratch_bytes_.load(std::memory_order_relaxed);
    st.memory_bytes = sizeof(*this) + capacity_ * sizeof(Entry) + chunk_count_ * sizeof(std::atomic<Node*>) +
                      chunks * kChunk * sizeof(Node) + items_bytes + st.scratch_bytes;
    return st;
  }

 private:
  // ------------------------------------------------------------------ layout
  struct Entry {
    std::atomic<double> score{0.0};
    std::atomic<uint64_t> meta{0};  // status:2 | slot:20 | node:30 | tag:12
  };
  static_assert(sizeof(Entry) == 16, "status entry must stay 16 bytes");
  // Why a 12-bit tag is enough (no room to widen it: slot and node need their bits, and a
  // wider meta would make the entry 24 bytes). A tag that wrapped (4,096 relocations
  // between an owner's read of the meta word and its CAS) lets the CAS succeed on an equal
  // word; that commits no stale decision:
  //  * every CAS on a meta word writes back the node and slot it read, and an equal word
  //    means those are the id's place now;
  //  * a move, an erase, a split and a node sort read the meta word again under the node's
  //    lock, where no relocation of the id can run, and decide from the current score;
  //  * a CAS that relocates an idle id (a move without ownership, a split sending it up)
  //    can succeed on an equal word after an owner took and released the id in between
  //    (ownership leaves the tag alone), having judged a newer score in range of the old
  //    node: so the relocating thread reads the score after its CAS and, if the id's new
  //    node does not hold it, places the id by the owner protocol once it has unlocked;
  //  * the one lock-free decision, the owner's "the score is still in my node's range"
  //    release, stays true: while the owner is in flight it holds a pin, so its node
  //    cannot be freed and reused; a split moves ids only into a new node, never back, so
  //    an id found in the same node and slot never left it, and each split of that node
  //    kept the id below the pivot, inside the narrowed range (lo never changes). Sorts
  //    move the id within the node. A move without ownership (move_unowned) never starts
  //    on an owned id (it reads the status under the node locks); one that read it idle
  //    before the owner's CAS relocates it once (tag bumped), and no second one can bring
  //    it back while the owner holds it.

  static constexpr uint64_t kStatusMask = 0x3;
  static constexpr int kSlotShift = 2, kNodeShift = 22, kTagShift = 52;
  static constexpr uint64_t kSlotMask = (1ull << 20) - 1, kNodeMask = (1ull << 30) - 1, kTagMask = (1ull << 12) - 1;
  static uint64_t status_of(uint64_t m) noexcept { return m & kStatusMask; }
  static uint32_t slot_of(uint64_t m) noexcept { return uint32_t((m >> kSlotShift) & kSlotMask); }
  static uint32_t node_of(uint64_t m) noexcept { return uint32_t((m >> kNodeShift) & kNodeMask); }
  static uint64_t tag_of(uint64_t m) noexcept { return (m >> kTagShift) & kTagMask; }
  static uint64_t make_meta(uint64_t status, uint32_t nd, uint32_t slot, uint64_t tag) noexcept {
    return status | (uint64_t(slot) << kSlotShift) | (uint64_t(nd) << kNodeShift) | ((tag & kTagMask) << kTagShift);
  }
  static uint64_t with_status(uint64_t m, uint64_t st) noexcept { return (m & ~kStatusMask) | st; }
  static uint64_t relocated(uint64_t m, uint32_t nd, uint32_t slot) noexcept {
    return make_meta(status_of(m), nd, slot, tag_of(m) + 1);
  }

  static constexpr detail::Key kPlusInf{std::numeric_limits<double>::infinity(), 0xFFFFFFFFu};

  static constexpr uint32_t kTomb = 0xFFFFFFFFu;  // an empty slot (never a valid id)
  using Packed = unsigned __int128;               // a (score, id) key as one integer

  // The search path (lo and the tower) shares one cache line. Removing an id leaves a
  // tombstone and marks the slot in `holes`, so no other id's status entry is touched
  // (a swap-remove would cost a random memory access per move).
  struct alignas(64) Node {
    detail::Key lo{0.0, 0};  // immutable while the node is linked
    std::atomic<uint32_t> next[kMaxLevel];
    std::atomic<double> hi_score{0.0};
    std::atomic<uint32_t> hi_id{0};
    std::atomic<uint32_t> range_ver{0};  // seqlock over hi (odd while changing)
    std::atomic<uint32_t> items_ver{0};  // seqlock over count/items (odd while changing)
    detail::SpinLock lock;
    std::atomic<uint32_t> count{0};  // live ids
    std::atomic<uint32_t> hwm{0};    // slots [0, hwm) hold ids or tombstones
    uint32_t cap = 0;
    uint32_t hole_hint = 0;  // no holes in bitmap words below this one
    std::atomic<uint32_t>* items = nullptr;
    uint64_t* holes = nullptr;  // bit i set: slot i < hwm is a tombstone (lock-protected)
    std::atomic<uint8_t> dead{0};
    std::atomic<uint8_t> fully_linked{0};
    uint8_t height = 1;
    std::atomic<uint32_t> prev{kNil};
    // Query-side lazy refinement: the items version a query last saw, and the version
    // right after a query sorted the slots by key (then later queries skip the sort).
    std::atomic<uint32_t> seen_ver{~0u};
    std::atomic<uint32_t> sorted_ver{~0u};
    uint64_t retire_epoch = 0;

    static uint32_t hole_words(uint32_t c) noexcept { return (c + 63) / 64; }
    void allocate(uint32_t c) {
      release();
      items = new std::atomic<uint32_t>[c];
      holes = new uint64_t[hole_words(c)]();
      cap = c;
    }
    void release() noexcept {
      delete[] items;
      delete[] holes;
      items = nullptr;
      holes = nullptr;
      cap = 0;
    }
    // Empties the slot bookkeeping (node locked or unreachable).
    void reset_slots() noexcept {
      std::fill(holes, holes + hole_words(cap), uint64_t(0));
      hole_hint = 0;
      hwm.store(0, std::memory_order_release);
      count.store(0, std::memory_order_release);
    }

    Node() {
      for (auto& n : next) n.store(kNil, std::memory_order_relaxed);
    }
    // Acquire loads keep the seqlock's closing version read after them (no fence needed,
    // which also keeps ThreadSanitizer exact); seq_cst (as cheap on x86 and ARM) so that an
    // owner's lock-free range check sees a split's narrowing fenced before the owner's
    // ownership CAS (see split_locked).
    detail::Key hi() const noexcept {
      return detail::Key{hi_score.load(std::memory_order_seq_cst), hi_id.load(std::memory_order_seq_cst)};
    }
    // Seqlock writers hold the node lock, so plain stores bump the version; the data
    // stores are release stores, which keeps the odd version ordered before them
    // without a fence (free on x86, and exact under ThreadSanitizer).
    void set_hi(detail::Key k) noexcept {
      const uint32_t v = range_ver.load(std::memory_order_relaxed);
      range_ver.store(v + 1, std::memory_order_relaxed);
      hi_score.store(k.score, std::memory_order_release);
      hi_id.store(k.id, std::memory_order_release);
      range_ver.store(v + 2, std::memory_order_release);
    }
    // Node locked (its range cannot change): whether the range holds k.
    bool holds_locked(const detail::Key& k) const noexcept { return lo <= k && k < hi(); }
    // Lock-free: true only if a consistent read of the range contains k.
    bool range_contains(const detail::Key& k) const noexcept {
      uint32_t v1 = range_ver.load(std::memory_order_acquire);
      if (v1 & 1u) return false;
      detail::Key h = hi();
      if (range_ver.load(std::memory_order_relaxed) != v1) return false;
      return lo <= k && k < h;
    }
    void begin_items_change() noexcept {
      items_ver.store(items_ver.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    void end_items_change() noexcept {
      items_ver.store(items_ver.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
  };

  // Offset of the Node line holding items_ver, count, hwm and the slot and hole pointers
  // (lo and the tower fill the first line): what erases and moves write besides the slot.
  static constexpr size_t kNodeSlotLine = 64;

  static constexpr uint32_t kChunk = 256;

  struct alignas(64) Shard {
    std::atomic<int64_t> size{0};
    std::atomic<uint64_t> moves{0}, in_place{0}, splits{0}, removals{0}, query_retries{0};
    std::atomic<uint64_t> structure{0};  // splits and removals, for the query's retry
  };
  static constexpr unsigned kShards = 32;

  // Threads get shards round-robin, so up to kShards threads never share a counter line.
  Shard& my_shard() noexcept {
    static std::atomic<unsigned> next_shard{0};
    thread_local unsigned idx = next_shard.fetch_add(1, std::memory_order_relaxed) % kShards;
    return shards_[idx];
  }
  static void bump(std::atomic<uint64_t>& c, uint64_t by = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);  // sharded: near-uncontended
  }
  static void bump_rmw(std::atomic<uint64_t>& c) noexcept { c.fetch_add(1, std::memory_order_relaxed); }
  uint64_t structure_stamp() const noexcept {
    uint64_t s = 0;
    for (const auto& sh : shards_) s += sh.structure.load(std::memory_order_acquire);
    return s;
  }

  Node& node(uint32_t i) const noexcept {
    return chunks_[i / kChunk].load(std::memory_order_acquire)[i % kChunk];
  }

  // ------------------------------------------------------------------ epochs
  // Two reader counters (SRCU-like). A batch pins the current epoch; nodes retired at
  // epoch r are reused once the epoch reaches r + 2.
  struct Pin {
    SemiOrderedIndex* idx;
    uint64_t epoch;
    explicit Pin(SemiOrderedIndex& x) : idx(&x), epoch(x.pin()) {}
    ~Pin() { idx->unpin(epoch); }
    Pin(const Pin&) = delete;
    Pin& operator=(const Pin&) = delete;
  };

  uint64_t pin() noexcept {
    unsigned spins = 0;
    for (;;) {
      while (exclusive_.load(std::memory_order_seq_cst)) detail::cpu_relax(spins);
      uint64_t e = epoch_.load(std::memory_order_seq_cst);
      pins_[e & 1].fetch_add(1, std::memory_order_seq_cst);
      if (epoch_.load(std::memory_order_seq_cst) == e && !exclusive_.load(std::memory_order_seq_cst)) {
        ++pin_serial();  // fingers taken under an earlier pin are no longer trusted
        return e;
      }
      pins_[e & 1].fetch_sub(1, std::memory_order_seq_cst);
    }
  }
  void unpin(uint64_t e) noexcept {
    pins_[e & 1].fetch_sub(1, std::memory_order_seq_cst);
    if (retired_count_.load(std::memory_order_relaxed) > 0) try_reclaim();
  }

  static constexpr size_t kRepin = 1024;  // items per pin: lets reclamation advance during long batches
  template <class Fn>
  void run_pinned(size_t b, size_t e, Fn&& fn) {
    for (size_t start = b; start < e; start += kRepin) {
      Pin p(*this);
      drop_candidates();  // run_pinned serves the item paths that change scores or membership
      size_t stop = std::min(e, start + kRepin);
      for (size_t i = start; i < stop; ++i) fn(i);
    }
  }

  void retire(uint32_t x) {
    std::lock_guard<std::mutex> g(retire_mu_);
    node(x).retire_epoch = epoch_.load(std::memory_order_seq_cst);
    retired_.push_back(x);
    retired_count_.store(retired_.size(), std::memory_order_relaxed);
  }

  void try_reclaim() {
    std::unique_lock<std::mutex> g(retire_mu_, std::try_to_lock);
    if (!g.owns_lock()) return;
    uint64_t e = epoch_.load(std::memory_order_seq_cst);
    if (pins_[(e + 1) & 1].load(std::memory_order_seq_cst) == 0) {
      epoch_.compare_exchange_strong(e, e + 1, std::memory_order_seq_cst);
      e = epoch_.load(std::memory_order_seq_cst);
    }
    size_t kept = 0;
    std::lock_guard<detail::SpinLock> ga(alloc_mu_);
    for (uint32_t x : retired_) {
      if (node(x).retire_epoch + 2 <= e) {
        free_.push_back(x);
      } else {
        retired_[kept++] = x;
      }
    }
    retired_.resize(kept);
    retired_count_.store(kept, std::memory_order_relaxed);
  }

  struct ExclusiveGuard {
    SemiOrderedIndex& idx;
    std::unique_lock<std::mutex> g;
    explicit ExclusiveGuard(SemiOrderedIndex& x) : idx(x), g(x.exclusive_mu_) {
      idx.exclusive_.store(true, std::memory_order_seq_cst);
      unsigned spins = 0;
      while (idx.pins_[0].load(std::memory_order_seq_cst) + idx.pins_[1].load(std::memory_order_seq_cst) != 0)
        detail::cpu_relax(spins);
    }
    ~ExclusiveGuard() { idx.exclusive_.store(false, std::memory_order_seq_cst); }
  };

  // ------------------------------------------------------------------ nodes
  // Gives a node (locked, unreachable, or the bulk path's) slots for cap ids.
  void reallocate_slots(Node& nd, uint32_t cap) {
    slot_bytes_.fetch_add(slot_bytes_of(cap) - slot_bytes_of(nd.cap), std::memory_order_relaxed);
    nd.allocate(cap);
  }
  // What a node's slots and hole bitmap take for cap ids (stats() counts it).
  static int64_t slot_bytes_of(uint32_t cap) noexcept {
    return int64_t(cap) * int64_t(sizeof(uint32_t)) + int64_t(Node::hole_words(cap)) * 8;
  }

  uint32_t alloc_node(uint32_t cap) {
    uint32_t x;
    {
      std::lock_guard<detail::SpinLock> g(alloc_mu_);
      if (!free_.empty()) {
        x = free_.back();
        free_.pop_back();
      } else {
        if (next_fresh_ >= max_nodes_ || next_fresh_ >= kNil)
          throw std::length_error("socbi: node pool exhausted (a reader pinned for too long?)");
        x = uint32_t(next_fresh_++);
        uint64_t c = x / kChunk;
        if (!chunks_[c].load(std::memory_order_relaxed)) chunks_[c].store(new Node[kChunk], std::memory_order_release);
      }
    }
    Node& nd = node(x);
    if (nd.cap != cap) reallocate_slots(nd, cap);
    nd.reset_slots();
    nd.seen_ver.store(~0u, std::memory_order_relaxed);
    nd.sorted_ver.store(~0u, std::memory_order_relaxed);
    nd.dead.store(0, std::memory_order_relaxed);
    SOCBI_TEST_HOOK("reused node marked live", x);
    nd.fully_linked.store(0, std::memory_order_relaxed);
    nd.prev.store(kNil, std::memory_order_relaxed);
    for (auto& n : nd.next) n.store(kNil, std::memory_order_relaxed);
    nd.height = 1;
    return x;
  }

  uint8_t random_height() noexcept {
    thread_local uint64_t state = uint64_t(std::hash<std::thread::id>()(std::this_thread::get_id())) * 0x9E37u + 1;
    uint64_t r = detail::splitmix64(state);
    uint8_t h = 1;
    while (h < kMaxLevel && (r & 3u) == 0) {
      ++h;
      r >>= 2;
    }
    return h;
  }

  // Last node whose lo <= k (may be dead if a removal races; callers validate under lock).
  uint32_t find_floor(const detail::Key& k) const noexcept {
    uint32_t x = head_;
    for (int l = kMaxLevel - 1; l >= 0; --l) {
      for (;;) {
        uint32_t n = node(x).next[l].load(std::memory_order_acquire);
        if (n == kNil || !(node(n).lo <= k)) break;
        x = n;
      }
    }
    return x;
  }

  // Finds the level-l predecessor of key k: last node with lo < k at level l.
  uint32_t find_pred(const detail::Key& k, int level) const noexcept {
    uint32_t x = head_;
    for (int l = kMaxLevel - 1; l >= level; --l) {
      for (;;) {
        uint32_t n = node(x).next[l].load(std::memory_order_acquire);
        if (n == kNil || !(node(n).lo < k)) break;
        x = n;
      }
    }
    return x;
  }

  // Lock order: descending (lo, index). Returns true if a must be locked before b.
  bool locks_before(uint32_t a, uint32_t b) const noexcept {
    const detail::Key& ka = node(a).lo;
    const detail::Key& kb = node(b).lo;
    if (kb < ka) return true;
    if (ka < kb) return false;
    return a > b;
  }

  // Node x locked; stores id in a hole or at the end, returns the slot. Precondition:
  // count < cap. O(1) for node-sized nodes (the hole bitmap is B/64 words).
  static uint32_t append_locked(Node& x, uint32_t id) noexcept {
    const uint32_t c = x.count.load(std::memory_order_relaxed);
    const uint32_t h = x.hwm.load(std::memory_order_relaxed);
    uint32_t slot;
    if (c < h) {
      uint32_t w = x.hole_hint;
      while (x.holes[w] == 0) ++w;
      slot = w * 64 + uint32_t(__builtin_ctzll(x.holes[w]));
      x.holes[w] &= x.holes[w] - 1;
      x.hole_hint = w;
    } else {
      slot = h;
      x.hwm.store(h + 1, std::memory_order_release);
    }
    x.items[slot].store(id, std::memory_order_release);
    x.count.store(c + 1, std::memory_order_release);
    return slot;
  }

  // Node x locked; leaves a tombstone at `slot`. O(1).
  static void remove_slot_locked(Node& x, uint32_t slot) noexcept {
    x.items[slot].store(kTomb, std::memory_order_release);
    const uint32_t c = x.count.load(std::memory_order_relaxed) - 1;
    const uint32_t h = x.hwm.load(std::memory_order_relaxed);
    if (c == 0) {
      for (uint32_t i = 0; i < h; ++i) x.items[i].store(kTomb, std::memory_order_release);
      std::fill(x.holes, x.holes + Node::hole_words(h), uint64_t(0));
      x.hole_hint = 0;
      x.hwm.store(0, std::memory_order_release);
    } else if (slot + 1 == h) {
      x.hwm.store(h - 1, std::memory_order_release);
    } else {
      x.holes[slot / 64] |= uint64_t(1) << (slot % 64);
      x.hole_hint = std::min(x.hole_hint, slot / 64);
    }
    x.count.store(c, std::memory_order_release);
  }

  // Splits locked live node xi at the median of its in-range keys into xi and a new node
  // linked after it at level 0. Returns the new node, or kNil if it cannot split (fewer
  // than two in-range keys: the caller backs off and retries). The caller unlocks xi and
  // then calls finish_split(new node) with no lock held.
  static constexpr uint32_t kSplitSample = 64;
  uint32_t split_locked(uint32_t xi) {
    Node& x = node(xi);
    pending_settles().clear();  // left by a split that threw
    const uint32_t cnt = x.count.load(std::memory_order_relaxed);
    if (cnt < 2) return kNil;
    const detail::Key hi = x.hi();
    const uint32_t xhwm = x.hwm.load(std::memory_order_relaxed);
    // Packed keys: the same order as Key for stored scores (finite, never -0.0) and the
    // +/-inf node bounds, and cheaper to select in than (double, id) pairs.
    std::vector<Packed> keys;
    const Packed plo = pack(x.lo.score, x.lo.id), phi = pack(hi.score, hi.id);
    const bool dirty = dirty_.load(std::memory_order_relaxed) != 0;
    uint32_t out_of_range = 0;
    double scale = 1.0;  // ids of x per key read
    // A clean node of 8 * kSplitSample slots or more is cut at the median of a sample of
    // its keys: the partition below reads every status entry anyway, and a full pass
    // before it cost a fifth of each split (issue 17: +1s on tied counts split a node
    // per ~1,000 moves). Too few in-range keys in the sample, or a stale chain (whose
    // cases below count every id), and every key is read.
    if (!dirty && xhwm >= 8 * kSplitSample) {
      const uint32_t step = xhwm / kSplitSample;
#if defined(__GNUC__)
      for (uint32_t j = 0; j < kSplitSample; ++j) {
        const uint32_t id = x.items[j * step].load(std::memory_order_relaxed);
        if (id != kTomb) __builtin_prefetch(&entries_[id], 1, 3);
      }
#endif
      keys.reserve(kSplitSample);
      uint32_t read = 0;
      for (uint32_t j = 0; j < kSplitSample; ++j) {
        const uint32_t id = x.items[j * step].load(std::memory_order_relaxed);
        if (id == kTomb) continue;
        ++read;
        const Packed k = pack(entries_[id].score.load(std::memory_order_acquire), id);
        if (plo < k && k < phi) {
          keys.push_back(k);
        } else {
          ++out_of_range;
        }
      }
      if (keys.size() >= kSplitSample / 4) {
        scale = double(cnt) / double(read);
      } else {
        keys.clear();
        out_of_range = 0;
      }
    }
    const bool full = keys.empty();
    if (full) keys.reserve(cnt);
    for (uint32_t i = 0; full && i < xhwm; ++i) {
#if defined(__GNUC__)
      if (i + 64 < xhwm) {  // the status entries lie all over the table: fetch them ahead
        const uint32_t ahead = x.items[i + 64].load(std::memory_order_relaxed);
        if (ahead != kTomb) __builtin_prefetch(&entries_[ahead], 1, 3);
      }
#endif
      uint32_t id = x.items[i].load(std::memory_order_relaxed);
      if (id == kTomb) continue;
      const Packed k = pack(entries_[id].score.load(std::memory_order_acquire), id);
      if (plo < k && k < phi) {
        keys.push_back(k);
      } else {
        ++out_of_range;  // in flight: its owner is about to move it
      }
    }
    // On a stale chain (lazy apply) a full node may hold mostly stale ids, which no owner
    // is about to move: split it anyway, at any key strictly inside its range, and send
    // the stale ids to the new upper node (their side of the range holds there too), so
    // that both halves have room.
    detail::Key pivot;
    size_t upper_keys;
    if (keys.size() >= 2) {
      const size_t mid = keys.size() / 2;  // >= 1: at least one in-range key stays below the pivot
      std::nth_element(keys.begin(), keys.begin() + mid, keys.end());
      pivot = detail::Key{unpack_score(keys[mid]), uint32_t(keys[mid])};
      upper_keys = keys.size() - mid;
    } else if (dirty && out_of_range > 0 && keys.size() == 1) {
      pivot = detail::Key{unpack_score(keys[0]), uint32_t(keys[0])};
      upper_keys = 1;
    } else if (dirty && out_of_range > 0) {
      pivot = x.lo.id < 0xFFFFFFFFu ? detail::Key{x.lo.score, x.lo.id + 1}
                                    : detail::Key{std::nextafter(x.lo.score, std::numeric_limits<double>::infinity()), 0};
      if (!(pivot < hi)) return kNil;  // a one-key range: cannot be cut
      upper_keys = 0;
    } else {
      return kNil;
    }
    const detail::Key xlo = x.lo;

    // Sized for the items expected to go up; y grows while it is still unlinked if
    // scores moved meanwhile.
    const uint32_t upper = uint32_t(double(upper_keys + out_of_range) * scale);
    const uint32_t ycap = std::min<uint32_t>(kMaxNodeCap, std::max<uint32_t>(node_size_, upper + node_size_ / 8));
    const uint32_t yi = alloc_node(ycap);
    Node& y = node(yi);
    y.lo = pivot;
    y.height = random_height();
    // Unreachable until linked (fingers are trusted only within the pin they were taken
    // in, so none names a node freed before it), so taking it out of order cannot deadlock.
    y.lock.lock();
    y.set_hi(hi);
    y.begin_items_change();
    x.begin_items_change();
    SOCBI_RACE_HOOK();

    // Narrow x's range first; every item is examined afterwards, so any owner in flight
    // that read the old range is forced (by the tag bump) to re-check, and any later owner
    // reads the narrowed range (the fence below).
    x.set_hi(pivot);
    SOCBI_TEST_TRACE(detail::kTraceWholeIndex, dirty ? "split (stale chain)" : "split", xi, yi, xlo.score,
                     pivot.score, hi.score);
    SOCBI_TEST_HOOK("split narrowed x", xi);

    // Owners that take an id of x after this fence read the narrowed range
    // (range_contains loads hi seq_cst: the fence's store-to-load rule); one that took it
    // before is seen below as UPDATING (the fence's load rule on its seq_cst CAS).
    std::atomic_thread_fence(std::memory_order_seq_cst);

    // Partition x's items: key >= pivot go to y. Re-read each item's meta/score; an id
    // going to y, or staying while an owner holds it (its in-range decision may predate
    // the narrowing), is relocated by CAS (tag bumped; redone if its status changed
    // meanwhile). An idle id that stays keeps its slot and meta word: its next owner reads
    // the narrowed range (issue 17: the CAS of every staying id was a quarter of the cost
    // of a +1 batch on tied counts). y's ids leave tombstones in x.
    auto goes_up = [&](const detail::Key& k) { return !(k < pivot) || (dirty && k < xlo); };
    uint32_t kept = 0, first_hole_word = ~0u;
    for (uint32_t i = 0; i < xhwm; ++i) {
#if defined(__GNUC__)
      if (!full && i + 64 < xhwm) {  // not read yet: fetch ahead
        const uint32_t ahead = x.items[i + 64].load(std::memory_order_relaxed);
        if (ahead != kTomb) __builtin_prefetch(&entries_[ahead], 1, 3);
      }
#endif
      const uint32_t id = x.items[i].load(std::memory_order_relaxed);
      if (id == kTomb) continue;
      std::atomic<uint64_t>& mm = entries_[id].meta;
      uint64_t m = mm.load(std::memory_order_acquire);
      for (;;) {
        detail::Key k{entries_[id].score.load(std::memory_order_acquire), id};
        const bool to_y = goes_up(k);
        SOCBI_TEST_HOOK("split: key read", id);
        if (!to_y && status_of(m) == IDLE) {
          SOCBI_TEST_TRACE(id, "split: kept in x", xi, yi, k.score, xlo.score, pivot.score);
          ++kept;
          break;
        }
        if (to_y && y.hwm.load(std::memory_order_relaxed) == y.cap) {
          grow_unlinked(y, std::min<uint64_t>(kMaxNodeCap, uint64_t(y.cap) * 2));
          continue;
        }
        const uint64_t nm = to_y ? relocated(m, yi, y.hwm.load(std::memory_order_relaxed)) : relocated(m, xi, i);
        if (mm.compare_exchange_weak(m, nm, std::memory_order_seq_cst)) {
          SOCBI_TEST_TRACE(id, to_y ? "split: to y" : "split: relocated in x", xi, yi, k.score,
                           double(status_of(m)), pivot.score);
          if (to_y) {
            // As in move_unowned (see Entry): the key read after the CAS must belong in y,
            // or the id is placed once the split's locks are released (settle_pending).
            if (!goes_up(detail::Key{entries_[id].score.load(std::memory_order_seq_cst), id}))
              pending_settles().push_back(id);
            append_locked(y, id);
            x.items[i].store(kTomb, std::memory_order_release);
            x.holes[i / 64] |= uint64_t(1) << (i % 64);
            first_hole_word = std::min(first_hole_word, i / 64);
          } else {
            ++kept;
          }
          break;
        }
      }
    }
    uint32_t h = xhwm;  // drop the tombstones at the top
    while (h > 0 && x.items[h - 1].load(std::memory_order_relaxed) == kTomb) {
      --h;
      x.holes[h / 64] &= ~(uint64_t(1) << (h % 64));
    }
    x.hole_hint = std::min(x.hole_hint, first_hole_word);
    x.hwm.store(h, std::memory_order_release);
    x.count.store(kept, std::memory_order_release);

    // Publish y after x at level 0 (y's items are all in place).
    const uint32_t succ = x.next[0].load(std::memory_order_relaxed);
    y.prev.store(xi, std::memory_order_relaxed);
    y.next[0].store(succ, std::memory_order_relaxed);
    if (succ != kNil) {
      node(succ).prev.store(yi, std::memory_order_release);
    } else {
      tail_.store(yi, std::memory_order_release);
    }
    x.next[0].store(yi, std::memory_order_release);
    x.end_items_change();
    y.end_items_change();
    y.lock.unlock();
    Shard& sh = my_shard();
    bump_rmw(sh.splits);
    bump_rmw(sh.structure);
    SOCBI_RACE_HOOK();
    return yi;
  }

  // Doubles the arrays of a node no reader can reach yet (a split's new node).
  void grow_unlinked(Node& y, uint64_t new_cap) {
    if (new_cap <= y.cap) throw std::length_error("socbi: node exceeds the 2^20-slot limit");
    slot_bytes_.fetch_add(slot_bytes_of(uint32_t(new_cap)) - slot_bytes_of(y.cap), std::memory_order_relaxed);
    auto* items = new std::atomic<uint32_t>[new_cap];
    auto* holes = new uint64_t[Node::hole_words(uint32_t(new_cap))]();
    const uint32_t h = y.hwm.load(std::memory_order_relaxed);
    for (uint32_t i = 0; i < h; ++i) items[i].store(y.items[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
    std::copy(y.holes, y.holes + Node::hole_words(y.cap), holes);
    delete[] y.items;
    delete[] y.holes;
    __atomic_store_n(&y.items, items, __ATOMIC_RELAXED);  // prefetch_slot may read them
    __atomic_store_n(&y.holes, holes, __ATOMIC_RELAXED);
    y.cap = uint32_t(new_cap);
  }

  // Links a split's new node into the skip-list levels above 0 (lazy skip list: lock
  // one predecessor at a time, validate, link). Holds at most one lock at a time, so it
  // cannot deadlock with removals. Until fully linked the node is never removed.
  void finish_split(uint32_t yi) {
    Node& y = node(yi);
    const detail::Key pivot = y.lo;
    for (int l = 1; l < y.height; ++l) {
      for (;;) {
        uint32_t p = find_pred(pivot, l);
        Node& pn = node(p);
        pn.lock.lock();
        uint32_t s = pn.next[l].load(std::memory_order_acquire);
        bool ok = !pn.dead.load(std::memory_order_acquire) && (s == kNil || pivot < node(s).lo) &&
                  (s == kNil || !node(s).dead.load(std::memory_order_acquire));
        if (ok) {
          y.next[l].store(s, std::memory_order_relaxed);
          pn.next[l].store(yi, std::memory_order_release);
        }
        pn.lock.unlock();
        if (ok) break;
        std::this_thread::yield();
      }
    }
    y.fully_linked.store(1, std::memory_order_release);
    if (y.count.load(std::memory_order_acquire) == 0) try_remove(yi);
  }

  // Ids a split of this thread relocated to its new node while their newest key belonged
  // below the pivot (see split_locked). Placed by settle_pending, with no lock held.
  static std::vector<uint32_t>& pending_settles() noexcept {
    thread_local std::vector<uint32_t> ids;
    return ids;
  }
  void settle_pending() {
    std::vector<uint32_t> ids;
    ids.swap(pending_settles());  // a settle's own split drains its own list
    for (uint32_t id : ids) {
      SOCBI_TEST_TRACE(id, "split: misplaced, settling", 0, 0, entries_[id].score.load(), 0, 0);
      settle(id, entries_[id].meta.load(std::memory_order_seq_cst), /*unowned_first=*/false);
    }
  }

  // Unlinks node zi if it is empty, live, fully linked and not the head.
  void try_remove(uint32_t zi) {
    if (zi == head_) return;
    Node& z = node(zi);
    z.lock.lock();
    if (z.dead.load(std::memory_order_relaxed) || z.count.load(std::memory_order_relaxed) != 0 ||
        !z.fully_linked.load(std::memory_order_acquire)) {
      z.lock.unlock();
      return;
    }
    z.dead.store(1, std::memory_order_release);  // no one inserts into a dead node
    SOCBI_RACE_HOOK();
    const int h = z.height;
    uint32_t preds[kMaxLevel];
    for (;;) {
      int locked = 0;
      bool ok = true;
      for (int l = 0; l < h; ++l) {
        preds[l] = find_pred(z.lo, l);
        // A node at level l+1 is never after one at level l, so locking upward keeps
        // the descending key order.
        if (l == 0 || preds[l] != preds[l - 1]) node(preds[l]).lock.lock();
        locked = l + 1;
        Node& pn = node(preds[l]);
        if (pn.dead.load(std::memory_order_acquire) || pn.next[l].load(std::memory_order_acquire) != zi) {
          ok = false;
          break;
        }
      }
      if (ok) {
        Node& p0 = node(preds[0]);
        const uint32_t succ = z.next[0].load(std::memory_order_relaxed);
        for (int l = h - 1; l >= 1; --l)
          node(preds[l]).next[l].store(z.next[l].load(std::memory_order_relaxed), std::memory_order_release);
        p0.set_hi(z.hi());
        SOCBI_TEST_TRACE(detail::kTraceWholeIndex, "node removed", zi, preds[0], z.lo.score, z.hi().score,
                         p0.lo.score);
        if (succ != kNil) {
          node(succ).prev.store(preds[0], std::memory_order_release);
        } else {
          tail_.store(preds[0], std::memory_order_release);
        }
        p0.next[0].store(succ, std::memory_order_release);
      }
      for (int l = locked - 1; l >= 0; --l)
        if (l == 0 || preds[l] != preds[l - 1]) node(preds[l]).lock.unlock();
      if (ok) break;
      std::this_thread::yield();
    }
    z.lock.unlock();
    Shard& sh = my_shard();
    bump_rmw(sh.removals);
    bump_rmw(sh.structure);
    retire(zi);
  }

  // ------------------------------------------------------------------ batches
  static constexpr size_t kSortedBatch = 256;
  static constexpr size_t kMinPerThread = 16384;  // below this a thread costs more than it saves

  // Stable LSD radix sort of a by key(rec), 11-bit digits, skipping the digits in which
  // no key differs (varying: the OR of all keys XOR their AND). tmp is scratch.
  template <class Rec, class KeyOf>
  static void radix_sort_varying(std::vector<Rec>& a, std::vector<Rec>& tmp, uint64_t varying, const KeyOf& key) {
    constexpr int kBits = 11;
    constexpr uint64_t kMask = (uint64_t(1) << kBits) - 1;
    if (varying == 0) return;
    tmp.resize(a.size());
    uint32_t count[kMask + 1];
    const int top = 64 - __builtin_clzll(varying);
    for (int shift = __builtin_ctzll(varying); shift < top; shift += kBits) {
      if (((varying >> shift) & kMask) == 0) continue;
      std::fill(count, count + kMask + 1, 0u);
      for (const Rec& r : a) ++count[(key(r) >> shift) & kMask];
      uint32_t sum = 0;
      for (uint32_t& c : count) {
        const uint32_t here = c;
        c = sum;
        sum += here;
      }
      for (const Rec& r : a) tmp[count[(key(r) >> shift) & kMask]++] = r;
      a.swap(tmp);
    }
  }

  // Sorts (id, delta) by id (stable: repeats in batch order) and sums repeated ids.
  // O(n) per 11 bits in which the ids differ (two passes for ids below 2^22).
  static void sort_and_combine(const uint32_t* ids, const double* deltas, double delta, size_t n,
                               std::vector<uint32_t>& out_ids, std::vector<double>& out_d) {
    std::vector<uint64_t> keys(n), tmp;
    uint32_t all_and = ~0u, all_or = 0;
    for (size_t i = 0; i < n; ++i) {
      keys[i] = (uint64_t(ids[i]) << 32) | uint64_t(i);
      all_and &= ids[i];
      all_or |= ids[i];
    }
    radix_sort_varying(keys, tmp, uint64_t(all_and ^ all_or) << 32, [](uint64_t k) { return k; });
    out_ids.clear();
    out_d.clear();
    out_ids.reserve(n);
    out_d.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t id = uint32_t(keys[i] >> 32);
      const double d = deltas ? deltas[uint32_t(keys[i])] : delta;
      if (!out_ids.empty() && out_ids.back() == id) {
        out_d.back() = detail::saturating_add(out_d.back(), d);
      } else {
        out_ids.push_back(id);
        out_d.push_back(d);
      }
    }
  }

  // Reorders a combined batch by the key each id is headed for (its score now plus its
  // delta; a hint only, racing updates may change it): consecutive moves then land in the
  // same or the next node, which the finger finds without a skip-list search, and a
  // thread's share of the batch is a contiguous key range. Updates commute, so the order
  // is free to choose. Precondition: ids ascending (sort_and_combine's output), so a
  // stable sort by the score alone gives (score, id) order: an LSD radix sort of the
  // score's order bits that skips the digits every key shares (two passes for small
  // integer counts). O(n) per varying digit, n status-table reads; a comparison sort of
  // (key, delta) pairs cost ~50 ns per item at 10^5 items.
  // check (may be null): also verifies every id is present and its score + *check finite
  // (find_bad_update's test for one delta), and returns false, leaving the batch as it
  // was, if one fails.
  bool order_by_target(std::vector<uint32_t>& ids, std::vector<double>& deltas, const double* check = nullptr) const {
    const size_t n = ids.size();
    struct Rec {
      uint64_t key;  // order_bits of the target score
      uint32_t pos;  // position in the id-sorted input
    };
    std::vector<Rec> a(n), b;
    uint64_t all_and = ~uint64_t(0), all_or = 0;
    for (size_t i = 0; i < n; ++i) {
      if (i + 32 < n) __builtin_prefetch(&entries_[ids[i + 32]], 0, 3);
      const Entry& en = entries_[ids[i]];
      const double now = en.score.load(std::memory_order_relaxed);
      if (check && (status_of(en.meta.load(std::memory_order_relaxed)) == ABSENT || !std::isfinite(now + *check)))
        return false;
      const uint64_t key = detail::order_bits(detail::saturating_add(now, deltas[i]));
      a[i] = {key, uint32_t(i)};
      all_and &= key;
      all_or |= key;
    }
    radix_sort_varying(a, b, all_and ^ all_or, [](const Rec& r) { return r.key; });
    std::vector<uint32_t> out_ids(n);
    std::vector<double> out_d(n);
    for (size_t i = 0; i < n; ++i) {
      out_ids[i] = ids[a[i].pos];
      out_d[i] = deltas[a[i].pos];
    }
    ids.swap(out_ids);
    deltas.swap(out_d);
    return true;
  }

  // A target node's lock that a batch keeps from one move to the next (apply_adds): a
  // batch ordered by target moves runs of ids into the same node, so the run pays one
  // lock instead of one per id. Kept only while the next id's node comes after it in the
  // lock order (so the order still holds), for at most kHeldRun moves (others, and
  // queries that fall back to the lock, wait at most that long), never across a pin or
  // into the owner protocol, a split or a node removal.
  struct HeldLock {
    uint32_t node = kNil;
    uint32_t moves = 0;
  };
  static constexpr uint32_t kHeldRun = 32;
  void release(HeldLock& h) noexcept {
    if (h.node != kNil) node(h.node).lock.unlock();
    h.node = kNil;
    h.moves = 0;
  }

  // Item by item (pinned per kRepin items), with the entries, source nodes and slots of
  // the items ahead prefetched, and the target node's lock kept across a run of moves
  // into it (see HeldLock).
  void apply_adds(const uint32_t* ids, const double* deltas, size_t n, unsigned threads) {
    const unsigned t = unsigned(std::max<size_t>(1, std::min<size_t>(threads, n / kMinPerThread)));
    detail::parallel_for(n, t, [&](unsigned, size_t b, size_t e) {
      for (size_t start = b; start < e; start += kRepin) {
        Pin pin(*this);
        drop_candidates();
        HeldLock held;
        const size_t stop = std::min(e, start + kRepin);
        for (size_t i = start; i < stop; ++i) {
          prefetch_entry(ids, i + 16, e);
          prefetch_node(ids, i + 10, e);
          prefetch_slot(ids, i + 5, e);
          add(ids[i], deltas[i], &held);
        }
        release(held);  // never kept past the pin
      }
    });
  }

  // The node this thread last moved an id into, for this index: consecutive moves of a
  // sorted batch usually land in the same node, so it is tried before the skip list.
  // Trusted only under the pin it was taken in (pin_serial() unchanged): a node reachable
  // then cannot be reused before that pin ends, whereas a finger kept across pins may
  // name a node that was freed and is being set up by a split (live, unlinked, its old
  // range still in place), where an update would place an id out of range or deadlock.
  struct Finger {
    uint64_t owner = 0;
    uint64_t pin = 0;
    uint32_t node = kNil;
  };
  static uint64_t& pin_serial() noexcept {  // this thread's pins, counted
    thread_local uint64_t serial = 0;
    return serial;
  }
  static Finger& finger() noexcept {
    thread_local Finger f;
    return f;
  }
  static uint64_t next_instance_id() noexcept {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }
  const uint64_t instance_id_ = next_instance_id();

  // ------------------------------------------------------------------ update protocol
  void prefetch_entry(const uint32_t* ids, size_t j, size_t end) const noexcept {
#if defined(__GNUC__)
    if (j < end) __builtin_prefetch(&entries_[ids[j]], 1, 1);
#else
    (void)ids; (void)j; (void)end;
#endif
  }

  // Ahead of a move (a +1 to a tied count moves nearly every id): the id's node header,
  // then its slot and hole-bitmap word (the move writes both; their misses, paid inside
  // the locked section, stalled the next atomic). Caller pinned: a node that a meta word
  // names cannot be reused before the pin ends (its ids leave it before it is retired),
  // and the acquire load of the meta word orders the node's set-up before the reads. The
  // slot arrays' pointers are read atomically: a split's new node may still be growing
  // them while its ids' meta words already name it.
  void prefetch_node(const uint32_t* ids, size_t j, size_t end) const noexcept {
#if defined(__GNUC__)
    if (j >= end) return;
    const uint64_t m = entries_[ids[j]].meta.load(std::memory_order_acquire);
    if (status_of(m) == ABSENT || node_of(m) == kNil) return;  // kNil: an insert in flight
    const char* h = reinterpret_cast<const char*>(&node(node_of(m)));
    __builtin_prefetch(h, 0, 1);
    __builtin_prefetch(h + kNodeSlotLine, 1, 1);
#else
    (void)ids; (void)j; (void)end;
#endif
  }
  void prefetch_slot(const uint32_t* ids, size_t j, size_t end) const noexcept {
    if (j < end) prefetch_slot_of(entries_[ids[j]].meta.load(std::memory_order_acquire));
  }
  // The slot and hole-bitmap word that meta word m names (nothing for an absent id or an
  // insert in flight).
  void prefetch_slot_of(uint64_t m) const noexcept {
#if defined(__GNUC__)
    if (status_of(m) == ABSENT || node_of(m) == kNil) return;
    Node& x = node(node_of(m));
    const uint32_t slot = slot_of(m);
    __builtin_prefetch(__atomic_load_n(&x.items, __ATOMIC_RELAXED) + slot, 1, 1);
    __builtin_prefetch(__atomic_load_n(&x.holes, __ATOMIC_RELAXED) + slot / 64, 1, 1);
#else
    (void)m;
#endif
  }

  // held: a batch's kept target lock (see HeldLock), or null. Returns with no lock held
  // other than *held.
  void add(uint32_t id, double delta, HeldLock* held = nullptr) {
    Entry& e = entries_[id];
    double old = e.score.load(std::memory_order_relaxed);
    while (!e.score.compare_exchange_weak(old, detail::saturating_add(old, delta), std::memory_order_seq_cst)) {
    }
    SOCBI_RACE_HOOK();
    const uint64_t m = e.meta.load(std::memory_order_seq_cst);
    SOCBI_TEST_TRACE(id, "add", node_of(m), uint32_t(status_of(m)), old, old + delta, double(tag_of(m)));
    if (status_of(m) == IDLE && move_unowned(id, m, held)) return;
    if (held) release(*held);  // the owner protocol below takes node locks in their order
    settle(id, e.meta.load(std::memory_order_seq_cst));
  }

  void set(uint32_t id, double value) {
    Entry& e = entries_[id];
    e.score.store(detail::stored_score(value), std::memory_order_seq_cst);
    settle(id, e.meta.load(std::memory_order_seq_cst));
  }

  // Algorithm 1 from "the score just changed": take ownership unless someone else owns
  // the item, put it where its score belongs, release only if the score did not move.
  // unowned_first: try a move without ownership first (the adders' fast path).
  void settle(uint32_t id, uint64_t m, bool unowned_first = true) {
    Entry& e = entries_[id];
    if (unowned_first && status_of(m) == IDLE && move_unowned(id, m, nullptr)) return;
    for (;;) {
      const uint64_t st = status_of(m);
      if (st != IDLE) return;  // UPDATING: the owner will see our delta. ABSENT: erased.
      if (!e.meta.compare_exchange_weak(m, with_status(m, UPDATING), std::memory_order_seq_cst)) continue;
      m = with_status(m, UPDATING);
      SOCBI_TEST_TRACE(id, "own", node_of(m), 0, 0, 0, double(tag_of(m)));
      SOCBI_RACE_HOOK();
      if (!own_and_place(id, m)) return;  // erased while we owned it
      // m is now IDLE; if an adder raced with our release, go round again.
    }
  }

  // Owner loop. On entry m is our UPDATING meta. Returns true with m set to the IDLE meta
  // we released when the score changed after release (caller re-acquires), false when
  // done or the id was erased.
  bool own_and_place(uint32_t id, uint64_t& m) {
    Entry& e = entries_[id];
    for (;;) {
      const double s = e.score.load(std::memory_order_seq_cst);
      const detail::Key k{s, id};
      if (!place(id, k, m)) return false;  // erased
      SOCBI_RACE_HOOK();
      const uint64_t idle = with_status(m, IDLE);
      SOCBI_TEST_TRACE(id, "release: try", node_of(m), 0, s, node(node_of(m)).lo.score, node(node_of(m)).hi().score);
      if (!e.meta.compare_exchange_strong(m, idle, std::memory_order_seq_cst)) {
        SOCBI_TEST_TRACE(id, "release: failed", node_of(m), uint32_t(status_of(m)), s, 0, double(tag_of(m)));
        // A split or a slot change touched us (m reloaded); re-check with the new place.
        if (status_of(m) == ABSENT) return false;
        continue;
      }
      const double s2 = e.score.load(std::memory_order_seq_cst);
      SOCBI_TEST_TRACE(id, "release: done", node_of(m), 0, s, s2, double(tag_of(m)));
      if (s2 == s) return false;
      m = idle;
      return true;
    }
  }

  // The node whose range holds k, as a hint (callers validate it under its lock): this
  // thread's finger first (the node it last moved an id into: for a batch ordered by
  // target, the same node or the next one), then x's neighbours, then the skip list.
  // Sets the finger to the answer.
  uint32_t find_target(uint32_t xi, const detail::Key& k) {
    uint32_t ti = kNil;
    Finger& f = finger();
    if (f.owner == instance_id_ && f.pin == pin_serial() && f.node != kNil &&
        !node(f.node).dead.load(std::memory_order_acquire)) {
      const Node& fn = node(f.node);
      if (fn.range_contains(k)) {
        ti = f.node;
      } else if (fn.hi() <= k) {
        const uint32_t nx = fn.next[0].load(std::memory_order_acquire);
        if (nx != kNil && node(nx).range_contains(k)) ti = nx;
      }
    }
    if (ti == kNil && xi != kNil) {
      const Node& x = node(xi);
      if (x.hi() <= k) {
        const uint32_t nx = x.next[0].load(std::memory_order_acquire);
        if (nx != kNil && node(nx).range_contains(k)) ti = nx;
      } else if (k < x.lo) {
        const uint32_t pv = x.prev.load(std::memory_order_acquire);
        if (pv != kNil && node(pv).range_contains(k)) ti = pv;
      }
    }
    if (ti == kNil) ti = find_floor(k);
    f.owner = instance_id_;
    f.pin = pin_serial();
    f.node = ti;
    return ti;
  }

  // Locks nodes ti and xi (xi may be kNil or ti) in the global order; unlock_two undoes it.
  void lock_two(uint32_t ti, uint32_t xi) noexcept {
    Node& t = node(ti);
    if (xi == kNil || xi == ti) {
      t.lock.lock();
    } else if (locks_before(ti, xi)) {
      t.lock.lock();
      node(xi).lock.lock();
    } else {
      node(xi).lock.lock();
      t.lock.lock();
    }
  }
  void unlock_two(uint32_t ti, uint32_t xi) noexcept {
    node(ti).lock.unlock();
    if (xi != kNil && xi != ti) node(xi).lock.unlock();
  }

  // Nodes xi and ti locked (xi != ti), the id in x at slot_of(m), t with room: moves the
  // id into t and returns its new meta (status kept, tag bumped). x's change stays open
  // until the id is in t: a query that reads x after the removal then sees it in t (issue
  // 16: with x closed first, a bottom() walk reading x, then t before the append, missed
  // the id). owned: the caller owns the id (UPDATING), so no one else changes its meta
  // word and a store publishes it; otherwise a CAS keeps a status that an owner or an
  // eraser set meanwhile, as a split does. Sets x_empty when x is left empty.
  uint64_t move_locked(uint32_t id, uint32_t xi, uint32_t ti, uint64_t m, bool owned, bool& x_empty) {
    Node& x = node(xi);
    Node& t = node(ti);
    x.begin_items_change();
    remove_slot_locked(x, slot_of(m));
    x_empty = x.count.load(std::memory_order_relaxed) == 0;
    SOCBI_TEST_HOOK("move: id in neither node", id);
    t.begin_items_change();
    const uint32_t slot = append_locked(t, id);
    std::atomic<uint64_t>& mm = entries_[id].meta;
    uint64_t nm;
    if (owned) {
      nm = make_meta(UPDATING, ti, slot, tag_of(m) + 1);
      mm.store(nm, std::memory_order_release);  // stable: we hold x's lock
    } else {
      do {
        nm = relocated(m, ti, slot);
      } while (!mm.compare_exchange_weak(m, nm, std::memory_order_seq_cst));  // seq_cst: see move_unowned
    }
    t.end_items_change();
    x.end_items_change();
    return nm;
  }

  // The move of an item nobody owns, without taking ownership (issue 17: the two
  // ownership CASes cost as much as the node locks). Called by the thread that just
  // changed the score of the id whose meta word m it read IDLE. Under both nodes' locks
  // the id cannot leave x, so it moves like a split relocates ids: the meta word is
  // CASed to the new place keeping its status. An adder that changes the score
  // afterwards sees IDLE (either word) and takes ownership itself, so no delta is left
  // unplaced; no adder ever waits on this thread. Returns false when the caller must run
  // the owner protocol instead (the new key is inside x's range, t is full or changed,
  // or the id moved meanwhile); true when done (moved, owned by another thread, which
  // will see this delta, or erased). held (may be null): a kept target lock, see
  // HeldLock; on return *held is the only lock this thread holds.
  bool move_unowned(uint32_t id, uint64_t m, HeldLock* held) {
    Entry& e = entries_[id];
    const uint32_t xi = node_of(m);
    if (xi == kNil) return false;
    const detail::Key k{e.score.load(std::memory_order_seq_cst), id};
    if (node(xi).range_contains(k)) return false;
    const uint32_t ti = find_target(xi, k);
    if (ti == xi) return false;
    Node& t = node(ti);
    Node& x = node(xi);
    bool keep = false;  // t's lock stays held for the next move
    if (held && held->node != kNil) {
      if (held->node == ti && held->moves < kHeldRun && locks_before(ti, xi)) {
        x.lock.lock();
        keep = true;
      } else {
        release(*held);
      }
    }
    if (!keep) {
      lock_two(ti, xi);
      keep = held && locks_before(ti, xi);
    }
    auto unlock = [&](bool success) {
      x.lock.unlock();
      if (keep && success) {
        held->node = ti;
        ++held->moves;
      } else {
        t.lock.unlock();
        if (held) *held = HeldLock{};
      }
    };
    SOCBI_RACE_HOOK();
    // seq_cst (as cheap as acquire on x86 and ARM): an owner found here is ordered after this
    // thread's add, so its re-read of the score after its release sees the delta.
    m = e.meta.load(std::memory_order_seq_cst);
    SOCBI_TEST_TRACE(id, "move: locked", xi, ti, k.score, double(status_of(m)), double(node_of(m)));
    if (status_of(m) != IDLE) {
      unlock(true);
      return true;  // UPDATING: the owner sees this delta. ABSENT: erased.
    }
    const detail::Key k2{e.score.load(std::memory_order_seq_cst), id};
    if (node_of(m) != xi || t.dead.load(std::memory_order_acquire) || !t.holds_locked(k2) ||
        t.count.load(std::memory_order_relaxed) >= t.cap) {
      SOCBI_TEST_TRACE(id, "move: refused", xi, ti, k2.score, t.lo.score, t.hi().score);
      unlock(false);
      return false;
    }
    bool x_empty = false;
    SOCBI_TEST_TRACE(id, "move: unowned", xi, ti, k2.score, t.lo.score, t.hi().score);
    move_locked(id, xi, ti, m, /*owned=*/false, x_empty);
    // The CAS may have landed on an equal word after a whole owner cycle that judged a
    // newer score in x's range (see Entry): the score read after it is the newest any
    // adder of the old word saw, so t must hold it, or the owner protocol places the id.
    const detail::Key k3{e.score.load(std::memory_order_seq_cst), id};
    const bool misplaced = !t.holds_locked(k3);
    unlock(!x_empty && !misplaced);
    bump(my_shard().moves);
    if (x_empty) try_remove(xi);
    if (misplaced) {
      SOCBI_TEST_TRACE(id, "move: misplaced, settling", xi, ti, k3.score, t.lo.score, t.hi().score);
      settle(id, e.meta.load(std::memory_order_seq_cst), /*unowned_first=*/false);
    }
    return true;
  }

  // Puts item `id` (owned by us, meta m UPDATING) into the node whose range holds k.
  // Updates m. Returns false if the id was erased meanwhile.
  bool place(uint32_t id, const detail::Key& k, uint64_t& m) {
    Shard& sh = my_shard();
    for (;;) {
      const uint32_t xi = node_of(m);
      if (xi != kNil && node(xi).range_contains(k)) {
        SOCBI_TEST_TRACE(id, "place: in range", xi, 0, k.score, node(xi).lo.score, node(xi).hi().score);
        bump(sh.in_place);
        return true;
      }
      const uint32_t ti = find_target(xi, k);
      Node& t = node(ti);
      lock_two(ti, xi);
      SOCBI_RACE_HOOK();
      m = entries_[id].meta.load(std::memory_order_acquire);
      if (status_of(m) == ABSENT) {
        unlock_two(ti, xi);
        return false;
      }
      if (node_of(m) != xi) {  // a split moved us before we got the locks
        unlock_two(ti, xi);
        continue;
      }
      const bool t_ok = !t.dead.load(std::memory_order_acquire) && t.holds_locked(k);
      if (!t_ok) {
        unlock_two(ti, xi);
        finger().node = kNil;
        continue;
      }
      if (ti == xi) {  // range changed under us and now contains k: nothing to move
        SOCBI_TEST_TRACE(id, "place: same node", xi, ti, k.score, t.lo.score, t.hi().score);
        unlock_two(ti, xi);
        bump(sh.in_place);
        return true;
      }
      if (t.count.load(std::memory_order_relaxed) >= t.cap) {
        if (xi != kNil) node(xi).lock.unlock();
        const uint32_t yi = split_locked(ti);
        t.lock.unlock();
        if (yi == kNil) {
          std::this_thread::yield();
        } else {
          finish_split(yi);
          settle_pending();
        }
        m = entries_[id].meta.load(std::memory_order_acquire);
        if (status_of(m) == ABSENT) return false;
        continue;
      }
      bool x_empty = false;
      SOCBI_TEST_TRACE(id, "place: move", xi, ti, k.score, t.lo.score, t.hi().score);
      if (xi != kNil) {
        m = move_locked(id, xi, ti, m, /*owned=*/true, x_empty);
      } else {  // a new id (insert_one)
        t.begin_items_change();
        const uint32_t slot = append_locked(t, id);
        m = make_meta(UPDATING, ti, slot, tag_of(m) + 1);
        entries_[id].meta.store(m, std::memory_order_release);
        t.end_items_change();
      }
      unlock_two(ti, xi);
      bump(sh.moves);
      if (x_empty) try_remove(xi);
      return true;
    }
  }

  void insert_one(uint32_t id, double s) {
    Entry& e = entries_[id];
    uint64_t m = e.meta.load(std::memory_order_acquire);
    if (status_of(m) != ABSENT) return;  // precondition violated by a racing insert
    const uint64_t claimed = make_meta(UPDATING, kNil, 0, tag_of(m) + 1);
    if (!e.meta.compare_exchange_strong(m, claimed, std::memory_order_seq_cst)) return;
    e.score.store(detail::stored_score(s), std::memory_order_seq_cst);
    m = claimed;
    SOCBI_TEST_TRACE(id, "insert", 0, 0, s, 0, 0);
    my_shard().size.fetch_add(1, std::memory_order_relaxed);
    if (own_and_place(id, m)) settle(id, m);
  }

  // Takes ownership first (waits while another thread owns the item), so an owner in
  // flight never sees its item vanish and re-appear under a new insert.
  void erase_one(uint32_t id) {
    Entry& e = entries_[id];
    unsigned spins = 0;
    uint64_t m = e.meta.load(std::memory_order_acquire);
    for (;;) {
      if (status_of(m) == ABSENT) return;
      if (status_of(m) == UPDATING) {
        detail::cpu_relax(spins);
        m = e.meta.load(std::memory_order_acquire);
        continue;
      }
      if (e.meta.compare_exchange_weak(m, with_status(m, UPDATING), std::memory_order_seq_cst)) break;
    }
    for (;;) {
      m = e.meta.load(std::memory_order_acquire);
      const uint32_t xi = node_of(m);
      Node& x = node(xi);
      x.lock.lock();
      m = e.meta.load(std::memory_order_acquire);
      if (node_of(m) != xi) {  // a split moved it before we got the lock
        x.lock.unlock();
        continue;
      }
      x.begin_items_change();
      remove_slot_locked(x, slot_of(m));
      SOCBI_TEST_TRACE(id, "erase", xi, 0, 0, 0, 0);
      e.meta.store(make_meta(ABSENT, kNil, 0, tag_of(m) + 1), std::memory_order_seq_cst);
      x.end_items_change();
      const bool empty = x.count.load(std::memory_order_relaxed) == 0;
      x.lock.unlock();
      Shard& sh = my_shard();
      sh.size.fetch_sub(1, std::memory_order_relaxed);
        if (empty) try_remove(xi);
      return;
    }
  }

  // Exclusive batch erase (see erase()). Preconditions as erase(); an id already absent
  // (a repeat) is skipped.
  void erase_exclusive(const uint32_t* ids, size_t n) {
    ExclusiveGuard ex(*this);
    drop_candidates();
    erase_exclusive_locked(ids, n, nullptr);
  }
  // metas: the ids' meta words read in this exclusive section (erase_present), used only
  // to prefetch; each id's word is read again where it is used (a repeated id is absent
  // by its second occurrence).
  void erase_exclusive_locked(const uint32_t* ids, size_t n, const uint64_t* metas) {
    std::vector<uint32_t> emptied;
    int64_t removed = 0;
    // Two-stage prefetch: the status entry kFar ids ahead, then (its meta word having
    // arrived) the node slot and hole word kNear ids ahead. Each stage must cover a DRAM
    // round trip at a few ns per id, or the meta load of the second stage stalls the loop.
    constexpr size_t kFar = 64, kNear = 32;
    for (size_t i = 0; i < n; ++i) {
      if (i + kFar < n) __builtin_prefetch(&entries_[ids[i + kFar]], 1, 1);
      if (i + kNear < n)  // exclusive: the node's slot array cannot change under this read
        prefetch_slot_of(metas ? metas[i + kNear] : entries_[ids[i + kNear]].meta.load(std::memory_order_relaxed));
      Entry& e = entries_[ids[i]];
      const uint64_t m = e.meta.load(std::memory_order_relaxed);
      if (status_of(m) == ABSENT) continue;
      const uint32_t xi = node_of(m);
      Node& x = node(xi);
      x.begin_items_change();
      remove_slot_locked(x, slot_of(m));
      x.end_items_change();
      e.meta.store(make_meta(ABSENT, kNil, 0, tag_of(m) + 1), std::memory_order_relaxed);
      if (x.count.load(std::memory_order_relaxed) == 0) emptied.push_back(xi);
      ++removed;
    }
    my_shard().size.fetch_sub(removed, std::memory_order_relaxed);
    for (uint32_t xi : emptied) try_remove(xi);  // no other thread holds a node lock now
  }

  // ------------------------------------------------------------------ queries
  // An id that moved between two nodes a walk read may sit in the keys twice (with its old
  // and its new score); keep one. Sorts by id, so the caller orders the result itself.
  static void drop_repeated_ids(std::vector<Packed>& keys) {
    std::sort(keys.begin(), keys.end(), [](Packed a, Packed b) { return uint32_t(a) < uint32_t(b); });
    keys.erase(std::unique(keys.begin(), keys.end(), [](Packed a, Packed b) { return uint32_t(a) == uint32_t(b); }),
               keys.end());
  }

  // Copies node x's ids into out (appending). Lock-free seqlock read; falls back to the
  // lock after 4 failed attempts.
  // Node xi locked: rewrites its slots in ascending key order (compacting tombstones) and
  // records the version, so queries that meet the node again read it in order instead of
  // sorting. O(c log c) plus one status-entry CAS per id (owners in flight re-check).
  void sort_node_locked(uint32_t xi) {
    Node& x = node(xi);
    const uint32_t h = x.hwm.load(std::memory_order_relaxed);
    std::vector<Packed> keys;
    keys.reserve(x.count.load(std::memory_order_relaxed));
    for (uint32_t i = 0; i < h; ++i) {
      const uint32_t id = x.items[i].load(std::memory_order_relaxed);
      if (id != kTomb) keys.push_back(pack(entries_[id].score.load(std::memory_order_acquire), id));
    }
    std::sort(keys.begin(), keys.end());
    x.begin_items_change();
    const uint32_t c = uint32_t(keys.size());
    for (uint32_t i = 0; i < c; ++i) {
      const uint32_t id = uint32_t(keys[i]);
      x.items[i].store(id, std::memory_order_release);
      std::atomic<uint64_t>& mm = entries_[id].meta;
      uint64_t m = mm.load(std::memory_order_acquire);
      while (!mm.compare_exchange_weak(m, relocated(m, xi, i), std::memory_order_acq_rel)) {
      }
      SOCBI_TEST_TRACE(id, "sort", xi, i, unpack_score(keys[i]), x.lo.score, x.hi().score);
    }
    for (uint32_t i = c; i < h; ++i) x.items[i].store(kTomb, std::memory_order_release);
    std::fill(x.holes, x.holes + Node::hole_words(h), uint64_t(0));
    x.hole_hint = 0;
    x.hwm.store(c, std::memory_order_release);
    x.end_items_change();
    x.sorted_ver.store(x.items_ver.load(std::memory_order_relaxed), std::memory_order_release);
  }

  // Returns the items version that the copy is consistent with.
  uint32_t read_node_ids(Node& x, std::vector<uint32_t>& out, Shard& sh) {
    const size_t base = out.size();
    for (int attempt = 0; attempt < 4; ++attempt) {
      uint32_t v1 = x.items_ver.load(std::memory_order_acquire);
      if (!(v1 & 1u)) {
        const uint32_t h = std::min(x.hwm.load(std::memory_order_acquire), x.cap);
        for (uint32_t i = 0; i < h; ++i) {
          const uint32_t id = x.items[i].load(std::memory_order_acquire);
          if (id != kTomb) out.push_back(id);
        }
        if (x.items_ver.load(std::memory_order_relaxed) == v1) return v1;
      }
      out.resize(base);
      bump(sh.query_retries);
      std::this_thread::yield();
    }
    std::lock_guard<detail::SpinLock> g(x.lock);
    const uint32_t h = x.hwm.load(std::memory_order_relaxed);
    for (uint32_t i = 0; i < h; ++i) {
      const uint32_t id = x.items[i].load(std::memory_order_relaxed);
      if (id != kTomb) out.push_back(id);
    }
    return x.items_ver.load(std::memory_order_relaxed);
  }

  // Order-preserving 128-bit key: scores map to uint64 so that unsigned order is the
  // double order (-0.0 folded into +0.0), the id fills the low 32 bits. Integer
  // compares make the final sort about twice as fast as comparing (double, id) pairs.
  static Packed pack(double s, uint32_t id) noexcept { return (Packed(detail::order_bits(s)) << 32) | id; }
  static double unpack_score(Packed p) noexcept {
    uint64_t b = uint64_t(p >> 32);
    b = (b >> 63) ? (b & ~(uint64_t(1) << 63)) : ~b;
    double s;
    std::memcpy(&s, &b, sizeof s);
    return s;
  }

  // A query on a lazily updated chain (dirty_ != 0) walks it with query_dirty when it reads
  // the end the lazy deltas moved ids away from and the walks so far have not cost more
  // than a rebuild would; otherwise it rebuilds first (exclusive) and walks the clean chain.
  template <class IdT>
  size_t query(size_t n, bool from_top, IdT* out_ids, double* out_scores) {
    if (n == 0) return 0;
    const int end = from_top ? 1 : -1;
    if (last_end_.load(std::memory_order_relaxed) != end) last_end_.store(end, std::memory_order_relaxed);
    for (;;) {
      {
        Pin pin(*this);  // dirty_ changes only under the exclusive guard: stable while pinned
        const int d = dirty_.load(std::memory_order_relaxed);
        if (d == 0) return query_pinned(n, from_top, out_ids, out_scores);
        if (d == -end) {
          if (const size_t k = query_candidates(n, end, out_ids, out_scores)) return k;
          size_t k = dirty_scan_.load(std::memory_order_relaxed) ? kTooLong : query_dirty(n, from_top, out_ids, out_scores);
          if (k == kTooLong) {
            if (!dirty_scan_.load(std::memory_order_relaxed)) dirty_scan_.store(true, std::memory_order_relaxed);
            k = query_scan(n, from_top, out_ids, out_scores);
          }
          if (k != kGaveUp) return k;
        }
      }
      settle_dirty();
    }
  }

  // The clean walk (every id inside its node's range). Caller pinned.
  template <class IdT>
  size_t query_pinned(size_t n, bool from_top, IdT* out_ids, double* out_scores) {
    Shard& sh = my_shard();
    std::vector<uint32_t> ids;
    ids.reserve(std::min<size_t>(n + node_size_, size_t(capacity_)));
    struct Segment {
      uint32_t node, ver;
      size_t begin, end;
      bool sorted;
    };
    std::vector<Segment> segs;  // one per node read, in walk order
    // A split or node removal during the walk can hide items from it (for example a top
    // walk that read a node's prev before the node split): walk again, up to 3 times.
    for (int attempt = 0; attempt < 3; ++attempt) {
      ids.clear();
      segs.clear();
      const uint64_t structure = structure_stamp();
      uint64_t own_splits = 0;
      uint32_t x = from_top ? tail_.load(std::memory_order_acquire) : head_;
      while (x != kNil && ids.size() < n) {
        Node& nd = node(x);
        const uint32_t c = nd.count.load(std::memory_order_acquire);
        if (c > node_size_ && ids.size() + c > n && !nd.dead.load(std::memory_order_acquire)) {
          // Oversized boundary node: refine it so this and later queries stay O(n + B).
          uint32_t yi = kNil;
          if (nd.lock.try_lock()) {
            if (!nd.dead.load(std::memory_order_relaxed) && nd.count.load(std::memory_order_relaxed) > node_size_)
              yi = split_locked(x);
            nd.lock.unlock();
          }
          if (yi != kNil) {
            finish_split(yi);
            settle_pending();
            ++own_splits;
            if (from_top) x = yi;  // continue with the upper half
            continue;
          }
        }
        const size_t begin = ids.size();
        uint32_t v = read_node_ids(nd, ids, sh);
        bool sorted = nd.sorted_ver.load(std::memory_order_acquire) == v;
        if (!sorted && ids.size() - begin > 1 && nd.seen_ver.load(std::memory_order_relaxed) == v &&
            nd.lock.try_lock()) {
          // Unchanged since the last query met it: sort it once, later queries skip the sort.
          if (!nd.dead.load(std::memory_order_relaxed) && nd.items_ver.load(std::memory_order_relaxed) == v)
            sort_node_locked(x);
          nd.lock.unlock();
          ids.resize(begin);
          v = read_node_ids(nd, ids, sh);
          sorted = nd.sorted_ver.load(std::memory_order_acquire) == v;
        }
        if (nd.seen_ver.load(std::memory_order_relaxed) != v) nd.seen_ver.store(v, std::memory_order_relaxed);
        // A node read with 0 or 1 ids is in order too (sparse score ranges, e.g. the top
        // of a pool, are cut into many such nodes); without this one of them sent the
        // whole answer to the sort below.
        sorted |= ids.size() - begin <= 1;
        segs.push_back(Segment{x, v, begin, ids.size(), sorted});
        x = from_top ? nd.prev.load(std::memory_order_acquire) : nd.next[0].load(std::memory_order_acquire);
      }
      if (structure_stamp() == structure + own_splits) break;
      bump(sh.query_retries);
    }
    std::vector<Packed> keys(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i + 8 < ids.size()) __builtin_prefetch(&entries_[ids[i + 8]], 0, 1);
      keys[i] = pack(entries_[ids[i]].score.load(std::memory_order_acquire), ids[i]);
    }
    // An id moved between two nodes we read shows up as a changed version on a visited
    // node; only then can it have been read twice.
    bool moved = false, all_sorted = true;
    for (const auto& sg : segs) {
      moved |= node(sg.node).items_ver.load(std::memory_order_acquire) != sg.ver;
      all_sorted &= sg.sorted;
    }
    if (all_sorted && !moved) {
      // Every node was read in key order: the walk order is the answer if the scores
      // (which in-place updates may have shifted within a node) confirm it.
      if (from_top)
        for (const auto& sg : segs) std::reverse(keys.begin() + sg.begin, keys.begin() + sg.end);
      bool ordered = true;
      for (size_t i = 1; i < keys.size() && ordered; ++i) ordered = from_top ? keys[i - 1] > keys[i] : keys[i - 1] < keys[i];
      if (ordered) {
        const size_t k = std::min(n, keys.size());
        for (size_t i = 0; i < k; ++i) {
          out_ids[i] = IdT(uint32_t(keys[i]));
          out_scores[i] = unpack_score(keys[i]);
        }
        return k;
      }
    }
    if (moved) drop_repeated_ids(keys);
    const size_t k = std::min(n, keys.size());
    if (from_top) {
      auto gt = [](Packed a, Packed b) { return a > b; };
      if (k < keys.size()) std::nth_element(keys.begin(), keys.begin() + k, keys.end(), gt);
      std::sort(keys.begin(), keys.begin() + k, gt);
    } else {
      if (k < keys.size()) std::nth_element(keys.begin(), keys.begin() + k, keys.end());
      std::sort(keys.begin(), keys.begin() + k);
    }
    for (size_t i = 0; i < k; ++i) {
      out_ids[i] = IdT(uint32_t(keys[i]));
      out_scores[i] = unpack_score(keys[i]);
    }
    return k;
  }

  static constexpr size_t kGaveUp = ~size_t(0);
  static constexpr size_t kTooLong = ~size_t(0) - 1;

  // The costs that pick how a query meets a stale chain: a walk pays kWalkNs per id it
  // reads (a random status-entry read each), the scan kScanNs per id of capacity (a
  // sequential read), the rebuild about kRebuildNsPerId per id. Measured at n = 10^6 on
  // the 2-core VM (bench/bench_round.py, C++ drivers).
  static constexpr double kWalkNs = 12, kScanNs = 1.0;
  // The scan's cost counted in walk reads (the unit of dirty_work_).
  uint64_t scan_walk_reads() const noexcept { return uint64_t(double(capacity_) * kScanNs / kWalkNs) + 1; }

  // The scan on a stale chain (caller pinned): reads the status table in id order and
  // keeps the n best keys of the placed ids (present, in a node) in a bounded heap, as
  // the walk does. O(capacity + n log n), sequential reads only. A walk after many lazy
  // rounds reads a growing share of the chain at random (the ties it must see past
  // thin out: 46 % of 5*10^5 ids, 3 ms, after five rounds of 10^6 +1s at n = 10^6); the
  // scan reads every entry in order for ~1 ns each (kScanNs). A query takes it once its walk
  // passes the scan's cost (kTooLong), and every later query on the same stale chain
  // (it only gets staler until a rebuild) goes straight to it. Its cost counts towards
  // dirty_work_: past a rebuild's worth the caller rebuilds instead (kGaveUp).
  // Concurrent updates: each entry is read once (meta, then score), so an id appears at
  // most once, with a score it had during the call; like a walk, not a snapshot.
  template <class IdT>
  size_t query_scan(size_t n, bool from_top, IdT* out_ids, double* out_scores) {
    const uint64_t cost = scan_walk_reads();
    if (dirty_work_.load(std::memory_order_relaxed) + cost > size() + n + node_size_) return kGaveUp;
    dirty_work_.fetch_add(cost, std::memory_order_relaxed);
    stale_scans_.fetch_add(1, std::memory_order_relaxed);
    std::vector<Packed> best;
    best.reserve(std::min<uint64_t>(n, capacity_));
    auto run = [&](auto better, auto top) {
      // The first n placed ids fill the heap; after that an entry costs a compare of its
      // score bits with the worst kept (branch-free until a key can enter).
      uint64_t id = 0;
      for (; id < capacity_ && best.size() < n; ++id) {
        const uint64_t m = entries_[id].meta.load(std::memory_order_acquire);
        if (status_of(m) == ABSENT || node_of(m) == kNil) continue;
        best.push_back(pack(entries_[id].score.load(std::memory_order_acquire), uint32_t(id)));
        std::push_heap(best.begin(), best.end(), better);
      }
      if (best.size() < n) return;
      // Blocks of 256 entries: a branch-free pass lists the entries that may enter
      // (present, score not worse than the worst kept: a double compare, ~1 ns an entry;
      // absent ids are half the pool in a late round, and a branch on them mispredicted
      // every other entry), then only those are read again and compared in full.
      constexpr uint64_t kBlock = 256;
      uint32_t cand[kBlock];
      double worst = unpack_score(best.front());
      for (; id < capacity_; id += kBlock) {
        const uint64_t end = std::min<uint64_t>(id + kBlock, capacity_);
        size_t nc = 0;
        for (uint64_t j = id; j < end; ++j) {
          const uint64_t m = entries_[j].meta.load(std::memory_order_relaxed);
          const double sc = entries_[j].score.load(std::memory_order_relaxed);
          cand[nc] = uint32_t(j - id);
          nc += size_t(status_of(m) != ABSENT) & size_t(decltype(top)::value ? sc >= worst : sc <= worst);
        }
        for (size_t c = 0; c < nc; ++c) {
          const uint64_t j = id + cand[c];
          const uint64_t m = entries_[j].meta.load(std::memory_order_acquire);
          if (status_of(m) == ABSENT || node_of(m) == kNil) continue;
          // On a score tie with the worst kept the id decides (ids only grow: at the top a
          // later id wins the tie, at the bottom it loses); the full compare says.
          const Packed k = pack(entries_[j].score.load(std::memory_order_acquire), uint32_t(j));
          if (better(k, best.front())) {
            std::pop_heap(best.begin(), best.end(), better);
            best.back() = k;
            std::push_heap(best.begin(), best.end(), better);
            worst = unpack_score(best.front());
          }
        }
      }
    };
    if (from_top)
      run([](Packed a, Packed b) { return a > b; }, std::true_type{});
    else
      run([](Packed a, Packed b) { return a < b; }, std::false_type{});
    return write_best(best, from_top, out_ids, out_scores);
  }

  // The kept keys, best first, to the caller's arrays (query_dirty and query_scan).
  template <class IdT>
  static size_t write_best(std::vector<Packed>& best, bool from_top, IdT* out_ids, double* out_scores) {
    if (from_top)
      std::sort(best.begin(), best.end(), [](Packed a, Packed b) { return a > b; });
    else
      std::sort(best.begin(), best.end());
    for (size_t i = 0; i < best.size(); ++i) {
      out_ids[i] = IdT(uint32_t(best[i]));
      out_scores[i] = unpack_score(best[i]);
    }
    return best.size();
  }

  // The walk on a stale chain (dirty_ == -end, caller pinned). After a lazy batch of
  // increments every id's key is >= its node's lo (it may lie above its node's range), so
  // an id in a node not yet walked has a key >= that node's lo. Walking up from the
  // bottom, the n best keys read so far wait in a bounded heap (worst on top); once that
  // worst key lies below the next node's lo, no unread key can be among the n smallest.
  // Mirrored for top() after decrements. O(ids read + n log n): a key that cannot enter
  // costs one comparison (before, every key past the bound went through a heap of all of
  // them, ~40 ns per stale id read: the walks after a few lazy rounds on thinning ties
  // took 2-12 ms at n = 10^6). A walk that would read more ids than a scan of the status
  // table costs (scan_walk_reads) stops (kTooLong): the caller scans instead. The ids
  // read beyond n + B count towards dirty_work_, and when they would pass size() the
  // walk gives up (kGaveUp) so that the caller rebuilds: the queries between two lazy
  // batches never cost more than about one rebuild.
  template <class IdT>
  size_t query_dirty(size_t n, bool from_top, IdT* out_ids, double* out_scores) {
    Shard& sh = my_shard();
    const uint64_t budget = size() + n + node_size_;
    const uint64_t walk_limit = std::max<uint64_t>(SOCBI_TEST_SHORT_WALKS ? 0 : scan_walk_reads(), n + node_size_);
    std::vector<uint32_t> ids;
    std::vector<Packed> best;
    std::vector<std::pair<uint32_t, uint32_t>> segs;  // (node, items version) read
    auto better = [from_top](Packed a, Packed b) { return from_top ? a > b : a < b; };
    best.reserve(std::min<size_t>(n, size() + node_size_));  // n may exceed len(index)
    for (int attempt = 0; attempt < 3; ++attempt) {
      ids.clear();
      best.clear();
      segs.clear();
      const uint64_t structure = structure_stamp();
      bool done = false;
      uint32_t x = from_top ? tail_.load(std::memory_order_acquire) : head_;
      while (x != kNil && !done) {
        Node& nd = node(x);
        const size_t begin = ids.size();
        segs.emplace_back(x, read_node_ids(nd, ids, sh));
        const uint32_t nx = from_top ? nd.prev.load(std::memory_order_acquire) : nd.next[0].load(std::memory_order_acquire);
        for (size_t i = begin; i < ids.size(); ++i) {
          if (i + 32 < ids.size()) __builtin_prefetch(&entries_[ids[i + 32]], 0, 1);
          const Packed k = pack(entries_[ids[i]].score.load(std::memory_order_acquire), ids[i]);
          if (best.size() < n) {
            best.push_back(k);
            std::push_heap(best.begin(), best.end(), better);
          } else if (better(k, best.front())) {
            std::pop_heap(best.begin(), best.end(), better);
            best.back() = k;
            std::push_heap(best.begin(), best.end(), better);
          }
        }
        // Every unread id lies in a node beyond the bound: bottom, keys >= next node's lo;
        // top, keys < this node's lo (= the hi of the node below).
        if (nx == kNil) {
          done = true;
        } else if (best.size() == n) {
          const Packed worst = best.front();
          done = from_top ? !(worst < pack(nd.lo.score, nd.lo.id)) : worst < pack(node(nx).lo.score, node(nx).lo.id);
        }
        if (dirty_work_.load(std::memory_order_relaxed) + ids.size() > budget) return kGaveUp;
        if (ids.size() > walk_limit) {  // the scan costs less from here on
          dirty_work_.fetch_add(ids.size(), std::memory_order_relaxed);
          return kTooLong;
        }
        x = nx;
      }
      if (structure_stamp() == structure) break;
      bump(sh.query_retries);
    }
    const uint64_t extra = ids.size() > n + node_size_ ? ids.size() - n - node_size_ : 0;
    if (extra) dirty_work_.fetch_add(extra, std::memory_order_relaxed);
    bool moved = false;  // an id moved between two nodes read may have been read twice
    for (const auto& sg : segs) moved |= node(sg.first).items_ver.load(std::memory_order_acquire) != sg.second;
    if (moved) {  // rare: select again from every key read, each id once
      std::vector<Packed> keys;
      keys.reserve(ids.size());
      for (uint32_t id : ids) keys.push_back(pack(entries_[id].score.load(std::memory_order_acquire), id));
      drop_repeated_ids(keys);
      const size_t k = std::min(n, keys.size());
      if (k < keys.size()) std::nth_element(keys.begin(), keys.begin() + k, keys.end(), better);
      keys.resize(k);
      best.swap(keys);
    }
    return write_best(best, from_top, out_ids, out_scores);
  }

  // A query at the stale end answered from cand_ (kept by the last counted lazy batch):
  // n <= kCandidates, and no mutation since (checked before and after the copy; a writer
  // clears cand_valid_ before it changes anything, and cand_ changes only under the
  // exclusive guard, which the caller's pin keeps out). 0 when it cannot answer.
  template <class IdT>
  size_t query_candidates(size_t n, int end, IdT* out_ids, double* out_scores) {
    if (!cand_valid_.load(std::memory_order_seq_cst) || cand_end_ != end || n > cand_.size()) return 0;
    for (size_t i = 0; i < n; ++i) {
      out_ids[i] = IdT(cand_[i].id);
      out_scores[i] = cand_[i].score;
    }
    if (!cand_valid_.load(std::memory_order_seq_cst)) return 0;
    candidate_queries_.fetch_add(1, std::memory_order_relaxed);
    return n;
  }

  // Rebuilds a stale chain (exclusive; nothing to do if another thread already did).
  void settle_dirty() {
    ExclusiveGuard ex(*this);
    if (dirty_.load(std::memory_order_relaxed) == 0) return;
    detail::TeamScope team(rebuild_threads(dirty_threads_));
    rebuild_any_locked(dirty_threads_);
  }

  // ------------------------------------------------------------------ bulk path (member functions defined in detail/bulk_path.hpp, each with its comment)
  // Inserts and assignments: the rebuild or item by item (no lazy form: their keys may go
  // either way).
  bool use_bulk(size_t n, int bulk) const noexcept { return choose_path(n, bulk, kMixed) != Path::kMoves; }

  // Which way a batch of updates goes (issue 17). Item moves cost about kMoveNs each (a
  // +1 to a tied count leaves its node: ids are split by key); the rebuild costs kApplyNs
  // per item plus kRebuildNsPerId per id it scans; the lazy apply costs kApplyNs per item
  // now, and later queries at the end the deltas move ids away from (bottom() after
  // increments) walk past the stale ids or scan the status table, until their extra
  // reads since the batch reach size(): then one rebuild (ski rental: a lazy batch never
  // costs more than about twice its best path).
  // Lazy is taken when the cost model says rebuild (unless the last query read the other
  // end: then the rebuild runs now, with this call's threads), or for batches of
  // kLazyMin+ when the last query read the compatible end or the chain is already stale
  // in this direction. Constants measured on the 2-core VM (bench/bench_round.py).
  enum class Path { kMoves, kRebuild, kLazy };
  static constexpr int kMixed = 2;  // delta_sign of a batch with both signs (or an assignment)
  // kMoveNs stays above the measured move (since the moves without ownership: 75-110 ns
  // per +1 on tied counts at n = 10^6, 120 at 10^7, batch sorting included): the rule
  // charges the lazy apply a whole rebuild, so with 100 a batch of 10^6 +1s on 10^7
  // zeros took item moves (141 ms) instead of the lazy apply (~12 ms).
  static constexpr double kMoveNs = 300, kApplyNs = 20, kRebuildNsPerId = 17;

  static int delta_sign(const double* deltas, double delta, size_t n) noexcept;

  Path choose_path(size_t n, int bulk, int sign) const noexcept;

  void bulk_update(const uint32_t* ids, const double* vals, double scalar, size_t n, unsigned threads, bool assign,
                   int lazy_sign = 0);

  template <class IdT>
  BatchError bulk_apply(const IdT* ids, const double* vals, double scalar, size_t n, unsigned threads, bool assign,
                        bool lenient, int lazy_sign = 0);

  BadInput apply_one(Entry& en, double v, bool assign, bool lenient, double& old);
  // A lazy batch must keep its sign even if the caller rewrote the buffer after
  // delta_sign read it (see CAVEATS): a delta of the wrong sign adds nothing.
  double lazy_signed(double v) const noexcept {
    if (lazy_apply_sign_ > 0) return std::max(v, 0.0);
    if (lazy_apply_sign_ < 0) return std::min(v, 0.0);
    return v;
  }

  template <class IdT>
  BatchError apply_serial(const IdT* ids, const double* vals, double scalar, size_t n, bool assign, bool lenient);

  // apply_counted pays when the batch is large next to the table: its sequential pass is
  // a fixed cost (~3.3 ms at n = 10^6 here), the random apply ~15-40 ns an item depending
  // on the machine's memory latency. Measured with bench/cpp/bench_apply (n = 10^6,
  // checked +1s after erases, thread CPU time, medians of 12 interleaved rounds):
  // random / counted = 0.73-0.77 at 15 % of n, 0.84-0.86 at 20 %, 1.01-1.06 at 25 %,
  // 1.36-1.37 at 30 %, 1.67-1.69 at 40 %, 1.95 at 100 %. On a slower moment of the same
  // VM (random access ~2x dearer) it won from ~10 %. The rule is a share of capacity.
  static constexpr double kCountedShare = 0.25;
  bool counted_pays(size_t n, double d) const noexcept {
    return double(n) >= kCountedShare * double(capacity_) && std::fabs(d) <= 0x1p20 && d == std::trunc(d);
  }
  template <class IdT>
  bool apply_counted(const IdT* ids, double d, size_t n, bool lenient);
  double take_candidate(double v, uint32_t id, int end, double worst);

  template <class IdT>
  BatchError apply_partitioned(const IdT* ids, const double* vals, double scalar, size_t n, unsigned T, bool assign,
                               bool lenient);

  // Words to reserve in each of T owner buckets for a chunk of m positions: a fair share
  // and some slack (more is added if the ids are skewed).
  static size_t bucket_reserve(size_t m, unsigned T) noexcept { return m / T + m / (8 * T) + 128; }

  template <class IdT, class Owner, class Bucket>
  size_t bucket_chunk(const IdT* ids, size_t b, size_t e, unsigned T, const Owner& owner, const Bucket& bucket) const;

  template <class Bucket>
  void undo_partitioned(unsigned T, unsigned C, const std::vector<size_t>& applied, const Bucket& bucket);

  void bulk_insert(const uint32_t* ids, const double* scores, size_t n, unsigned threads);

  void collect_ids_locked(std::vector<uint32_t>& out) const;

  // Exclusive. Rebuilds the chain over `all` (every live id) by a parallel counting sort
  // of keys into ~size/(B/2) buckets by linear interpolation of the score; buckets are
  // in key order, so each becomes a node (oversized ones are refined lazily by queries).
  // Maps scores to nb buckets by linear interpolation over [mn, mx]. Monotone in the
  // score (each floating-point step is), so bucket order is key order and ties share a
  // bucket.
  struct Bucketing {
    double mn, scale;
    size_t nb;
    Bucketing(double lo, double hi, size_t buckets) : mn(lo), nb(buckets) {
      const double span = hi - lo;
      // One bucket (scale 0) when the span is 0, overflows (scores near +/-DBL_MAX) or is
      // so small (subnormal) that nb / span overflows: an infinite scale made 0 * inf NaN.
      // With scale 0, mn is 0 too: v - mn could overflow to inf, and inf * 0 is NaN, whose
      // conversion to size_t is undefined (stored scores are finite, so v * 0 is 0).
      const double s = double(nb) / span;
      scale = (span > 0 && std::isfinite(span) && std::isfinite(s)) ? s : 0.0;
      if (scale == 0.0) mn = 0.0;
    }
    size_t operator()(double v) const noexcept {
      // Clamped with min/max, not branches: in a pool of small counts most ids hit the
      // bottom bucket and a branch on it would mispredict about once per id.
      return size_t(std::min(std::max((v - mn) * scale, 0.0), double(nb - 1)));
    }
  };

  // Maps scores to nb buckets through a grid of up to 4096 cells over the order-preserving
  // 64-bit image of the score (so magnitudes spread like a log scale), each cell given
  // the share of buckets that a sample of scores puts in it, with linear interpolation
  // inside a cell. Monotone in the score; equal scores share a bucket. For heavy-tailed
  // scores, where linear bucketing puts nearly everything in one bucket.
  struct QuantileBucketing {
    uint64_t kmin = 0;
    unsigned shift = 0;
    size_t nb = 1;
    std::vector<uint32_t> base;  // first bucket of each cell; base[cells] = nb
    QuantileBucketing(double lo, double hi, size_t buckets, std::vector<double> sample) : nb(buckets) {
      kmin = detail::order_bits(lo);
      const uint64_t range = detail::order_bits(hi) - kmin;
      while (shift < 63 && (range >> shift) >= 4095) ++shift;
      const size_t cells = size_t(range >> shift) + 1;
      std::vector<uint64_t> count(cells + 1, 0);
      for (double v : sample) {
        const uint64_t k = detail::order_bits(std::min(std::max(v, lo), hi)) - kmin;
        ++count[size_t(k >> shift)];
      }
      base.assign(cells + 1, uint32_t(nb));
      uint64_t before = 0;
      const uint64_t m = std::max<uint64_t>(1, sample.size());
      for (size_t c = 0; c < cells; ++c) {
        base[c] = uint32_t(std::min<uint64_t>(nb - 1, before * nb / m));
        before += count[c];
      }
    }
    size_t operator()(double v) const noexcept {
      const uint64_t k = detail::order_bits(v) - kmin;  // scores lie in [lo, hi]: no wrap
      const size_t cell = size_t(k >> shift);
      const uint64_t off = k - (uint64_t(cell) << shift);  // < 2^shift
      const uint64_t frac = shift > 20 ? off >> (shift - 20) : off << (20 - shift);  // 20-bit fraction
      const size_t b = base[cell] + size_t((uint64_t(base[cell + 1] - base[cell]) * frac) >> 20);
      return b < nb ? b : nb - 1;
    }
  };

  void reset_chain_locked();

  void link_chain_locked(const std::vector<uint32_t>& nodes);

  unsigned rebuild_threads(unsigned threads) const noexcept;

  bool rebuild_scan_locked(unsigned threads);

  static constexpr int kScanFallback = 0, kScanDone = 1, kScanSkewed = 2;

  template <class Map>
  int scan_place_locked(const Map& bucket_of, size_t nb, unsigned T, size_t C, uint64_t n, bool may_report_skew);

  template <class Map>
  void place_locked(const Map& bucket_of, size_t nb, unsigned T, size_t C, const std::vector<std::vector<uint32_t>>& chunk_off,
                    const std::vector<uint64_t>& size_of, const std::vector<uint64_t>& piece_of,
                    const std::vector<size_t>& first_node, const std::vector<uint32_t>& nodes);

  std::vector<double> sample_scores(size_t m);

  void rebuild_locked(const std::vector<uint32_t>& all, unsigned threads);

  void rebuild_any_locked(unsigned threads, std::vector<uint32_t>* extra_ids = nullptr);

  // ------------------------------------------------------------------ check (member functions defined in detail/check.hpp, each with its comment)
  [[noreturn]] static void fail(const std::string& what) { throw std::logic_error("SemiOrderedIndex invariant: " + what); }

  void check_locked() const;

  // ------------------------------------------------------------------ members
  const uint64_t capacity_;
  const uint32_t node_size_;
  const double bulk_fraction_;
  // The status table: 2 MiB-aligned and (on Linux) backed by transparent huge pages,
  // because every update is a random access into it and 4 KiB pages would add a TLB
  // miss to most of them (numpy does the same for its large arrays).
  struct EntriesDeleter {
    uint64_t n;
    void operator()(Entry* p) const noexcept {
      for (uint64_t i = 0; i < n; ++i) p[i].~Entry();
      std::free(p);
    }
  };
  static constexpr size_t kHugePage = size_t(2) << 20;
  static Entry* allocate_entries(uint64_t n) {
    const size_t bytes = ((size_t(n) * sizeof(Entry) + kHugePage - 1) / kHugePage) * kHugePage;
    void* p = std::aligned_alloc(kHugePage, bytes);
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, bytes, MADV_HUGEPAGE);  // a hint: failure only costs speed
#endif
    Entry* e = static_cast<Entry*>(p);
    for (uint64_t i = 0; i < n; ++i) new (&e[i]) Entry();
    return e;
  }
  std::unique_ptr<Entry[], EntriesDeleter> entries_{nullptr, EntriesDeleter{0}};
  uint64_t max_nodes_ = 0, chunk_count_ = 0;
  std::unique_ptr<std::atomic<Node*>[]> chunks_;
  uint32_t head_ = 0;
  alignas(64) std::atomic<uint32_t> tail_{0};
  alignas(64) std::atomic<uint64_t> epoch_{2};
  alignas(64) std::atomic<int64_t> pins_[2] = {};
  alignas(64) std::atomic<bool> exclusive_{false};
  std::mutex exclusive_mu_;
  std::mutex retire_mu_;
  std::vector<uint32_t> retired_;
  std::atomic<size_t> retired_count_{0};
  detail::SpinLock alloc_mu_;
  std::vector<uint32_t> free_;
  uint64_t next_fresh_ = 0;
  std::atomic<uint64_t> rebuilds_{0};
  Shard shards_[kShards];
  // Lazy apply (issue 17): 0 when every id lies in its node's range; +1 (-1) when a lazy
  // batch of increments (decrements) left ids at or above (below) their node's range.
  // Written only under the exclusive guard, so a pinned reader sees it fixed.
  std::atomic<int> dirty_{0};
  std::atomic<int> last_end_{0};             // the end the last query read: -1 bottom, +1 top
  std::atomic<uint64_t> dirty_work_{0};      // extra ids dirty walks read since the chain went stale
  std::atomic<bool> dirty_scan_{false};      // a walk on this stale chain passed the scan's cost (query_scan)
  std::atomic<uint64_t> lazy_updates_{0};
  std::atomic<uint64_t> counted_updates_{0};
  // The stale end's kCandidates best keys (in query order) right after a lazy counted
  // batch, which reads every status entry anyway: the next bottom(n <= kCandidates)
  // after a So-CBI round at large b costs a copy instead of a walk or a scan of the
  // table. Written only under the exclusive guard; valid until the next change: every
  // path that changes a score or membership calls drop_candidates() first (under its
  // pin or the exclusive guard).
  static constexpr size_t kCandidates = 1024;
  std::vector<detail::Key> cand_;
  int cand_end_ = 0;
  std::atomic<bool> cand_valid_{false};
  std::atomic<uint64_t> candidate_queries_{0};
  void drop_candidates() noexcept {
    if (cand_valid_.load(std::memory_order_seq_cst)) cand_valid_.store(false, std::memory_order_seq_cst);
  }
  // apply_counted's repeat count per id, allocated on first use (1 byte per id, in
  // stats().scratch_bytes); all zero between calls.
  std::unique_ptr<uint8_t[]> repeat_counts_;
  std::atomic<uint64_t> stale_scans_{0};
  unsigned dirty_threads_ = 1;               // threads of the last lazy batch, for its rebuild
  int lazy_apply_sign_ = 0;                  // the sign the running (exclusive) lazy apply enforces

  // Scratch of the bulk path, kept from one call to the next (the path is exclusive, so
  // one set serves every caller): faulting in fresh pages each call cost more than the
  // pass itself, and asking for huge pages each call stalled on memory compaction now
  // and then (3.5 ms passes taking 20). Released when it would hold more than
  // kScratchKeepPerId bytes per id of capacity; counted in stats().memory_bytes.
  struct alignas(64) PaddedWords {  // own cache line: its size is written per call
    detail::ScratchLog<uint64_t> words;
    detail::ScratchLog<uint32_t> ids;  // the undo log's ids (buffer t: thread t's)
  };
  // Word buffers: buffer 0 is the serial path's undo log; the threaded path uses C * T,
  // one per (chunk, owner) pair, and buffer t's ids as thread t's id log. One 8-byte word
  // and one 4-byte id per batch item either way.
  struct BulkScratch {
    std::vector<std::unique_ptr<PaddedWords>> buffers;
    // Exactly k buffers: missing ones are created, the rest (a wider earlier call's
    // layout) dropped, so switching thread counts does not pile scratch up.
    void use(size_t k) {
      if (buffers.size() > k) buffers.resize(k);
      while (buffers.size() < k) buffers.emplace_back(new PaddedWords);
    }
    detail::ScratchLog<uint64_t>& words(size_t k) noexcept { return buffers[k]->words; }
    detail::ScratchLog<uint32_t>& ids(size_t k) noexcept { return buffers[k]->ids; }
    uint64_t bytes() const noexcept {
      uint64_t b = 0;
      for (const auto& w : buffers) b += w->words.capacity_bytes() + w->ids.capacity_bytes();
      return b;
    }
    void release() { buffers.clear(); }
  };
  static constexpr uint64_t kScratchKeepPerId = 16;
  static constexpr unsigned kApplyChunksPerThread = 4;  // chunks of the threaded apply's bucketing pass
  BulkScratch scratch_;  // touched only by the (exclusive) bulk path
  // After an exclusive call that used scratch_: give it back past kScratchKeepPerId bytes
  // per id, and publish its size (stats() must not walk scratch_).
  void trim_scratch() {
    if (scratch_.bytes() > kScratchKeepPerId * capacity_) scratch_.release();
    scratch_bytes_.store(scratch_.bytes() + (repeat_counts_ ? capacity_ : 0), std::memory_order_relaxed);
  }
  std::atomic<uint64_t> scratch_bytes_{0};
  std::atomic<int64_t> slot_bytes_{0};  // node slot arrays and hole bitmaps, for stats()
};

}  // namespace socbi

// Member definitions kept apart by concern (they need the complete class above).
#include "detail/bulk_path.hpp"
#include "detail/check.hpp"
