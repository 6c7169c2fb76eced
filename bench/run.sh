#!/usr/bin/env bash
# Build-speed benchmark: fledge (each compression, cold and from its segment cache, and rebuilds
# after changing one small file, one big file, adding a file) against the original pipeline
# (copy into a temp root; find | cpio -o -H newc; gzip -n -9), 3cpio when installed, and the
# stand-alone compressors on the very same cpio. See bench/README.md.
#
# Usage: bench/run.sh [WORKDIR]   (env FLEDGE=path/to/fledge, default target/release/fledge;
#                                  RUNS=5 rounds, GZIP_LEVELS="6 9 12")
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/fledge-bench}
fledge=${FLEDGE:-$repo/target/release/fledge}
[ -x "$fledge" ] || { echo "no fledge binary at $fledge: run 'cargo build --release -p fledge'" >&2; exit 1; }
for t in cpio gzip zstd xz lz4 /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

busybox=${BUSYBOX:-/bin/busybox}
# The big ELF: the first that exists of these (about 18 MB), or BIG_ELF.
big=${BIG_ELF:-}
if [ -z "$big" ]; then
    for c in /usr/bin/qemu-system-x86_64 /usr/lib/x86_64-linux-gnu/libLLVM*.so* "$repo"/target/release/fledge; do
        [ -f "$c" ] && { big=$c; break; }
    done
fi

# ---- input set (built once, reused) ----
input=$work/input
if [ ! -f "$work/.input-ready" ]; then
    rm -rf "$work"
    mkdir -p "$input/tree"
    cp "$big" "$input/big-elf"
    printf '#!/bin/sh\nexec /bin/sh\n' > "$input/init"
    chmod 755 "$input/init"
    # ~1,500 text files, ~54 MB: large Rust/C sources from the cargo registry, the Python
    # stdlib, then Perl modules, in a fixed order until the budget is reached.
    {
        find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -type f \( -name '*.rs' -o -name '*.c' -o -name '*.h' \) \
            -size +30k -size -200k 2>/dev/null | sort
        find /usr/lib/python3* -type f -name '*.py' | sort
        find /usr/share/perl* /usr/lib/x86_64-linux-gnu/perl* -type f -name '*.pm' 2>/dev/null | sort
    } | awk -v max_files=1500 -v max_bytes=54000000 '
        { cmd = "stat -c %s \"" $0 "\""; cmd | getline s; close(cmd)
          if (n >= max_files || total + s > max_bytes) next
          total += s; n++; print }' > "$work/files.txt"
    while IFS= read -r f; do
        cp --parents "$f" "$input/tree/"
    done < "$work/files.txt"
    cat > "$work/fledge.toml" <<EOF
version = "1"
strategy = "initramfs"

[init]
none = true

# The pipeline copies no shared libraries; the big ELF's closure would add ~25 MB. Nor does it
# write an SBOM (its cost is measured on its own: README, SBOM, provenance and fledge verify).
[build]
libraries = "off"
sbom = false

[source]
busybox_url = "$busybox"

[mappings]
"input/init" = "/init"
"input/big-elf" = "/usr/bin/big-elf"
"input/tree" = "/usr/lib/tree"
EOF
    touch "$work/.input-ready"
fi
cd "$work"
nfiles=$(find input -type f | wc -l)
insize=$(du -sb input | cut -f1)
bbsize=$(stat -c %s "$busybox")

# ---- measurement: RUNS rounds, every command once per round ----
. "$repo/bench/lib.sh"
runs=${RUNS:-5}
results=$work/results.tsv
: > "$results"

export FLEDGE_CACHE_DIR=$work/cache
# Warm the page cache and the busybox cache once so every run reads the same way.
"$fledge" build -q -c fledge.toml -o warm.cpio --compression none >/dev/null 2>&1 || "$fledge" build -c fledge.toml -o warm.cpio --compression none

pipeline() {
    rm -rf root && mkdir -p root/bin root/usr/bin root/usr/lib
    cp -a input/init root/init
    cp -a "$busybox" root/bin/busybox
    cp -a input/big-elf root/usr/bin/big-elf
    cp -a input/tree root/usr/lib/tree
    (cd root && find . | cpio -o -H newc --quiet) | gzip -n -9 > pipeline.cpio.gz
}
export -f pipeline
export busybox

# "cold": the segment cache is emptied first, so every segment is compressed (and stored).
cold() { "$fledge" cache clear -q; }
same() { # same A B WHAT: fail the benchmark unless A and B are byte-identical
    cmp -s "$1" "$2" || { echo "$3: $1 and $2 differ" >&2; exit 1; }
    [ "$round" != 1 ] || echo "$3: byte-identical" >&2
}
# Rebuilds: the cache holds the unchanged input's segments, CHANGE is applied, the rebuild is
# timed and compared with a build of the changed input without any cache, then UNDO runs.
# The small file is the first of 16 kB or less from the middle of the tree on.
small=$(find input/tree -type f -size -16k | LC_ALL=C sort | awk '{ f[NR] = $0 } END { print f[int(NR / 2) + 1] }')
added=$(dirname "$small")/fledge-bench-added.txt
cp "$small" small.bak
cp input/big-elf big.bak
rebuild() { # rebuild WHAT CHANGE UNDO
    for c in gzip zstd; do
        "$fledge" build -q -c fledge.toml -o "fill.$c" --compression "$c"
        eval "$2"
        measure "fledge $c rebuild, $1" "re.$c" "$fledge" build -q -c fledge.toml -o "re.$c" --compression "$c"
        FLEDGE_CACHE_MAX_SIZE=0 "$fledge" build -q -c fledge.toml -o "nocache.$c" --compression "$c"
        same "re.$c" "nocache.$c" "$c rebuild, $1, vs a build without cache"
        eval "$3"
    done
}
has3cpio=$(command -v 3cpio || true)

