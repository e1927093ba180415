// Tensor handles: creation from and export to typed arrays, metadata, autograd entry points,
// global state (grad mode, seed, threads, autocast) and CUDA helpers.
#include "common.h"

#include <torch/csrc/autograd/autograd.h>
#include <ATen/autocast_mode.h>
#include <c10/core/CPUAllocator.h>
#include <torch/version.h>
#ifdef REALS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <link.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace reals {

namespace {

struct Slot {
  at::Tensor tensor;
  uint32_t generation = 0;
  // Bytes reported to V8 for this tensor: only tensors the GC frees (those with a finalizer)
  // are reported. Scoped tensors are freed deterministically, and reporting them would only
  // make V8 run full collections that free nothing.
  int64_t bytes = 0;
};

std::vector<Slot> slots;
std::vector<uint32_t> freeSlots;
// Bytes reported to V8 (external memory) are batched: napi_adjust_external_memory per small
// tensor would cost as much as the operator itself.
int64_t pendingExternalBytes = 0;
constexpr int64_t kExternalBatch = 4 << 20;

int64_t tensorBytes(const at::Tensor& t) {
  if (!t.defined() || !t.has_storage()) return 0;
  return static_cast<int64_t>(t.numel()) * static_cast<int64_t>(t.element_size());
}

// Never flushes from a finalizer: adjusting external memory can start a GC, which must not
// re-enter from inside one (V8 aborts).
void reportBytes(node_api_basic_env env, int64_t delta, bool mayFlush = true) {
  pendingExternalBytes += delta;
  if (mayFlush && (pendingExternalBytes >= kExternalBatch || pendingExternalBytes <= -kExternalBatch)) {
    int64_t flush = pendingExternalBytes;
    pendingExternalBytes = 0;
    int64_t ignored;
    napi_adjust_external_memory(env, flush, &ignored);
  }
}

constexpr uint64_t kSlotBits = 24;  // 2^24 live tensors; generations use the bits above
constexpr uint64_t kSlotMask = (uint64_t{1} << kSlotBits) - 1;

double encode(uint32_t index) {
  return static_cast<double>((static_cast<uint64_t>(slots[index].generation) << kSlotBits) | index);
}

// The slot a handle names when it is live, else -1.
int64_t liveSlot(double id) {
  if (!(id >= 0 && id < 9007199254740992.0)) return -1;
  auto bits = static_cast<uint64_t>(id);
  if (static_cast<double>(bits) != id) return -1;
  uint64_t index = bits & kSlotMask;
  if (index >= slots.size() || slots[index].generation != (bits >> kSlotBits) || !slots[index].tensor.defined()) return -1;
  return static_cast<int64_t>(index);
}

void release(node_api_basic_env env, double id, bool fromFinalizer = false) {
  int64_t index = liveSlot(id);
  if (index < 0) return;
  Slot& slot = slots[index];
  reportBytes(env, -slot.bytes, !fromFinalizer);
  slot.bytes = 0;
  slot.generation = (slot.generation + 1) & ((1u << 29) - 1);  // handles stay below 2^53
  freeSlots.push_back(static_cast<uint32_t>(index));
  at::Tensor dropped = std::move(slot.tensor);  // freed once the table is consistent
  slot.tensor = at::Tensor();
}

// A basic (synchronous) finalizer: with NAPI_EXPERIMENTAL, Node runs it during garbage collection
// instead of deferring it to the event loop, so tensors dropped in a long synchronous loop are
// freed as the GC finds them. A handle disposed earlier is stale here and ignored.
void finalizeTensor(node_api_basic_env env, void* data, void* hint) {
  release(env, static_cast<double>(reinterpret_cast<uintptr_t>(data)), true);
}

}  // namespace

napi_value wrapTensor(napi_env env, at::Tensor tensor) {
  if (!tensor.defined()) return makeNull(env);
  uint32_t index;
  if (!freeSlots.empty()) {
    index = freeSlots.back();
    freeSlots.pop_back();
  } else {
    if (slots.size() > kSlotMask) throw JsError{"reals native: more than 2^24 live tensors"};
    index = static_cast<uint32_t>(slots.size());
    slots.emplace_back();
  }
  Slot& slot = slots[index];
  slot.bytes = 0;
  slot.tensor = std::move(tensor);
  napi_value result;
  check(napi_create_double(env, encode(index), &result), "napi_create_double");
  return result;
}

const at::Tensor* tryUnwrapTensor(napi_env env, napi_value value) {
  double id;
  if (value == nullptr || napi_get_value_double(env, value, &id) != napi_ok) return nullptr;
  int64_t index = liveSlot(id);
  return index < 0 ? nullptr : &slots[index].tensor;
}

const at::Tensor& unwrapTensor(napi_env env, napi_value value, const char* what) {
  double id;
  if (value == nullptr || napi_get_value_double(env, value, &id) != napi_ok) {
    throw JsError{std::string(what) + ": expected a tensor"};
  }
  int64_t index = liveSlot(id);
  if (index < 0) throw JsError{std::string(what) + ": tensor used after dispose()"};
  return slots[index].tensor;
}

