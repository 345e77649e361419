// Tests of socbi/select.hpp (the fused uncertainty pass) against a brute-force reference:
// the n most uncertain rows, ties resolved only at the cut, the same answer for 1 and 2
// threads, and the first bad row reported. Built and run under TSan and ASan+UBSan by CI.
#include <socbi/select.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace sel = socbi::select;

static int failures = 0;
#define EXPECT(cond, ...)                                          \
  do {                                                             \
    if (!(cond)) {                                                 \
      ++failures;                                                  \
      std::fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                           \
      std::fprintf(stderr, "\n");                                  \
    }                                                              \
  } while (0)

template <class T>
static double reference_score(const T* r, int64_t C, sel::Measure m) {
  double mx = -INFINITY, second = -INFINITY, h = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    const double v = static_cast<double>(r[c]);
    if (v > mx) {
      second = mx;
      mx = v;
    } else if (v > second) {
      second = v;
    }
    if (v > 0.0) h -= v * std::log(v);
  }
  if (m == sel::Measure::least_confidence) return 1.0 - mx;
  if (m == sel::Measure::margin) return second - mx;
  return h;
}

// Rows drawn from a few coarse levels so that many rows tie exactly (the hard case).
template <class T>
static std::vector<T> make_matrix(int64_t rows, int64_t C, std::mt19937_64& rng, bool coarse) {
  std::vector<T> P(static_cast<std::size_t>(rows * C));
  std::uniform_int_distribution<int> level(1, 4);
  std::uniform_real_distribution<double> unit(0.01, 1.0);
  for (int64_t i = 0; i < rows; ++i) {
    double s = 0.0;
    std::vector<double> w(static_cast<std::size_t>(C));
    for (auto& x : w) s += (x = coarse ? level(rng) : unit(rng));
    for (int64_t c = 0; c < C; ++c) P[static_cast<std::size_t>(i * C + c)] = static_cast<T>(w[static_cast<std::size_t>(c)] / s);
  }
  return P;
}

template <class T>
static void check_against_reference(int64_t rows, int64_t C, std::size_t n, sel::Measure m, bool coarse,
                                    bool with_skip, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<T> P = make_matrix<T>(rows, C, rng, coarse);
  std::vector<uint8_t> skip(static_cast<std::size_t>(rows), 0);
  if (with_skip)
    for (auto& s : skip) s = (rng() % 5 == 0);
  std::vector<double> ref(static_cast<std::size_t>(rows));
  std::vector<double> eligible;
  for (int64_t i = 0; i < rows; ++i) {
    ref[static_cast<std::size_t>(i)] = reference_score(&P[static_cast<std::size_t>(i * C)], C, m);
    if (!skip[static_cast<std::size_t>(i)]) eligible.push_back(ref[static_cast<std::size_t>(i)]);
  }
  std::sort(eligible.begin(), eligible.end(), std::greater<double>());
  const std::size_t want = std::min(n, eligible.size());

  sel::Options opt;
  opt.measure = m;
  opt.n = n;
  opt.seed = seed;
  std::vector<sel::Pick> answers[2];
  for (int threads = 1; threads <= 2; ++threads) {
    sel::Error err;
    answers[threads - 1] = sel::select_uncertain<T>(P.data(), rows, C, with_skip ? skip.data() : nullptr, nullptr, 0,
                                                    nullptr, opt, threads, err);
    const auto& got = answers[threads - 1];
    EXPECT(err.kind == sel::ErrorKind::none, "unexpected error kind %d", static_cast<int>(err.kind));
    EXPECT(got.size() == want, "got %zu picks, want %zu", got.size(), want);
    if (got.size() != want || want == 0) continue;
    const double cut = eligible[want - 1];
    std::set<int64_t> ids;
    std::size_t above_cut = 0;
    for (std::size_t k = 0; k < got.size(); ++k) {
      const sel::Pick& p = got[k];
      EXPECT(p.id >= 0 && p.id < rows, "id %lld out of range", static_cast<long long>(p.id));
      EXPECT(!skip[static_cast<std::size_t>(p.id)], "skipped row %lld picked", static_cast<long long>(p.id));
      EXPECT(p.score == ref[static_cast<std::size_t>(p.id)], "score of %lld is %.17g, reference %.17g",
             static_cast<long long>(p.id), p.score, ref[static_cast<std::size_t>(p.id)]);
      EXPECT(p.score >= cut, "pick below the cut: %.17g < %.17g", p.score, cut);
      EXPECT(k == 0 || got[k - 1].score >= p.score, "not sorted at %zu", k);
      above_cut += p.score > cut;
      ids.insert(p.id);
    }
    EXPECT(ids.size() == got.size(), "duplicate ids");
    // Every row strictly above the cut is taken; only rows tied at the cut are chosen among.
    std::size_t ref_above = 0;
    for (double s : eligible) ref_above += s > cut;
    EXPECT(above_cut == ref_above, "%zu picks above the cut, reference has %zu", above_cut, ref_above);
  }
  EXPECT(answers[0].size() == answers[1].size(), "thread counts disagree in size");
  for (std::size_t k = 0; k < std::min(answers[0].size(), answers[1].size()); ++k)
    EXPECT(answers[0][k].id == answers[1][k].id, "threads=1 and threads=2 differ at %zu", k);
}

