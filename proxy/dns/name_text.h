// DNS names as text in logs. A name off the wire is any bytes (a label may
// hold newlines, escape sequences, spaces): printed raw, one hostile query
// would forge log lines or drive the reader's terminal. Text logs get
// printable_name(); names that are not plain hostnames are neither
// remembered nor given fake addresses (dns/name_memory.h, dns/fake_pool.h),
// so they never reach a connection's log line either.
#pragma once

#include <string>
#include <string_view>

namespace ktp::dns {

// Printable ASCII other than space and backslash is kept, every other byte
// (space and backslash too) is \xHH (base/printable.h), so the text maps back
// to one name.
std::string printable_name(std::string_view name);

// Only bytes that printable_name keeps: it would print the name unchanged.
bool plain_name(std::string_view name);

}  // namespace ktp::dns
