#include "runtime/meta.h"

#include <cstdint>
#include <cstring>

namespace edgekit::runtime {
namespace {

constexpr int kMaxDepth = 64;
enum Level { kTop, kStreaming, kSkip };

// A validating JSON scanner that decodes only what it is asked to keep.
class Json {
 public:
  explicit Json(const std::string& s) : p_(s.data()), end_(s.data() + s.size()) {}

  bool top(std::string* graph) {
    ws();
    if (!object(0, kTop, graph)) return false;
    ws();
    return p_ == end_;
  }

 private:
  const char* p_;
  const char* end_;

  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool eat(char c) {
    ws();
    if (p_ < end_ && *p_ == c) return ++p_, true;
    return false;
  }

  static void put_utf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xC0 | cp >> 6);
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xE0 | cp >> 12);
      *out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *out += static_cast<char>(0xF0 | cp >> 18);
      *out += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
      *out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool hex4(uint32_t* v) {
    if (end_ - p_ < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = *p_++;
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return false;
      *v = *v << 4 | static_cast<uint32_t>(d);
    }
    return true;
  }

  bool string(std::string* out) {
    ws();
    if (p_ >= end_ || *p_ != '"') return false;
    ++p_;
    while (p_ < end_) {
      char c = *p_++;
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        if (out) *out += c;
        continue;
      }
      if (p_ >= end_) return false;
      char e = *p_++;
      const char* simple = std::strchr("\"\\/bfnrt", e);
      if (e != '\0' && simple != nullptr) {
        static const char map[] = "\"\\/\b\f\n\r\t";
        if (out) *out += map[simple - "\"\\/bfnrt"];
      } else if (e == 'u') {
        uint32_t cp;
        if (!hex4(&cp)) return false;
        if (cp >= 0xD800 && cp <= 0xDBFF) {  // a surrogate pair encodes one code point
          uint32_t lo;
          if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
          p_ += 2;
          if (!hex4(&lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return false;
        }
        if (out) put_utf8(cp, out);
      } else {
        return false;
      }
    }
    return false;
  }

  bool literal(const char* word) {
    size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return false;
    p_ += n;
    return true;
  }

  bool number() {
    const char* start = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) return false;
    if (*p_ == '0') ++p_;
    else while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) return false;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= end_ || !(*p_ >= '0' && *p_ <= '9')) return false;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    return p_ > start;
  }

  // Skips one value of any type, checking its syntax.
  bool value(int depth) {
    if (depth > kMaxDepth) return false;
    ws();
    if (p_ >= end_) return false;
    switch (*p_) {
      case '{': return object(depth, kSkip, nullptr);
      case '[': {
        ++p_;
        if (eat(']')) return true;
        do {
          if (!value(depth + 1)) return false;
        } while (eat(','));
        return eat(']');
      }
      case '"': return string(nullptr);
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      default: return number();
    }
  }

  // level kTop: look for "streaming"; kStreaming: look for "graph"; kSkip: keep nothing.
  bool object(int depth, int level, std::string* graph) {
    if (depth > kMaxDepth || !eat('{')) return false;
    if (eat('}')) return true;
    do {
      std::string key;
      if (!string(&key) || !eat(':')) return false;
      ws();
      if (level == kTop && key == "streaming" && p_ < end_ && *p_ == '{') {
        if (!object(depth + 1, kStreaming, graph)) return false;
      } else if (level == kStreaming && key == "graph" && p_ < end_ && *p_ == '"') {
        graph->clear();
        if (!string(graph)) return false;
      } else if (!value(depth + 1)) {
        return false;
      }
    } while (eat(','));
    return eat('}');
  }
};

}  // namespace

Status meta_streaming_graph(const std::string& json, std::string* graph) {
  graph->clear();
  std::string g;
  if (!Json(json).top(&g)) return Status::Invalid("ekm: META is not a well-formed JSON object");
  *graph = g;
  return Status::Ok();
}

}  // namespace edgekit::runtime
