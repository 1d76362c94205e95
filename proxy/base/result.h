// Parse results without exceptions: a value or a one-line failure message.
// Parsers stay exception-free so that fuzzers see every path, and callers
// prefix the message with where the text came from ("--rule '...': ...").
#pragma once

#include <string>
#include <variant>

namespace ktp {

struct ParseFailure {
    std::string message;
};

template <typename T>
using Result = std::variant<T, ParseFailure>;

}  // namespace ktp
