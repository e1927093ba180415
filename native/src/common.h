// Shared pieces of the addon: the tensor handle, N-API helpers, error translation.
#pragma once
#include <ATen/autocast_mode.h>
#include <node_api.h>
#include <torch/torch.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

namespace reals {

struct JsError {
  std::string message;
};

inline void check(napi_status status, const char* what) {
  if (status != napi_ok) throw JsError{std::string("reals native: ") + what + " failed"};
}

// A JS tensor handle is a number naming a slot of the addon's tensor table, with the slot's
// generation folded in so a handle used after dispose() (its slot since reused) is refused.
// Each slot owns one at::Tensor reference; disposing drops it, like `del t` in Python.
napi_value wrapTensor(napi_env env, at::Tensor tensor);
const at::Tensor& unwrapTensor(napi_env env, napi_value value, const char* what);
// The live tensor a JS value names, or nullptr (for values that are not live handles).
const at::Tensor* tryUnwrapTensor(napi_env env, napi_value value);

int64_t getInt64(napi_env env, napi_value value, const char* what);
double getDouble(napi_env env, napi_value value, const char* what);
bool getBool(napi_env env, napi_value value, const char* what);
std::string getString(napi_env env, napi_value value, const char* what);
std::vector<int64_t> getIntList(napi_env env, napi_value value, const char* what);
napi_valuetype typeOf(napi_env env, napi_value value);
napi_value makeNumber(napi_env env, double v);
napi_value makeString(napi_env env, const std::string& s);
napi_value makeBool(napi_env env, bool v);
napi_value makeUndefined(napi_env env);
napi_value makeNull(napi_env env);
napi_value makeIntArray(napi_env env, at::IntArrayRef values);

// Runs `body`, turning C++ exceptions (c10::Error keeps libtorch's message, without the C++
// backtrace) into JS exceptions prefixed with `name`, read when the exception arrives (so a body
// may set it, as the operator calls do once they know the operator).
template <typename F>
napi_value guarded(napi_env env, const char* const& name, F&& body) {
  try {
    return body();
  } catch (const JsError& e) {
    napi_throw_error(env, nullptr, e.message.c_str());
  } catch (const c10::Error& e) {
    std::string msg = std::string(name) + ": " + e.what_without_backtrace();
    napi_throw_error(env, nullptr, msg.c_str());
  } catch (const std::exception& e) {
    std::string msg = std::string(name) + ": " + e.what();
    napi_throw_error(env, nullptr, msg.c_str());
  }
  return nullptr;
}

struct Args {
  size_t argc = 0;
  napi_value argv[16];
  napi_value self;
  Args(napi_env env, napi_callback_info info) {
    argc = 16;
    check(napi_get_cb_info(env, info, &argc, argv, &self, nullptr), "napi_get_cb_info");
  }
  napi_value operator[](size_t i) const { return i < argc ? argv[i] : nullptr; }
};

void exportFunction(napi_env env, napi_value exports, const char* name, napi_callback cb);

// Whether autograd will want gradients of any of these tensors (null entries are none): the fused
// kernels then run as autograd Functions, else as plain forwards.
inline bool gradWanted(std::initializer_list<const at::Tensor*> tensors) {
  return at::GradMode::is_enabled() && std::any_of(tensors.begin(), tensors.end(), [](const at::Tensor* t) { return t != nullptr && t->requires_grad(); });
}

// Whether CPU autocast to bfloat16 is on: the kernels that feed an autocast Linear or conv return bfloat16 then.
inline bool cpuBf16Autocast() { return at::autocast::is_cpu_enabled() && at::autocast::get_autocast_cpu_dtype() == at::kBFloat16; }

void initTensor(napi_env env, napi_value exports);
void initOps(napi_env env, napi_value exports);
void initDistributed(napi_env env, napi_value exports);
void initActivations(napi_env env, napi_value exports);
void initAttention(napi_env env, napi_value exports);
void initOptim(napi_env env, napi_value exports);
void initAdaLN(napi_env env, napi_value exports);
void initGroupNorm(napi_env env, napi_value exports);

}  // namespace reals
