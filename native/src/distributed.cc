// c10d process groups: a TCPStore rendezvous and ProcessGroupGloo (ProcessGroupNCCL with CUDA).
// Collectives are synchronous: they return when work->wait() does, or throw on timeout.
#include "common.h"

#include <cstdlib>
#include <csignal>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sstream>

#include <torch/version.h>

#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace reals {

// In torch 2.x ProcessGroupGloo/NCCL are c10d::Backend subclasses; in 1.x ProcessGroup ones.
// Both bases offer the same collectives.
#if TORCH_VERSION_MAJOR >= 2
using GroupBase = c10d::Backend;
#else
using GroupBase = c10d::ProcessGroup;
#endif

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<GroupBase> group;
};

static void finalizeGroup(node_api_basic_env env, void* data, void* hint) { delete static_cast<Group*>(data); }

static Group* unwrapGroup(napi_env env, napi_value value) {
  void* data = nullptr;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == nullptr) throw JsError{"distributed: expected a process group"};
  auto* group = static_cast<Group*>(data);
  if (!group->group) throw JsError{"distributed: process group used after destroy()"};
  return group;
}

// newGroup(backend, masterAddr, masterPort, rank, worldSize, timeoutMs, rendezvousTimeoutMs, hostStore, storePrefix)
// -> group handle: the rendezvous (the TCPStore) waits up to rendezvousTimeoutMs for the other
// ranks, each collective timeoutMs. With hostStore this process serves the TCPStore (rank 0),
// else it joins one as a client; a non-empty storePrefix puts every key under it (a PrefixStore),
// as torch's env:// rendezvous does on torchelastic's agent store.
static napi_value NewGroup(napi_env env, napi_callback_info info) {
  return guarded(env, "initProcessGroup", [&] {
    Args args(env, info);
    std::string backend = getString(env, args[0], "initProcessGroup(backend)");
    std::string addr = getString(env, args[1], "initProcessGroup(masterAddr)");
    auto port = static_cast<uint16_t>(getInt64(env, args[2], "initProcessGroup(masterPort)"));
    int rank = static_cast<int>(getInt64(env, args[3], "initProcessGroup(rank)"));
    int worldSize = static_cast<int>(getInt64(env, args[4], "initProcessGroup(worldSize)"));
    std::chrono::milliseconds timeout(getInt64(env, args[5], "initProcessGroup(timeoutMs)"));
    std::chrono::milliseconds rendezvousTimeout(getInt64(env, args[6], "initProcessGroup(rendezvousTimeoutMs)"));
    bool hostStore = getBool(env, args[7], "initProcessGroup(hostStore)");
    std::string storePrefix = getString(env, args[8], "initProcessGroup(storePrefix)");
    c10d::TCPStoreOptions options;
    options.port = port;
    options.isServer = hostStore;
    options.numWorkers = worldSize;
    options.waitWorkers = true;
    options.timeout = rendezvousTimeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(addr, options);
    if (!storePrefix.empty()) store = c10::make_intrusive<c10d::PrefixStore>(storePrefix, store);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("reals/" + backend, store);
    auto group = std::make_unique<Group>();
    group->store = store;
    if (false) {
#ifdef USE_C10D_GLOO
    } else if (backend == "gloo") {
      auto glooOptions = c10d::ProcessGroupGloo::Options::create(timeout);
      // As torch.distributed: GLOO_SOCKET_IFNAME=eth0[,eth1] picks the network interfaces (a
      // machine with several would otherwise use the one its hostname resolves to).
      const char* interfaces = std::getenv("GLOO_SOCKET_IFNAME");
      if (interfaces != nullptr && *interfaces != '\0') {
        std::stringstream list(interfaces);
        for (std::string name; std::getline(list, name, ',');) {
          glooOptions->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
        }
      } else {
        glooOptions->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      group->group = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, worldSize, glooOptions);
#endif
#ifdef USE_C10D_NCCL
    } else if (backend == "nccl") {
      // Without blocking wait, NCCL's work->wait() returns as soon as the collective is queued on
      // the stream, and a collective that never completes hangs (1.x) or is found by the watchdog,
      // which aborts the process (2.x). With it, wait() blocks until the collective completes and
      // throws after the timeout, as with Gloo. A value the user set wins (overwrite = 0).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 2)
      setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
#else
      setenv("NCCL_BLOCKING_WAIT", "1", 0);
#endif
      auto ncclOptions = c10d::ProcessGroupNCCL::Options::create();
      ncclOptions->timeout = timeout;
      group->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, worldSize, ncclOptions);
#endif
    } else {
      std::string available;
#ifdef USE_C10D_GLOO
      available += " gloo";
#endif
#ifdef USE_C10D_NCCL
      available += " nccl";
#endif
      throw JsError{"initProcessGroup: backend '" + backend + "' is not available in this build (available:" + available + ")"};
    }
    napi_value result;
    check(napi_create_external(env, group.get(), finalizeGroup, nullptr, &result), "napi_create_external");
    group.release();
    return result;
  });
}

