#include "dispatch/cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <cstdint>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace edgekit::dispatch {
namespace {

#if defined(__x86_64__) || defined(_M_X64)
uint64_t xgetbv0() {
  uint32_t lo, hi;
  // Raw encoding so this file needs no -mxsave.
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t{hi} << 32) | lo;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_saved = (xcr0 & 0x6) == 0x6;
  const bool zmm_saved = (xcr0 & 0xE6) == 0xE6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = b & (1u << 5), bmi2 = b & (1u << 8);
  const bool f512 = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  const bool vbmi = c & (1u << 1), vbmi2 = c & (1u << 6), vnni = c & (1u << 11);
  f.avx2 = ymm_saved && avx2 && fma && bmi2;
  f.avx512 = f.avx2 && zmm_saved && f512 && dq && bw && vl && vnni;
  f.avx512vbmi2 = f.avx512 && vbmi && vbmi2;
  return f;
}
#elif defined(__aarch64__) && defined(__linux__)
CpuFeatures detect() {
  constexpr unsigned long kHwcapAsimd = 1ul << 1, kHwcapAsimdDp = 1ul << 20;  // asm/hwcap.h
  const unsigned long hw = getauxval(AT_HWCAP);
  CpuFeatures f;
  f.neon = hw & kHwcapAsimd;
  f.neondot = f.neon && (hw & kHwcapAsimdDp);
  return f;
}
#elif defined(__aarch64__)
CpuFeatures detect() {  // non-Linux aarch64 (macOS): ASIMD is architectural, dotprod unknown
  CpuFeatures f;
  f.neon = true;
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

}  // namespace edgekit::dispatch
