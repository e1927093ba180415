// Calling any ATen operator by schema name through c10's boxed dispatcher. The schema is looked up
// once (lookupOp returns an integer id); callOp(id, ...args) converts the JS arguments following
// the schema's argument types, fills omitted trailing arguments with the schema defaults, runs
// the operator (through autograd, autocast and every other dispatch key) and converts the returns.
#include "common.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <deque>

namespace reals {

struct OpEntry {
  c10::OperatorHandle handle;
  std::string name;
  // "aten::op(arg)" per argument, built once so the call path allocates no error-context strings.
  std::vector<std::string> argLabels;
  // callBinary's schema check, done once: 2 for (Tensor, Tensor) -> Tensor, 3 for
  // (Tensor, Tensor, Scalar alpha) -> Tensor, 0 for any other schema.
  size_t binaryArity;
};

// The arity callBinary can call `schema` with (see OpEntry::binaryArity).
static size_t binaryArity(const c10::FunctionSchema& schema) {
  const auto& arguments = schema.arguments();
  if ((arguments.size() != 2 && arguments.size() != 3) || schema.returns().size() != 1) return 0;
  if (schema.returns()[0].type()->kind() != c10::TypeKind::TensorType) return 0;
  for (size_t i = 0; i < 2; ++i) {
    if (arguments[i].type()->kind() != c10::TypeKind::TensorType || arguments[i].alias_info()) return 0;
  }
  return arguments.size() == 2 || arguments[2].type()->kind() == c10::TypeKind::NumberType ? arguments.size() : 0;
}

static std::deque<OpEntry> opTable;

static std::string qualifiedName(const c10::FunctionSchema& schema) {
  return schema.overload_name().empty() ? schema.name() : schema.name() + "." + schema.overload_name();
}

static napi_value LookupOp(napi_env env, napi_callback_info info) {
  return guarded(env, "lookupOp", [&] {
    Args args(env, info);
    std::string name = getString(env, args[0], "lookupOp(name)");
    std::string overload = args[1] && typeOf(env, args[1]) == napi_string ? getString(env, args[1], "lookupOp(overload)") : "";
    auto handle = c10::Dispatcher::singleton().findSchema({name, overload});
    if (!handle) {
      throw JsError{"operator " + name + (overload.empty() ? "" : "." + overload) + " does not exist in libtorch " +
                    TORCH_VERSION};
    }
    OpEntry entry{*handle, qualifiedName(handle->schema()), {}, binaryArity(handle->schema())};
    for (const auto& argument : handle->schema().arguments()) entry.argLabels.push_back(entry.name + "(" + argument.name() + ")");
    opTable.push_back(std::move(entry));
    return makeNumber(env, static_cast<double>(opTable.size() - 1));
  });
}

// opReturns(id): the kind of each return, so JS can tell tensor handles from plain numbers:
// 'Tensor' (also Tensor?), 'Tensor[]', or 'value'.
static napi_value OpReturns(napi_env env, napi_callback_info info) {
  return guarded(env, "opReturns", [&] {
    Args args(env, info);
    auto id = static_cast<size_t>(getInt64(env, args[0], "opReturns(id)"));
    if (id >= opTable.size()) throw JsError{"opReturns: unknown operator id"};
    const auto& returns = opTable[id].handle.schema().returns();
    napi_value arr;
    check(napi_create_array_with_length(env, returns.size(), &arr), "napi_create_array");
    for (size_t i = 0; i < returns.size(); ++i) {
      c10::TypePtr type = returns[i].type();
      if (type->kind() == c10::TypeKind::OptionalType) type = type->expectRef<c10::OptionalType>().getElementType();
      std::string kind = "value";
      if (type->kind() == c10::TypeKind::TensorType) kind = "Tensor";
      else if (type->kind() == c10::TypeKind::ListType &&
               type->expectRef<c10::ListType>().getElementType()->kind() == c10::TypeKind::TensorType) kind = "Tensor[]";
      check(napi_set_element(env, arr, i, makeString(env, kind)), "napi_set_element");
    }
    return arr;
  });
}

static napi_value HasOp(napi_env env, napi_callback_info info) {
  return guarded(env, "hasOp", [&] {
    Args args(env, info);
    std::string name = getString(env, args[0], "hasOp(name)");
    std::string overload = args[1] && typeOf(env, args[1]) == napi_string ? getString(env, args[1], "hasOp(overload)") : "";
    return makeBool(env, c10::Dispatcher::singleton().findSchema({name, overload}).has_value());
  });
}

static bool isArray(napi_env env, napi_value value) {
  bool result = false;
  napi_is_array(env, value, &result);
  return result;
}

static uint32_t arrayLength(napi_env env, napi_value value) {
  uint32_t n;
  check(napi_get_array_length(env, value, &n), "napi_get_array_length");
  return n;
}

static napi_value element(napi_env env, napi_value array, uint32_t i) {
  napi_value v;
  check(napi_get_element(env, array, i, &v), "napi_get_element");
  return v;
}

// An integral JS number is passed as an int Scalar, as Python passes `1` (not `1.0`), so integer
// tensors keep their dtype; float tensors are unaffected.
static c10::IValue scalarFromNumber(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9007199254740992.0) return c10::IValue(static_cast<int64_t>(v));
  return c10::IValue(v);
}