napi_valuetype typeOf(napi_env env, napi_value value) {
  if (value == nullptr) return napi_undefined;
  napi_valuetype type;
  check(napi_typeof(env, value, &type), "napi_typeof");
  return type;
}

int64_t getInt64(napi_env env, napi_value value, const char* what) {
  double v;
  if (napi_get_value_double(env, value, &v) != napi_ok) throw JsError{std::string(what) + ": expected a number"};
  if (v != static_cast<double>(static_cast<int64_t>(v))) {
    throw JsError{std::string(what) + ": expected an integer, got " + std::to_string(v)};
  }
  return static_cast<int64_t>(v);
}

double getDouble(napi_env env, napi_value value, const char* what) {
  double v;
  if (napi_get_value_double(env, value, &v) != napi_ok) throw JsError{std::string(what) + ": expected a number"};
  return v;
}

bool getBool(napi_env env, napi_value value, const char* what) {
  bool v;
  if (napi_get_value_bool(env, value, &v) != napi_ok) throw JsError{std::string(what) + ": expected a boolean"};
  return v;
}

std::string getString(napi_env env, napi_value value, const char* what) {
  size_t length;
  if (napi_get_value_string_utf8(env, value, nullptr, 0, &length) != napi_ok) {
    throw JsError{std::string(what) + ": expected a string"};
  }
  std::string s(length, '\0');
  check(napi_get_value_string_utf8(env, value, s.data(), length + 1, &length), "napi_get_value_string_utf8");
  return s;
}

std::vector<int64_t> getIntList(napi_env env, napi_value value, const char* what) {
  bool isArray = false;
  napi_is_array(env, value, &isArray);
  if (!isArray) {
    if (typeOf(env, value) == napi_number) return {getInt64(env, value, what)};
    throw JsError{std::string(what) + ": expected an array of integers"};
  }
  uint32_t n;
  check(napi_get_array_length(env, value, &n), "napi_get_array_length");
  std::vector<int64_t> out(n);
  for (uint32_t i = 0; i < n; ++i) {
    napi_value element;
    check(napi_get_element(env, value, i, &element), "napi_get_element");
    out[i] = getInt64(env, element, what);
  }
  return out;
}

napi_value makeNumber(napi_env env, double v) {
  napi_value r;
  check(napi_create_double(env, v, &r), "napi_create_double");
  return r;
}
napi_value makeString(napi_env env, const std::string& s) {
  napi_value r;
  check(napi_create_string_utf8(env, s.data(), s.size(), &r), "napi_create_string_utf8");
  return r;
}
napi_value makeBool(napi_env env, bool v) {
  napi_value r;
  check(napi_get_boolean(env, v, &r), "napi_get_boolean");
  return r;
}
napi_value makeUndefined(napi_env env) {
  napi_value r;
  check(napi_get_undefined(env, &r), "napi_get_undefined");
  return r;
}
napi_value makeNull(napi_env env) {
  napi_value r;
  check(napi_get_null(env, &r), "napi_get_null");
  return r;
}
napi_value makeIntArray(napi_env env, at::IntArrayRef values) {
  napi_value arr;
  check(napi_create_array_with_length(env, values.size(), &arr), "napi_create_array");
  for (size_t i = 0; i < values.size(); ++i) {
    check(napi_set_element(env, arr, i, makeNumber(env, static_cast<double>(values[i]))), "napi_set_element");
  }
  return arr;
}

void exportFunction(napi_env env, napi_value exports, const char* name, napi_callback cb) {
  napi_value fn;
  check(napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, nullptr, &fn), "napi_create_function");
  check(napi_set_named_property(env, exports, name, fn), "napi_set_named_property");
}

static std::vector<at::Tensor> getTensorList(napi_env env, napi_value value, const char* what) {
  uint32_t n;
  if (napi_get_array_length(env, value, &n) != napi_ok) throw JsError{std::string(what) + ": expected an array of tensors"};
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    napi_value element;
    check(napi_get_element(env, value, i, &element), "napi_get_element");
    napi_valuetype t = typeOf(env, element);
    out.push_back(t == napi_null || t == napi_undefined ? at::Tensor() : unwrapTensor(env, element, what));
  }
  return out;
}

static napi_value wrapTensorList(napi_env env, const std::vector<at::Tensor>& tensors) {
  napi_value arr;
  check(napi_create_array_with_length(env, tensors.size(), &arr), "napi_create_array");
  for (size_t i = 0; i < tensors.size(); ++i) check(napi_set_element(env, arr, i, wrapTensor(env, tensors[i])), "napi_set_element");
  return arr;
}

