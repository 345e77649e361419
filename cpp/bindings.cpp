// socbi._core: the Python face of cpp/include/socbi/. Arrays are validated and converted
// with the GIL held (a whole batch before anything changes); the C++ loops run with the
// GIL released. ids of insert/assign/erase/score are copied to uint32 by the check; the
// values, and update()'s ids, are read in place: another Python thread may rewrite them
// during the call, which the core survives (see "Buffers during a call" in the header's
// CAVEATS: no crash, no hang, no non-finite score, check() holds).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <socbi/semi_ordered_index.hpp>
#include <socbi/baselines.hpp>  // benchmark baselines (bind_baselines below)
#include <socbi/select.hpp>     // fused uncertainty selection (issue 15, last block of the module)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace py = pybind11;
using socbi::SemiOrderedIndex;

namespace {

// Error messages are built without iostreams: where libstdc++ is linked statically into
// the module (some build environments do this), g++ 13 may leave the iostream locale
// uninitialised, and an ostringstream then crashes on its first number (seen on a CI-less
// GPU machine; regression test: tests/test_index.py bad-input cases).
class Msg {
 public:
  Msg& operator<<(const std::string& s) {
    s_ += s;
    return *this;
  }
  Msg& operator<<(const char* s) {
    s_ += s;
    return *this;
  }
  Msg& operator<<(char c) {
    s_ += c;
    return *this;
  }
  template <class T, typename std::enable_if<std::is_integral<T>::value, int>::type = 0>
  Msg& operator<<(T v) {
    s_ += std::to_string(v);
    return *this;
  }
  Msg& operator<<(double v) {  // as ostream's default: 6 significant digits
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    s_ += buf;
    return *this;
  }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};

[[noreturn]] void raise(PyObject* type, const std::string& msg) {
  PyErr_SetString(type, msg.c_str());
  throw py::error_already_set();
}

std::string short_repr(const py::handle& h) {
  std::string r = py::repr(h).cast<std::string>();
  if (r.size() > 80) r = r.substr(0, 77) + "...";
  return r;
}

bool is_integer_scalar(const py::handle& obj) {
  if (PyBool_Check(obj.ptr())) return false;
  if (PyLong_Check(obj.ptr())) return true;
  if (py::isinstance<py::array>(obj)) return false;
  // numpy integer scalars
  py::module_ np = py::module_::import("numpy");
  return py::isinstance(obj, np.attr("integer"));
}

// The message for ids[i] = v outside [0, capacity).
template <class T>
[[noreturn]] void raise_bad_id(const char* name, size_t i, T v, uint64_t capacity) {
  Msg os;
  if constexpr (std::is_signed<T>::value) {
    if (v < 0) {
      os << name << "[" << i << "] = " << int64_t(v) << " is negative; ids must lie in [0, capacity=" << capacity << ")";
      raise(PyExc_ValueError, os.str());
    }
  }
  os << name << "[" << i << "] = " << uint64_t(v) << " is out of range; ids must lie in [0, capacity=" << capacity
     << "): create the index with a larger capacity";
  raise(PyExc_ValueError, os.str());
}

// Ids as one contiguous 1-D integer buffer: the caller's numpy array itself when it
// already is one (any integer dtype, no copy), else numpy's conversion of the list or
// scalar. visit(fn) calls fn(const T* ids) with the buffer's own element type. Range is
// not checked here (the C++ pass that reads the ids does it), except for Python int
// scalars, which may not fit any dtype.
struct IdBuffer {
  py::array arr;
  uint32_t scalar_id = 0;
  bool scalar = false;  // a Python or numpy integer scalar (or 0-d array)
  bool from_int = false;  // the id is scalar_id (a Python int, range-checked)
  size_t n = 0;