# 3cpio reads a manifest on stdin: a "#cpio: COMPRESSOR -LEVEL" section line, then one path per
# line (tab-separated location and name; the name defaults to the location). It is given the
# pipeline's staged root (left by the pipeline run) with -C.
threecpio() { # threecpio "COMPRESSOR -LEVEL" OUT
    measure "3cpio $1" "$2" bash -c "{ echo '#cpio: $1'; cat 3cpio.paths; } | 3cpio --create -C root $2"
}

for round in $(seq "$runs"); do
    measure "pipeline (cp, find, cpio -o, gzip -n -9)" pipeline.cpio.gz bash -c pipeline
    [ -z "$has3cpio" ] || (cd root && find . -mindepth 1 | LC_ALL=C sort | sed 's|^\./||') > 3cpio.paths
    for c in gzip zstd xz lz4 none; do
        cold
        measure "fledge $c (cold)" "out.$c" "$fledge" build -q -c fledge.toml -o "out.$c" --compression "$c"
        # 3cpio right after the cold build it is compared with, so the pair sees one machine.
        if [ -n "$has3cpio" ]; then
            case $c in
                gzip) threecpio "gzip -9" 3cpio.gz ;;
                zstd) threecpio "zstd -3" 3cpio.zst ;;
            esac
        fi
        case $c in gzip | zstd)
            measure "fledge $c warm, nothing changed" "warm.$c" "$fledge" build -q -c fledge.toml -o "warm.$c" --compression "$c"
            same "out.$c" "warm.$c" "$c warm vs cold"
            FLEDGE_CACHE_MAX_SIZE=0 measure "fledge $c, cache off" "off.$c" "$fledge" build -q -c fledge.toml -o "off.$c" --compression "$c"
            same "out.$c" "off.$c" "$c cache off vs cold" ;;
        esac
    done
    cold
    measure "fledge gzip -j1 (cold)" out.gzip1 "$fledge" build -q -c fledge.toml -o out.gzip1 --compression gzip -j 1
    cold
    measure "fledge zstd -j1 (cold)" out.zstd1 "$fledge" build -q -c fledge.toml -o out.zstd1 --compression zstd -j 1
    same out.gzip out.gzip1 "gzip -j1 vs all cores"
    same out.zstd out.zstd1 "zstd -j1 vs all cores"
    for l in ${GZIP_LEVELS:-6 9 12}; do
        cold
        measure "fledge gzip --level $l (cold)" "out.gzip$l" "$fledge" build -q -c fledge.toml -o "out.gzip$l" --compression gzip --level "$l"
    done

    rebuild "one small file changed" 'printf "# changed\n" >> "$small"' 'cp small.bak "$small"'
    rebuild "one big file changed" 'printf fledge | dd of=input/big-elf bs=1 seek=1000000 conv=notrunc status=none' 'cp big.bak input/big-elf'
    rebuild "one file added" 'printf "added\n" > "$added"' 'rm -f "$added"'

    # The stand-alone compressors on fledge's own uncompressed cpio (same bytes in, so sizes compare).
    measure "gzip -n -9 of the same cpio" same.gz bash -c 'gzip -n -9 < out.none > same.gz'
    measure "gzip -n -6 of the same cpio" same6.gz bash -c 'gzip -n -6 < out.none > same6.gz'
    measure "zstd -3 -T0 of the same cpio" same.zst bash -c 'zstd -q -3 -T0 < out.none > same.zst'
    measure "xz -6 -T0 --check=crc32 of the same cpio" same.xz bash -c 'xz -6 -T0 --check=crc32 < out.none > same.xz'
    measure "lz4 -l of the same cpio" same.lz4 bash -c 'lz4 -q -l < out.none > same.lz4'

    [ -z "$has3cpio" ] || threecpio "gzip -6" 3cpio6.gz
done

# ---- table ----
echo
echo "Input: $nfiles files + busybox ($((bbsize / 1000)) kB), $((insize / 1000000)) MB in $input; $(nproc) cores"
echo
summary "fledge zstd (cold)" "3cpio zstd -3" \
    "fledge zstd, cache off" "3cpio zstd -3" \
    "fledge zstd (cold)" "fledge zstd, cache off" \
    "fledge gzip (cold)" "3cpio gzip -9" \
    "fledge gzip (cold)" "fledge gzip, cache off" \
    "fledge gzip (cold)" "gzip -n -9 of the same cpio"