// fromBuffer(data: ArrayBuffer | TypedArray, shape: number[], dtype: number) -> handle (a copy)
static napi_value FromBuffer(napi_env env, napi_callback_info info) {
  return guarded(env, "fromBuffer", [&] {
    Args args(env, info);
    void* data = nullptr;
    size_t byteLength = 0;
    bool isTyped = false, isBuffer = false;
    napi_is_typedarray(env, args[0], &isTyped);
    if (isTyped) {
      napi_typedarray_type type;
      size_t length, offset;
      napi_value ab;
      check(napi_get_typedarray_info(env, args[0], &type, &length, &data, &ab, &offset), "napi_get_typedarray_info");
      size_t elementBytes = 1;
      switch (type) {
        case napi_int16_array: case napi_uint16_array: elementBytes = 2; break;
        case napi_int32_array: case napi_uint32_array: case napi_float32_array: elementBytes = 4; break;
        case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elementBytes = 8; break;
        default: elementBytes = 1;
      }
      byteLength = length * elementBytes;
    } else {
      napi_is_arraybuffer(env, args[0], &isBuffer);
      if (!isBuffer) throw JsError{"fromBuffer: expected an ArrayBuffer or a typed array"};
      check(napi_get_arraybuffer_info(env, args[0], &data, &byteLength), "napi_get_arraybuffer_info");
    }
    auto shape = getIntList(env, args[1], "fromBuffer(shape)");
    auto dtype = static_cast<at::ScalarType>(getInt64(env, args[2], "fromBuffer(dtype)"));
    auto tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
    size_t need = static_cast<size_t>(tensor.numel()) * tensor.element_size();
    if (need != byteLength) {
      throw JsError{"fromBuffer: shape " + c10::str(tensor.sizes()) + " of " + c10::toString(dtype) + " needs " +
                    std::to_string(need) + " bytes, the buffer holds " + std::to_string(byteLength)};
    }
    if (need > 0) std::memcpy(tensor.data_ptr(), data, need);
    return wrapTensor(env, tensor);
  });
}

// toBuffer(handle) -> ArrayBuffer holding a contiguous CPU copy of the elements.
static napi_value ToBuffer(napi_env env, napi_callback_info info) {
  return guarded(env, "toBuffer", [&] {
    Args args(env, info);
    at::Tensor t = unwrapTensor(env, args[0], "toBuffer");
    {
      at::NoGradGuard noGrad;
      t = t.detach().to(at::kCPU).contiguous();
    }
    size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    void* out;
    napi_value ab;
    check(napi_create_arraybuffer(env, bytes, &out, &ab), "napi_create_arraybuffer");
    if (bytes > 0) std::memcpy(out, t.data_ptr(), bytes);
    return ab;
  });
}

static napi_value Shape(napi_env env, napi_callback_info info) {
  return guarded(env, "shape", [&] {
    Args args(env, info);
    return makeIntArray(env, unwrapTensor(env, args[0], "shape").sizes());
  });
}

static napi_value Stride(napi_env env, napi_callback_info info) {
  return guarded(env, "stride", [&] {
    Args args(env, info);
    return makeIntArray(env, unwrapTensor(env, args[0], "stride").strides());
  });
}

static napi_value Dim(napi_env env, napi_callback_info info) {
  return guarded(env, "dim", [&] {
    Args args(env, info);
    return makeNumber(env, static_cast<double>(unwrapTensor(env, args[0], "dim").dim()));
  });
}

static napi_value Numel(napi_env env, napi_callback_info info) {
  return guarded(env, "numel", [&] {
    Args args(env, info);
    return makeNumber(env, static_cast<double>(unwrapTensor(env, args[0], "numel").numel()));
  });
}

static napi_value DType(napi_env env, napi_callback_info info) {
  return guarded(env, "dtype", [&] {
    Args args(env, info);
    return makeNumber(env, static_cast<double>(unwrapTensor(env, args[0], "dtype").scalar_type()));
  });
}

static napi_value Device(napi_env env, napi_callback_info info) {
  return guarded(env, "device", [&] {
    Args args(env, info);
    return makeString(env, unwrapTensor(env, args[0], "device").device().str());
  });
}

static napi_value IsContiguous(napi_env env, napi_callback_info info) {
  return guarded(env, "isContiguous", [&] {
    Args args(env, info);
    return makeBool(env, unwrapTensor(env, args[0], "isContiguous").is_contiguous());
  });
}

static napi_value Dispose(napi_env env, napi_callback_info info) {
  return guarded(env, "dispose", [&] {
    Args args(env, info);
    release(env, getDouble(env, args[0], "dispose"));
    return makeUndefined(env);
  });
}

// disposeMany(handles: Float64Array): one call for a whole scope.
static napi_value DisposeMany(napi_env env, napi_callback_info info) {
  return guarded(env, "disposeMany", [&] {
    Args args(env, info);
    napi_typedarray_type type;
    size_t length;
    void* data;
    if (napi_get_typedarray_info(env, args[0], &type, &length, &data, nullptr, nullptr) != napi_ok || type != napi_float64_array) {
      throw JsError{"disposeMany: expected a Float64Array of handles"};
    }
    const double* ids = static_cast<const double*>(data);
    for (size_t i = 0; i < length; ++i) release(env, ids[i]);
    return makeUndefined(env);
  });
}