  template <class Fn>
  void visit(Fn&& fn) const {
    if (from_int) return fn(&scalar_id);
    const void* p = arr.data();
    const char kind = arr.dtype().kind();
    switch (arr.dtype().itemsize() * (kind == 'i' ? 1 : -1)) {
      case 1: return fn(static_cast<const int8_t*>(p));
      case 2: return fn(static_cast<const int16_t*>(p));
      case 4: return fn(static_cast<const int32_t*>(p));
      case 8: return fn(static_cast<const int64_t*>(p));
      case -1: return fn(static_cast<const uint8_t*>(p));
      case -2: return fn(static_cast<const uint16_t*>(p));
      case -4: return fn(static_cast<const uint32_t*>(p));
      case -8: return fn(static_cast<const uint64_t*>(p));
      default: raise(PyExc_TypeError, "unsupported integer dtype " + py::str(arr.dtype()).cast<std::string>());
    }
  }
  // With the GIL held: raises the range error for position i.
  [[noreturn]] void raise_out_of_range(size_t i, uint64_t capacity, const char* name) const {
    visit([&](const auto* ids) { raise_bad_id(name, i, ids[i], capacity); });
    throw std::logic_error("unreachable");
  }
  uint64_t id_at(size_t i) const {
    uint64_t v = 0;
    visit([&](const auto* ids) { v = uint64_t(ids[i]); });
    return v;
  }
};

IdBuffer id_buffer(const py::handle& obj, uint64_t capacity, const char* name) {
  py::module_ np = py::module_::import("numpy");
  IdBuffer out;
  if (is_integer_scalar(obj)) {
    out.scalar = true;
    py::int_ v = py::reinterpret_borrow<py::object>(obj);
    // Python ints may exceed int64: compare as Python objects first.
    if (v < py::int_(0) || v >= py::int_(capacity)) {
      Msg os;
      os << name << " = " << short_repr(obj) << " is out of range; ids must lie in [0, capacity=" << capacity << ")";
      raise(PyExc_ValueError, os.str());
    }
    out.from_int = true;
    out.scalar_id = uint32_t(v.cast<uint64_t>());
    out.n = 1;
    return out;
  }
  py::array arr;
  try {
    arr = np.attr("asarray")(obj);
  } catch (py::error_already_set&) {
    raise(PyExc_TypeError, std::string(name) + " must be an integer, a list of integers or an integer numpy array, got " +
                               short_repr(obj));
  }
  const char kind = arr.dtype().kind();
  if (arr.size() == 0 && (kind == 'f' || kind == 'O')) {  // [] arrives as float64
    out.arr = np.attr("empty")(0, "int64");
    return out;
  }
  if (kind != 'i' && kind != 'u') {
    std::string dt = py::str(arr.dtype()).cast<std::string>();
    raise(PyExc_TypeError, std::string(name) + " must hold integers, got dtype " + dt + " (" + short_repr(obj) +
                               "); convert with np.asarray(" + name + ", dtype=np.int64) if the values are whole numbers");
  }
  if (arr.ndim() > 1) {
    Msg os;
    os << name << " must be 1-D, got an array of shape (";
    for (py::ssize_t d = 0; d < arr.ndim(); ++d) os << (d ? ", " : "") << arr.shape(d);
    os << "); pass " << name << ".ravel() to use every element";
    raise(PyExc_ValueError, os.str());
  }
  if (arr.ndim() == 0) {
    out.scalar = true;
    arr = np.attr("atleast_1d")(arr);
  }
  // Native byte order and contiguous (no copy when it already is).
  out.arr = np.attr("ascontiguousarray")(arr, arr.dtype().attr("newbyteorder")("="));
  out.n = size_t(out.arr.size());
  return out;
}

// Ids converted to uint32 with their range checked (buffer dtype dispatch, one pass).
std::vector<uint32_t> to_ids(const py::handle& obj, uint64_t capacity, const char* name, bool* was_scalar = nullptr) {
  const IdBuffer b = id_buffer(obj, capacity, name);
  if (was_scalar) *was_scalar = b.scalar;
  std::vector<uint32_t> out(b.n);
  b.visit([&](const auto* ids) {
    for (size_t i = 0; i < b.n; ++i) {
      if (uint64_t(ids[i]) >= capacity) raise_bad_id(name, i, ids[i], capacity);  // negatives wrap to huge
      out[i] = uint32_t(ids[i]);
    }
  });
  return out;
}

// Values: a finite float scalar (broadcast) or a 1-D numeric array of length n.
// The array case keeps a float64 C-contiguous view of the caller's array (no copy when
// it already is one); the reference keeps the buffer alive while the GIL is released.
struct Values {
  bool scalar = false;
  double value = 0.0;
  py::array_t<double, py::array::c_style | py::array::forcecast> held;
  const double* ptr = nullptr;
  std::vector<double> broadcast;
  const double* data(size_t n) {
    if (scalar) {
      broadcast.assign(n, value);
      return broadcast.data();
    }
    return ptr;
  }
  double at(size_t i) const { return scalar ? value : ptr[i]; }
};

// check_finite=false leaves the per-element finiteness scan to the caller: update() finds a
// non-finite delta in the C++ pass that applies the batch (as a non-finite result).
Values to_values(const py::handle& obj, size_t n, const char* name, const char* ids_name, bool check_finite = true) {
  py::module_ np = py::module_::import("numpy");
  Values v;
  if (PyBool_Check(obj.ptr())) raise(PyExc_TypeError, std::string(name) + " must be numbers, got a bool");
  if (PyFloat_Check(obj.ptr()) || PyLong_Check(obj.ptr()) || py::isinstance(obj, np.attr("number"))) {
    double d;
    try {
      d = py::cast<double>(obj);
    } catch (py::cast_error&) {
      raise(PyExc_TypeError, std::string(name) + " must be a real number, got " + short_repr(obj));
    }
    if (!std::isfinite(d))
      raise(PyExc_ValueError, std::string(name) + " = " + short_repr(obj) + " is not finite; scores and deltas must be finite numbers");
    v.scalar = true;
    v.value = d;
    return v;
  }
  py::array arr;
  try {
    arr = np.attr("asarray")(obj);
  } catch (py::error_already_set&) {
    raise(PyExc_TypeError, std::string(name) + " must be a number or a 1-D array of numbers, got " + short_repr(obj));
  }
  const char kind = arr.dtype().kind();
  if (!(kind == 'f' || kind == 'i' || kind == 'u') && !(arr.size() == 0)) {
    raise(PyExc_TypeError, std::string(name) + " must hold real numbers, got dtype " +
                               py::str(arr.dtype()).cast<std::string>());
  }
  if (arr.ndim() > 1) {
    raise(PyExc_ValueError, std::string(name) + " must be a scalar or 1-D, got " + std::to_string(arr.ndim()) +
                                "-D array; pass " + name + ".ravel()");
  }
  if (arr.ndim() == 0) {
    v.scalar = true;
    v.value = arr.attr("item")().cast<double>();
    if (!std::isfinite(v.value))
      raise(PyExc_ValueError, std::string(name) + " = " + short_repr(obj) + " is not finite; scores and deltas must be finite numbers");
    return v;
  }
  if (size_t(arr.size()) != n) {
    Msg os;
    os << name << " has length " << arr.size() << " but " << ids_name << " has length " << n
       << "; pass one value per id, or a scalar to use for every id";
    raise(PyExc_ValueError, os.str());
  }
  v.held = py::array_t<double, py::array::c_style | py::array::forcecast>(arr);
  v.ptr = v.held.data();
  for (size_t i = 0; check_finite && i < n; ++i) {
    const double x = v.ptr[i];
    if (!std::isfinite(x)) {
      Msg os;
      os << name << "[" << i << "] = " << x << " is not finite; scores and deltas must be finite numbers";
      raise(PyExc_ValueError, os.str());
    }
  }
  return v;
}

[[noreturn]] void raise_repeated(const char* name, uint32_t id) {
  raise(PyExc_ValueError, std::string(name) + " contains id " + std::to_string(id) +
                              " more than once; pass each id once per call (np.unique removes repeats)");
}

void check_distinct(const std::vector<uint32_t>& ids, uint64_t capacity, const char* name) {
  const size_t n = ids.size();
  if (n < 2) return;
  // A sort for small batches, else a bitmap over the capacity (zeroing capacity / 8 bytes
  // costs less than sorting n ids once n log n passes about capacity / 64).
  if (n * 512 < capacity) {
    std::vector<uint32_t> s(ids);
    std::sort(s.begin(), s.end());
    auto it = std::adjacent_find(s.begin(), s.end());
    if (it != s.end()) raise_repeated(name, *it);
    return;
  }
  std::vector<uint64_t> bits(size_t((capacity + 63) / 64), 0);
  for (uint32_t id : ids) {
    uint64_t& w = bits[id / 64];
    const uint64_t b = uint64_t(1) << (id % 64);
    if (w & b) raise_repeated(name, id);
    w |= b;
  }
}

[[noreturn]] void raise_absent(const std::vector<uint32_t>& ids, size_t i, const char* name, const char* what) {
  Msg os;
  os << name << "[" << i << "] = " << ids[i] << " is not in the index, so it cannot be " << what
     << "; insert it first (see `id in index`)";
  PyErr_SetObject(PyExc_KeyError, py::str(os.str()).ptr());
  throw py::error_already_set();
}

void check_present(SemiOrderedIndex& idx, const std::vector<uint32_t>& ids, const char* name, const char* what) {
  const size_t i = idx.find_status(ids.data(), ids.size(), true);
  if (i < ids.size()) raise_absent(ids, i, name, what);
}

void check_absent(SemiOrderedIndex& idx, const std::vector<uint32_t>& ids, const char* name) {
  const size_t i = idx.find_status(ids.data(), ids.size(), false);
  if (i < ids.size()) {
    {
      Msg os;
      os << name << "[" << i << "] = " << ids[i] << " is already in the index; use assign() to change its score "
         << "or update() to add to it";
      raise(PyExc_ValueError, os.str());
    }
  }
}

// score(ids) for any index-like class: a float for a scalar id, else a float64 array.
// check_present(v) raises for absent ids before anything is read.
template <class Index, class CheckPresent>
py::object scores_of(Index& self, const py::object& ids, CheckPresent check_present_ids) {
  bool scalar = false;
  auto v = to_ids(ids, self.capacity(), "ids", &scalar);
  check_present_ids(v);
  if (scalar) return py::float_(self.score(v[0]));
  py::array_t<double> out{py::ssize_t(v.size())};
  auto o = out.mutable_unchecked<1>();
  for (size_t i = 0; i < v.size(); ++i) o(py::ssize_t(i)) = self.score(v[i]);
  return std::move(out);
}

unsigned to_threads(int threads) {
  if (threads == -1 || threads == 0) return std::max(1u, std::thread::hardware_concurrency());
  if (threads < -1)
    raise(PyExc_ValueError, "threads = " + std::to_string(threads) + " is invalid; pass a positive count, or -1 for all cores");
  return unsigned(std::min(threads, 1024));
}

// `threads` as any Python integer, with socbi's message for anything else.
int threads_arg(const py::object& threads) {
  if (!is_integer_scalar(threads))
    raise(PyExc_TypeError, "threads must be an integer (a positive count, or -1 for all cores), got " + short_repr(threads));
  py::int_ v = threads;
  if (v < py::int_(-1)) raise(PyExc_ValueError, "threads = " + short_repr(threads) + " is invalid; pass a positive count, or -1 for all cores");
  return v > py::int_(1024) ? 1024 : v.cast<int>();
}

int to_bulk(const py::object& bulk) {
  if (bulk.is_none()) return -1;
  if (!PyBool_Check(bulk.ptr())) raise(PyExc_TypeError, "bulk must be None (automatic), True or False, got " + short_repr(bulk));
  return bulk.cast<bool>() ? 1 : 0;
}

size_t to_count(const py::handle& n) {
  if (!is_integer_scalar(n)) raise(PyExc_TypeError, "n must be an integer, got " + short_repr(n));
  py::int_ v = py::reinterpret_borrow<py::object>(n);
  if (v < py::int_(0)) raise(PyExc_ValueError, "n = " + short_repr(n) + " is negative; ask for n >= 0 items");
  py::int_ cap(std::numeric_limits<int64_t>::max());
  return v > cap ? size_t(std::numeric_limits<int64_t>::max()) : size_t(v.cast<int64_t>());
}

py::tuple run_query(SemiOrderedIndex& idx, const py::handle& n_obj, bool top) {
  size_t n = to_count(n_obj);
  n = std::min<size_t>(n, idx.size() + 64);  // room for inserts that land meanwhile
  // The query writes straight into the new arrays (no other thread can see them yet).
  py::array_t<int64_t> out_ids{py::ssize_t(n)};
  py::array_t<double> out_scores{py::ssize_t(n)};
  int64_t* oi = out_ids.mutable_data();
  double* os = out_scores.mutable_data();
  size_t k;
  {
    py::gil_scoped_release release;
    k = top ? idx.top(n, oi, os) : idx.bottom(n, oi, os);
  }
  if (k == n) return py::make_tuple(out_ids, out_scores);
  py::slice first(0, py::ssize_t(k), 1);  // fewer than asked (erased meanwhile)
  return py::make_tuple(out_ids[first], out_scores[first]);
}

// by_cost: bulk_fraction was None (SemiOrderedIndex::kAutoBulk: each batch's path chosen by cost).
std::unique_ptr<SemiOrderedIndex> make_index(const py::handle& capacity, const py::object& node_size, double bulk_fraction,
                                             bool by_cost = false) {
  if (!is_integer_scalar(capacity)) raise(PyExc_TypeError, "capacity must be an integer, got " + short_repr(capacity));
  py::int_ cap = py::reinterpret_borrow<py::object>(capacity);
  if (cap < py::int_(1) || cap > py::int_(SemiOrderedIndex::kMaxCapacity))
    raise(PyExc_ValueError, "capacity = " + short_repr(capacity) + " is out of range; pass 1 <= capacity <= " +
                                std::to_string(SemiOrderedIndex::kMaxCapacity) + " (ids are 0..capacity-1)");
  uint32_t b = SemiOrderedIndex::kDefaultNodeSize;
  if (!node_size.is_none()) {
    if (!is_integer_scalar(node_size)) raise(PyExc_TypeError, "node_size must be an integer or None, got " + short_repr(node_size));
    py::int_ ns = node_size;
    if (ns < py::int_(8) || ns > py::int_(65536))
      raise(PyExc_ValueError, "node_size = " + short_repr(node_size) + " is out of range; pass 8 <= node_size <= 65536, or None for the default (" + std::to_string(SemiOrderedIndex::kDefaultNodeSize) + ")");
    b = ns.cast<uint32_t>();
  }
  if (by_cost) {
    bulk_fraction = SemiOrderedIndex::kAutoBulk;
  } else if (!(bulk_fraction >= 0.0) || !std::isfinite(bulk_fraction))
    raise(PyExc_ValueError, "bulk_fraction must be None (choose by cost) or a finite number >= 0 (0 disables the bulk path), got " + std::to_string(bulk_fraction));
  const uint64_t c = cap.cast<uint64_t>();
  try {
    return std::make_unique<SemiOrderedIndex>(c, b, bulk_fraction);
  } catch (const std::bad_alloc&) {
    Msg os;
    os << "cannot allocate a SemiOrderedIndex of capacity " << c << ": its status table alone needs " << c * 16
       << " bytes; pass a smaller capacity";
    raise(PyExc_MemoryError, os.str());
  }
}

}  // namespace

