// The libtorch C++ reference for `npm run bench`: a 1024x1024 @ 1024x1024 float32 matmul called
// straight from C++ (at::matmul, no binding layer). bench/run.ts compiles this file against the
// libtorch that native/build.mjs found and drives it over stdin, one line per sample:
//   in:  "matmul <iterations>"    out: "<wall seconds> <process CPU seconds>" per iteration
// Usage: matmul <threads>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <sstream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: matmul <threads>\n";
    return 2;
  }
  at::set_num_threads(std::stoi(argv[1]));
  at::manual_seed(0);
  const int64_t n = 1024;
  at::Tensor a = at::randn({n, n});
  at::Tensor b = at::randn({n, n});
  std::printf("ready %s %d\n", TORCH_VERSION, at::get_num_threads());
  std::fflush(stdout);

  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream request(line);
    std::string item;
    long iterations = 0;
    request >> item >> iterations;
    if (item != "matmul" || iterations < 1) {
      std::cerr << "matmul: bad request '" << line << "' (expected 'matmul <iterations>')\n";
      return 2;
    }
    auto start = std::chrono::steady_clock::now();
    timespec cpuStart, cpuEnd;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpuStart);
    for (long i = 0; i < iterations; ++i) at::Tensor c = at::matmul(a, b);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpuEnd);
    std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    double cpu = static_cast<double>(cpuEnd.tv_sec - cpuStart.tv_sec) + 1e-9 * static_cast<double>(cpuEnd.tv_nsec - cpuStart.tv_nsec);
    std::printf("%.9g %.9g\n", elapsed.count() / static_cast<double>(iterations), cpu / static_cast<double>(iterations));
    std::fflush(stdout);
  }
  return 0;
}