static c10::IValue toScalar(napi_env env, napi_value value, const std::string& what) {
  if (typeOf(env, value) == napi_boolean) return c10::IValue(getBool(env, value, what.c_str()));
  return scalarFromNumber(getDouble(env, value, what.c_str()));
}

static c10::IValue toIValue(napi_env env, napi_value value, const c10::TypePtr& declared, const std::string& what) {
  c10::TypePtr type = declared;
  napi_valuetype jsType = typeOf(env, value);
  if (type->kind() == c10::TypeKind::OptionalType) {
    if (jsType == napi_null || jsType == napi_undefined) return c10::IValue();
    type = type->expectRef<c10::OptionalType>().getElementType();
  }
  if (jsType == napi_null || jsType == napi_undefined) throw JsError{what + ": a value is required"};
  const char* cwhat = what.c_str();
  switch (type->kind()) {
    case c10::TypeKind::TensorType:
      return c10::IValue(unwrapTensor(env, value, cwhat));
    case c10::TypeKind::IntType:
    case c10::TypeKind::SymIntType:
    case c10::TypeKind::ScalarTypeType:
    case c10::TypeKind::LayoutType:
    case c10::TypeKind::MemoryFormatType:
      return c10::IValue(getInt64(env, value, cwhat));
    case c10::TypeKind::FloatType:
      return c10::IValue(getDouble(env, value, cwhat));
    case c10::TypeKind::BoolType:
      return c10::IValue(getBool(env, value, cwhat));
    case c10::TypeKind::NumberType:
      return toScalar(env, value, what);
    case c10::TypeKind::StringType:
      return c10::IValue(getString(env, value, cwhat));
    case c10::TypeKind::DeviceObjType:
      return c10::IValue(c10::Device(getString(env, value, cwhat)));
    case c10::TypeKind::ListType: {
      const auto& elementType = type->expectRef<c10::ListType>().getElementType();
      auto kind = elementType->kind();
      bool array = isArray(env, value);
      uint32_t n = array ? arrayLength(env, value) : 0;
      if (kind == c10::TypeKind::IntType || kind == c10::TypeKind::SymIntType) {
        // A single int for an int[N] argument is repeated N times by the boxed kernel, as in Python.
        c10::List<int64_t> list;
        if (!array) {
          list.push_back(getInt64(env, value, cwhat));
          return c10::IValue(list);
        }
        list.reserve(n);
        for (uint32_t i = 0; i < n; ++i) list.push_back(getInt64(env, element(env, value, i), cwhat));
        return c10::IValue(list);
      }
      if (!array) throw JsError{what + ": expected an array"};
      if (kind == c10::TypeKind::FloatType) {
        c10::List<double> list;
        for (uint32_t i = 0; i < n; ++i) list.push_back(getDouble(env, element(env, value, i), cwhat));
        return c10::IValue(list);
      }
      if (kind == c10::TypeKind::BoolType) {
        c10::List<bool> list;
        for (uint32_t i = 0; i < n; ++i) list.push_back(getBool(env, element(env, value, i), cwhat));
        return c10::IValue(list);
      }
      if (kind == c10::TypeKind::TensorType) {
        c10::List<at::Tensor> list;
        list.reserve(n);
        for (uint32_t i = 0; i < n; ++i) list.push_back(unwrapTensor(env, element(env, value, i), cwhat));
        return c10::IValue(list);
      }
      if (kind == c10::TypeKind::OptionalType &&
          elementType->expectRef<c10::OptionalType>().getElementType()->kind() == c10::TypeKind::TensorType) {
        c10::List<c10::optional<at::Tensor>> list;
        list.reserve(n);
        for (uint32_t i = 0; i < n; ++i) {
          napi_value v = element(env, value, i);
          napi_valuetype t = typeOf(env, v);
          if (t == napi_null || t == napi_undefined) list.push_back(c10::nullopt);
          else list.push_back(unwrapTensor(env, v, cwhat));
        }
        return c10::IValue(list);
      }
      throw JsError{what + ": list type " + type->str() + " is not supported"};
    }
    case c10::TypeKind::GeneratorType:
      throw JsError{what + ": explicit generators are not supported; use manualSeed"};
    default:
      throw JsError{what + ": argument type " + type->str() + " is not supported"};
  }
}