// ============================================================================ baselines
// BEGIN baselines block (owned by the benchmark suite, issue 3): the structures socbi is
// measured against (cpp/include/socbi/baselines.hpp), bound with the same argument
// checks and GIL release as SemiOrderedIndex so that the comparison is like for like.
namespace {

template <class T>
void baseline_check_present(T& b, const std::vector<uint32_t>& ids, const char* name, const char* what) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!b.contains(ids[i])) {
      Msg os;
      os << name << "[" << i << "] = " << ids[i] << " is not in the baseline, so it cannot be " << what
         << "; insert it first";
      PyErr_SetObject(PyExc_KeyError, py::str(os.str()).ptr());
      throw py::error_already_set();
    }
  }
}

template <class T>
void baseline_check_absent(T& b, const std::vector<uint32_t>& ids, const char* name) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (b.contains(ids[i])) {
      Msg os;
      os << name << "[" << i << "] = " << ids[i] << " is already in the baseline; use assign() or update()";
      raise(PyExc_ValueError, os.str());
    }
  }
}

socbi::baselines::Method to_method(const std::string& s) {
  using socbi::baselines::Method;
  if (s == "sort") return Method::kSort;
  if (s == "heap") return Method::kHeap;
  if (s == "partial_sort") return Method::kPartialSort;
  if (s == "select") return Method::kSelect;
  raise(PyExc_ValueError, "method = '" + s + "' is not known; use 'sort', 'heap', 'partial_sort' or 'select'");
}