static void test_bad_rows() {
  const int64_t rows = 70000, C = 3;  // above the threading threshold, so both paths run
  std::mt19937_64 rng(7);
  for (int threads = 1; threads <= 2; ++threads) {
    std::vector<double> P = make_matrix<double>(rows, C, rng, false);
    P[static_cast<std::size_t>(60000 * C + 1)] = NAN;
    P[static_cast<std::size_t>(50000 * C + 2)] = 1.5;  // the smaller row is the one reported
    sel::Options opt;
    opt.n = 10;
    sel::Error err;
    auto got = sel::select_uncertain<double>(P.data(), rows, C, nullptr, nullptr, 0, nullptr, opt, threads, err);
    EXPECT(got.empty(), "picks returned despite a bad row");
    EXPECT(err.kind == sel::ErrorKind::out_of_range && err.row == 50000, "threads=%d: kind %d row %lld", threads,
           static_cast<int>(err.kind), static_cast<long long>(err.row));

    std::vector<double> Q = make_matrix<double>(rows, C, rng, false);
    Q[static_cast<std::size_t>(123 * C)] += 0.1;  // row sum 1.1
    got = sel::select_uncertain<double>(Q.data(), rows, C, nullptr, nullptr, 0, nullptr, opt, threads, err);
    EXPECT(err.kind == sel::ErrorKind::bad_sum && err.row == 123, "kind %d row %lld", static_cast<int>(err.kind),
           static_cast<long long>(err.row));

    const int64_t cand[3] = {5, rows + 4, 9};
    got = sel::select_uncertain<double>(Q.data() + 1000 * C, 1000, C, nullptr, cand, 3, nullptr, opt, threads, err);
    EXPECT(err.kind == sel::ErrorKind::bad_row_id && err.row == 1, "kind %d pos %lld", static_cast<int>(err.kind),
           static_cast<long long>(err.row));
  }
}

static void test_candidate_rows() {
  // With `rows`, only the listed rows compete, and `labels` names them.
  const int64_t rows = 200, C = 4;
  std::mt19937_64 rng(3);
  std::vector<float> P = make_matrix<float>(rows, C, rng, true);
  std::vector<int64_t> cand, labels(static_cast<std::size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) labels[static_cast<std::size_t>(i)] = 1000 + i;
  for (int64_t i = 0; i < rows; i += 3) cand.push_back(i);
  sel::Options opt;
  opt.n = 7;
  opt.measure = sel::Measure::least_confidence;
  sel::Error err;
  auto got = sel::select_uncertain<float>(P.data(), rows, C, nullptr, cand.data(), static_cast<int64_t>(cand.size()),
                                          labels.data(), opt, 1, err);
  EXPECT(got.size() == 7, "got %zu", got.size());
  for (const auto& p : got) EXPECT(p.id >= 1000 && (p.id - 1000) % 3 == 0, "id %lld not a candidate", static_cast<long long>(p.id));
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const sel::Measure measures[3] = {sel::Measure::least_confidence, sel::Measure::margin, sel::Measure::entropy};
  uint64_t seed = 1;
  for (sel::Measure m : measures) {
    for (bool coarse : {false, true}) {
      for (bool skip : {false, true}) {
        check_against_reference<double>(quick ? 5000 : 80000, 5, 100, m, coarse, skip, seed++);
        check_against_reference<float>(70000, 3, 1000, m, coarse, skip, seed++);
        check_against_reference<double>(50, 10, 64, m, coarse, skip, seed++);  // fewer rows than n
        check_against_reference<float>(1000, 2, 0, m, coarse, skip, seed++);   // n = 0
      }
    }
  }
  test_bad_rows();
  test_candidate_rows();
  if (failures) {
    std::fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  std::printf("test_select: all passed\n");
  return 0;
}
