// socbi/detail/bulk_path.hpp -- the bulk path of SemiOrderedIndex: the update path chosen by cost
// (choose_path), the exclusive apply (serial and partitioned, with its undo log), the
// lazy apply that leaves the chain stale on one side, bulk insert and the O(n) rebuild
// (bucketing, placement, chain relinking). Member definitions only; the class and its
// state are in socbi/semi_ordered_index.hpp.
// Part of socbi/semi_ordered_index.hpp, the one header users include.
#pragma once

#include "../semi_ordered_index.hpp"

namespace socbi {

// +1: every delta >= 0 and one > 0; -1: every delta <= 0 and one < 0; 0: all zero;
// kMixed: both signs or a NaN (the checked paths refuse it).
inline auto SemiOrderedIndex::delta_sign(const double* deltas, double delta, size_t n) noexcept -> int {
  if (!deltas) return delta > 0 ? 1 : delta < 0 ? -1 : delta == 0 ? 0 : kMixed;
  double lo = 0, hi = 0;
  bool nan = false;
  for (size_t i = 0; i < n; ++i) {
    lo = std::min(lo, deltas[i]);
    hi = std::max(hi, deltas[i]);
    nan |= deltas[i] != deltas[i];
  }
  if (nan || (lo < 0 && hi > 0)) return kMixed;
  return hi > 0 ? 1 : lo < 0 ? -1 : 0;
}

inline auto SemiOrderedIndex::choose_path(size_t n, int bulk, int sign) const noexcept -> Path {
  if (bulk == 1) return Path::kRebuild;
  if (bulk == 0 || bulk_fraction_ == 0) return Path::kMoves;
  const uint64_t sz = size();
  if (bulk_fraction_ > 0) return n >= 4096 && double(n) >= bulk_fraction_ * double(sz) ? Path::kRebuild : Path::kMoves;
  const int dirty = dirty_.load(std::memory_order_relaxed);
  const int end = last_end_.load(std::memory_order_relaxed);  // -1 bottom, +1 top, 0 none yet
  const bool lazy_ok = (sign == 1 || sign == -1) && (dirty == 0 || dirty == sign);
  if (lazy_ok && n >= kLazyMin && (end == -sign || dirty == sign)) return Path::kLazy;
  const double scanned = double(sz * 4 >= capacity_ ? capacity_ : sz);  // see rebuild_any_locked
  const double rebuild = double(n) * kApplyNs + scanned * kRebuildNsPerId;
  if (n < 4096 || double(n) * kMoveNs <= rebuild) return Path::kMoves;
  return lazy_ok && end != sign ? Path::kLazy : Path::kRebuild;
}

// The unchecked bulk path behaves as the item-by-item one: a sum that overflows (or an
// infinite value) saturates at +/-DBL_MAX, a NaN value is read as 0.0 (a NaN delta adds
// nothing), an absent id is skipped. An id out of range (no item-by-item behaviour to
// match: it would index past the status table) throws std::out_of_range, nothing changed.
inline auto SemiOrderedIndex::bulk_update(const uint32_t* ids, const double* vals, double scalar, size_t n, unsigned threads, bool assign, int lazy_sign) -> void {
  const BatchError bad = bulk_apply(ids, vals, scalar, n, threads, assign, /*lenient=*/true, lazy_sign);
  if (bad.index < n)
    throw std::out_of_range("socbi: ids[" + std::to_string(bad.index) + "] is out of range [0, capacity=" +
                            std::to_string(capacity_) + "); the batch was not applied");
}

// Exclusive. The batch is applied to the status table and checked in the same pass (id
// range, presence, finite result), each old score going to an undo log; a refused batch
// is rolled back from the log newest first, which restores every score bit for bit.
// Then the rebuild.
// lazy_sign != 0 (the lazy apply): the chain is left stale instead (see query_dirty), ids
// with their new keys past their nodes' ranges on the lazy_sign side, unless the chain
// is stale the other way already (then it is rebuilt).
template <class IdT>
inline auto SemiOrderedIndex::bulk_apply(const IdT* ids, const double* vals, double scalar, size_t n, unsigned threads, bool assign, bool lenient, int lazy_sign) -> BatchError {
  ExclusiveGuard ex(*this);
  drop_candidates();
  const unsigned T = unsigned(std::max<size_t>(1, std::min<size_t>(threads, n / kMinPerThread)));
  const int dirty = dirty_.load(std::memory_order_relaxed);
  const bool lazy = lazy_sign != 0 && (dirty == 0 || dirty == lazy_sign);
  detail::TeamScope team(lazy ? T : std::max(T, rebuild_threads(threads)));
  lazy_apply_sign_ = lazy ? lazy_sign : 0;  // read by apply_one; the team starts after this store
  const double d = lazy_signed(scalar);
  const bool counted = T == 1 && !vals && !assign && counted_pays(n, d) && apply_counted(ids, d, n, lenient);
  const BatchError bad = counted                         ? BatchError{n, BadInput::kNone}
                         : (T == 1 || n > UINT32_MAX) ? apply_serial(ids, vals, scalar, n, assign, lenient)
                                                      : apply_partitioned(ids, vals, scalar, n, T, assign, lenient);
  lazy_apply_sign_ = 0;
  trim_scratch();
  if (bad.index == n) {
    if (lazy) {
      // The queries' rent restarts with each batch: a query on the stale chain costs at
      // most a walk capped at one scan plus the scan (query_scan), so a rebuild pays only
      // when the queries between two batches would cost more than one. Carried across
      // batches, the rent bought a rebuild every few So-CBI rounds (~11 ms at n = 10^6)
      // where scanning every round costs ~1 ms.
      dirty_work_.store(0, std::memory_order_relaxed);
      dirty_.store(lazy_sign, std::memory_order_relaxed);
      dirty_threads_ = threads;
      lazy_updates_.fetch_add(1, std::memory_order_relaxed);
      SOCBI_TEST_TRACE(detail::kTraceWholeIndex, "lazy batch", 0, 0, double(lazy_sign), double(n), 0);
    } else {
      rebuild_any_locked(threads);
    }
  }
  return bad;
}

// Adds (or assigns) v to a present id's score, setting `old` to the score it replaced;
// or says why not (and changes nothing). lenient (the unchecked path): an absent id is
// skipped (old is its score, so restoring it is a no-op) and a non-finite result is
// stored in finite form, as the item-by-item path does.
inline auto SemiOrderedIndex::apply_one(Entry& en, double v, bool assign, bool lenient, double& old) -> BadInput {
  v = lazy_signed(v);
  old = en.score.load(std::memory_order_relaxed);
  if (status_of(en.meta.load(std::memory_order_relaxed)) == ABSENT) return lenient ? BadInput::kNone : BadInput::kAbsent;
  double now = assign ? v : old + v;
  if (!std::isfinite(now)) {
    if (!lenient) return BadInput::kNotFinite;
    now = assign ? detail::stored_score(v) : detail::saturating_add(old, v);
  }
  en.score.store(now + 0.0, std::memory_order_relaxed);  // stored form: -0.0 as +0.0
  return BadInput::kNone;
}

// One thread, 64 positions at a time: a branch-free pass makes the block's mask of ids
// in range, whose entries are prefetched two blocks ahead (a DRAM round trip is about
// 100 positions of this pass: one block ahead left the loop waiting on misses; two
// blocks took 12 % off a 10^6 batch). Old scores go to the undo log.
// Each caller id is read once, into a block (the caller may rewrite its buffer during
// the call: the range check, the apply and the undo must all see the id that was read),
// and each applied id goes to a second log beside its old score, which the undo reads.
template <class IdT>
inline auto SemiOrderedIndex::apply_serial(const IdT* ids, const double* vals, double scalar, size_t n, bool assign, bool lenient) -> BatchError {
  constexpr size_t kAhead = 2;  // blocks prefetched ahead of the one being applied
  uint32_t block[kAhead + 1][64];
  uint64_t mask[kAhead + 1];
  auto load_block = [&](size_t b) {  // the block's ids and mask of ids in range, prefetched
    uint32_t* out = block[(b / 64) % (kAhead + 1)];
    const size_t e = std::min(b + 64, n);
    uint64_t m = 0;
    for (size_t j = b; j < e; ++j) {
      const IdT v = ids[j];
      m |= uint64_t(id_in_range(v)) << (j - b);
      out[j - b] = uint32_t(v);  // meaningful only where the mask bit is set
    }
    for (uint64_t k = m; k; k &= k - 1) __builtin_prefetch(&entries_[out[__builtin_ctzll(k)]], 1, 1);
    mask[(b / 64) % (kAhead + 1)] = m;
  };
  scratch_.use(1);
  detail::ScratchLog<uint64_t>& log = scratch_.words(0);
  detail::ScratchLog<uint32_t>& log_ids = scratch_.ids(0);
  log.clear();
  log.reserve(n);
  log_ids.clear();
  log_ids.reserve(n);
  // Both logs have room for n: plain stores through locals (a push_back's size could
  // alias the uint64 words, so the compiler would reload it per item).
  uint64_t* const lw = log.data();
  uint32_t* const li = log_ids.data();
  size_t logged = 0;
  BatchError bad{n, BadInput::kNone};
  for (size_t a = 0; a < kAhead && a * 64 < n; ++a) load_block(a * 64);
  for (size_t b = 0; b < n && bad.index == n; b += 64) {
    const size_t e = std::min(b + 64, n);
    if (b + kAhead * 64 < n) load_block(b + kAhead * 64);
    const uint32_t* cur = block[(b / 64) % (kAhead + 1)];
    const uint64_t in = mask[(b / 64) % (kAhead + 1)];
    const uint64_t full = e - b == 64 ? ~uint64_t(0) : (uint64_t(1) << (e - b)) - 1;
    const size_t stop = in == full ? e : b + size_t(__builtin_ctzll(~in));  // first id out of range
    for (size_t i = b; i < stop; ++i) {
      const uint32_t id = cur[i - b];
      double old;
      const BadInput why = apply_one(entries_[id], vals ? vals[i] : scalar, assign, lenient, old);
      if (why != BadInput::kNone) {
        bad = {i, why};
        break;
      }
      lw[logged] = detail::bits_of(old);
      li[logged++] = id;
    }
    if (bad.index == n && stop < e) bad = {stop, BadInput::kOutOfRange};
  }
  log.set_size(logged);
  log_ids.set_size(logged);
  if (bad.index < n)
    for (size_t k = logged; k-- > 0;) entries_[li[k]].score.store(detail::double_of(lw[k]), std::memory_order_relaxed);
  return bad;
}

// One thread, one integer delta for a batch that touches much of the table (issue 17):
// count each id's repeats in a byte per id, then add count * delta to every status entry
// in one sequential pass. The counts (1 byte per id) stay in cache where the 16-byte
// entries do not, so a random entry access per item becomes a byte increment plus a
// sequential share of the table (see counted_pays for the measured costs).
// Bit for bit the item path's result: for an integer score |s| <= 2^52 and an integer
// delta |d| <= 2^20, s + c*d is exact (below 2^53), so it equals c adds in any order;
// another score with a count takes the c adds one by one, as apply_one does. The ids are
// read once, in the counting pass. Nothing is changed and false returned (the caller
// then runs apply_serial, which reports the first bad position in batch order) when an
// id is out of range or repeated 256+ times, or, on a checked batch, when an id is absent
// or a sum is not finite: the entries done so far are rolled back (exactly: integer sums
// by subtraction, the others from an undo log).
template <class IdT>
inline bool SemiOrderedIndex::apply_counted(const IdT* ids, double d, size_t n, bool lenient) {
  // Every allocation first (a bad_alloc here changes nothing, counts included).
  if (!repeat_counts_) repeat_counts_.reset(new uint8_t[capacity_]());  // all zero between calls
  scratch_.use(1);
  detail::ScratchLog<uint64_t>& log = scratch_.words(0);  // old scores of the one-by-one sums
  detail::ScratchLog<uint32_t>& log_ids = scratch_.ids(0);
  log.clear();
  log_ids.clear();
  if (!lenient) {  // room for every distinct id
    log.reserve(std::min<uint64_t>(n, capacity_));
    log_ids.reserve(std::min<uint64_t>(n, capacity_));
  }
  // A lazy batch also collects the stale end's kCandidates best keys (see cand_): ids come
  // in increasing order, so a later id never wins a tie at the bottom and always wins
  // one at the top.
  const int end = -lazy_apply_sign_;  // the end the next queries read: -1 bottom, +1 top, 0 none
  cand_.clear();
  if (end != 0) cand_.reserve(2 * kCandidates);

  uint8_t* const cnt = repeat_counts_.get();
  auto zero_counts = [&] { std::memset(cnt, 0, capacity_); };
  for (size_t i = 0; i < n; ++i) {
    const IdT v = ids[i];
    if (!id_in_range(v)) return zero_counts(), false;
    const uint8_t c = cnt[uint32_t(v)];
    if (c == 255) return zero_counts(), false;
    cnt[uint32_t(v)] = uint8_t(c + 1);
  }
  constexpr double kExact = 0x1p52;  // integers below this stay exact after + c*d
  constexpr uint64_t kQuietNaNBits = 0x7FF8000000000000ull;
  // One instantiation per end, so the collecting test is a compare against a register.
  auto pass = [&](auto end_tag) -> uint64_t {  // the entry that refused a checked batch, or capacity_
    constexpr int kEnd = decltype(end_tag)::value;
    double worst = kEnd < 0 ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
    auto takes = [&](double v) { return kEnd < 0 ? v < worst : v >= worst; };  // NaN: never
    for (uint64_t i = 0; i < capacity_; ++i) {
      const uint8_t c = cnt[i];
      Entry& en = entries_[i];
      const double s = en.score.load(std::memory_order_relaxed);
      const double a = std::fabs(s);
      // One branch, on a product: with && (or bools combined with &) the compiler branched
      // on c != 0 or on presence, mispredicting every few entries (the pass took 9.3 ms
      // instead of 3.5 at n = 10^6 once erases had left absent ids among present ones).
      const unsigned big_or_fraction = unsigned(!(a <= kExact)) | unsigned((a + kExact) - kExact != a);
      const bool present = status_of(en.meta.load(std::memory_order_relaxed)) != ABSENT;
      if (__builtin_expect(unsigned(c) * (big_or_fraction | unsigned(!present)) != 0, 0)) {  // an absent id, a fraction, a huge score
        if (!present) {
          if (lenient) continue;
          return i;
        }
        double r = s;
        for (uint8_t k = 0; k < c; ++k) {
          double next = r + d;
          if (!std::isfinite(next)) {
            if (!lenient) return i;
            next = detail::saturating_add(r, d);
          }
          r = next + 0.0;
        }
        if (!lenient) {  // within the reserved room: never allocates
          log.push_back(detail::bits_of(s));
          log_ids.push_back(uint32_t(i));
        }
        en.score.store(r, std::memory_order_relaxed);
        if (kEnd != 0 && takes(r)) worst = take_candidate(r, uint32_t(i), kEnd, worst);
        continue;
      }
      // Branch-free for the common case: an entry without a count is stored back unchanged
      // (s + 0.0 == s for a stored score, +0.0 included); skipping it would cost a
      // mispredicted branch per entry (measured 2x slower at 10^6 +1s on 10^6 ids).
      const double v = s + double(c) * d;
      en.score.store(v, std::memory_order_relaxed);
      // An absent id offers NaN, which no comparison takes, chosen by a mask: `present ? v :
      // NaN` compiled to a branch on presence, which mispredicted as often as erases left
      // absent ids (the pass took ~5 ms longer at n = 10^6).
      if (kEnd != 0) {
        const uint64_t absent_mask = uint64_t(0) - uint64_t(!present);
        const double key = detail::double_of((detail::bits_of(v) & ~absent_mask) | (kQuietNaNBits & absent_mask));
        if (__builtin_expect(takes(key), 0)) worst = take_candidate(v, uint32_t(i), kEnd, worst);
      }
    }
    return capacity_;
  };
  const uint64_t fail = end < 0   ? pass(std::integral_constant<int, -1>{})
                        : end > 0 ? pass(std::integral_constant<int, 1>{})
                                  : pass(std::integral_constant<int, 0>{});
  if (fail < capacity_) {
    for (uint64_t j = 0; j < fail; ++j)
      if (const uint8_t c = cnt[j]) {
        Entry& en = entries_[j];
        en.score.store(en.score.load(std::memory_order_relaxed) - double(c) * d, std::memory_order_relaxed);
      }
    for (size_t k = log.size(); k-- > 0;)  // the one-by-one sums (their subtraction above was inexact)
      entries_[log_ids[k]].score.store(detail::double_of(log[k]), std::memory_order_relaxed);
  }
  zero_counts();
  if (fail < capacity_) return false;
  if (end != 0) {
    std::sort(cand_.begin(), cand_.end(), [end](const detail::Key& a, const detail::Key& b) { return detail::before_at(end, a, b); });
    if (cand_.size() > kCandidates) cand_.resize(kCandidates);
    cand_end_ = end;
    cand_valid_.store(true, std::memory_order_seq_cst);
  }
  counted_updates_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Adds a key to apply_counted's candidates; when they reach 2 * kCandidates, keeps the
// kCandidates best and returns the new bar (the worst kept), else the old one. Out of
// line: called ~10^4 times in a pass over 10^6 entries.
inline auto SemiOrderedIndex::take_candidate(double v, uint32_t id, int end, double worst) -> double {
  cand_.push_back({v, id});  // reserved: never allocates
  if (cand_.size() < 2 * kCandidates) return worst;
  std::nth_element(cand_.begin(), cand_.begin() + (kCandidates - 1), cand_.end(),
                   [end](const detail::Key& a, const detail::Key& b) { return detail::before_at(end, a, b); });
  cand_.resize(kCandidates);
  return cand_.back().score;
}

// T threads. Thread t owns the ids whose 16-id block hashes to t, so each id has one
// writer (no CAS, whose lock prefix would stall the cache misses this pass lives on; no
// shared cache lines) and repeated ids are summed in batch order whatever T is. One
// parallel pass over contiguous chunks of the batch reads the caller's ids once and
// appends a (position, id) word to the bucket of (chunk, owner); then thread t applies
// its buckets in chunk order (so in position order), prefetching far ahead, and
// overwrites each applied word with the score it replaced, its id going to the thread's
// id log: the buckets and id logs are the undo log (the caller's buffer is not read
// again, so rewriting it during the call cannot misdirect the undo).
template <class IdT>
inline auto SemiOrderedIndex::apply_partitioned(const IdT* ids, const double* vals, double scalar, size_t n, unsigned T, bool assign, bool lenient) -> BatchError {
  auto owner = [T](uint64_t id) noexcept -> unsigned {
    return unsigned((uint64_t(uint32_t((id >> 4) * 0x9E3779B1u)) * T) >> 32);
  };
  // Chunks of the batch, claimed dynamically (a helper can start late on a core that
  // was idle): bucket (c, o) holds chunk c's positions whose id o owns, in order.
  const unsigned C = kApplyChunksPerThread * T;
  scratch_.use(size_t(C) * T);
  auto bucket = [&](unsigned chunk, unsigned own) -> detail::ScratchLog<uint64_t>& {
    return scratch_.words(size_t(chunk) * T + own);
  };
  auto chunk_begin = [n, C](unsigned c) { return n * c / C; };
  // Reserved here, not by the workers: a helper's malloc would come from its own
  // arena, which returns memory to the system between calls, so each call would
  // fault its pages in again (~2 us a page on a VM).
  for (unsigned c = 0; c < C; ++c)
    for (unsigned o = 0; o < T; ++o) bucket(c, o).reserve(bucket_reserve(chunk_begin(c + 1) - chunk_begin(c), T));
  std::vector<size_t> chunk_end(C, n);  // where each chunk's bucketing stopped
  detail::parallel_chunks(n, T, C, [&](unsigned, size_t c, size_t b, size_t e) {
    chunk_end[c] = bucket_chunk(ids, b, e, T, owner, [&](unsigned o) -> detail::ScratchLog<uint64_t>& {
      return bucket(unsigned(c), o);
    });
  });
  size_t range_bad = n;  // the first position out of range (chunks are in position order)
  for (unsigned c = 0; c < C && range_bad == n; ++c)
    if (chunk_end[c] < chunk_begin(c + 1)) range_bad = chunk_end[c];
  for (size_t k = T; k < size_t(C) * T; ++k) scratch_.ids(k).release();  // a wider earlier call's
  for (unsigned t = 0; t < T; ++t) {  // reserved here, not by the workers (see above)
    size_t mine = 0;
    for (unsigned c = 0; c < C; ++c) mine += bucket(c, t).size();
    scratch_.ids(t).clear();
    scratch_.ids(t).reserve(mine);
  }
  std::vector<BatchError> err(T, BatchError{n, BadInput::kNone});
  std::vector<size_t> applied(T, 0);
  std::atomic<size_t> first_bad{range_bad};  // lets the other threads stop early
  detail::parallel_for(T, T, [&](unsigned t, size_t, size_t) {
    size_t done = 0;
    bool stop = false;
    uint32_t* log_ids = scratch_.ids(t).data();
    for (unsigned c = 0; c < C && !stop; ++c) {
      detail::ScratchLog<uint64_t>& items = bucket(c, t);
      uint64_t* w = items.data();
      const size_t m = items.size();
      for (size_t k = 0; k < m; ++k) {
        const size_t i = size_t(w[k] >> 32);
        if (((k & 1023) == 0 && first_bad.load(std::memory_order_relaxed) < i) || i >= range_bad) {
          stop = true;  // positions only grow from here
          break;
        }
        if (k + 128 < m) __builtin_prefetch(&entries_[uint32_t(w[k + 128])], 1, 1);  // a DRAM round trip ahead
        double old;
        const BadInput why = apply_one(entries_[uint32_t(w[k])], vals ? vals[i] : scalar, assign, lenient, old);
        if (why != BadInput::kNone) {
          err[t] = {i, why};
          size_t cur = first_bad.load(std::memory_order_relaxed);
          while (i < cur && !first_bad.compare_exchange_weak(cur, i, std::memory_order_relaxed)) {
          }
          stop = true;
          break;
        }
        log_ids[done++] = uint32_t(w[k]);
        w[k] = detail::bits_of(old);
      }
    }
    applied[t] = done;
    scratch_.ids(t).set_size(done);
  });
  BatchError bad{range_bad, range_bad < n ? BadInput::kOutOfRange : BadInput::kNone};
  for (const auto& e : err)
    if (e.index < bad.index) bad = e;
  if (bad.index < n) undo_partitioned(T, C, applied, bucket);
  return bad;
}

// Splits positions [b, e) of the batch into T buckets of (position, id) words by owner;
// returns where it stopped: e, or the first position whose id is out of range. Branch-
// free in the owner (random: a branch on it would mispredict every other id).
template <class IdT, class Owner, class Bucket>
inline auto SemiOrderedIndex::bucket_chunk(const IdT* ids, size_t b, size_t e, unsigned T, const Owner& owner, const Bucket& bucket) const -> size_t {
  const uint64_t cap = capacity_;  // a local: the word stores could alias the member
  std::vector<uint64_t*> out(T);
  std::vector<size_t> cnt(T, 0);
  for (unsigned o = 0; o < T; ++o) {  // reserved by the caller (see apply_partitioned)
    bucket(o).clear();
    out[o] = bucket(o).data();
  }
  size_t i = b;
  while (i < e) {
    for (unsigned o = 0; o < T; ++o)
      if (bucket(o).capacity() - cnt[o] <= 64) {  // room for a whole block in every bucket
        bucket(o).set_size(cnt[o]);
        bucket(o).reserve(2 * bucket(o).capacity());
        out[o] = bucket(o).data();
      }
    const size_t be = std::min(i + 64, e);
    if (T == 2) {  // both words written, one kept: no indexed store chain
      uint64_t *o0 = out[0], *o1 = out[1];
      size_t k0 = cnt[0], k1 = cnt[1];
      for (; i < be; ++i) {
        const uint64_t id = uint64_t(ids[i]);  // read once: the caller may rewrite its buffer
        if (id >= cap) break;
        const uint64_t word = (uint64_t(i) << 32) | id;
        const size_t mine = owner(id);
        o0[k0] = word;
        o1[k1] = word;
        k1 += mine;
        k0 += 1 - mine;
      }
      cnt[0] = k0;
      cnt[1] = k1;
    } else {
      for (; i < be; ++i) {
        const uint64_t id = uint64_t(ids[i]);
        if (id >= cap) break;
        const unsigned o = owner(id);
        out[o][cnt[o]++] = (uint64_t(i) << 32) | id;
      }
    }
    if (i < be) break;
  }
  for (unsigned o = 0; o < T; ++o) bucket(o).set_size(cnt[o]);
  return i;
}

// Rolls back what apply_partitioned applied, newest first per owner, so a repeated id
// ends at the score it had before the batch. Thread t applied a prefix of its buckets in
// chunk order; an applied word holds the old score, the thread's id log the id.
template <class Bucket>
inline auto SemiOrderedIndex::undo_partitioned(unsigned T, unsigned C, const std::vector<size_t>& applied, const Bucket& bucket) -> void {
  std::vector<size_t> in_chunk(C);
  for (unsigned t = 0; t < T; ++t) {
    size_t left = applied[t];
    for (unsigned c = 0; c < C; ++c) {
      in_chunk[c] = std::min(bucket(c, t).size(), left);
      left -= in_chunk[c];
    }
    const detail::ScratchLog<uint32_t>& log_ids = scratch_.ids(t);
    size_t j = applied[t];
    for (unsigned c = C; c-- > 0;) {  // newest first: the last chunk first
      const detail::ScratchLog<uint64_t>& items = bucket(c, t);
      for (size_t k = in_chunk[c]; k-- > 0;)
        entries_[log_ids[--j]].score.store(detail::double_of(items[k]), std::memory_order_relaxed);
    }
  }
}

inline auto SemiOrderedIndex::bulk_insert(const uint32_t* ids, const double* scores, size_t n, unsigned threads) -> void {
  ExclusiveGuard ex(*this);
  drop_candidates();
  detail::TeamScope team(rebuild_threads(threads));
  std::vector<uint32_t> all;  // the new ids (the chain still holds the old ones)
  all.reserve(n);
  size_t added = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t id = ids[i];  // each caller value read once
    Entry& e = entries_[id];
    if (status_of(e.meta.load(std::memory_order_relaxed)) != ABSENT) continue;
    e.score.store(detail::stored_score(scores[i]), std::memory_order_relaxed);
    e.meta.store(make_meta(IDLE, kNil, 0, tag_of(e.meta.load(std::memory_order_relaxed)) + 1),
                 std::memory_order_relaxed);
    all.push_back(id);
    ++added;
  }
  my_shard().size.fetch_add(int64_t(added), std::memory_order_relaxed);
  rebuild_any_locked(threads, &all);
}

inline auto SemiOrderedIndex::collect_ids_locked(std::vector<uint32_t>& out) const -> void {
  out.clear();
  out.reserve(size());
  for (uint32_t x = head_; x != kNil; x = node(x).next[0].load(std::memory_order_relaxed)) {
    const Node& nd = node(x);
    const uint32_t h = nd.hwm.load(std::memory_order_relaxed);
    for (uint32_t i = 0; i < h; ++i) {
      const uint32_t id = nd.items[i].load(std::memory_order_relaxed);
      if (id != kTomb) out.push_back(id);
    }
  }
}

// Exclusive. Frees every node but the head (no reader is pinned) and empties the head.
inline auto SemiOrderedIndex::reset_chain_locked() -> void {
  {
    std::vector<uint32_t> old;
    for (uint32_t x = node(head_).next[0].load(std::memory_order_relaxed); x != kNil;
         x = node(x).next[0].load(std::memory_order_relaxed))
      old.push_back(x);
    std::lock_guard<std::mutex> gr(retire_mu_);
    std::lock_guard<detail::SpinLock> ga(alloc_mu_);
    // Dead, so a stale finger (or any other remembered index) fails validation.
    for (uint32_t x : old) node(x).dead.store(1, std::memory_order_release);
    for (uint32_t x : old) free_.push_back(x);
    for (uint32_t x : retired_) free_.push_back(x);
    retired_.clear();
    retired_count_.store(0, std::memory_order_relaxed);
  }
  Node& h = node(head_);
  for (auto& nx : h.next) nx.store(kNil, std::memory_order_relaxed);
  h.reset_slots();
  h.seen_ver.store(~0u, std::memory_order_relaxed);
  h.sorted_ver.store(~0u, std::memory_order_relaxed);
  h.set_hi(kPlusInf);
  tail_.store(head_, std::memory_order_relaxed);
  rebuilds_.fetch_add(1, std::memory_order_relaxed);
  dirty_.store(0, std::memory_order_relaxed);  // every rebuild places every id
  dirty_work_.store(0, std::memory_order_relaxed);
  dirty_scan_.store(false, std::memory_order_relaxed);
}

// Exclusive. Links filled nodes (in key order, the head first) into the chain and towers.
inline auto SemiOrderedIndex::link_chain_locked(const std::vector<uint32_t>& nodes) -> void {
  uint32_t last_at[kMaxLevel];
  for (auto& l : last_at) l = head_;
  for (size_t pi = 1; pi < nodes.size(); ++pi) {
    const uint32_t xi = nodes[pi];
    Node& x = node(xi);
    Node& p = node(nodes[pi - 1]);
    p.set_hi(x.lo);
    x.prev.store(nodes[pi - 1], std::memory_order_relaxed);
    for (int l = 0; l < x.height; ++l) {
      node(last_at[l]).next[l].store(xi, std::memory_order_relaxed);
      last_at[l] = xi;
    }
    x.fully_linked.store(1, std::memory_order_relaxed);
  }
  const uint32_t last = nodes.back();
  node(last).set_hi(kPlusInf);
  tail_.store(last, std::memory_order_release);
}

// Threads the rebuild scan uses (a thread per 64 Ki ids of capacity at most).
inline auto SemiOrderedIndex::rebuild_threads(unsigned threads) const noexcept -> unsigned {
  return unsigned(std::max<uint64_t>(1, std::min<uint64_t>(threads, capacity_ / 65536 + 1)));
}

// Exclusive rebuild when most ids are present: scans the status table in id order
// (sequential reads, sequential status writes) instead of gathering by node. Three
// parallel passes: min/max, per-thread bucket histograms, placement. Returns false
// (nothing changed) when a bucket would exceed a node's slot limit (massive ties);
// the caller then uses the general path.
inline auto SemiOrderedIndex::rebuild_scan_locked(unsigned threads) -> bool {
  const uint64_t cap = capacity_;
  const unsigned T = rebuild_threads(threads);
  // Scan chunks claimed dynamically: 1 for one thread, else 1-4 per thread (a multiple
  // of T: the placement pass splits the ids into T parts along chunk boundaries).
  const size_t C = T * size_t(std::max<uint64_t>(1, std::min<uint64_t>(T == 1 ? 1 : 4, cap / 65536 / T)));
  std::vector<double> tmin(T, std::numeric_limits<double>::infinity()), tmax(T, -std::numeric_limits<double>::infinity());
  std::vector<uint64_t> tcount(T, 0);
  detail::parallel_chunks(size_t(cap), T, C, [&](unsigned t, size_t, size_t b, size_t e) {
    double mn = tmin[t], mx = tmax[t];
    uint64_t c = 0;
    for (size_t id = b; id < e; ++id) {
      if (status_of(entries_[id].meta.load(std::memory_order_relaxed)) == ABSENT) continue;
      const double v = entries_[id].score.load(std::memory_order_relaxed);
      mn = std::min(mn, v);
      mx = std::max(mx, v);
      ++c;
    }
    tmin[t] = mn;
    tmax[t] = mx;
    tcount[t] += c;
  });
  uint64_t n = 0;
  for (uint64_t c : tcount) n += c;
  const double lo = *std::min_element(tmin.begin(), tmin.end()), hi = *std::max_element(tmax.begin(), tmax.end());
  const size_t nb = std::max<size_t>(1, size_t(n / std::max<uint32_t>(1, node_size_ / 2)));
  const int r = scan_place_locked(Bucketing(lo, hi, nb), nb, T, C, n, /*may_report_skew=*/true);
  if (r != kScanSkewed) return r == kScanDone;
  // Linear bucketing left a bucket far over its share (a heavy tail: most scores near
  // one end). Bucket by sampled quantiles instead; ties still share a bucket.
  return scan_place_locked(QuantileBucketing(lo, hi, nb, sample_scores(size_t(std::min<uint64_t>(n, 32 * nb)))), nb, T,
                           C, n, false) == kScanDone;
}

// The histogram and placement passes of rebuild_scan_locked for one bucket mapping
// (monotone in the score). Returns kScanDone, or, with nothing changed, kScanFallback
// (a bucket over a node's slot limit: the general path must run) or kScanSkewed (a
// non-tie bucket over 8 nodes' worth, when the caller allows the answer).
template <class Map>
inline auto SemiOrderedIndex::scan_place_locked(const Map& bucket_of, size_t nb, unsigned T, size_t C, uint64_t n, bool may_report_skew) -> int {
  const uint64_t cap = capacity_;
  // Per id chunk (C of them, claimed by T threads) and bucket: the count, which places
  // the chunk's ids after those of earlier chunks. Per thread and bucket: the smallest
  // score with the first (smallest) id holding it, and the largest score. Counts go to
  // 4 interleaved copies, so runs of ids in one bucket (a pool of small counts) do not
  // wait on each other's increments.
  std::vector<std::vector<uint32_t>> hist(C, std::vector<uint32_t>(nb, 0));
  std::vector<std::vector<uint32_t>> h4_of(T, std::vector<uint32_t>(nb * 4, 0));  // allocated here, not by helpers: see apply_partitioned
  std::vector<std::vector<double>> tmin_score(T, std::vector<double>(nb, std::numeric_limits<double>::infinity()));
  std::vector<std::vector<uint32_t>> tmin_id(T, std::vector<uint32_t>(nb, 0));
  std::vector<std::vector<double>> tmax_score(T, std::vector<double>(nb, -std::numeric_limits<double>::infinity()));
  detail::parallel_chunks(size_t(cap), T, C, [&](unsigned t, size_t chunk, size_t b, size_t e) {
    std::vector<uint32_t>& h4 = h4_of[t];  // zero: the sum below clears what it reads
    auto& mn = tmin_score[t];
    auto& mi = tmin_id[t];
    auto& mx = tmax_score[t];
    for (size_t id = b; id < e; ++id) {
      if (status_of(entries_[id].meta.load(std::memory_order_relaxed)) == ABSENT) continue;
      const double v = entries_[id].score.load(std::memory_order_relaxed);
      const size_t bk = bucket_of(v);
      ++h4[bk * 4 + (id & 3)];
      if (v < mn[bk]) {  // strictly: ids ascend, so the first id at the minimum is kept
        mn[bk] = v;
        mi[bk] = uint32_t(id);
      }
      if (v > mx[bk]) mx[bk] = v;
    }
    auto& hh = hist[chunk];
    for (size_t bk = 0; bk < nb; ++bk) {
      hh[bk] = h4[bk * 4] + h4[bk * 4 + 1] + h4[bk * 4 + 2] + h4[bk * 4 + 3];
      h4[bk * 4] = h4[bk * 4 + 1] = h4[bk * 4 + 2] = h4[bk * 4 + 3] = 0;
    }
  });
  // A bucket of equal scores (ties: counts) is filled in id order, which is its key
  // order, so it is cut into node-sized pieces right away instead of being left as
  // one huge node for queries to split. Other buckets become one node each.
  const uint64_t piece_cap = std::max<uint32_t>(1, node_size_ - node_size_ / 4);
  std::vector<uint64_t> size_of(nb, 0), piece_of(nb, 0);
  std::vector<Packed> lo_of(nb, ~Packed(0));
  for (size_t bk = 0; bk < nb; ++bk) {
    double top = -std::numeric_limits<double>::infinity();
    for (size_t c = 0; c < C; ++c) size_of[bk] += hist[c][bk];
    for (unsigned t = 0; t < T; ++t) {
      if (tmax_score[t][bk] < tmin_score[t][bk]) continue;  // no id of this bucket
      lo_of[bk] = std::min(lo_of[bk], pack(tmin_score[t][bk], tmin_id[t][bk]));
      top = std::max(top, tmax_score[t][bk]);
    }
    if (size_of[bk] == 0) continue;
    const bool ties = unpack_score(lo_of[bk]) == top;
    piece_of[bk] = ties ? piece_cap : size_of[bk];
    if (!ties && may_report_skew && size_of[bk] > 8 * uint64_t(node_size_)) return kScanSkewed;
    if (!ties && size_of[bk] > kMaxNodeCap) return kScanFallback;
  }
  reset_chain_locked();
  if (n == 0) return kScanDone;
  // Nodes in key order (the head first); first_node[bk] indexes the bucket's first piece.
  std::vector<uint32_t> nodes;
  std::vector<size_t> first_node(nb, 0);
  Node& h = node(head_);
  for (size_t bk = 0; bk < nb; ++bk) {
    if (size_of[bk] == 0) continue;
    first_node[bk] = nodes.size();
    for (uint64_t done = 0; done < size_of[bk]; done += piece_of[bk]) {
      const uint32_t c = std::max<uint32_t>(node_size_, uint32_t(std::min(piece_of[bk], size_of[bk] - done)));
      uint32_t xi;
      if (nodes.empty()) {
        xi = head_;
        if (h.cap < c) reallocate_slots(h, c);
      } else {
        xi = alloc_node(c);
        Node& x = node(xi);
        x.lo = detail::Key{unpack_score(lo_of[bk]), uint32_t(lo_of[bk])};  // pieces after the first: below
        x.height = random_height();
      }
      nodes.push_back(xi);
    }
    uint32_t run = 0;
    for (size_t c = 0; c < C; ++c) {
      const uint32_t c2 = hist[c][bk];
      hist[c][bk] = run;
      run += c2;
    }
  }
  place_locked(bucket_of, nb, T, C, hist, size_of, piece_of, first_node, nodes);
  for (size_t bk = 0; bk < nb; ++bk) {
    if (size_of[bk] == 0) continue;
    uint64_t piece = 0;
    for (uint64_t done = 0; done < size_of[bk]; done += piece_of[bk], ++piece) {
      const uint32_t xi = nodes[first_node[bk] + piece];
      Node& x = node(xi);
      const uint32_t c = uint32_t(std::min(piece_of[bk], size_of[bk] - done));
      x.hwm.store(c, std::memory_order_relaxed);
      x.count.store(c, std::memory_order_relaxed);
      // A later piece of a tie run starts at its smallest id (slots are in id order).
      if (piece > 0) x.lo = detail::Key{unpack_score(lo_of[bk]), x.items[0].load(std::memory_order_relaxed)};
    }
  }
  link_chain_locked(nodes);
  return kScanDone;
}

// The placement pass of scan_place_locked: writes every present id into its bucket's
// pieces, in id order within each bucket (a tie bucket's pieces rely on it), and
// points its status entry there. The ids are cut into T parts along hist chunks
// (chunk_off[c][bk]: where chunk c's ids start in bucket bk). Each part is taken from
// both ends: its own thread walks it upward, filling each bucket's region of the
// part upward; a thread done with its own part takes place-chunks from the back of
// another, walking ids downward and filling downward from the region's end. The two
// meet without a gap or overlap, so a core slowed by a neighbour costs its share only.
template <class Map>
inline auto SemiOrderedIndex::place_locked(const Map& bucket_of, size_t nb, unsigned T, size_t C, const std::vector<std::vector<uint32_t>>& chunk_off, const std::vector<uint64_t>& size_of, const std::vector<uint64_t>& piece_of, const std::vector<size_t>& first_node, const std::vector<uint32_t>& nodes) -> void {
  // Everything the hot loop needs for the bucket's current piece sits in its cursor
  // (no lookup of the node, whose header is another cache line per id when ids spread
  // over a thousand buckets), and it moves by one slot per id: no division.
  struct Cursor {
    std::atomic<uint32_t>* items;  // the piece's slots (unused while slot says to move)
    uint32_t node;
    uint32_t slot;   // upward: the next slot; downward: one past it
    uint32_t limit;  // slots per piece
    uint32_t piece;  // index into nodes
  };
  const size_t per_part = C / T;
  // Cursors at bucket offset g of every bucket (g = off(bk)), for walking up or down.
  auto cursors_at = [&](std::vector<Cursor>& cur, auto off) {
    for (size_t bk = 0; bk < nb; ++bk) {
      if (size_of[bk] == 0) continue;
      const uint64_t g = off(bk);
      const uint32_t piece = uint32_t(first_node[bk] + g / piece_of[bk]);
      // At a piece boundary the cursor moves before its first write; a boundary past
      // the bucket's last piece is never written. Point it at a valid node anyway.
      const uint32_t xi = nodes[std::min<size_t>(piece, nodes.size() - 1)];
      cur[bk] = Cursor{node(xi).items, xi, uint32_t(g % piece_of[bk]), uint32_t(piece_of[bk]), piece};
    }
  };
  auto part_start = [&](unsigned p, size_t bk) -> uint64_t { return chunk_off[p * per_part][bk]; };
  auto part_end = [&](unsigned p, size_t bk) -> uint64_t {
    return p + 1 < T ? chunk_off[(p + 1) * per_part][bk] : size_of[bk];
  };
  const uint64_t cap = capacity_;
  auto part_ids = [&](unsigned p) { return std::make_pair(cap * p / T, cap * (p + 1) / T); };
  // Place-chunks per part, and each part's unclaimed ones as (front << 32 | back).
  const size_t K = std::max<size_t>(1, std::min<size_t>(16, size_t(cap / T / 16384)));
  std::vector<std::atomic<uint64_t>> left(T);
  std::vector<std::atomic<int>> thief(T);  // the one thread that takes a part's back
  for (unsigned p = 0; p < T; ++p) {
    left[p].store(uint64_t(K), std::memory_order_relaxed);
    thief[p].store(-1, std::memory_order_relaxed);
  }
  auto claim = [&](unsigned p, bool front) -> size_t {  // a place-chunk of part p, or K
    uint64_t st = left[p].load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t f = st >> 32, b = st & 0xffffffffu;
      if (f >= b) return K;
      const uint64_t next = front ? ((f + 1) << 32) | b : (f << 32) | (b - 1);
      if (left[p].compare_exchange_weak(st, next, std::memory_order_relaxed)) return size_t(front ? f : b - 1);
    }
  };
  // Places ids [b, e): upward (ids ascending, each bucket's cursor moving up through
  // its pieces) or downward (ids descending, cursors moving down; the pieces below a
  // downward cursor are full ones).
  auto place = [&](std::vector<Cursor>& cur, size_t b, size_t e, auto upward) {
    constexpr bool kUp = decltype(upward)::value;
    for (size_t j = 0; j < e - b; ++j) {
      const size_t id = kUp ? b + j : e - 1 - j;
      std::atomic<uint64_t>& mm = entries_[id].meta;
      const uint64_t m = mm.load(std::memory_order_relaxed);
      if (status_of(m) == ABSENT) continue;
      Cursor& c = cur[bucket_of(entries_[id].score.load(std::memory_order_relaxed))];
      uint32_t slot;
      if constexpr (kUp) {
        if (c.slot == c.limit) {  // this piece is full: on to the next
          c.node = nodes[++c.piece];
          c.items = node(c.node).items;
          c.slot = 0;
        }
        slot = c.slot++;
      } else {
        if (c.slot == 0) {  // the bottom of this piece: on to the previous
          c.node = nodes[--c.piece];
          c.items = node(c.node).items;
          c.slot = c.limit;
        }
        slot = --c.slot;
      }
      c.items[slot].store(uint32_t(id), std::memory_order_relaxed);
      mm.store(make_meta(IDLE, c.node, slot, tag_of(m) + 1), std::memory_order_relaxed);
    }
  };
  std::vector<std::vector<Cursor>> cursors(T, std::vector<Cursor>(nb));  // allocated here, not by helpers: see apply_partitioned
  detail::parallel_for(T, T, [&](unsigned t, size_t, size_t) {
    std::vector<Cursor>& cur = cursors[t];
    cursors_at(cur, [&](size_t bk) { return part_start(t, bk); });
    const auto [pb, pe] = part_ids(t);
    for (size_t k, taken = 0; taken < size_t(SOCBI_TEST_FRONT_CHUNKS) && (k = claim(t, true)) < K; ++taken)
      place(cur, pb + (pe - pb) * k / K, pb + (pe - pb) * (k + 1) / K, std::true_type{});
    for (;;) {  // help: the back of the part with the most left that no one else helps
      unsigned best = T;
      uint64_t most = 0;
      for (unsigned p = 0; p < T; ++p) {
        const uint64_t st = left[p].load(std::memory_order_relaxed);
        const uint64_t n_left = (st & 0xffffffffu) > (st >> 32) ? (st & 0xffffffffu) - (st >> 32) : 0;
        const int h = thief[p].load(std::memory_order_relaxed);
        if (n_left > most && (h == -1 || h == int(t))) {
          best = p;
          most = n_left;
        }
      }
      if (best == T) return;
      int none = -1;
      if (thief[best].load(std::memory_order_relaxed) != int(t) &&
          !thief[best].compare_exchange_strong(none, int(t), std::memory_order_relaxed))
        continue;  // someone else took it first
      cursors_at(cur, [&](size_t bk) { return part_end(best, bk); });
      const auto [qb, qe] = part_ids(best);
      for (size_t k; (k = claim(best, false)) < K;) place(cur, qb + (qe - qb) * k / K, qb + (qe - qb) * (k + 1) / K, std::false_type{});
    }
  });
}