socbi::baselines::Sync to_sync(const std::string& s) {
  using socbi::baselines::Sync;
  if (s == "none") return Sync::kNone;
  if (s == "atomic") return Sync::kAtomic;
  if (s == "mutex") return Sync::kMutex;
  raise(PyExc_ValueError, "sync = '" + s + "' is not known; use 'none', 'atomic' or 'mutex'");
}

uint64_t to_baseline_capacity(const py::handle& capacity) {
  if (!is_integer_scalar(capacity)) raise(PyExc_TypeError, "capacity must be an integer, got " + short_repr(capacity));
  py::int_ cap = py::reinterpret_borrow<py::object>(capacity);
  if (cap < py::int_(1) || cap > py::int_(uint64_t(0xFFFFFFFFull)))
    raise(PyExc_ValueError, "capacity = " + short_repr(capacity) + " is out of range; pass 1 <= capacity <= 4294967295");
  return cap.cast<uint64_t>();
}

template <class T>
py::tuple baseline_take(T& self, const py::handle& n_obj, bool from_top, bool prepared) {
  size_t n = std::min<size_t>(to_count(n_obj), size_t(self.size()));
  std::vector<uint32_t> ids(n);
  std::vector<double> scores(n);
  size_t k;
  {
    py::gil_scoped_release release;
    k = prepared ? self.take(n, from_top, ids.data(), scores.data())
                 : (from_top ? self.top(n, ids.data(), scores.data()) : self.bottom(n, ids.data(), scores.data()));
  }
  py::array_t<int64_t> out_ids{py::ssize_t(k)};
  py::array_t<double> out_scores{py::ssize_t(k)};
  auto oi = out_ids.mutable_unchecked<1>();
  auto os = out_scores.mutable_unchecked<1>();
  for (size_t i = 0; i < k; ++i) {
    oi(py::ssize_t(i)) = int64_t(ids[i]);
    os(py::ssize_t(i)) = scores[i];
  }
  return py::make_tuple(out_ids, out_scores);
}

