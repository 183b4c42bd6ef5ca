// CPU feature detection, done once: cpuid + xgetbv on x86 (the OS must also save the
// wide registers), getauxval(AT_HWCAP) on aarch64 (not /proc/cpuinfo, which qemu fakes).
#pragma once

namespace edgekit::dispatch {

struct CpuFeatures {
  bool avx2 = false;         // AVX2 + FMA + BMI2, OS saves ymm
  bool avx512 = false;       // AVX-512 F/BW/VL/DQ + VNNI, OS saves zmm/opmask
  bool avx512vbmi2 = false;  // the above + VBMI + VBMI2
  bool neon = false;         // HWCAP_ASIMD
  bool neondot = false;      // HWCAP_ASIMDDP (sdot/udot)
};

const CpuFeatures& cpu_features();

}  // namespace edgekit::dispatch
