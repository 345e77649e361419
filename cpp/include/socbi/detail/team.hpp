// socbi/detail/team.hpp -- the bulk path's threads: Team (helpers kept for one exclusive call), TeamScope,
// parallel_for / parallel_chunks (worker exceptions re-thrown on the caller) and
// ScratchLog (the append-only scratch arrays the bulk path keeps between calls).
// Part of socbi/semi_ordered_index.hpp, the one header users include.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <thread>
#include <vector>
#include "sync.hpp"

namespace socbi {
namespace detail {

// Helper threads kept for the length of one exclusive bulk call, so that its parallel
// passes (five of them) start threads once instead of once per pass: on the 2-core VM
// an empty 2-thread pass took 24-53 us starting a thread, 0.2 us on a team
// (bench/cpp/bench_team.cpp), and a fresh thread starts on a cold core. Between passes a helper
// spins for up to ~0.5 ms (not at all when there are more threads than cores), then
// sleeps on a condition variable. Installed with TeamScope; parallel_for called on the
// thread that holds the scope runs its parts on the team.
class Team {
 public:
  explicit Team(unsigned threads) {
    const unsigned cores = std::thread::hardware_concurrency();
    spin_limit_ = (cores == 0 || threads <= cores) ? 16384u : 0u;
    helpers_.reserve(threads > 0 ? threads - 1 : 0);
    try {
      for (unsigned t = 1; t < threads; ++t) helpers_.emplace_back([this, t] { serve(t); });
    } catch (...) {  // could not start a thread: work with the ones that started
    }
  }
  ~Team() {
    stop_.store(true, std::memory_order_relaxed);
    next_job();
    for (auto& h : helpers_) h.join();
  }
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;
  unsigned size() const noexcept { return unsigned(helpers_.size()) + 1; }

