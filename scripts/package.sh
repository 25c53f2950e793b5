#!/usr/bin/env bash
# Builds the Debian package switchboard_<version>-<revision>_<arch>.deb from this tree:
# a release build (Debian's hardening flags, no tests, no bench tools) configured with
# -DSB_PACKAGE=ON, then CPack's DEB generator. Prints the path of the package.
#   scripts/package.sh [--build-dir DIR] [--revision N]
#     --build-dir DIR   where to build and put the package (default: build-deb)
#     --revision N      the Debian revision, the part after the "-" (default: 1)
# Rebuilding with another revision in the same directory reuses the compiled binary.
# Install: sudo apt-get install ./build-deb/switchboard_<version>-1_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/.."

build=build-deb
revision=1
while [ $# -gt 0 ]; do
    case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --revision) revision="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$revision" in
''|*[!0-9A-Za-z.+~]*)
    echo "package.sh: --revision $revision is not a Debian revision" >&2
    exit 2 ;;
esac

scripts/deps.sh package
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
ldflags="$(dpkg-buildflags --get LDFLAGS)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSB_TESTS=OFF -DSB_BENCH=OFF \
      -DSB_PACKAGE=ON -DSB_PACKAGE_REVISION="$revision" \
      -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" >/dev/null
cmake --build "$build" -j"$(nproc)" >&2
(cd "$build" && cpack -G DEB >&2)

version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
deb="$build/package/switchboard_${version}-${revision}_$(dpkg --print-architecture).deb"
[ -f "$deb" ] || { echo "package.sh: cpack did not write $deb" >&2; exit 1; }
echo "$deb"