// attachFinalizer(object, handle): dispose `handle` when `object` (its Tensor) is garbage collected.
static napi_value AttachFinalizer(napi_env env, napi_callback_info info) {
  return guarded(env, "attachFinalizer", [&] {
    Args args(env, info);
    double id = getDouble(env, args[1], "attachFinalizer");
    int64_t index = liveSlot(id);
    if (index < 0) throw JsError{"attachFinalizer: tensor used after dispose()"};
    slots[index].bytes = tensorBytes(slots[index].tensor);
    reportBytes(env, slots[index].bytes);
    check(napi_add_finalizer(env, args[0], reinterpret_cast<void*>(static_cast<uintptr_t>(id)), finalizeTensor, nullptr, nullptr),
          "napi_add_finalizer");
    return makeUndefined(env);
  });
}

static napi_value IsDisposed(napi_env env, napi_callback_info info) {
  return guarded(env, "isDisposed", [&] {
    Args args(env, info);
    return makeBool(env, tryUnwrapTensor(env, args[0]) == nullptr);
  });
}

// setData(handle, source): `t.data = source`; at::Tensor::set_data keeps t's autograd identity.
static napi_value SetData(napi_env env, napi_callback_info info) {
  return guarded(env, "setData", [&] {
    Args args(env, info);
    int64_t index = liveSlot(getDouble(env, args[0], "data"));
    if (index < 0) throw JsError{"data: tensor used after dispose()"};
    slots[index].tensor.set_data(unwrapTensor(env, args[1], "data"));
    if (slots[index].bytes != 0) {
      int64_t bytes = tensorBytes(slots[index].tensor);
      reportBytes(env, bytes - slots[index].bytes);
      slots[index].bytes = bytes;
    }
    return makeUndefined(env);
  });
}

// liveTensors(): how many handles are live (for leak tests).
static napi_value LiveTensors(napi_env env, napi_callback_info info) {
  return guarded(env, "liveTensors", [&] { return makeNumber(env, static_cast<double>(slots.size() - freeSlots.size())); });
}

static napi_value Item(napi_env env, napi_callback_info info) {
  return guarded(env, "item", [&] {
    Args args(env, info);
    const at::Tensor& t = unwrapTensor(env, args[0], "item");
    if (t.numel() != 1) {
      throw JsError{"item: a tensor with " + std::to_string(t.numel()) + " elements cannot be converted to a number"};
    }
    return makeNumber(env, t.item().toDouble());
  });
}

static napi_value RequiresGrad(napi_env env, napi_callback_info info) {
  return guarded(env, "requiresGrad", [&] {
    Args args(env, info);
    return makeBool(env, unwrapTensor(env, args[0], "requiresGrad").requires_grad());
  });
}

static napi_value SetRequiresGrad(napi_env env, napi_callback_info info) {
  return guarded(env, "setRequiresGrad", [&] {
    Args args(env, info);
    unwrapTensor(env, args[0], "requiresGrad_").set_requires_grad(getBool(env, args[1], "requiresGrad_"));
    return makeUndefined(env);
  });
}

static napi_value IsLeaf(napi_env env, napi_callback_info info) {
  return guarded(env, "isLeaf", [&] {
    Args args(env, info);
    return makeBool(env, unwrapTensor(env, args[0], "isLeaf").is_leaf());
  });
}

static napi_value GradFn(napi_env env, napi_callback_info info) {
  return guarded(env, "gradFn", [&] {
    Args args(env, info);
    const auto& fn = unwrapTensor(env, args[0], "gradFn").grad_fn();
    return fn ? makeString(env, fn->name()) : makeNull(env);
  });
}

static napi_value Grad(napi_env env, napi_callback_info info) {
  return guarded(env, "grad", [&] {
    Args args(env, info);
    return wrapTensor(env, unwrapTensor(env, args[0], "grad").grad());
  });
}

static napi_value SetGrad(napi_env env, napi_callback_info info) {
  return guarded(env, "setGrad", [&] {
    Args args(env, info);
    at::Tensor t = unwrapTensor(env, args[0], "setGrad");
    napi_valuetype type = typeOf(env, args[1]);
    t.mutable_grad() = (type == napi_null || type == napi_undefined) ? at::Tensor() : unwrapTensor(env, args[1], "setGrad");
    return makeUndefined(env);
  });
}

// backward(tensor, gradient | null, retainGraph, createGraph)
static napi_value Backward(napi_env env, napi_callback_info info) {
  return guarded(env, "backward", [&] {
    Args args(env, info);
    const at::Tensor& t = unwrapTensor(env, args[0], "backward");
    napi_valuetype gradType = typeOf(env, args[1]);
    at::Tensor gradient = (gradType == napi_null || gradType == napi_undefined) ? at::Tensor() : unwrapTensor(env, args[1], "backward(gradient)");
    bool createGraph = args[3] ? getBool(env, args[3], "backward(createGraph)") : false;
    c10::optional<bool> retain;
    if (args[2] && typeOf(env, args[2]) == napi_boolean) retain = getBool(env, args[2], "backward(retainGraph)");
    torch::autograd::backward({t}, {gradient}, retain, createGraph);
    return makeUndefined(env);
  });
}

