// Catch2 main for the BPF tests: they load programs into the kernel, so they
// need root; without it the binary exits 77, which meson counts as skipped.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cstdio>

int main(int argc, char** argv)
{
    if (geteuid() != 0) {
        std::puts("SKIP: BPF tests need root");
        return 77;
    }
    return Catch::Session().run(argc, argv);
}