// `inputs` are the JS arguments (handles among them stay alive for the whole call).
static napi_value fromIValue(napi_env env, const c10::IValue& value, const c10::Argument& ret,
                             const napi_value* inputs, size_t inputCount) {
  if (value.isTensor()) {
    const at::Tensor& t = value.toTensor();
    // An in-place or out= op returns its (written) input: hand back the same JS handle.
    if (ret.alias_info() && ret.alias_info()->isWrite()) {
      for (size_t i = 0; i < inputCount; ++i) {
        const at::Tensor* input = tryUnwrapTensor(env, inputs[i]);
        if (input != nullptr && input->is_same(t)) return inputs[i];
      }
    }
    return wrapTensor(env, t);
  }
  if (value.isNone()) return makeNull(env);
  if (value.isInt()) return makeNumber(env, static_cast<double>(value.toInt()));
  if (value.isDouble()) return makeNumber(env, value.toDouble());
  if (value.isBool()) return makeBool(env, value.toBool());
  if (value.isString()) return makeString(env, value.toStringRef());
  if (value.isTensorList()) {
    auto list = value.toTensorList();
    napi_value arr;
    check(napi_create_array_with_length(env, list.size(), &arr), "napi_create_array");
    for (size_t i = 0; i < list.size(); ++i) check(napi_set_element(env, arr, i, wrapTensor(env, list.get(i))), "napi_set_element");
    return arr;
  }
  if (value.isIntList()) return makeIntArray(env, value.toIntVector());
  if (value.isScalar()) return makeNumber(env, value.toScalar().toDouble());
  if (value.isTuple()) {
    const auto& elements = value.toTupleRef().elements();
    napi_value arr;
    check(napi_create_array_with_length(env, elements.size(), &arr), "napi_create_array");
    for (size_t i = 0; i < elements.size(); ++i) check(napi_set_element(env, arr, i, fromIValue(env, elements[i], ret, inputs, inputCount)), "napi_set_element");
    return arr;
  }
  throw JsError{"callOp: return type " + value.tagKind() + " is not supported"};
}

// The operator of id `value` (from lookupOp); `opName` becomes its name for the error messages.
static const OpEntry& entryOf(napi_env env, napi_value value, const char* idLabel, const char*& opName) {
  auto id = static_cast<size_t>(getInt64(env, value, idLabel));
  if (id >= opTable.size()) throw JsError{std::string(idLabel) + ": unknown operator id"};
  const OpEntry& op = opTable[id];
  opName = op.name.c_str();
  return op;
}

