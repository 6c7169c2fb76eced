#!/usr/bin/env bash
# Root file system disks: fledge's in-process squashfs writer against mksquashfs (squashfs-tools)
# on the same tree, same compressor and level, 2 threads each: wall time (median of RUNS, with
# min and max), peak RSS and size. The tree is busybox, a big ELF and Python's standard library;
# mksquashfs reads it as `unsquashfs` extracts fledge's disk, so both hold the same files.
# See bench/README.md.
#
# Usage: bench/squashfs.sh [WORKDIR]   (env FLEDGE=path/to/fledge, RUNS=5)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/fledge-bench-squashfs}
fledge=${FLEDGE:-$repo/target/release/fledge}
runs=${RUNS:-5}
[ -x "$fledge" ] || { echo "no fledge binary at $fledge: run 'cargo build --release -p fledge'" >&2; exit 1; }
for t in mksquashfs unsquashfs /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install squashfs-tools time)" >&2; exit 1; }
done
big=${BIG_ELF:-}
if [ -z "$big" ]; then
    for c in /usr/bin/qemu-system-x86_64 "$fledge"; do
        [ -f "$c" ] && { big=$c; break; }
    done
fi
py=$(ls -d /usr/lib/python3.[0-9]* | head -1)

rm -rf "$work"
mkdir -p "$work/tree"
cp "$big" "$work/tree/big-elf"
cp -r "$py" "$work/tree/python"
find "$work/tree/python" -name __pycache__ -prune -exec rm -rf {} +
printf '#!/bin/sh\nexec /bin/sh\n' > "$work/init"
chmod 755 "$work/init"
cat > "$work/fledge.toml" <<EOF
version = "1"
strategy = "oci_rootfs"

[init]
none = true

[build]
libraries = "off"
sbom = false

[source]
busybox_url = "${BUSYBOX:-/bin/busybox}"

[mappings]
"init" = "/init"
"tree" = "/opt"
EOF

# median, min and max of the numbers on stdin
stats() { sort -n | awk '{ v[NR] = $1 } END { printf "%s (%s-%s)", v[int((NR + 1) / 2)], v[1], v[NR] }'; }

# time_runs NAME CMD...: RUNS runs; prints wall seconds and peak RSS (MB), median (min-max)
time_runs() {
    local name=$1; shift
    : > "$work/$name.times"
    for _ in $(seq "$runs"); do
        /usr/bin/time -f '%e %M' -o "$work/one.time" "$@" >/dev/null 2>&1
        cat "$work/one.time" >> "$work/$name.times"
    done
    printf '%-28s %s s, peak %s MB\n' "$name" \
        "$(cut -d' ' -f1 "$work/$name.times" | stats)" \
        "$(awk '{ print int($2 / 1024) }' "$work/$name.times" | stats)"
}

echo "tree: $(du -sb "$work/tree" | cut -f1) bytes in $(find "$work/tree" -type f | wc -l) files (+ busybox and /init)"
for spec in "gzip 9" "zstd 15" "xz 6"; do
    set -- $spec
    c=$1 level=$2
    sed -i "/^compression_level/d; s/^\[build\]$/[build]\ncompression_level = $level/" "$work/fledge.toml"
    out=$work/fledge-$c.squashfs
    time_runs "fledge $c -$level" "$fledge" build -q -j 2 -c "$work/fledge.toml" --compression "$c" -o "$out"
    rm -rf "$work/staged"
    unsquashfs -q -d "$work/staged" "$out" >/dev/null
    extra=()
    case $c in
        gzip) extra=(-Xcompression-level "$level") ;;
        zstd) extra=(-Xcompression-level "$level") ;;
        xz) extra=() ;;
    esac
    ref=$work/mksquashfs-$c.squashfs
    time_runs "mksquashfs $c -$level" mksquashfs "$work/staged" "$ref" -comp "$c" "${extra[@]}" \
        -processors 2 -noappend -no-progress -quiet -mkfs-time 0 -all-time 0
    printf '%-28s fledge %s bytes, mksquashfs %s bytes\n' "size $c" "$(stat -c %s "$out")" "$(stat -c %s "$ref")"
done
