// A whole small file (/proc, /sys, a pid file) as text; "" if unreadable.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

namespace ktp {

inline std::string read_text_file(const std::string& path)
{
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace ktp
