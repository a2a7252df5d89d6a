#!/usr/bin/env bash
# Runs Triton's perf_analyzer (PyPI `perf-analyzer`) with the arguments it is given, e.g.
#   scripts/perf-analyzer.sh -m simple -u 127.0.0.1:8001 -i grpc --shared-memory system
#
# Why this script: the wheel is built for manylinux_2_38 and its binary needs glibc 2.38 and
# GCC 13's libstdc++ (GLIBCXX_3.4.32); Debian 12 has glibc 2.36 and GCC 12's. So pip here
# only finds perf-analyzer's 0.1.0 placeholder (which tritonclient[all] installs), and the
# real binary would not start. The script downloads the real wheel, and libc6, libstdc++6,
# libgcc-s1 and libcudart12 (see below) from Debian 13 (trixie, checked against the
# archive's signed index), unpacks them into a private folder (never system-wide), and starts
# the binary through that glibc's own dynamic loader; zlib and OpenSSL 3 come from the system.
# Needs curl, gpgv, dpkg-deb and the project's .venv (or python3 with pip). Cached under
# ${XDG_CACHE_HOME:-~/.cache}/nereid/perf-analyzer; the first run takes a few seconds.
set -euo pipefail

VERSION=2.60.0
WHEEL=perf_analyzer-$VERSION-py3-none-manylinux_2_38_x86_64.whl
WHEEL_SHA256=23ef56b107ae9233e5cf09fbdf508dd9b936a52f1bae2f63f53c8117087b3f25
DEBIAN=https://deb.debian.org/debian
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=$ROOT/.venv/bin/python
[[ -x $PYTHON ]] || PYTHON=python3
DIR=${XDG_CACHE_HOME:-$HOME/.cache}/nereid/perf-analyzer/$VERSION-trixie

# Fills the folder $1; in a subshell, so perf_analyzer still starts in the caller's directory.
setup() (
  cd "$1"
  # The wheel for its own platform, not this one's; unpacked, not installed.
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux_2_38_x86_64 -d . "perf-analyzer==$VERSION"
  echo "$WHEEL_SHA256  $WHEEL" | sha256sum -c --quiet
  "$PYTHON" -m zipfile -e "$WHEEL" wheel
  chmod +x wheel/perf_analyzer/bin/perf_analyzer
  # Trixie's libraries: signed Release -> each Packages.xz's SHA256 -> each .deb's SHA256.
  curl -fsSLo InRelease "$DEBIAN/dists/trixie/InRelease"
  gpgv --keyring /usr/share/keyrings/debian-archive-keyring.gpg -o Release InRelease \
    2>gpgv.log || { cat gpgv.log >&2; exit 1; }
  for component in main non-free; do
    index=$component/binary-amd64/Packages.xz
    curl -fsSLo Packages.xz "$DEBIAN/dists/trixie/$index"
    awk -v f="$index" '/^SHA256:/ {s = 1} s && $3 == f {print $1 "  Packages.xz"}' Release |
      sha256sum -c --quiet
    "$PYTHON" -c 'import lzma, sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' \
      Packages.xz >>Packages
  done
  for package in libc6 libstdc++6 libgcc-s1 libcudart12; do
    read -r file sha < <(awk -v p="$package" '$1 == "Package:" {hit = $2 == p}
      hit && $1 == "Filename:" {f = $2} hit && $1 == "SHA256:" {print f, $2; exit}' Packages) ||
      { echo "$0: no $package in Debian trixie's index" >&2; exit 1; }
    curl -fsSLo "$package.deb" "$DEBIAN/$file"
    echo "$sha  $package.deb" | sha256sum -c --quiet
    dpkg-deb -x "$package.deb" root
  done
  # The wheel's perf_analyzer is a GPU build: its shared-memory manager dlopens
  # "libcudart.so" for any --shared-memory, system included, and throws without it. Only
  # CUDA shared memory calls into it; it loads without a GPU or driver.
  ln -s libcudart.so.12 root/usr/lib/x86_64-linux-gnu/libcudart.so
  rm -f ./*.deb Packages* InRelease Release gpgv.log "$WHEEL"
  touch ready
)

if [[ ! -e $DIR/ready ]]; then
  mkdir -p "$(dirname "$DIR")"
  tmp=$(mktemp -d "$DIR.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  setup "$tmp"
  # A concurrent first run may have finished first: then keep its folder.
  mv -T "$tmp" "$DIR" 2>/dev/null || rm -rf "$tmp"
  trap - EXIT
fi

LIB=$DIR/root/usr/lib/x86_64-linux-gnu
exec "$LIB/ld-linux-x86-64.so.2" --library-path "$LIB" \
  "$DIR/wheel/perf_analyzer/bin/perf_analyzer" "$@"