// callOp(id, ...args): positional arguments in schema order (keyword-only ones included);
// `undefined` takes the schema default.
static napi_value CallOp(napi_env env, napi_callback_info info) {
  size_t argc = 32;
  napi_value argv[32];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok) return nullptr;
  const char* opName = "callOp";
  return guarded(env, opName, [&]() -> napi_value {
    const OpEntry& op = entryOf(env, argv[0], "callOp(id)", opName);
    const auto& schema = op.handle.schema();
    const auto& arguments = schema.arguments();
    if (argc - 1 > arguments.size()) {
      throw JsError{op.name + ": takes " + std::to_string(arguments.size()) + " arguments, got " + std::to_string(argc - 1)};
    }
    torch::jit::Stack stack;
    stack.reserve(arguments.size());
    for (size_t i = 0; i < arguments.size(); ++i) {
      const auto& argument = arguments[i];
      napi_value value = i + 1 < argc ? argv[i + 1] : nullptr;
      // Fast paths (one N-API call) for the common argument kinds; anything else, including an
      // explicit `undefined` for a default, takes the general conversion below.
      if (value != nullptr) {
        auto kind = argument.type()->kind();
        if (kind == c10::TypeKind::TensorType) {
          if (const at::Tensor* tensor = tryUnwrapTensor(env, value)) {
            stack.emplace_back(*tensor);
            continue;
          }
        } else if (kind == c10::TypeKind::NumberType || kind == c10::TypeKind::FloatType) {
          double v;
          if (napi_get_value_double(env, value, &v) == napi_ok) {
            stack.push_back(kind == c10::TypeKind::FloatType ? c10::IValue(v) : scalarFromNumber(v));
            continue;
          }
        }
      }
      napi_valuetype jsType = typeOf(env, value);
      if (jsType == napi_undefined && argument.default_value()) {
        stack.push_back(*argument.default_value());
        continue;
      }
      stack.push_back(toIValue(env, value, argument.type(), op.argLabels[i]));
    }
    op.handle.callBoxed(&stack);
    const auto& returns = schema.returns();
    if (returns.empty()) return makeUndefined(env);
    if (returns.size() == 1) return fromIValue(env, stack[0], returns[0], argv + 1, argc - 1);
    napi_value arr;
    check(napi_create_array_with_length(env, returns.size(), &arr), "napi_create_array");
    for (size_t i = 0; i < returns.size(); ++i) {
      check(napi_set_element(env, arr, i, fromIValue(env, stack[i], returns[i], argv + 1, argc - 1)), "napi_set_element");
    }
    return arr;
  });
}

// callBinary(id, a, b[, alpha]): an operator of schema (Tensor self, Tensor other) -> Tensor, or
// (Tensor self, Tensor other, Scalar alpha) -> Tensor when alpha is given, called through the
// dispatcher's unboxed path (every dispatch key still runs: autograd, autocast): no argument stack
// and no boxing, which is most of the per-call cost of small elementwise ops. Any other schema, or
// a non-tensor argument, is an error naming the argument, as callOp's.
using BinaryFn = at::Tensor(const at::Tensor&, const at::Tensor&);
using BinaryAlphaFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Scalar&);

static napi_value CallBinary(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok) return nullptr;
  const char* opName = "callBinary";
  return guarded(env, opName, [&]() -> napi_value {
    const OpEntry& op = entryOf(env, argv[0], "callBinary(id)", opName);
    const bool alpha = argc > 3;
    if (op.binaryArity != (alpha ? 3u : 2u)) throw JsError{op.name + ": not a (Tensor, Tensor" + (alpha ? ", Scalar" : "") + ") -> Tensor operator"};
    const at::Tensor& a = unwrapTensor(env, argv[1], op.argLabels[0].c_str());
    const at::Tensor& b = unwrapTensor(env, argv[2], op.argLabels[1].c_str());
    at::Tensor out = alpha
        ? op.handle.typed<BinaryAlphaFn>().call(a, b, scalarFromNumber(getDouble(env, argv[3], op.argLabels[2].c_str())).toScalar())
        : op.handle.typed<BinaryFn>().call(a, b);
    return wrapTensor(env, std::move(out));
  });
}

void initOps(napi_env env, napi_value exports) {
  exportFunction(env, exports, "callBinary", CallBinary);
  exportFunction(env, exports, "lookupOp", LookupOp);
  exportFunction(env, exports, "hasOp", HasOp);
  exportFunction(env, exports, "opReturns", OpReturns);
  exportFunction(env, exports, "callOp", CallOp);
}

}  // namespace reals
