// Error reporting for the C++ core: functions that can fail on user data return a
// Status instead of throwing or crashing; the bindings turn it into ValueError.
#pragma once
#include <string>
#include <utility>

namespace edgekit {

class Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Invalid(std::string msg) { return Status(std::move(msg)); }
  bool ok() const { return msg_.empty(); }
  const std::string& message() const { return msg_; }

 private:
  explicit Status(std::string msg) : msg_(std::move(msg)) {}
  std::string msg_;
};

}  // namespace edgekit