// autogradGrad(outputs[], inputs[], gradOutputs[] | null, retainGraph, createGraph, allowUnused) -> (handle|null)[]
static napi_value AutogradGrad(napi_env env, napi_callback_info info) {
  return guarded(env, "autograd.grad", [&] {
    Args args(env, info);
    auto outputs = getTensorList(env, args[0], "autograd.grad(outputs)");
    auto inputs = getTensorList(env, args[1], "autograd.grad(inputs)");
    std::vector<at::Tensor> gradOutputs;
    napi_valuetype gt = typeOf(env, args[2]);
    if (gt != napi_null && gt != napi_undefined) gradOutputs = getTensorList(env, args[2], "autograd.grad(gradOutputs)");
    c10::optional<bool> retain;
    if (args[3] && typeOf(env, args[3]) == napi_boolean) retain = getBool(env, args[3], "autograd.grad(retainGraph)");
    bool createGraph = args[4] ? getBool(env, args[4], "autograd.grad(createGraph)") : false;
    bool allowUnused = args[5] ? getBool(env, args[5], "autograd.grad(allowUnused)") : false;
    auto grads = torch::autograd::grad(outputs, inputs, gradOutputs, retain, createGraph, allowUnused);
    return wrapTensorList(env, grads);
  });
}

static napi_value SetGradEnabled(napi_env env, napi_callback_info info) {
  return guarded(env, "setGradEnabled", [&] {
    Args args(env, info);
    at::GradMode::set_enabled(getBool(env, args[0], "setGradEnabled"));
    return makeUndefined(env);
  });
}

static napi_value IsGradEnabled(napi_env env, napi_callback_info info) {
  return guarded(env, "isGradEnabled", [&] { return makeBool(env, at::GradMode::is_enabled()); });
}

static napi_value ManualSeed(napi_env env, napi_callback_info info) {
  return guarded(env, "manualSeed", [&] {
    Args args(env, info);
    torch::manual_seed(static_cast<uint64_t>(getInt64(env, args[0], "manualSeed")));
    return makeUndefined(env);
  });
}

// A default generator: the CPU's (mt19937 + normal cache) when `index` is absent, else CUDA
// device `index`'s (Philox seed and offset). Its full state is a uint8 tensor, for exact resume.
static at::Generator defaultGenerator(napi_env env, napi_value index, const char* what) {
  if (index == nullptr || typeOf(env, index) == napi_undefined) return at::detail::getDefaultCPUGenerator();
  int64_t device = getInt64(env, index, what);
  int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (device < 0 || device >= count) {
    throw JsError{std::string(what) + ": no CUDA device " + std::to_string(device) + " (" + std::to_string(count) + " present)"};
  }
  return at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
}

static napi_value GetRngState(napi_env env, napi_callback_info info) {
  return guarded(env, "getRngState", [&] {
    Args args(env, info);
    auto gen = defaultGenerator(env, args[0], "getRngState(device)");
    std::lock_guard<std::mutex> lock(gen.mutex());
    return wrapTensor(env, gen.get_state());
  });
}

static napi_value SetRngState(napi_env env, napi_callback_info info) {
  return guarded(env, "setRngState", [&] {
    Args args(env, info);
    auto gen = defaultGenerator(env, args[1], "setRngState(device)");
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(unwrapTensor(env, args[0], "setRngState"));
    return makeUndefined(env);
  });
}

static napi_value SetNumThreads(napi_env env, napi_callback_info info) {
  return guarded(env, "setNumThreads", [&] {
    Args args(env, info);
    at::set_num_threads(static_cast<int>(getInt64(env, args[0], "setNumThreads")));
    return makeUndefined(env);
  });
}

static napi_value GetNumThreads(napi_env env, napi_callback_info info) {
  return guarded(env, "getNumThreads", [&] { return makeNumber(env, at::get_num_threads()); });
}

// OpenBLAS's own thread pool, where libtorch's BLAS is OpenBLAS's pthread build (Debian's): float32
// matmuls run in it, not on libtorch's threads, and at::set_num_threads does not reach it. Its
// functions are looked up in whichever loaded library defines them: the addon is loaded RTLD_LOCAL,
// so libtorch's BLAS is not in the global scope that dlsym(RTLD_DEFAULT) searches. The OpenMP build
// (openblas_get_parallel() 2) runs on libgomp's threads, which at::set_num_threads already sets.
namespace {

struct OpenblasPool {
  int (*get)() = nullptr;
  void (*set)(int) = nullptr;
};

// Calls `visit` with a handle of each loaded shared library until it returns true.
template <class Visit>
void visitLoadedLibraries(Visit visit) {
  dl_iterate_phdr([](dl_phdr_info* info, size_t, void* data) {
    if (info->dlpi_name == nullptr || info->dlpi_name[0] == '\0') return 0;
    void* handle = dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr) return 0;
    const bool done = (*static_cast<Visit*>(data))(handle);
    // Drops the reference RTLD_NOLOAD took; the library stays loaded by what loaded it.
    dlclose(handle);
    return done ? 1 : 0;
  }, &visit);
}