template <class T>
void bind_baseline_methods(py::class_<T>& c) {
  c.def_property_readonly("capacity", &T::capacity)
      .def_property_readonly("sync", [](T& self) { return std::string(socbi::baselines::sync_name(self.sync())); })
      .def("__len__", &T::size)
      .def(
          "__contains__",
          [](T& self, const py::object& id) {
            if (!is_integer_scalar(id)) return false;
            py::int_ v = id;
            if (v < py::int_(0) || v >= py::int_(self.capacity())) return false;
            return self.contains(v.cast<uint32_t>());
          },
          py::arg("id"))
      .def(
          "insert",
          [](T& self, const py::object& ids, const py::object& scores) {
            auto v = to_ids(ids, self.capacity(), "ids");
            auto s = to_values(scores, v.size(), "scores", "ids");
            check_distinct(v, self.capacity(), "ids");
            baseline_check_absent(self, v, "ids");
            const double* sp = s.data(v.size());
            py::gil_scoped_release release;
            self.insert(v.data(), sp, v.size());
          },
          py::arg("ids"), py::arg("scores"), "Insert absent, distinct ids with their scores.")
      .def(
          "update",
          [](T& self, const py::object& ids, const py::object& deltas, int threads) {
            auto v = to_ids(ids, self.capacity(), "ids");
            auto d = to_values(deltas, v.size(), "deltas", "ids");
            baseline_check_present(self, v, "ids", "updated");
            for (size_t i = 0; i < v.size(); ++i) {
              const double delta = d.at(i);
              if (!std::isfinite(self.score(v[i]) + delta)) {
                Msg os;
                os << "deltas[" << i << "] = " << delta << " would make the score of id " << v[i]
                   << " overflow to infinity; keep scores within +/-1.7e308";
                raise(PyExc_ValueError, os.str());
              }
            }
            const unsigned t = to_threads(threads);
            if (t > 1 && self.sync() == socbi::baselines::Sync::kNone)
              raise(PyExc_ValueError, "threads = " + std::to_string(threads) +
                                          " needs a thread-safe baseline; build it with sync='atomic' (arrays) or 'mutex'");
            py::gil_scoped_release release;
            self.update(v.data(), d.scalar ? nullptr : d.ptr, d.value, v.size(), t);
          },
          py::arg("ids"), py::arg("deltas"), py::arg("threads") = 1,
          "Add deltas (a scalar is added to every id) to present ids; repeats allowed.")
      .def(
          "assign",
          [](T& self, const py::object& ids, const py::object& scores) {
            auto v = to_ids(ids, self.capacity(), "ids");
            auto s = to_values(scores, v.size(), "scores", "ids");
            check_distinct(v, self.capacity(), "ids");
            baseline_check_present(self, v, "ids", "assigned");
            const double* sp = s.data(v.size());
            py::gil_scoped_release release;
            self.assign(v.data(), sp, v.size());
          },
          py::arg("ids"), py::arg("scores"), "Set the scores of present, distinct ids.")
      .def(
          "erase",
          [](T& self, const py::object& ids) {
            auto v = to_ids(ids, self.capacity(), "ids");
            check_distinct(v, self.capacity(), "ids");
            baseline_check_present(self, v, "ids", "erased");
            py::gil_scoped_release release;
            self.erase(v.data(), v.size());
          },
          py::arg("ids"), "Remove present, distinct ids.")
      .def(
          "score",
          [](T& self, const py::object& ids) -> py::object {
            return scores_of(self, ids, [&](const std::vector<uint32_t>& v) { baseline_check_present(self, v, "ids", "scored"); });
          },
          py::arg("ids"), "Current scores of present ids.")
      .def(
          "prepare",
          [](T& self, bool from_top) {
            py::gil_scoped_release release;
            self.prepare(from_top);
          },
          py::arg("from_top") = true, "The n-independent part of a query (the paper's T_sort).")
      .def(
          "take", [](T& self, const py::object& n, bool from_top) { return baseline_take(self, n, from_top, true); },
          py::arg("n"), py::arg("from_top") = true, "The rest of a query after prepare() (the paper's T_search).")
      .def(
          "top", [](T& self, const py::object& n) { return baseline_take(self, n, true, false); }, py::arg("n"),
          "The min(n, len) largest (score, id), best first, as (int64 ids, float64 scores).")
      .def(
          "bottom", [](T& self, const py::object& n) { return baseline_take(self, n, false, false); }, py::arg("n"),
          "The min(n, len) smallest (score, id), ascending.")
      .def("memory_bytes", &T::memory_bytes, "Bytes held by the structure (score table + tree or work buffer).");
}

}  // namespace