// A uniform sample (with replacement) of up to m present scores, from random ids.
inline auto SemiOrderedIndex::sample_scores(size_t m) -> std::vector<double> {
  std::vector<double> out;
  out.reserve(m);
  uint64_t state = 0x5EED0FB0C4E7ull ^ rebuilds_.load(std::memory_order_relaxed);
  for (size_t tries = 0; out.size() < m && tries < 16 * m + 64; ++tries) {
    const uint64_t id = detail::splitmix64(state) % capacity_;
    if (status_of(entries_[id].meta.load(std::memory_order_relaxed)) == ABSENT) continue;
    out.push_back(entries_[id].score.load(std::memory_order_relaxed));
  }
  return out;
}

// Exclusive. General rebuild over `all` (every live id), used when few ids are present
// relative to capacity or when ties overflow a bucket.
inline auto SemiOrderedIndex::rebuild_locked(const std::vector<uint32_t>& all, unsigned threads) -> void {
  const size_t n = all.size();
  const unsigned T = unsigned(std::max<size_t>(1, std::min<size_t>(threads, n / 65536 + 1)));
  reset_chain_locked();
  if (n == 0) return;

  std::vector<double> sc(n);
  std::vector<double> tmin(T, std::numeric_limits<double>::infinity()), tmax(T, -std::numeric_limits<double>::infinity());
  detail::parallel_for(n, T, [&](unsigned t, size_t b, size_t e) {
    double mn = tmin[t], mx = tmax[t];
    for (size_t i = b; i < e; ++i) {
      if (i + 16 < e) __builtin_prefetch(&entries_[all[i + 16]], 0, 1);
      double s = entries_[all[i]].score.load(std::memory_order_relaxed);
      sc[i] = s;
      mn = std::min(mn, s);
      mx = std::max(mx, s);
    }
    tmin[t] = mn;
    tmax[t] = mx;
  });
  const Bucketing bucket_of(*std::min_element(tmin.begin(), tmin.end()), *std::max_element(tmax.begin(), tmax.end()),
                            std::max<size_t>(1, size_t(n / std::max<uint32_t>(1, node_size_ / 2))));
  const size_t nb = bucket_of.nb;
  // Parallel counting sort: per-thread histograms, prefix sums, scatter.
  std::vector<std::vector<uint32_t>> hist(T, std::vector<uint32_t>(nb + 1, 0));
  detail::parallel_for(n, T, [&](unsigned t, size_t b, size_t e) {
    auto& hh = hist[t];
    for (size_t i = b; i < e; ++i) ++hh[bucket_of(sc[i])];
  });
  std::vector<uint64_t> bucket_start(nb + 1, 0);
  {
    uint64_t run = 0;
    for (size_t bk = 0; bk < nb; ++bk) {
      bucket_start[bk] = run;
      for (unsigned t = 0; t < T; ++t) {
        uint32_t c = hist[t][bk];
        hist[t][bk] = uint32_t(run);
        run += c;
      }
    }
    bucket_start[nb] = run;
  }
  std::vector<detail::Key> sorted(n);
  detail::parallel_for(n, T, [&](unsigned t, size_t b, size_t e) {
    auto& hh = hist[t];
    for (size_t i = b; i < e; ++i) sorted[hh[bucket_of(sc[i])]++] = detail::Key{sc[i], all[i]};
  });
  // Cut buckets into node-sized pieces: buckets larger than the slot field allows are
  // split by key (nth_element); others stay whole (refined lazily).
  struct Piece {
    uint64_t b, e;
  };
  std::vector<Piece> pieces;
  for (size_t bk = 0; bk < nb; ++bk) {
    uint64_t b = bucket_start[bk], e = bucket_start[bk + 1];
    if (b == e) continue;
    std::vector<Piece> stack{{b, e}};
    while (!stack.empty()) {
      Piece p = stack.back();
      stack.pop_back();
      if (p.e - p.b <= kMaxNodeCap / 2) {
        pieces.push_back(p);
        continue;
      }
      uint64_t mid = p.b + (p.e - p.b) / 2;
      std::nth_element(sorted.begin() + p.b, sorted.begin() + mid, sorted.begin() + p.e);
      stack.push_back({mid, p.e});
      stack.push_back({p.b, mid});
    }
  }
  // Nodes: the head takes piece 0; each piece's lo is its smallest key.
  std::vector<uint32_t> node_of_piece(pieces.size());
  for (size_t pi = 0; pi < pieces.size(); ++pi) {
    const uint32_t sz = uint32_t(pieces[pi].e - pieces[pi].b);
    const uint32_t cap = std::max<uint32_t>(node_size_, sz);
    uint32_t xi;
    if (pi == 0) {
      xi = head_;
      if (node(head_).cap < cap) reallocate_slots(node(head_), cap);
    } else {
      xi = alloc_node(cap);
      Node& x = node(xi);
      auto first = sorted.begin() + pieces[pi].b, last = sorted.begin() + pieces[pi].e;
      x.lo = *std::min_element(first, last);
      x.height = random_height();
    }
    node_of_piece[pi] = xi;
  }
  detail::parallel_for(pieces.size(), T, [&](unsigned, size_t b, size_t e) {
    for (size_t pi = b; pi < e; ++pi) {
      const uint32_t xi = node_of_piece[pi];
      Node& x = node(xi);
      uint32_t slot = 0;
      for (uint64_t j = pieces[pi].b; j < pieces[pi].e; ++j, ++slot) {
        const uint32_t id = sorted[j].id;
        x.items[slot].store(id, std::memory_order_relaxed);
        std::atomic<uint64_t>& mm = entries_[id].meta;
        mm.store(make_meta(IDLE, xi, slot, tag_of(mm.load(std::memory_order_relaxed)) + 1), std::memory_order_relaxed);
      }
      x.hwm.store(slot, std::memory_order_relaxed);
      x.count.store(slot, std::memory_order_relaxed);
    }
  });
  link_chain_locked(node_of_piece);
}

// Exclusive: rebuilds by status-table scan when most of the capacity is in use,
// otherwise (or when ties overflow a bucket) by gathering the live ids from the chain.
inline auto SemiOrderedIndex::rebuild_any_locked(unsigned threads, std::vector<uint32_t>* extra_ids) -> void {
  SOCBI_TEST_TRACE(detail::kTraceWholeIndex, "rebuild", 0, 0, double(dirty_.load()), 0, 0);
  if (size() * 4 >= capacity_ && rebuild_scan_locked(threads)) return;
  std::vector<uint32_t> all;
  collect_ids_locked(all);
  if (extra_ids) all.insert(all.end(), extra_ids->begin(), extra_ids->end());
  rebuild_locked(all, threads);
}

}  // namespace socbi
