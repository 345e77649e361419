// What a parallel pass costs before any work: an empty 2-thread parallel_for, starting a
// thread as a plain call does, against the same call on a TeamScope's helper (what the
// bulk path's passes use since the thread team).
//   cmake -S . -B build/bench -DSOCBI_BUILD_BENCH=ON && cmake --build build/bench
//   build/bench/bench_team [reps=200]
#include <socbi/semi_ordered_index.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

double median_us(int reps) {
  std::vector<double> us;
  for (int r = 0; r < reps; ++r) {
    // Some single-threaded work in between, as between two bulk calls' passes, so the
    // other core may go idle.
    volatile double s = 0;
    for (int i = 0; i < 20000; ++i) s = s + i * 0.5;
    const auto t0 = std::chrono::steady_clock::now();
    socbi::detail::parallel_for(2, 2, [](unsigned, size_t, size_t) {});
    us.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e6);
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 200;
  const double spawned = median_us(reps);
  double teamed;
  {
    socbi::detail::TeamScope scope(2);
    teamed = median_us(reps);
  }
  std::printf("empty 2-thread parallel_for, median of %d: %.1f us starting a thread, %.1f us on a team\n", reps, spawned,
              teamed);
  return 0;
}
