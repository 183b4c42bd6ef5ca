# CMake toolchain for 64-bit ARM Linux with Debian's cross compiler (g++-aarch64-linux-gnu).
# Used for the Raspberry Pi 4, Android (static binaries) and the qemu-user CI runs:
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=targets/qemu/aarch64-toolchain.cmake \
#         -DEDGEKIT_PYTHON=OFF -DEDGEKIT_TESTS=ON -DEDGEKIT_STATIC=ON
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

# Overridable so another triplet or a versioned compiler (aarch64-linux-gnu-g++-12) works.
set(EDGEKIT_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "cross compiler prefix")
set(CMAKE_C_COMPILER ${EDGEKIT_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${EDGEKIT_CROSS_PREFIX}g++)

# Never pick up host libraries or headers; programs (code generators) come from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# ctest runs the cross-built binaries through qemu-user; the CPU is always explicit because
# qemu's default "max" CPU has every extension and would hide a missing-feature bug.
set(EDGEKIT_QEMU_CPU "cortex-a72" CACHE STRING "CPU model for qemu-aarch64 under ctest")
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -cpu ${EDGEKIT_QEMU_CPU})