void bind_baselines(py::module_& m) {
  using socbi::baselines::ArrayIndex;
  using socbi::baselines::SetIndex;
  py::class_<ArrayIndex> a(m, "ArrayBaseline", R"doc(
Baseline: a dense score array; each query gathers the present (score, id) items and
orders them by `method`: 'sort' (std::sort, "array + full sort"), 'heap' (make_heap then
n pops, "array + heap"), 'partial_sort' (std::partial_sort) or 'select' (nth_element +
sort of the n winners). sync: 'none' (one thread), 'atomic' (update threads add with CAS),
'mutex' (one lock for everything, taken per item by update threads).

ArrayBaseline(capacity, method='sort', sync='atomic'))doc");
  a.def(py::init([](const py::object& capacity, const std::string& method, const std::string& sync) {
          const uint64_t c = to_baseline_capacity(capacity);
          const auto me = to_method(method);
          const auto sy = to_sync(sync);
          return std::make_unique<ArrayIndex>(c, me, sy);
        }),
        py::arg("capacity"), py::arg("method") = "sort", py::arg("sync") = "atomic")
      .def_property_readonly("method",
                             [](ArrayIndex& self) { return std::string(socbi::baselines::method_name(self.method())); });
  bind_baseline_methods(a);

  py::class_<SetIndex> s(m, "SetBaseline", R"doc(
Baseline: std::set of (score, id) keys plus a score array; update = extract + insert.
sync: 'none' (one thread) or 'mutex' (one lock, taken per item by update threads).

SetBaseline(capacity, sync='none'))doc");
  s.def(py::init([](const py::object& capacity, const std::string& sync) {
          const uint64_t c = to_baseline_capacity(capacity);
          const auto sy = to_sync(sync);
          if (sy == socbi::baselines::Sync::kAtomic)
            raise(PyExc_ValueError, "sync = 'atomic' is not possible for std::set; use 'none' or 'mutex'");
          return std::make_unique<SetIndex>(c, sy);
        }),
        py::arg("capacity"), py::arg("sync") = "none");
  bind_baseline_methods(s);

  m.def(
      "build_info",
      [] {
        py::dict d;
#if defined(__clang__)
        d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
        d["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
        d["compiler"] = "msvc " + std::to_string(_MSC_VER);
#else
        d["compiler"] = "unknown";
#endif
        d["cplusplus"] = long(__cplusplus);
#if defined(__OPTIMIZE__)
        d["optimized"] = true;
#else
        d["optimized"] = false;
#endif
#if defined(NDEBUG)
        d["ndebug"] = true;
#else
        d["ndebug"] = false;
#endif
#if defined(__AVX2__)
        d["avx2"] = true;
#else
        d["avx2"] = false;
#endif
        d["hardware_concurrency"] = std::thread::hardware_concurrency();
        return d;
      },
      "How this extension was compiled (recorded by `socbi bench`).");
}
// END baselines block
// ============================================================================ baselines

PYBIND11_MODULE(_core, m) {
  m.doc() = "socbi C++ core: the concurrent semi-ordered score index.";
  m.attr("MAX_CAPACITY") = py::int_(SemiOrderedIndex::kMaxCapacity);

  py::class_<SemiOrderedIndex>(m, "SemiOrderedIndex", R"doc(
A ranked set of sample ids with float64 scores that many threads update at once.

SemiOrderedIndex(capacity, node_size=None, bulk_fraction=None)

ids are integers in [0, capacity); the status table takes 16 bytes per id up front.
Nodes hold up to node_size (B, default 2048) ids unordered; nodes are ordered by
(score, id), with skip-list levels over them. Ties are broken by id: bottom() returns
(score, id) ascending, top() returns (score, id) descending.

Each update batch takes the path its estimated cost picks (bulk_fraction=None): item moves
(lock-free in place, or a move between two locked nodes), the exclusive rebuild, or the
lazy apply, which adds the deltas to the status table only and leaves the node chain
stale; a query at the end the deltas moved ids away from (bottom() after increments, the
So-CBI round) then walks past the stale ids, and a query at the other end, or walks that
have read more than len(index) extra ids in all, rebuild the chain first. With threads=1,
a batch of one integer delta over 25% or more of the capacity is applied by counting each
id's repeats, then one sequential pass over the status table (the same sums bit for bit;
stats()["counted_updates"]); when that batch is lazy, the pass also keeps the 1,024 best
keys of the stale end, and the next bottom(n <= 1024) (or top) copies them until the next
change (stats()["candidate_queries"]). A number
bulk_fraction > 0 restores the fixed rule (a batch of >= bulk_fraction * len(index) items
is rebuilt, smaller ones moved); 0 never takes the exclusive paths.

Thread safety: every method may be called from many Python threads at once; batch
methods release the GIL. Updates to ids that are present are never lost. An update
racing with erase()/insert() of the same id lands before or after it. Queries during
concurrent updates return, for each id, a score it held during the call.

>>> import socbi
>>> idx = socbi.SemiOrderedIndex(10)
>>> idx.insert([1, 2, 3], 0.0)
>>> idx.update([2, 2, 3], [1.0, 1.0, 0.5])
>>> idx.top(2)
(array([2, 3]), array([2. , 0.5]))
)doc")
      .def(py::init([](const py::object& capacity, const py::object& node_size, const py::object& bulk_fraction) {
             if (bulk_fraction.is_none()) return make_index(capacity, node_size, 0.0, /*by_cost=*/true);
             if (PyBool_Check(bulk_fraction.ptr()) || !(PyFloat_Check(bulk_fraction.ptr()) || is_integer_scalar(bulk_fraction) ||
                                                        py::isinstance(bulk_fraction, py::module_::import("numpy").attr("floating"))))
               raise(PyExc_TypeError, "bulk_fraction must be None (choose by cost) or a number >= 0 (0 disables the bulk path), got " + short_repr(bulk_fraction));
             return make_index(capacity, node_size, py::cast<double>(bulk_fraction));
           }),
           py::arg("capacity"), py::arg("node_size") = py::none(), py::arg("bulk_fraction") = py::none())
      .def_property_readonly("capacity", &SemiOrderedIndex::capacity, "ids must lie in [0, capacity).")
      .def_property_readonly("node_size", &SemiOrderedIndex::node_size, "B: items per node.")
      .def("__len__", &SemiOrderedIndex::size, "Number of ids present. O(1).")
      .def(
          "__contains__",
          [](SemiOrderedIndex& self, const py::object& id) {
            if (!is_integer_scalar(id)) return false;
            py::int_ v = id;
            if (v < py::int_(0) || v >= py::int_(self.capacity())) return false;
            return self.contains(v.cast<uint32_t>());
          },
          py::arg("id"), "True if id is present. O(1), lock-free.")
      .def(
          "insert",
          [](SemiOrderedIndex& self, const py::object& ids, const py::object& scores, const py::object& threads_obj, const py::object& bulk) {
            const int threads = threads_arg(threads_obj);
            auto v = to_ids(ids, self.capacity(), "ids");
            auto s = to_values(scores, v.size(), "scores", "ids");
            check_distinct(v, self.capacity(), "ids");
            check_absent(self, v, "ids");
            const unsigned t = to_threads(threads);
            const int b = to_bulk(bulk);
            const double* sp = s.data(v.size());
            py::gil_scoped_release release;
            self.insert(v.data(), sp, v.size(), t, b);
          },
          py::arg("ids"), py::arg("scores"), py::arg("threads") = 1, py::arg("bulk") = py::none(),
          R"doc(Insert absent ids with their scores (a scalar score is used for every id).

O(log #nodes) per id; a batch of >= bulk_fraction * len(index) ids (or >= 4096 ids into an
empty index) takes the bulk path: O(n) bucketing, exclusive while it runs.
Raises ValueError (out of range, repeated, already present, non-finite score) or
TypeError (non-integer ids) before changing anything. scores are read in place with the GIL
released; a non-finite value written by another thread after the check is stored as
+/-1.797e308 (inf) or 0.0 (NaN), never as itself.)doc")
      .def(
          "update",
          [](SemiOrderedIndex& self, const py::object& ids, const py::object& deltas, const py::object& threads_obj, const py::object& bulk) {
            const int threads = threads_arg(threads_obj);
            const IdBuffer b = id_buffer(ids, self.capacity(), "ids");
            auto d = to_values(deltas, b.n, "deltas", "ids", /*check_finite=*/false);
            const unsigned t = to_threads(threads);
            const int bk = to_bulk(bulk);
            // Range, presence and overflow are checked in C++ in the pass that applies the
            // batch (rolled back if refused), on the caller's buffer, without the GIL.
            SemiOrderedIndex::BatchError err{b.n, SemiOrderedIndex::BadInput::kNone};
            b.visit([&](const auto* p) {
              py::gil_scoped_release release;
              err = self.update_checked(p, d.scalar ? nullptr : d.ptr, d.value, b.n, t, bk);
            });
            if (err.index >= b.n) return;
            Msg os;
            switch (err.what) {
              case SemiOrderedIndex::BadInput::kOutOfRange:
                b.raise_out_of_range(err.index, self.capacity(), "ids");
              case SemiOrderedIndex::BadInput::kAbsent:
                os << "ids[" << err.index << "] = " << b.id_at(err.index) << " is not in the index, so it cannot be updated"
                   << "; insert it first (see `id in index`)";
                PyErr_SetObject(PyExc_KeyError, py::str(os.str()).ptr());
                throw py::error_already_set();
              default:
                if (!std::isfinite(d.at(err.index))) {
                  os << "deltas[" << err.index << "] = " << d.at(err.index)
                     << " is not finite; scores and deltas must be finite numbers";
                } else {
                  os << "deltas[" << err.index << "] = " << d.at(err.index) << " would make the score of id "
                     << b.id_at(err.index) << " overflow to infinity; keep scores within +/-1.7e308";
                }
                raise(PyExc_ValueError, os.str());
            }
          },
          py::arg("ids"), py::arg("deltas"), py::arg("threads") = 1, py::arg("bulk") = py::none(),
          R"doc(Add deltas to the scores of present ids (a scalar delta is added to every id).

Repeated ids are allowed: every delta is applied. O(1) expected when the new score stays in
its node's range (lock-free), O(log #nodes) for a move (locks two nodes). threads > 1 (or
-1 for all cores) spreads the batch over C++ threads. The path is chosen by cost (see
the class docstring): item moves for small batches; for large ones the bulk path (one pass
applies and checks the batch, exclusive while it runs; repeated ids are summed in batch
order, so the result does not depend on threads), followed by a rebuild by bucketing (O(len))
or, lazily, by nothing until a query needs it. bulk=False forbids the bulk path,
bulk=True forces it with the rebuild. ids of any integer dtype are read in place.
Raises KeyError for absent ids, ValueError for ids out of range or non-finite deltas or
results; a refused batch changes nothing (the bulk path rolls back bit for bit).
ids and deltas are read in place with the GIL released: if another thread rewrites them
during the call, the call still returns and the index stays consistent, but which values
were applied is unspecified (a non-finite delta that arrives after the check is
saturated, or adds nothing if NaN).)doc")
      .def(
          "assign",
          [](SemiOrderedIndex& self, const py::object& ids, const py::object& scores, const py::object& threads_obj, const py::object& bulk) {
            const int threads = threads_arg(threads_obj);
            auto v = to_ids(ids, self.capacity(), "ids");
            auto s = to_values(scores, v.size(), "scores", "ids");
            check_distinct(v, self.capacity(), "ids");
            check_present(self, v, "ids", "assigned");
            const unsigned t = to_threads(threads);
            const int b = to_bulk(bulk);
            const double* sp = s.data(v.size());
            py::gil_scoped_release release;
            self.assign(v.data(), sp, v.size(), t, b);
          },
          py::arg("ids"), py::arg("scores"), py::arg("threads") = 1, py::arg("bulk") = py::none(),
          "Set the scores of present ids. Same cost and thread safety as update(); ids must be distinct.\n"
          "scores are read in place with the GIL released; a non-finite value written by another thread\n"
          "after the check is stored as +/-1.797e308 (inf) or 0.0 (NaN), never as itself.")
      .def(
          "erase",
          [](SemiOrderedIndex& self, const py::object& ids) {
            auto v = to_ids(ids, self.capacity(), "ids");
            SemiOrderedIndex::BatchError err;
            {  // presence and repeats are checked in C++, in the erase's own pass
              py::gil_scoped_release release;
              err = self.erase_checked(v.data(), v.size(), /*refuse_repeats=*/true);
            }
            if (err.what == SemiOrderedIndex::BadInput::kRepeated) raise_repeated("ids", v[err.index]);
            if (err.index < v.size()) raise_absent(v, err.index, "ids", "erased");
          },
          py::arg("ids"),
          "Remove present ids, all or none (an absent or repeated id raises, nothing erased). O(1) each\n"
          "(plus O(log #nodes) when a node empties). Thread-safe: a batch of 64 or more ids runs\n"
          "exclusively (concurrent calls wait; no per-id locks), a smaller one item by item.")
      .def(
          "score",
          [](SemiOrderedIndex& self, const py::object& ids) -> py::object {
            return scores_of(self, ids, [&](const std::vector<uint32_t>& v) { check_present(self, v, "ids", "scored"); });
          },
          py::arg("ids"), "Current scores of present ids (a float for a scalar id). O(1) each, lock-free.")
      .def(
          "top", [](SemiOrderedIndex& self, const py::object& n) { return run_query(self, n, true); }, py::arg("n"),
          R"doc(The min(n, len) ids with the largest (score, id), best first, as (int64 ids, float64 scores).

O(n log n + B): walks nodes from the top, selects inside the boundary node, sorts n results.
An oversized boundary node (after a bulk rebuild) is split once, so later calls stay fast.
Exact when no update is in flight; lock-free otherwise (each score was held during the call).)doc")
      .def(
          "bottom", [](SemiOrderedIndex& self, const py::object& n) { return run_query(self, n, false); },
          py::arg("n"), "The min(n, len) ids with the smallest (score, id), ascending. Same cost as top().")
      .def(
          "items",
          [](SemiOrderedIndex& self) {
            std::vector<int64_t> ids;
            std::vector<double> sc;
            for (uint64_t i = 0; i < self.capacity(); ++i) {
              if (self.contains(uint32_t(i))) {
                ids.push_back(int64_t(i));
                sc.push_back(self.score(uint32_t(i)));
              }
            }
            return py::make_tuple(py::array_t<int64_t>(py::ssize_t(ids.size()), ids.data()),
                                  py::array_t<double>(py::ssize_t(sc.size()), sc.data()));
          },
          "All present (ids, scores) in id order. O(capacity).")
      .def(
          "check",
          [](SemiOrderedIndex& self) {
            try {
              py::gil_scoped_release release;
              self.check();
            } catch (const std::logic_error& e) {
              raise(PyExc_AssertionError, e.what());
            }
          },
          "Verify every invariant in O(capacity + len + #nodes); raises AssertionError naming the first broken one. "
          "Waits for in-flight batches and runs exclusively.")
      .def(
          "stats",
          [](SemiOrderedIndex& self) {
            socbi::IndexStats st;
            {
              py::gil_scoped_release release;
              st = self.stats();
            }
            py::dict d;
            d["size"] = st.size;
            d["capacity"] = st.capacity;
            d["node_size"] = st.node_size;
            d["nodes"] = st.nodes;
            d["empty_nodes"] = st.empty_nodes;
            d["oversized_nodes"] = st.oversized_nodes;
            d["max_level"] = st.max_level;
            d["moves"] = st.moves;
            d["in_place_updates"] = st.in_place_updates;
            d["splits"] = st.splits;
            d["node_removals"] = st.node_removals;
            d["rebuilds"] = st.rebuilds;
            d["query_retries"] = st.query_retries;
            d["memory_bytes"] = st.memory_bytes;
            d["scratch_bytes"] = st.scratch_bytes;
            d["lazy_updates"] = st.lazy_updates;
            d["counted_updates"] = st.counted_updates;
            d["candidate_queries"] = st.candidate_queries;
            d["stale"] = st.stale;
            d["stale_scans"] = st.stale_scans;
            return d;
          },
          "Counters and sizes: nodes, moves, in_place_updates, splits, memory_bytes (scratch_bytes of it kept by\n"
          "the bulk path for its next call), ... O(#nodes).")
      .def("__repr__", [](SemiOrderedIndex& self) {
        return "SemiOrderedIndex(capacity=" + std::to_string(self.capacity()) + ", node_size=" +
               std::to_string(self.node_size()) + ", len=" + std::to_string(self.size()) + ")";
      });

  bind_baselines(m);  // benchmark baselines (issue 3), defined above

  // ---- issue 15: fused uncertainty selection (socbi/select.hpp) ----------------------
  m.def(
      "select_uncertain",
      [](py::array P, int measure, int64_t n, py::object skip, py::object rows, py::object labels, uint64_t seed,
         int threads) {
        // Validated with the GIL held; P is read in place (float32 or float64, C order).
        if (P.ndim() != 2) throw py::value_error("probabilities must be 2-D (n_samples, n_classes)");
        const bool f32 = py::isinstance<py::array_t<float>>(P), f64 = py::isinstance<py::array_t<double>>(P);
        if ((!f32 && !f64) || !(P.flags() & py::array::c_style))
          throw py::value_error("probabilities must be a C-contiguous float32 or float64 array");
        if (measure < 0 || measure > 2) throw py::value_error("measure must be 0 (LC), 1 (margin) or 2 (entropy)");
        if (n < 0) throw py::value_error("n must be >= 0");
        if (threads < 1) throw py::value_error("threads must be >= 1");
        const int64_t n_rows = P.shape(0), C = P.shape(1);
        const uint8_t* skip_ptr = nullptr;
        py::array skip_arr;
        if (!skip.is_none()) {
          skip_arr = py::array::ensure(skip);
          if (!skip_arr || skip_arr.ndim() != 1 || skip_arr.shape(0) != n_rows || skip_arr.itemsize() != 1 ||
              !(skip_arr.flags() & py::array::c_style))
            throw py::value_error("skip must be a contiguous bool/uint8 array with one entry per row");
          skip_ptr = static_cast<const uint8_t*>(skip_arr.data());
        }
        const int64_t* rows_ptr = nullptr;
        int64_t n_cand = 0;
        py::array_t<int64_t, py::array::c_style> rows_arr;
        if (!rows.is_none()) {
          rows_arr = py::array_t<int64_t, py::array::c_style>::ensure(rows);
          if (!rows_arr || rows_arr.ndim() != 1) throw py::value_error("rows must be a 1-D integer array");
          rows_ptr = rows_arr.data();
          n_cand = rows_arr.shape(0);
        }
        const int64_t* labels_ptr = nullptr;
        py::array_t<int64_t, py::array::c_style> labels_arr;
        if (!labels.is_none()) {
          labels_arr = py::array_t<int64_t, py::array::c_style>::ensure(labels);
          if (!labels_arr || labels_arr.ndim() != 1 || labels_arr.shape(0) != n_rows)
            throw py::value_error("labels must be a 1-D integer array with one id per row");
          labels_ptr = labels_arr.data();
        }
        socbi::select::Options opt;
        opt.measure = static_cast<socbi::select::Measure>(measure);
        opt.n = static_cast<std::size_t>(n);
        opt.seed = seed;
        socbi::select::Error err;
        std::vector<socbi::select::Pick> picks;
        {
          py::gil_scoped_release release;
          if (f32)
            picks = socbi::select::select_uncertain(static_cast<const float*>(P.data()), n_rows, C, skip_ptr, rows_ptr,
                                                    n_cand, labels_ptr, opt, threads, err);
          else
            picks = socbi::select::select_uncertain(static_cast<const double*>(P.data()), n_rows, C, skip_ptr,
                                                    rows_ptr, n_cand, labels_ptr, opt, threads, err);
        }
        py::array_t<int64_t> ids{py::ssize_t(picks.size())};
        py::array_t<double> scores{py::ssize_t(picks.size())};
        auto ib = ids.mutable_unchecked<1>();
        auto sb = scores.mutable_unchecked<1>();
        for (std::size_t i = 0; i < picks.size(); ++i) {
          ib(py::ssize_t(i)) = picks[i].id;
          sb(py::ssize_t(i)) = picks[i].score;
        }
        return py::make_tuple(ids, scores, static_cast<int>(err.kind), err.row, err.value);
      },
      py::arg("probabilities"), py::arg("measure"), py::arg("n"), py::arg("skip") = py::none(),
      py::arg("rows") = py::none(), py::arg("labels") = py::none(), py::arg("seed") = 0, py::arg("threads") = 1,
      "The n most uncertain rows of a class-probability matrix in one fused pass (socbi/select.hpp).\n"
      "measure: 0 least confidence (1 - max p), 1 margin (-(p1 - p2)), 2 entropy. Rows with skip[i] set are\n"
      "left out; with rows given only those row ids are read; labels[i] is the id reported for row i. Returns (ids, scores, err_kind, err_row,\n"
      "err_value): err_kind 0 = ok, 1 NaN/inf, 2 value outside [0, 1], 3 row sum != 1, 4 bad row id (then ids\n"
      "is empty). Ties at the cut by a seeded hash of the id. O(rows * C); GIL released; threads split rows.");
}
