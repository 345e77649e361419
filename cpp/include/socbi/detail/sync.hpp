// socbi/detail/sync.hpp -- waiting and locking: the pause/yield spin (cpu_relax), the node
// SpinLock, and the test hooks (SOCBI_RACE_HOOK, SOCBI_TEST_HOOK, SOCBI_TEST_TRACE,
// SOCBI_TEST_FRONT_CHUNKS, SOCBI_TEST_SHORT_WALKS) that test builds define to widen race
// windows or to record what happened. Owns no state.
// Part of socbi/semi_ordered_index.hpp, the one header users include.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define SOCBI_PAUSE() _mm_pause()
#else
#define SOCBI_PAUSE() std::this_thread::yield()
#endif

// Test builds may define SOCBI_RACE_HOOK() to yield at each protocol step, widening race
// windows (see issue: reliability hardening). It compiles to nothing by default.
#ifndef SOCBI_RACE_HOOK
#define SOCBI_RACE_HOOK() ((void)0)
#endif

// Test builds may define SOCBI_TEST_HOOK(site, arg) to act (pause, change a score, run
// another thread's update) at a named point that concerns one node or one id (the site's
// name says which); site is a string literal. By default a race hook.
#ifndef SOCBI_TEST_HOOK
#define SOCBI_TEST_HOOK(site, node) SOCBI_RACE_HOOK()
#endif

// Test builds may cap how many place-chunks a rebuild thread takes from the front of its
// own part, so that the downward walk of the placement pass (otherwise taken only when a
// core lags) runs on every rebuild. Unlimited by default.
#ifndef SOCBI_TEST_FRONT_CHUNKS
#define SOCBI_TEST_FRONT_CHUNKS (~size_t(0))
#endif

// Test builds may define SOCBI_TEST_TRACE(id, event, n1, n2, d1, d2, d3) to record each
// protocol step that concerns one id (detail::kTraceWholeIndex: the whole index, e.g. a
// split or a rebuild): two node numbers and three doubles (scores, range bounds, a status or tag)
// whose meaning the event's name gives. A stress failure then prints the failing id's
// history (test_index --stress N --trace). By default the arguments are not evaluated.
#ifndef SOCBI_TEST_TRACE
#define SOCBI_TEST_TRACE(id, event, n1, n2, d1, d2, d3) ((void)0)
#endif

// Test builds may define SOCBI_TEST_SHORT_WALKS so that a query on a stale chain scans
// the status table (query_scan) as soon as its walk reads past n + node_size ids, which
// the concurrency stresses otherwise never reach at their small sizes.
#ifndef SOCBI_TEST_SHORT_WALKS
#define SOCBI_TEST_SHORT_WALKS 0
#endif

namespace socbi {
namespace detail {

constexpr uint32_t kTraceWholeIndex = 0xFFFFFFFFu;  // SOCBI_TEST_TRACE's id for index-wide events


inline void cpu_relax(unsigned& spins) {
  // Spin briefly, then yield: more threads than cores is a supported case.
  if (++spins < 64) {
    SOCBI_PAUSE();
  } else {
    std::this_thread::yield();
  }
}

class SpinLock {
 public:
  void lock() noexcept {
    unsigned spins = 0;
    for (;;) {
      if (!flag_.exchange(1, std::memory_order_acquire)) return;
      while (flag_.load(std::memory_order_relaxed)) cpu_relax(spins);
    }
  }
  bool try_lock() noexcept { return !flag_.exchange(1, std::memory_order_acquire); }
  void unlock() noexcept { flag_.store(0, std::memory_order_release); }

 private:
  std::atomic<uint32_t> flag_{0};
};

}  // namespace detail
}  // namespace socbi