static void finalizeStore(node_api_basic_env env, void* data, void* hint) { delete static_cast<c10::intrusive_ptr<c10d::Store>*>(data); }

static c10d::Store& unwrapStore(napi_env env, napi_value value) {
  void* data = nullptr;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == nullptr) throw JsError{"TCPStore: expected a store"};
  return **static_cast<c10::intrusive_ptr<c10d::Store>*>(data);
}

// newStore(host, port, isServer, worldSize, waitWorkers, timeoutMs) -> store handle: a bare
// c10d TCPStore, as torch.distributed.TCPStore (torchelastic's agent hosts one such store);
// worldSize <= 0 leaves the number of workers open.
static napi_value NewStore(napi_env env, napi_callback_info info) {
  return guarded(env, "TCPStore", [&] {
    Args args(env, info);
    std::string host = getString(env, args[0], "TCPStore(host)");
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(getInt64(env, args[1], "TCPStore(port)"));
    options.isServer = getBool(env, args[2], "TCPStore(isServer)");
    int64_t worldSize = getInt64(env, args[3], "TCPStore(worldSize)");
    if (worldSize > 0) options.numWorkers = static_cast<std::size_t>(worldSize);
    options.waitWorkers = getBool(env, args[4], "TCPStore(waitWorkers)");
    options.timeout = std::chrono::milliseconds(getInt64(env, args[5], "TCPStore(timeoutMs)"));
    auto* store = new c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::TCPStore>(host, options));
    napi_value result;
    napi_status status = napi_create_external(env, store, finalizeStore, nullptr, &result);
    if (status != napi_ok) delete store;
    check(status, "napi_create_external");
    return result;
  });
}

// storeSet(store, key, value)
static napi_value StoreSet(napi_env env, napi_callback_info info) {
  return guarded(env, "TCPStore.set", [&] {
    Args args(env, info);
    std::string value = getString(env, args[2], "TCPStore.set(value)");
    unwrapStore(env, args[0]).set(getString(env, args[1], "TCPStore.set(key)"), std::vector<uint8_t>(value.begin(), value.end()));
    return makeUndefined(env);
  });
}

// storeGet(store, key) -> value: waits up to the store's timeout for the key to be set.
static napi_value StoreGet(napi_env env, napi_callback_info info) {
  return guarded(env, "TCPStore.get", [&] {
    Args args(env, info);
    auto value = unwrapStore(env, args[0]).get(getString(env, args[1], "TCPStore.get(key)"));
    return makeString(env, std::string(value.begin(), value.end()));
  });
}

static c10d::ReduceOp reduceOp(const std::string& name) {
  if (name == "sum") return c10d::ReduceOp::SUM;
  if (name == "product") return c10d::ReduceOp::PRODUCT;
  if (name == "max") return c10d::ReduceOp::MAX;
  if (name == "min") return c10d::ReduceOp::MIN;
  throw JsError{"allReduce: unknown op '" + name + "' (sum, product, max, min)"};
}

static std::vector<at::Tensor> tensorList(napi_env env, napi_value value, const char* what) {
  uint32_t n;
  if (napi_get_array_length(env, value, &n) != napi_ok) throw JsError{std::string(what) + ": expected an array of tensors"};
  std::vector<at::Tensor> out;
  for (uint32_t i = 0; i < n; ++i) {
    napi_value v;
    check(napi_get_element(env, value, i, &v), "napi_get_element");
    out.push_back(unwrapTensor(env, v, what));
  }
  return out;
}

