// How much a second core can help on this machine right now, for the two kinds of work
// the bulk path does. On a shared VM the answer changes from minute to minute (the host
// lends memory bandwidth and cache to neighbours), so run it next to any thread-scaling
// measurement and quote the two together.
//   cmake -S . -B build/bench -DSOCBI_BUILD_BENCH=ON && cmake --build build/bench
//   build/bench/bench_machine_probe [reps=9]
// Prints one line of medians: the 2-thread speed-up of
//   compute  eight multiply chains per thread (no memory traffic, the multiplier busy
//            every cycle): ~2.0 on two free cores, ~1.0 on two hyperthreads of one;
//   random   1M random read-modify-writes of 16-byte entries in a 16 MiB table (huge
//            pages, prefetched), each thread on its own half of the ids: the ceiling for
//            any two-thread pass of random updates, such as the bulk path's apply pass.
// With --json it prints the same as one JSON object.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

template <class Fn>
double ms(Fn&& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count() * 1e3;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

volatile uint64_t g_sink;

// Eight independent multiply chains: enough to keep a core's multiplier busy every
// cycle, so two threads on hyperthread siblings of one physical core (which a VM's two
// vCPUs can be, from one minute to the next) get ~1x, on two cores ~2x. (One chain
// would leave the multiplier idle three cycles in four and hide the sharing.)
__attribute__((noinline)) void multiply_chain(long n) {
  uint64_t x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  for (long i = 0; i < n; ++i)
    for (auto& v : x) v = v * 6364136223846793005ull + 1442695040888963407ull;
  g_sink = x[0] ^ x[1] ^ x[2] ^ x[3] ^ x[4] ^ x[5] ^ x[6] ^ x[7];
}

struct Entry {
  double score;
  uint64_t meta;
};

void random_updates(Entry* table, const uint32_t* ids, size_t m) {
  for (size_t i = 0; i < m; ++i) {
    if (i + 32 < m) __builtin_prefetch(&table[ids[i + 32]], 1, 1);
    table[ids[i]].score += 1.0;
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  int reps = 9;
  for (int a = 1; a < argc; ++a) {
    if (std::strcmp(argv[a], "--json") == 0)
      json = true;
    else
      reps = std::max(1, std::atoi(argv[a]));
  }
  const size_t n = size_t(1) << 20;  // 16 MiB of entries
  const size_t bytes = n * sizeof(Entry);
  auto* table = static_cast<Entry*>(std::aligned_alloc(size_t(2) << 20, bytes));
  if (!table) return 1;
#ifdef MADV_HUGEPAGE
  madvise(table, bytes, MADV_HUGEPAGE);  // as the index's status table
#endif
  for (size_t i = 0; i < n; ++i) table[i] = Entry{0.0, 1};
  const size_t m = 1000000;
  std::vector<uint32_t> ids(m), half[2];
  uint64_t x = 88172645463325252ull;
  for (auto& v : ids) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = uint32_t(x % n);
    half[v >= n / 2].push_back(v);
  }
  const long work = 2500000;  // ~20 ms per thread share
  std::vector<double> compute, random;
  for (int r = 0; r < reps; ++r) {
    const double c1 = ms([&] { multiply_chain(2 * work); });
    const double c2 = ms([&] {
      std::thread other(multiply_chain, work);
      multiply_chain(work);
      other.join();
    });
    compute.push_back(c1 / c2);
    const double r1 = ms([&] { random_updates(table, ids.data(), m); });
    const double r2 = ms([&] {
      std::thread other(random_updates, table, half[1].data(), half[1].size());
      random_updates(table, half[0].data(), half[0].size());
      other.join();
    });
    random.push_back(r1 / r2);
  }
  std::free(table);
  if (json)
    std::printf("{\"compute_2t_speedup\": %.3f, \"random_update_2t_speedup\": %.3f, \"reps\": %d}\n", median(compute),
                median(random), reps);
  else
    std::printf("2-thread speed-up on this machine now (median of %d): compute %.2fx, random updates %.2fx\n", reps,
                median(compute), median(random));
  return 0;
}
