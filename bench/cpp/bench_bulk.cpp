// The bulk path of SemiOrderedIndex timed inside C++ (no Python argument conversion or
// validation): one update of n random +1s followed by top(1000), median of `reps`.
//   cmake -S . -B build/bench -DSOCBI_BUILD_BENCH=ON && cmake --build build/bench
//   build/bench/bench_bulk [threads=1] [reps=15] [init=zeros|uniform]
// threads "alt" alternates 1- and 2-thread runs (as bench.py's interleaved medians do).
#include <socbi/semi_ordered_index.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

int main(int argc, char** argv) {
  const uint32_t n = 1000000;
  const bool alternate = argc > 1 && std::strcmp(argv[1], "alt") == 0;
  const unsigned threads = alternate ? 1 : argc > 1 ? unsigned(std::atoi(argv[1])) : 1;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 15;
  const bool uniform = argc > 3 && std::strcmp(argv[3], "uniform") == 0;
  std::mt19937_64 rng(1);
  std::vector<uint32_t> ids(n), up(n);
  std::vector<double> start(n, 0.0), one(n, 1.0);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (uint32_t i = 0; i < n; ++i) {
    ids[i] = i;
    if (uniform) start[i] = unit(rng);
  }
  for (auto& u : up) u = uint32_t(rng() % n);
  std::vector<uint32_t> out_ids(1000);
  std::vector<double> out_scores(1000);
  std::vector<double> ms, ms2;
  for (int r = 0; r < (alternate ? 2 * reps : reps); ++r) {
    const unsigned t = alternate ? 1 + unsigned(r % 2) : threads;
    socbi::SemiOrderedIndex idx(n);
    idx.insert(ids.data(), start.data(), n);
    idx.top(1000, out_ids.data(), out_scores.data());
    const auto t0 = std::chrono::steady_clock::now();
    idx.update(up.data(), one.data(), n, t, /*bulk=*/1);
    idx.top(1000, out_ids.data(), out_scores.data());
    (t == 2 && alternate ? ms2 : ms).push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  if (alternate) {
    std::sort(ms2.begin(), ms2.end());
    std::printf("alternating, init=%s: 1 thread median %.2f ms, 2 threads median %.2f ms, ratio %.2f over %d runs each\n",
                uniform ? "uniform" : "zeros", ms[ms.size() / 2], ms2[ms2.size() / 2], ms[ms.size() / 2] / ms2[ms2.size() / 2], reps);
    return 0;
  }
  std::printf("bulk update of %u +1s + top(1000), init=%s, threads=%u: median %.2f ms (min %.2f) over %d runs\n", n,
              uniform ? "uniform" : "zeros", threads, ms[ms.size() / 2], ms[0], reps);
  return 0;
}