// allReduce(group, tensors[], op): in place on each tensor.
static napi_value AllReduce(napi_env env, napi_callback_info info) {
  return guarded(env, "allReduce", [&] {
    Args args(env, info);
    Group* g = unwrapGroup(env, args[0]);
    auto tensors = tensorList(env, args[1], "allReduce");
    c10d::AllreduceOptions options;
    options.reduceOp = reduceOp(getString(env, args[2], "allReduce(op)"));
    g->group->allreduce(tensors, options)->wait();
    return makeUndefined(env);
  });
}

// broadcast(group, tensors[], root): in place.
static napi_value Broadcast(napi_env env, napi_callback_info info) {
  return guarded(env, "broadcast", [&] {
    Args args(env, info);
    Group* g = unwrapGroup(env, args[0]);
    auto tensors = tensorList(env, args[1], "broadcast");
    c10d::BroadcastOptions options;
    options.rootRank = static_cast<int64_t>(getInt64(env, args[2], "broadcast(src)"));
    g->group->broadcast(tensors, options)->wait();
    return makeUndefined(env);
  });
}

// allGather(group, outputs[], input): outputs[r] receives rank r's input.
static napi_value AllGather(napi_env env, napi_callback_info info) {
  return guarded(env, "allGather", [&] {
    Args args(env, info);
    Group* g = unwrapGroup(env, args[0]);
    std::vector<std::vector<at::Tensor>> outputs{tensorList(env, args[1], "allGather(outputs)")};
    std::vector<at::Tensor> inputs{unwrapTensor(env, args[2], "allGather(input)")};
    g->group->allgather(outputs, inputs)->wait();
    return makeUndefined(env);
  });
}

static napi_value Barrier(napi_env env, napi_callback_info info) {
  return guarded(env, "barrier", [&] {
    Args args(env, info);
    unwrapGroup(env, args[0])->group->barrier()->wait();
    return makeUndefined(env);
  });
}

static napi_value DestroyGroup(napi_env env, napi_callback_info info) {
  return guarded(env, "destroyProcessGroup", [&] {
    Args args(env, info);
    void* data = nullptr;
    check(napi_get_value_external(env, args[0], &data), "napi_get_value_external");
    auto* g = static_cast<Group*>(data);
    g->group.reset();
    g->store.reset();
    return makeUndefined(env);
  });
}

// exitWithParent(ppid): the kernel sends this process SIGKILL when its parent (the launcher)
// ends, however it ends (torchrun's agent does the same with its workers). A rank blocked in a
// collective runs no JavaScript, so it could not notice the launcher's death by polling; its
// peers on other nodes see its connections close and fail at once. Returns false where the
// platform has no such signal, or when the parent is already gone (`ppid` is not the parent).
static napi_value ExitWithParent(napi_env env, napi_callback_info info) {
  return guarded(env, "exitWithParent", [&] {
    Args args(env, info);
    int64_t expected = 0;
    check(napi_get_value_int64(env, args[0], &expected), "napi_get_value_int64");
#ifdef __linux__
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return makeBool(env, false);
    return makeBool(env, static_cast<int64_t>(getppid()) == expected);
#else
    (void)expected;
    return makeBool(env, false);
#endif
  });
}

void initDistributed(napi_env env, napi_value exports) {
  exportFunction(env, exports, "exitWithParent", ExitWithParent);
  exportFunction(env, exports, "newGroup", NewGroup);
  exportFunction(env, exports, "newStore", NewStore);
  exportFunction(env, exports, "storeSet", StoreSet);
  exportFunction(env, exports, "storeGet", StoreGet);
  exportFunction(env, exports, "allReduce", AllReduce);
  exportFunction(env, exports, "broadcast", Broadcast);
  exportFunction(env, exports, "allGather", AllGather);
  exportFunction(env, exports, "barrier", Barrier);
  exportFunction(env, exports, "destroyGroup", DestroyGroup);
}

}  // namespace reals
