// Catch2 main for the unit tests (pure code, no privileges needed).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
