#!/usr/bin/env bash
# Fetch the pieces the QEMU smoke runs need, without installing a kernel:
#   - Debian's stock x86_64 kernel: `apt-get download` the versioned package that the
#     `linux-image-amd64` metapackage depends on and `dpkg -x` it into a cache directory
#     (installing it would run slow initramfs hooks and is not needed);
#   - the package's module tree, indexed with `depmod` (Debian's package ships no modules.dep:
#     its postinst makes it), for the kernel-module tests;
#   - `qemu-system-x86_64` (Debian package `qemu-system-x86`) and `depmod` (`kmod`) when missing.
#
# Usage: bash qemu/fetch-kernel.sh [CACHE_DIR]
#   CACHE_DIR defaults to $FLEDGE_QEMU_KERNEL_DIR, else <repo>/target/qemu-kernel (amd64), and
#   to $FLEDGE_QEMU_ARM64_DIR, else <repo>/target/qemu-kernel-arm64 (arm64): the directories the
#   tests look in.
#   FLEDGE_QEMU_ARCH=arm64 fetches Debian's arm64 kernel (`linux-image-arm64`, after
#   `dpkg --add-architecture arm64`), `qemu-system-aarch64` (package `qemu-system-arm`) and, as
#   CACHE_DIR/busybox, the static arm64 busybox of `busybox-static:arm64` for arm64 images, and
#   CACHE_DIR/sysroot, Debian's arm64 libc6 and libc-bin unpacked (a dynamic program's closure).
#   FLEDGE_QEMU_KERNEL_PKG=linux-image-6.1.0-56-amd64 fetches that package instead of the one the
#   metapackage depends on today (to reproduce a report against an older or newer kernel).
# Result: CACHE_DIR/vmlinuz (a symlink to the extracted kernel) and CACHE_DIR/modules (a symlink
# to CACHE_DIR/lib/modules/<release>, with modules.dep); CACHE_DIR/package names the package.
# The kernel release is printed on stderr, the kernel's path last on stdout.
# Idempotent: a second run with the kernel already extracted does nothing and needs no network
# (unless FLEDGE_QEMU_KERNEL_PKG names another package than the cached one).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
arch=${FLEDGE_QEMU_ARCH:-amd64}
case $arch in
amd64) default_cache=${FLEDGE_QEMU_KERNEL_DIR:-$repo/target/qemu-kernel} qemu=qemu-system-x86_64 qemu_pkg=qemu-system-x86 suffix= ;;
arm64) default_cache=${FLEDGE_QEMU_ARM64_DIR:-$repo/target/qemu-kernel-arm64} qemu=qemu-system-aarch64 qemu_pkg=qemu-system-arm suffix=:arm64 ;;
*)
    echo "fetch-kernel: FLEDGE_QEMU_ARCH=$arch is not amd64 or arm64" >&2
    exit 1
    ;;
esac
cache=${1:-$default_cache}
mkdir -p "$cache"

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

need=()
command -v "$qemu" >/dev/null 2>&1 || need+=("$qemu_pkg")
command -v depmod >/dev/null 2>&1 || [ -x /usr/sbin/depmod ] || [ -x /sbin/depmod ] || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
    echo "fetch-kernel: installing ${need[*]}" >&2
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ "$arch" = arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "fetch-kernel: adding the arm64 architecture to dpkg" >&2
    sudo_if_needed dpkg --add-architecture arm64
    sudo_if_needed apt-get update -qq
fi
depmod=$(command -v depmod || ls /usr/sbin/depmod /sbin/depmod 2>/dev/null | head -n1)

wanted=${FLEDGE_QEMU_KERNEL_PKG:-}
if [ -n "$wanted" ] && ! [[ $wanted =~ ^linux-image-[0-9][A-Za-z0-9.+~-]*$ ]]; then
    echo "fetch-kernel: FLEDGE_QEMU_KERNEL_PKG=$wanted is not a kernel package name such as linux-image-6.1.0-56-amd64" >&2
    exit 1