const OpenblasPool& openblasPool() {
  static const OpenblasPool pool = [] {
    OpenblasPool found;
    visitLoadedLibraries([&found](void* handle) {
      auto parallel = reinterpret_cast<int (*)()>(dlsym(handle, "openblas_get_parallel"));
      OpenblasPool candidate;
      candidate.get = reinterpret_cast<int (*)()>(dlsym(handle, "openblas_get_num_threads"));
      candidate.set = reinterpret_cast<void (*)(int)>(dlsym(handle, "openblas_set_num_threads"));
      if (parallel == nullptr || candidate.get == nullptr || candidate.set == nullptr || parallel() != 1) return false;
      found = candidate;
      return true;
    });
    return found;
  }();
  return pool;
}

// The kernel set OpenBLAS chose for this CPU (openblas_get_corename: "Haswell", "SkylakeX",
// "Cooperlake", ...; OPENBLAS_CORETYPE forces one). It decides how float32 matmul sums are ordered,
// so it names which runs reproduce each other's bits.
std::string openblasCoreName() {
  static const std::string name = [] {
    std::string found;
    visitLoadedLibraries([&found](void* handle) {
      auto corename = reinterpret_cast<char* (*)()>(dlsym(handle, "openblas_get_corename"));
      if (corename == nullptr) return false;
      found = corename();
      return true;
    });
    return found;
  }();
  return name;
}

}  // namespace

static napi_value OpenblasThreads(napi_env env, napi_callback_info info) {
  return guarded(env, "openblasThreads", [&] {
    const OpenblasPool& pool = openblasPool();
    return pool.get == nullptr ? makeNull(env) : makeNumber(env, pool.get());
  });
}

static napi_value OpenblasCoreName(napi_env env, napi_callback_info info) {
  return guarded(env, "openblasCoreName", [&] {
    const std::string name = openblasCoreName();
    return name.empty() ? makeNull(env) : makeString(env, name);
  });
}

static napi_value SetOpenblasThreads(napi_env env, napi_callback_info info) {
  return guarded(env, "setOpenblasThreads", [&] {
    Args args(env, info);
    const int64_t n = getInt64(env, args[0], "setOpenblasThreads");
    const OpenblasPool& pool = openblasPool();
    if (pool.set == nullptr) throw JsError{"setOpenblasThreads: the loaded BLAS has no OpenBLAS thread pool of its own"};
    if (n < 1) throw JsError{"setOpenblasThreads: expected a positive count, got " + std::to_string(n)};
    pool.set(static_cast<int>(n));
    return makeUndefined(env);
  });
}

static napi_value Version(napi_env env, napi_callback_info info) {
  return guarded(env, "version", [&] { return makeString(env, TORCH_VERSION); });
}

// Autocast state per device type, 'cpu' or 'cuda' (libtorch 2.4 keys it by device type; 1.13 has a
// function pair per device).
#define REALS_DEVICE_TYPE_AUTOCAST (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))

namespace {

bool autocastOnCpu(napi_env env, napi_value value, const char* what) {
  std::string device = getString(env, value, what);
  if (device == "cpu") return true;
  if (device == "cuda") return false;
  throw JsError{std::string(what) + ": expected 'cpu' or 'cuda', got '" + device + "'"};
}

void setAutocastState(bool onCpu, bool enabled, at::ScalarType dtype) {
#if REALS_DEVICE_TYPE_AUTOCAST
  at::DeviceType type = onCpu ? at::kCPU : at::kCUDA;
  at::autocast::set_autocast_dtype(type, dtype);
  at::autocast::set_autocast_enabled(type, enabled);
#else
  // The dtype first: 1.13 refuses CPU dtypes other than bfloat16, and then nothing has changed.
  if (onCpu) {
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(enabled);
  } else {
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(enabled);
  }
#endif
}

}  // namespace

// enterAutocast(device, enabled, dtype): torch.autocast's __enter__: sets the device's state and
// counts one more nesting level.
static napi_value EnterAutocast(napi_env env, napi_callback_info info) {
  return guarded(env, "enterAutocast", [&] {
    Args args(env, info);
    bool onCpu = autocastOnCpu(env, args[0], "enterAutocast(device)");
    bool enabled = getBool(env, args[1], "enterAutocast(enabled)");
    auto dtype = static_cast<at::ScalarType>(getInt64(env, args[2], "enterAutocast(dtype)"));
    setAutocastState(onCpu, enabled, dtype);
    at::autocast::increment_nesting();
    return makeUndefined(env);
  });
}

// exitAutocast(device, enabled, dtype): torch.autocast's __exit__: restores the state given (the
// one before the matching enter). Leaving the outermost level frees the cache of lower-precision
// weight copies, which lets a region cast each weight once however many ops use it.
static napi_value ExitAutocast(napi_env env, napi_callback_info info) {
  return guarded(env, "exitAutocast", [&] {
    Args args(env, info);
    bool onCpu = autocastOnCpu(env, args[0], "exitAutocast(device)");
    bool enabled = getBool(env, args[1], "exitAutocast(enabled)");
    auto dtype = static_cast<at::ScalarType>(getInt64(env, args[2], "exitAutocast(dtype)"));
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    setAutocastState(onCpu, enabled, dtype);
    return makeUndefined(env);
  });
}

