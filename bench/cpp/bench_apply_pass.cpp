// Why the bulk path's apply pass does not speed up with a second thread on some machines:
// the pass alone (n random read-modify-writes of 16-byte status entries, old scores
// logged) on a plain table, one thread against the two-thread layouts that avoid atomics.
//   cmake -S . -B build/bench -DSOCBI_BUILD_BENCH=ON && cmake --build build/bench
//   build/bench/bench_apply_pass [n=1000000] [reps=9]
// Prints medians (ms) of:
//   serial     one thread, 64 positions at a time, the next block's entries prefetched
//   owned-2t   two threads, each walks every position and applies the ids it owns (a
//              hash of the id's 16-id block), same block prefetch over its own ids
//   split-2t   two threads, each walks half the positions, applies the ids it owns and
//              hands the others to the other thread (then applies what it was handed)
// If serial is as fast as the two-thread layouts, one core's prefetching already keeps
// the memory system busy and the pass cannot gain from a second core there.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <utility>
#include <vector>

namespace {

struct Entry {
  double score;
  uint64_t meta;
};
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count() * 1e3; }
unsigned owner(uint64_t id) { return unsigned((uint64_t(uint32_t((id >> 4) * 0x9E3779B1u)) * 2) >> 32); }

// Applies +1 to the entry of id, logging the old score (what the bulk path does).
inline void apply(std::vector<Entry>& table, uint64_t id, std::vector<double>& log, size_t& k) {
  Entry& e = table[id];
  if (e.meta == 0) std::abort();  // the presence check
  log[k++] = e.score;
  e.score += 1.0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const size_t n = argc > 1 ? size_t(std::atoll(argv[1])) : 1000000;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 9;
  std::vector<Entry> table(n, Entry{0.0, 1});
  std::vector<int64_t> ids(n);
  std::mt19937_64 rng(1);
  for (auto& x : ids) x = int64_t(rng() % n);
  std::vector<double> log0(n), log1(n);
  std::vector<std::pair<uint32_t, uint32_t>> handed0(n), handed1(n);
  auto own_mask = [&](unsigned t, size_t b, size_t e) {
    uint64_t m = 0;
    for (size_t j = b; j < e; ++j) m |= uint64_t(t > 1 || owner(uint64_t(ids[j])) == t) << (j - b);
    return m;
  };
  // Walks positions [b0, e0) in blocks of 64, applying the owned ones (t = 2: all) and
  // handing the others to `handed`.
  auto walk = [&](unsigned t, size_t b0, size_t e0, std::vector<double>& log, size_t& k,
                  std::vector<std::pair<uint32_t, uint32_t>>* handed, size_t& h) {
    uint64_t next = own_mask(t, b0, std::min(b0 + 64, e0));
    for (size_t b = b0; b < e0; b += 64) {
      const size_t e = std::min(b + 64, e0);
      const uint64_t own = next;
      if (e < e0) {
        next = own_mask(t, e, std::min(e + 64, e0));
        for (uint64_t m = next; m; m &= m - 1) __builtin_prefetch(&table[size_t(ids[e + size_t(__builtin_ctzll(m))])], 1, 1);
      }
      for (uint64_t m = own; m; m &= m - 1) apply(table, uint64_t(ids[b + size_t(__builtin_ctzll(m))]), log, k);
      if (handed) {
        const uint64_t all = e - b == 64 ? ~uint64_t(0) : (uint64_t(1) << (e - b)) - 1;
        for (uint64_t m = ~own & all; m; m &= m - 1) {
          const size_t i = b + size_t(__builtin_ctzll(m));
          (*handed)[h++] = {uint32_t(i), uint32_t(ids[i])};
        }
      }
    }
  };
  std::vector<double> serial, owned, split;
  for (int r = 0; r < reps; ++r) {
    size_t k0 = 0, k1 = 0, h0 = 0, h1 = 0;
    auto t0 = Clock::now();
    walk(2, 0, n, log0, k0, nullptr, h0);  // t = 2: every position is "owned"
    serial.push_back(ms_since(t0));

    k0 = k1 = 0;
    t0 = Clock::now();
    {
      std::thread other([&] { walk(1, 0, n, log1, k1, nullptr, h1); });
      walk(0, 0, n, log0, k0, nullptr, h0);
      other.join();
    }
    owned.push_back(ms_since(t0));

    k0 = k1 = h0 = h1 = 0;
    t0 = Clock::now();
    {
      std::thread other([&] { walk(1, n / 2, n, log1, k1, &handed1, h1); });
      walk(0, 0, n / 2, log0, k0, &handed0, h0);
      other.join();
      auto take = [&](const std::vector<std::pair<uint32_t, uint32_t>>& from, size_t cnt, std::vector<double>& log, size_t& k) {
        for (size_t q = 0; q < cnt; ++q) {
          if (q + 64 < cnt) __builtin_prefetch(&table[from[q + 64].second], 1, 1);
          apply(table, from[q].second, log, k);
        }
      };
      std::thread other2([&] { take(handed0, h0, log1, k1); });
      take(handed1, h1, log0, k0);
      other2.join();
    }
    split.push_back(ms_since(t0));
  }
  std::printf("apply pass, n=%zu random +1s on a %zu MB table, median of %d: serial %.2f ms, owned-2t %.2f ms, "
              "split-2t %.2f ms\n",
              n, n * sizeof(Entry) >> 20, reps, median(serial), median(owned), median(split));
  return 0;
}