fi
cached=$(cat "$cache/package" 2>/dev/null || true)
if [ "$arch" = arm64 ] && [ ! -x "$cache/busybox" ]; then
    bb=$(mktemp -d "$cache/.busybox.XXXXXX")
    chmod 0755 "$bb"
    (cd "$bb" && apt-get download -qq busybox-static:arm64) || {
        sudo_if_needed apt-get update -qq
        (cd "$bb" && apt-get download -qq busybox-static:arm64)
    }
    dpkg -x "$bb"/*.deb "$bb/root"
    cp "$bb/root/bin/busybox" "$cache/busybox.tmp"
    mv "$cache/busybox.tmp" "$cache/busybox"
    rm -rf "$bb"
    echo "fetch-kernel: arm64 busybox in $cache/busybox" >&2
fi
# A glibc arm64 tree for a dynamic program's closure: Debian's libc6 and libc-bin (getconf).
if [ "$arch" = arm64 ] && [ ! -x "$cache/sysroot/usr/bin/getconf" ]; then
    sr=$(mktemp -d "$cache/.sysroot.XXXXXX")
    chmod 0755 "$sr"
    (cd "$sr" && apt-get download -qq libc6:arm64 libc-bin:arm64)
    for deb in "$sr"/*.deb; do dpkg -x "$deb" "$sr/root"; done
    rm -rf "$cache/sysroot"
    mv "$sr/root" "$cache/sysroot"
    rm -rf "$sr"
    echo "fetch-kernel: arm64 glibc tree in $cache/sysroot" >&2
fi
if [ -e "$cache/vmlinuz" ] && [ -e "$cache/modules/modules.dep" ] &&
    { [ -z "$wanted" ] || [ "$wanted" = "$cached" ]; }; then
    release=$(basename "$(readlink "$cache/modules")")
    echo "fetch-kernel: kernel $release${cached:+ ($cached)}, cached in $cache" >&2
    echo "$cache/vmlinuz"
    exit 0
fi

# The metapackage depends on exactly one versioned image package, e.g. linux-image-6.1.0-56-amd64.
resolve() {
    apt-cache depends "linux-image-$arch$suffix" 2>/dev/null |
        sed -n "s/^ *Depends: \\(linux-image-[0-9][^ ]*-$arch\\)\\(:$arch\\)\\{0,1\\}\$/\\1/p" | head -n1
}
if [ -n "$wanted" ]; then
    resolve() { echo "$wanted"; }
fi
pkg=$(resolve || true)
if [ -z "$pkg" ]; then
    echo "fetch-kernel: linux-image-$arch not in the apt cache; running apt-get update" >&2
    sudo_if_needed apt-get update -qq
    pkg=$(resolve || true)
fi
if [ -z "$pkg" ]; then
    echo "fetch-kernel: cannot resolve the package linux-image-$arch depends on (apt-cache depends linux-image-$arch$suffix)" >&2
    exit 1
fi

work=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work" # lets apt's _apt user write the download when run as root
echo "fetch-kernel: downloading $pkg" >&2
# apt-get download writes into the current directory and needs no root.
if ! (cd "$work" && apt-get download -qq "$pkg$suffix"); then
    # A stale package list names a version the mirror no longer has: refresh and retry once.
    echo "fetch-kernel: download failed; running apt-get update and trying again" >&2
    sudo_if_needed apt-get update -qq
    pkg=$(resolve || true)
    if ! (cd "$work" && apt-get download -qq "$pkg$suffix"); then
        echo "fetch-kernel: Debian serves no package $pkg (apt-cache policy $pkg)" >&2
        exit 1
    fi
fi
deb=$(ls "$work"/*.deb)
dpkg -x "$deb" "$work/root"
kernel=$(ls "$work"/root/boot/vmlinuz-* | head -n1)
if [ ! -f "$kernel" ]; then
    echo "fetch-kernel: no /boot/vmlinuz-* in $deb" >&2
    exit 1
fi
name=$(basename "$kernel")
release=${name#vmlinuz-}
tree="$work/root/lib/modules/$release"
if [ ! -d "$tree" ]; then
    echo "fetch-kernel: no lib/modules/$release in $deb" >&2
    exit 1
fi
# The module tree, indexed as the package's postinst would (`depmod -b` reads only the tree).
"$depmod" -b "$work/root" -F "$work/root/boot/System.map-$release" "$release"
mkdir -p "$cache/lib/modules"
rm -rf "$cache/lib/modules/$release"
mv "$tree" "$cache/lib/modules/$release"
ln -sfn "lib/modules/$release" "$cache/modules.tmp"
mv -T "$cache/modules.tmp" "$cache/modules"
cp "$kernel" "$cache/$name.tmp"
mv "$cache/$name.tmp" "$cache/$name"
ln -sfn "$name" "$cache/vmlinuz.tmp"
mv -T "$cache/vmlinuz.tmp" "$cache/vmlinuz"
echo "$pkg" > "$cache/package.tmp"
mv -T "$cache/package.tmp" "$cache/package"
echo "fetch-kernel: kernel $release ($pkg), fetched into $cache" >&2
echo "$cache/vmlinuz"