static napi_value IsAutocastEnabled(napi_env env, napi_callback_info info) {
  return guarded(env, "isAutocastEnabled", [&] {
    Args args(env, info);
    bool onCpu = autocastOnCpu(env, args[0], "isAutocastEnabled(device)");
#if REALS_DEVICE_TYPE_AUTOCAST
    return makeBool(env, at::autocast::is_autocast_enabled(onCpu ? at::kCPU : at::kCUDA));
#else
    return makeBool(env, onCpu ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled());
#endif
  });
}

static napi_value AutocastDtype(napi_env env, napi_callback_info info) {
  return guarded(env, "autocastDtype", [&] {
    Args args(env, info);
    bool onCpu = autocastOnCpu(env, args[0], "autocastDtype(device)");
#if REALS_DEVICE_TYPE_AUTOCAST
    at::ScalarType dtype = at::autocast::get_autocast_dtype(onCpu ? at::kCPU : at::kCUDA);
#else
    at::ScalarType dtype = onCpu ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
#endif
    return makeNumber(env, static_cast<double>(dtype));
  });
}

static napi_value CudaIsAvailable(napi_env env, napi_callback_info info) {
  return guarded(env, "cuda.isAvailable", [&] { return makeBool(env, torch::cuda::is_available()); });
}

static napi_value CudaDeviceCount(napi_env env, napi_callback_info info) {
  return guarded(env, "cuda.deviceCount", [&] { return makeNumber(env, static_cast<double>(torch::cuda::device_count())); });
}

static napi_value CudaSynchronize(napi_env env, napi_callback_info info) {
  return guarded(env, "cuda.synchronize", [&] {
#ifdef REALS_CUDA
    c10::cuda::device_synchronize();
#endif
    return makeUndefined(env);
  });
}

// cudaMemoryStats(device) -> { allocated, reserved, maxAllocated } in bytes (zeros without CUDA).
static napi_value CudaMemoryStats(napi_env env, napi_callback_info info) {
  return guarded(env, "cuda.memoryStats", [&] {
    napi_value result;
    check(napi_create_object(env, &result), "napi_create_object");
    double allocated = 0, reserved = 0, maxAllocated = 0;
#ifdef REALS_CUDA
    Args args(env, info);
    int device = args[0] ? static_cast<int>(getInt64(env, args[0], "cuda.memoryStats(device)")) : 0;
    if (device < 0 || device >= static_cast<int>(torch::cuda::device_count())) {
      throw JsError{"cuda.memoryStats: no CUDA device " + std::to_string(device) + " (" +
                    std::to_string(torch::cuda::device_count()) + " present)"};
    }
    // The caching allocator is set up lazily by the first CUDA tensor; make sure it exists (a
    // zero-size tensor allocates nothing).
    at::empty({0}, at::TensorOptions().device(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device))));
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
    // StatType::AGGREGATE is index 0 (its namespace moved between torch versions).
    const size_t all = 0;
    allocated = static_cast<double>(stats.allocated_bytes[all].current);
    reserved = static_cast<double>(stats.reserved_bytes[all].current);
    maxAllocated = static_cast<double>(stats.allocated_bytes[all].peak);
#endif
    napi_set_named_property(env, result, "allocated", makeNumber(env, allocated));
    napi_set_named_property(env, result, "reserved", makeNumber(env, reserved));
    napi_set_named_property(env, result, "maxAllocated", makeNumber(env, maxAllocated));
    return result;
  });
}

static napi_value CudaEmptyCache(napi_env env, napi_callback_info info) {
  return guarded(env, "cuda.emptyCache", [&] {
#ifdef REALS_CUDA
    c10::cuda::CUDACachingAllocator::emptyCache();
#endif
    return makeUndefined(env);
  });
}

