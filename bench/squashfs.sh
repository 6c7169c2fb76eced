#!/usr/bin/env bash
# Root file system disks: fledge's in-process squashfs writer against mksquashfs (squashfs-tools)
# on the same tree, same compressor and level, 2 threads each, in interleaved rounds: wall time
# and peak RSS (median and range of RUNS rounds) and size. The tree is busybox, a big ELF and
# Python's standard library; mksquashfs reads it as `unsquashfs` extracts fledge's disk, so both
# hold the same files.
# See bench/README.md.
#
# Usage: bench/squashfs.sh [WORKDIR]   (env FLEDGE=path/to/fledge, RUNS=5)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/fledge-bench-squashfs}
fledge=$(realpath "${FLEDGE:-$repo/target/release/fledge}")
runs=${RUNS:-5}
[ -x "$fledge" ] || { echo "no fledge binary at $fledge: run 'cargo build --release -p fledge'" >&2; exit 1; }
for t in mksquashfs unsquashfs python3 /usr/bin/time; do
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

. "$repo/bench/lib.sh"
results=$work/results.tsv
: > "$results"
specs=("gzip 9" "zstd 15" "xz 6")
config() { # config C LEVEL: the config for compressor C at LEVEL, as $work/fledge-C.toml
    sed "/^compression_level/d; s/^\[build\]$/[build]\ncompression_level = $2/" "$work/fledge.toml" > "$work/fledge-$1.toml"
}
# mksquashfs reads the tree unsquashfs extracts of fledge's disk, so both hold the same files.
for spec in "${specs[@]}"; do
    set -- $spec
    config "$1" "$2"
done
"$fledge" build -q -j 2 -c "$work/fledge-gzip.toml" --compression gzip -o "$work/staging.squashfs"
rm -rf "$work/staged"
unsquashfs -q -d "$work/staged" "$work/staging.squashfs" >/dev/null

echo "tree: $(du -sb "$work/tree" | cut -f1) bytes in $(find "$work/tree" -type f | wc -l) files (+ busybox and /init)"
cd "$work"
pairs=()
for round in $(seq "$runs"); do
    for spec in "${specs[@]}"; do
        set -- $spec
        c=$1 level=$2
        extra=()
        case $c in
            gzip | zstd) extra=(-Xcompression-level "$level") ;;
        esac
        measure "fledge $c -$level" "fledge-$c.squashfs" "$fledge" build -q -j 2 -c "fledge-$c.toml" --compression "$c" -o "fledge-$c.squashfs"
        measure "mksquashfs $c -$level" "mksquashfs-$c.squashfs" mksquashfs staged "mksquashfs-$c.squashfs" -comp "$c" "${extra[@]}" \
            -processors 2 -noappend -no-progress -quiet -mkfs-time 0 -all-time 0
        [ "$round" != 1 ] || pairs+=("fledge $c -$level" "mksquashfs $c -$level")
    done
done
echo
summary "${pairs[@]}"
