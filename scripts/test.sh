#!/usr/bin/env bash
# Installs what is missing, builds the test configuration (clang, AddressSanitizer +
# UndefinedBehaviorSanitizer, libFuzzer targets) and runs the whole suite with ctest:
# unit tests, integration tests against real redis-server and fake provider servers,
# and a bounded run of each fuzzer. Ends with ctest's summary line. The repository's own
# test data always runs; ../shared/fixtures and ../shared/corpus/external beside the
# clone run too when they exist (one line says when they do not).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp"
CC=clang cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DSB_SANITIZE=ON -DSB_FUZZ=ON >/dev/null
cmake --build build-test -j"$(nproc)"
if [ ! -d ../shared/fixtures ] || [ ! -d ../shared/corpus/external ]; then
    echo "../shared/fixtures or ../shared/corpus/external not found: running the repository's own test data only (shared fixtures and corpus skipped)"
fi
cd build-test
ctest --output-on-failure -j2 --timeout 600