void initTensor(napi_env env, napi_value exports) {
  exportFunction(env, exports, "fromBuffer", FromBuffer);
  exportFunction(env, exports, "toBuffer", ToBuffer);
  exportFunction(env, exports, "shape", Shape);
  exportFunction(env, exports, "stride", Stride);
  exportFunction(env, exports, "dim", Dim);
  exportFunction(env, exports, "numel", Numel);
  exportFunction(env, exports, "dtype", DType);
  exportFunction(env, exports, "device", Device);
  exportFunction(env, exports, "isContiguous", IsContiguous);
  exportFunction(env, exports, "dispose", Dispose);
  exportFunction(env, exports, "disposeMany", DisposeMany);
  exportFunction(env, exports, "attachFinalizer", AttachFinalizer);
  exportFunction(env, exports, "setData", SetData);
  exportFunction(env, exports, "liveTensors", LiveTensors);
  exportFunction(env, exports, "isDisposed", IsDisposed);
  exportFunction(env, exports, "item", Item);
  exportFunction(env, exports, "requiresGrad", RequiresGrad);
  exportFunction(env, exports, "setRequiresGrad", SetRequiresGrad);
  exportFunction(env, exports, "isLeaf", IsLeaf);
  exportFunction(env, exports, "gradFn", GradFn);
  exportFunction(env, exports, "grad", Grad);
  exportFunction(env, exports, "setGrad", SetGrad);
  exportFunction(env, exports, "backward", Backward);
  exportFunction(env, exports, "autogradGrad", AutogradGrad);
  exportFunction(env, exports, "setGradEnabled", SetGradEnabled);
  exportFunction(env, exports, "isGradEnabled", IsGradEnabled);
  exportFunction(env, exports, "manualSeed", ManualSeed);
  exportFunction(env, exports, "getRngState", GetRngState);
  exportFunction(env, exports, "setRngState", SetRngState);
  exportFunction(env, exports, "setNumThreads", SetNumThreads);
  exportFunction(env, exports, "getNumThreads", GetNumThreads);
  exportFunction(env, exports, "openblasThreads", OpenblasThreads);
  exportFunction(env, exports, "openblasCoreName", OpenblasCoreName);
  exportFunction(env, exports, "setOpenblasThreads", SetOpenblasThreads);
  exportFunction(env, exports, "version", Version);
  exportFunction(env, exports, "enterAutocast", EnterAutocast);
  exportFunction(env, exports, "exitAutocast", ExitAutocast);
  exportFunction(env, exports, "isAutocastEnabled", IsAutocastEnabled);
  exportFunction(env, exports, "autocastDtype", AutocastDtype);
  exportFunction(env, exports, "cudaIsAvailable", CudaIsAvailable);
  exportFunction(env, exports, "cudaDeviceCount", CudaDeviceCount);
  exportFunction(env, exports, "cudaSynchronize", CudaSynchronize);
  exportFunction(env, exports, "cudaMemoryStats", CudaMemoryStats);
  exportFunction(env, exports, "cudaEmptyCache", CudaEmptyCache);
}

// glibc serves large blocks with mmap and normally raises that threshold as mapped blocks are
// freed, but in this process it keeps mapping fresh pages for tensors of a few MB (measured: a
// 1M-element SiLU 2.3 ms against PyTorch's 0.7, a GroupNorm 6.5 ms against 0.8; with the
// thresholds fixed, 0.8 and 1.0). glibc's dynamic ceiling, 32 MiB, is below the activations of a
// VAE at 256 px (32-64 MiB at batch 1), so tensors under 256 MiB stay on the heap; larger ones are
// mapped and go back to the OS when freed. The heap's free top is kept (trimming off): a training
// step frees its gradients in one burst (zeroGrad), and SiT-B/2's 496 MiB of them had made glibc
// trim above a 512 MiB threshold and fault the pages in again at the next step, 130K page faults
// and a third of the step on a Zen 5 EPYC (bench/README.md, issue 30); the step reaches that peak
// again anyway. A MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ in the environment is left as
// the user set it.
static void tuneMalloc() {
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) mallopt(M_MMAP_THRESHOLD, 256 << 20);
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) mallopt(M_TRIM_THRESHOLD, -1);  // -1: never (mallopt(3))
#endif
}

// libtorch's CPU allocator takes posix_memalign(64, n). glibc serves that by carving an aligned n
// out of a free block of n + 64 + 32 bytes, so a freed n-byte block never fits the next request of
// the same size: the heap grows by every large tensor, and each one costs fresh pages (an SD-VAE
// decode at 256 px took 90-370K page faults and 1.0-1.7 s on 2 threads; with this allocator, 0-16K
// and 0.89-0.94 s). Here every block is malloc(n + 64), aligned inside and freed whole, so a tensor
// of the size just freed takes that block again. The block's start is kept just below the data,
// since oneDNN frees what raw_allocate gave it by the data pointer alone.
class HeapCpuAllocator final : public c10::Allocator {
 public:
  static constexpr uintptr_t kAlignment = 64;  // c10::alloc_cpu's, what oneDNN and the vector kernels expect

  c10::DataPtr allocate(size_t bytes) const override {
    if (bytes == 0) return {nullptr, nullptr, &release, c10::Device(c10::DeviceType::CPU)};  // as c10::alloc_cpu
    // malloc's blocks are 16-aligned, so rounding start + 8 up to 64 moves the data at most 64 bytes in.
    void* block = std::malloc(bytes + kAlignment);
    TORCH_CHECK(block != nullptr, "DefaultCPUAllocator: not enough memory: you tried to allocate ", bytes, " bytes.");
    const uintptr_t address = (reinterpret_cast<uintptr_t>(block) + sizeof(void*) + kAlignment - 1) & ~(kAlignment - 1);
    void* data = reinterpret_cast<void*>(address);
    static_cast<void**>(data)[-1] = block;
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

 private:
  static void release(void* data) {
    if (data != nullptr) std::free(static_cast<void**>(data)[-1]);
  }
};

static void installCpuAllocator() {
  static HeapCpuAllocator allocator;
  c10::SetCPUAllocator(&allocator, /*priority=*/1);
}

}  // namespace reals

NAPI_MODULE_INIT() {
  reals::tuneMalloc();
  reals::installCpuAllocator();
  reals::initTensor(env, exports);
  reals::initOps(env, exports);
  reals::initDistributed(env, exports);
  reals::initActivations(env, exports);
  reals::initAttention(env, exports);
  reals::initOptim(env, exports);
  reals::initAdaLN(env, exports);
  reals::initGroupNorm(env, exports);
  return exports;
}
