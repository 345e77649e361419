// The apply pass of a So-CBI-style batch (one +1 per id, checked), timed inside C++ in
// thread CPU time: the counted apply (one scalar delta) against the random apply (the
// same +1s given as a per-item delta array, which the counted apply does not take), on
// two indexes fed the same rounds, interleaved. Each round first erases capacity/100
// random ids (absent ids among present ones, as in the So-CBI round), then applies the
// batch after a bottom(128), then queries bottom(128) again (answered from the counted
// pass's candidates, or by a walk or scan of the stale chain).
//   cmake -S . -B build/bench -DSOCBI_BUILD_BENCH=ON && cmake --build build/bench
//   build/bench/bench_apply [n=1000000] [rounds=12] [batch sizes as fractions of n...]
// Prints one line per batch size: medians in ms and the ratio random / counted.
#include <socbi/semi_ordered_index.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <vector>

namespace {
double thread_cpu_s() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  const uint32_t n = argc > 1 ? uint32_t(std::atol(argv[1])) : 1000000;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 12;
  std::vector<double> shares;
  for (int a = 3; a < argc; ++a) shares.push_back(std::atof(argv[a]));
  if (shares.empty()) shares = {0.05, 0.1, 0.2, 0.5, 1.0};
  std::printf("n=%u rounds=%d (medians, thread CPU ms)\n", n, rounds);
  for (double share : shares) {
    const size_t m = size_t(share * n);
    std::vector<uint32_t> all(n);
    std::vector<double> zero(n, 0.0);
    for (uint32_t i = 0; i < n; ++i) all[i] = i;
    socbi::SemiOrderedIndex counted(n), random(n);
    counted.insert(all.data(), zero.data(), n);
    random.insert(all.data(), zero.data(), n);
    std::vector<char> present(n, 1);
    std::mt19937_64 rng(42);
    std::vector<uint32_t> lab(n / 100), out(128);
    std::vector<int64_t> batch(m);
    std::vector<double> ones(m, 1.0), out_s(128), t_counted, t_random, q_counted, q_random;
    for (int r = 0; r < rounds; ++r) {
      for (auto& x : lab) {
        x = uint32_t(rng() % n);
        present[x] = 0;
      }
      for (auto& x : batch) {
        do x = int64_t(rng() % n);
        while (!present[size_t(x)]);
      }
      for (int which = 0; which < 2; ++which) {  // the two indexes alternate within a round
        const bool use_counted = (which + r) % 2 == 0;
        socbi::SemiOrderedIndex& idx = use_counted ? counted : random;
        idx.erase_present(lab.data(), lab.size());
        idx.bottom(128, out.data(), out_s.data());
        const double t0 = thread_cpu_s();
        const auto err = use_counted ? idx.update_checked(batch.data(), nullptr, 1.0, m)
                                     : idx.update_checked(batch.data(), ones.data(), 0.0, m);
        const double t1 = thread_cpu_s();
        idx.bottom(128, out.data(), out_s.data());
        const double t2 = thread_cpu_s();
        if (err.index != m) {
          std::fprintf(stderr, "batch refused at %zu\n", err.index);
          return 1;
        }
        (use_counted ? t_counted : t_random).push_back((t1 - t0) * 1e3);
        (use_counted ? q_counted : q_random).push_back((t2 - t1) * 1e3);
      }
    }
    const auto c = counted.stats();
    std::printf("batch %.2f n: apply counted %.2f random %.2f (x%.2f) | bottom(128) after: %.3f / %.3f | counted batches %llu\n",
                share, median(t_counted), median(t_random), median(t_random) / median(t_counted), median(q_counted),
                median(q_random), (unsigned long long)c.counted_updates);
  }
}
