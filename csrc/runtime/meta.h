// The one piece of META (docs/format.md §2.5) the C++ runtime reads: which graph is the
// streaming one, so that a Session or ek-run without --graph drives the same graph as the
// Python facade. Everything else in META is passed through untouched.
#pragma once
#include <string>

#include "edgekit/status.h"

namespace edgekit::runtime {

// Sets *graph to META["streaming"]["graph"], or to "" when META has no streaming entry.
// Fails on text that is not one well-formed JSON object (depth-limited, so a hostile file
// cannot exhaust the stack).
Status meta_streaming_graph(const std::string& json, std::string* graph);

}  // namespace edgekit::runtime
