// socbi/detail/check.hpp -- SemiOrderedIndex::check_locked(): the O(n) verification of every invariant
// (status table, nodes, chain order, index levels, counters) that tests run after
// every step. Member definitions only.
// Part of socbi/semi_ordered_index.hpp, the one header users include.
#pragma once

#include "../semi_ordered_index.hpp"

namespace socbi {

inline auto SemiOrderedIndex::check_locked() const -> void {
  if (repeat_counts_)
    for (uint64_t i = 0; i < capacity_; ++i)
      if (repeat_counts_[i]) fail("apply_counted left a repeat count for id " + std::to_string(i));
  if (cand_valid_.load(std::memory_order_relaxed)) {  // the candidates are the stale end's best keys now
    for (size_t k = 0; k < cand_.size(); ++k) {
      const Entry& en = entries_[cand_[k].id];
      if (status_of(en.meta.load(std::memory_order_relaxed)) == ABSENT ||
          detail::bits_of(en.score.load(std::memory_order_relaxed)) != detail::bits_of(cand_[k].score))
        fail("candidate id " + std::to_string(cand_[k].id) + " is absent or its score changed");
      if (k > 0 && !detail::before_at(cand_end_, cand_[k - 1], cand_[k])) fail("candidates are not in query order at " + std::to_string(k));
    }
    if (!cand_.empty()) {
      uint64_t beating = 0;  // present keys that beat or equal the last candidate: exactly cand_.size()
      for (uint64_t i = 0; i < capacity_; ++i) {
        const Entry& en = entries_[i];
        if (status_of(en.meta.load(std::memory_order_relaxed)) == ABSENT) continue;
        const detail::Key k{en.score.load(std::memory_order_relaxed), uint32_t(i)};
        beating += !detail::before_at(cand_end_, cand_.back(), k);
      }
      if (beating != cand_.size()) fail("the candidates are not the stale end's best keys (id " + std::to_string(cand_.back().id) + ")");
    }
  }
  uint64_t items = 0;
  uint32_t prev = kNil;
  std::vector<char> seen(capacity_, 0);
  uint64_t guard = 0;
  for (uint32_t x = head_; x != kNil; x = node(x).next[0].load(std::memory_order_relaxed)) {
    if (++guard > max_nodes_) fail("level-0 chain has a cycle");
    const Node& nd = node(x);
    if (nd.dead.load(std::memory_order_relaxed)) fail("dead node " + std::to_string(x) + " is linked");
    if (nd.prev.load(std::memory_order_relaxed) != prev) fail("prev pointer of node " + std::to_string(x) + " is wrong");
    const uint32_t nx = nd.next[0].load(std::memory_order_relaxed);
    const detail::Key hi = nd.hi();
    if (nx == kNil) {
      if (tail_.load(std::memory_order_relaxed) != x) fail("tail is not the last node");
      if (hi.score != kPlusInf.score || hi.id != kPlusInf.id) fail("last node's hi is not +inf");
    } else {
      const detail::Key nlo = node(nx).lo;
      if (!(nd.lo < nlo)) fail("node lo keys are not strictly increasing at node " + std::to_string(x));
      if (hi.score != nlo.score || hi.id != nlo.id) fail("hi of node " + std::to_string(x) + " != next node's lo");
    }
    if (nd.range_ver.load(std::memory_order_relaxed) & 1u) fail("range seqlock left odd");
    if (nd.items_ver.load(std::memory_order_relaxed) & 1u) fail("items seqlock left odd");
    const uint32_t c = nd.count.load(std::memory_order_relaxed);
    const uint32_t h = nd.hwm.load(std::memory_order_relaxed);
    if (c > h || h > nd.cap) fail("node count/hwm/capacity out of order at node " + std::to_string(x));
    uint32_t live = 0;
    for (uint32_t w = 0; w < Node::hole_words(nd.cap); ++w) {
      for (uint32_t b = 0; b < 64 && w * 64 + b < nd.cap; ++b) {
        const uint32_t i = w * 64 + b;
        const bool hole = (nd.holes[w] >> b) & 1u;
        const bool tomb = i < h && nd.items[i].load(std::memory_order_relaxed) == kTomb;
        if (hole != tomb) fail("hole bitmap disagrees with tombstones at node " + std::to_string(x));
        if (hole && w < nd.hole_hint) fail("hole below hole_hint");
      }
    }
    for (uint32_t i = 0; i < h; ++i) {
      const uint32_t id = nd.items[i].load(std::memory_order_relaxed);
      if (id == kTomb) continue;
      ++live;
      if (id >= capacity_) fail("node holds out-of-range id");
      if (seen[id]) fail("id " + std::to_string(id) + " appears twice");
      seen[id] = 1;
      const uint64_t m = entries_[id].meta.load(std::memory_order_relaxed);
      if (status_of(m) != IDLE) fail("id " + std::to_string(id) + " is not IDLE at rest");
      if (node_of(m) != x || slot_of(m) != i) fail("status table location of id " + std::to_string(id) + " is wrong");
      const detail::Key k{entries_[id].score.load(std::memory_order_relaxed), id};
      if (!std::isfinite(k.score)) fail("id " + std::to_string(id) + " has a non-finite score");
      // A stale chain (lazy apply) keeps one side: keys >= lo after increments, < hi after
      // decrements; that side is what query_dirty relies on.
      const int d = dirty_.load(std::memory_order_relaxed);
      if (d >= 0 && !(nd.lo <= k)) fail("id " + std::to_string(id) + " lies below its node's range");
      if (d <= 0 && !(k < hi)) fail("id " + std::to_string(id) + " lies above its node's range");
    }
    if (live != c) fail("node count " + std::to_string(c) + " != live slots " + std::to_string(live));
    items += c;
    prev = x;
  }
  if (items != size()) fail("size counter " + std::to_string(size()) + " != items in nodes " + std::to_string(items));
  for (uint64_t id = 0; id < capacity_; ++id) {
    const uint64_t m = entries_[id].meta.load(std::memory_order_relaxed);
    if (status_of(m) != ABSENT && !seen[id]) fail("present id " + std::to_string(id) + " is in no node");
  }
  int64_t slot_bytes = 0;  // every node ever made keeps its slots: stats() counts them all
  for (uint64_t x = 0; x < next_fresh_; ++x) slot_bytes += slot_bytes_of(node(uint32_t(x)).cap);
  if (slot_bytes != slot_bytes_.load(std::memory_order_relaxed))
    fail("slot bytes counted for stats() (" + std::to_string(slot_bytes_.load(std::memory_order_relaxed)) +
         ") != the nodes' slots (" + std::to_string(slot_bytes) + ")");
  // Upper levels: sorted sublists of level 0 made of live nodes with enough height.
  for (int l = 1; l < kMaxLevel; ++l) {
    uint32_t x = head_;
    uint64_t g = 0;
    while (x != kNil) {
      if (++g > max_nodes_) fail("skip level has a cycle");
      const uint32_t nx = node(x).next[l].load(std::memory_order_relaxed);
      if (nx == kNil) break;
      const Node& n2 = node(nx);
      if (n2.dead.load(std::memory_order_relaxed)) fail("dead node linked at level " + std::to_string(l));
      if (n2.height <= l) fail("node linked above its height");
      if (!(node(x).lo < n2.lo)) fail("skip level " + std::to_string(l) + " out of order");
      x = nx;
    }
  }
}

}  // namespace socbi