  // Runs part(t) for every t in [0, parts), parts <= size(), part 0 on the caller; returns
  // when all have finished, re-throwing the first exception any part threw.
  template <class Part>
  void run(unsigned parts, Part& part) {
    job_ = &part;  // type-erased by hand: a std::function would allocate on every pass
    invoke_ = [](void* p, unsigned t) { (*static_cast<Part*>(p))(t); };
    parts_ = parts;
    pending_.store(unsigned(helpers_.size()), std::memory_order_relaxed);
    next_job();  // publishes job_, invoke_ and parts_
    call(0);
    for (unsigned spins = 0; pending_.load(std::memory_order_acquire) != 0;) cpu_relax(spins);
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  void next_job() {
    {
      std::lock_guard<std::mutex> g(wake_mu_);  // a helper between its check and its wait cannot miss it
      epoch_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
  }
  void call(unsigned t) {
    if (t >= parts_) return;
    try {
      invoke_(job_, t);
    } catch (...) {
      std::lock_guard<std::mutex> g(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
  }
  void serve(unsigned t) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t e = epoch_.load(std::memory_order_acquire);
      for (unsigned k = 0; e == seen && k < spin_limit_; ++k) {
        SOCBI_PAUSE();
        e = epoch_.load(std::memory_order_acquire);
      }
      if (e == seen) {
        std::unique_lock<std::mutex> g(wake_mu_);
        wake_.wait(g, [&] { return (e = epoch_.load(std::memory_order_acquire)) != seen; });
      }
      seen = e;
      if (stop_.load(std::memory_order_relaxed)) return;
      call(t);
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }
  std::vector<std::thread> helpers_;
  unsigned spin_limit_ = 0;
  std::atomic<uint64_t> epoch_{0};
  std::atomic<unsigned> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex wake_mu_;
  std::condition_variable wake_;
  void* job_ = nullptr;
  void (*invoke_)(void*, unsigned) = nullptr;
  unsigned parts_ = 0;
  std::mutex error_mu_;
  std::exception_ptr error_;
};

inline Team*& current_team() noexcept {
  thread_local Team* team = nullptr;
  return team;
}

// Gives the calling thread a team of `threads` (none for 1) until the scope ends.
class TeamScope {
 public:
  explicit TeamScope(unsigned threads) : prev_(current_team()) {
    if (threads > 1) {
      team_.reset(new Team(threads));
      current_team() = team_.get();
    }
  }
  ~TeamScope() { current_team() = prev_; }
  TeamScope(const TeamScope&) = delete;
  TeamScope& operator=(const TeamScope&) = delete;

 private:
  Team* prev_;
  std::unique_ptr<Team> team_;
};

// Runs fn(thread_index, begin, end) over [0, n) split into `threads` contiguous parts;
// part 0 runs on the calling thread (its core is awake and its caches warm; one thread
// fewer to start). The first exception thrown by any part is re-thrown on the caller
// after every part has finished (as hnswlib does). On a thread holding a TeamScope the
// parts run on its team instead of new threads.
template <class Fn>
void parallel_for(size_t n, unsigned threads, Fn&& fn) {
  if (threads <= 1 || n < 2) {
    fn(0u, size_t(0), n);
    return;
  }
  threads = unsigned(std::min<size_t>(threads, n));
  if (Team* team = current_team(); team && team->size() >= threads) {
    auto part = [&](unsigned t) { fn(t, n * t / threads, n * (t + 1) / threads); };
    team->run(threads, part);
    return;
  }
  std::vector<std::thread> pool;
  std::exception_ptr error;
  std::mutex error_mu;
  auto run = [&](unsigned t) {
    try {
      fn(t, n * t / threads, n * (t + 1) / threads);
    } catch (...) {
      std::lock_guard<std::mutex> g(error_mu);
      if (!error) error = std::current_exception();
    }
  };
  pool.reserve(threads - 1);
  try {
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(run, t);
  } catch (...) {  // could not start a thread: finish the started ones, then report
    for (auto& th : pool) th.join();
    throw;
  }
  run(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

// Runs fn(worker, chunk, b, e) over `chunks` equal parts [b, e) of [0, n), which
// `threads` workers claim in turn. Dynamic because on a shared machine one core can run
// much slower than another for a while (a busy hyperthread sibling), and equal static
// parts would all wait on it. Exceptions as in parallel_for.
template <class Fn>
void parallel_chunks(size_t n, unsigned threads, size_t chunks, Fn&& fn) {
  std::atomic<size_t> next{0};
  parallel_for(threads, threads, [&](unsigned w, size_t, size_t) {
    for (size_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;)
      fn(w, c, n * c / chunks, n * (c + 1) / chunks);
  });
}

// An append-only scratch array of trivially copyable T (the bulk path's undo log and
// buckets). Plain malloc, no huge-page request: asking for huge pages on every call
// stalled now and then on memory compaction (3.5 ms passes taking 20); the index keeps
// its scratch between calls instead (see BulkScratch).
template <class T>
class ScratchLog {
 public:
  ScratchLog() = default;
  void reserve(size_t n) {
    if (n > cap_) grow(std::max<size_t>(n, 64));
  }
  ~ScratchLog() { std::free(p_); }
  ScratchLog(const ScratchLog&) = delete;
  ScratchLog& operator=(const ScratchLog&) = delete;
  void push_back(const T& v) {
    if (size_ == cap_) grow(std::max<size_t>(64, cap_ * 2));
    p_[size_++] = v;
  }
  size_t size() const noexcept { return size_; }
  size_t capacity() const noexcept { return cap_; }
  T* data() noexcept { return p_; }
  void set_size(size_t n) noexcept { size_ = n; }  // n <= capacity(); the caller wrote [0, n)
  const T& operator[](size_t i) const noexcept { return p_[i]; }
  void clear() noexcept { size_ = 0; }  // keeps the memory (and its faulted-in pages)
  void release() noexcept {  // gives the memory back
    std::free(p_);
    p_ = nullptr;
    size_ = cap_ = 0;
  }
  size_t capacity_bytes() const noexcept { return cap_ * sizeof(T); }

 private:
  void grow(size_t cap) {
    T* q = static_cast<T*>(std::malloc(cap * sizeof(T)));
    if (!q) throw std::bad_alloc();
    if (size_) std::memcpy(q, p_, size_ * sizeof(T));
    std::free(p_);
    p_ = q;
    cap_ = cap;
  }
  T* p_ = nullptr;
  size_t size_ = 0, cap_ = 0;
};

}  // namespace detail
}  // namespace socbi
