#!/usr/bin/env bash
# Container-image benchmark: a Debian minbase (mmdebstrap) as a one-layer OCI image, built by
# fledge from `oci:` and `docker-archive:`, cold (empty cache) and warm, against what a user
# does without fledge: `umoci unpack --rootless` of the same layout, then
# `find . | cpio -o -H newc` into `pigz -9` or `zstd -3 -T0`. See bench/README.md.
#
# Usage: bench/image.sh [WORKDIR]   (env RUNS=5 rounds, FLEDGE=path/to/fledge,
#                                    MINBASE=an mmdebstrap tarball to use instead of making one)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/fledge-image-bench}
fledge=$(realpath "${FLEDGE:-$repo/target/release/fledge}")
runs=${RUNS:-5}
[ -x "$fledge" ] || { echo "no fledge binary at $fledge: run 'cargo build --release -p fledge'" >&2; exit 1; }
for t in mmdebstrap umoci skopeo cpio pigz zstd python3 /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install $t)" >&2; exit 1; }
done
. "$repo/bench/lib.sh"

mkdir -p "$work"
cd "$work"
# ---- input: the tarball, the OCI layout and a docker-archive of it (made once) ----
if [ ! -f minbase.tar ]; then
    if [ -n "${MINBASE:-}" ]; then
        cp "$MINBASE" minbase.tar
    else
        mmdebstrap --quiet --variant=minbase --format=tar bookworm minbase.tar.part http://deb.debian.org/debian
        mv minbase.tar.part minbase.tar
    fi
fi
if [ ! -d img ]; then
    umoci init --layout img.part
    umoci new --image img.part:deb
    umoci raw add-layer --image img.part:deb minbase.tar
    umoci config --image img.part:deb --config.cmd /bin/sh
    mv img.part img
fi
[ -f deb.docker.tar ] || skopeo copy -q oci:img:deb docker-archive:deb.docker.tar:deb:latest
layer=$(find img/blobs/sha256 -type f -size +1M | head -1)
for src in oci:img:deb docker-archive:deb.docker.tar; do
    name=${src%%:*}
    cat > "fledge-$name.toml" <<EOF
version = "1"
strategy = "initramfs"

[source]
image = "$src"
busybox_url = "${BUSYBOX:-/bin/busybox}"

[init]
from_image = true

# The pipeline copies no shared libraries and writes no SBOM.
[build]
libraries = "off"
sbom = false
EOF
done

export FLEDGE_CACHE_DIR=$work/cache
results=$work/results.tsv
: > "$results"
pipeline() { # pipeline COMPRESSOR...: unpack the layout, then cpio it through the compressor
    rm -rf bundle
    umoci unpack --rootless --image img:deb bundle >/dev/null
    (cd bundle/rootfs && find . | cpio -o -H newc --quiet) | "$@" > pipeline.out
}
export -f pipeline
for round in $(seq "$runs"); do
    measure "umoci unpack + find, cpio -o, pigz -9" pipeline.out bash -c 'pipeline pigz -n -9'
    "$fledge" cache clear -q
    measure "fledge gzip from oci: (cold)" out.gz "$fledge" build -q -c fledge-oci.toml -o out.gz
    measure "fledge gzip from oci: (warm)" out.gz "$fledge" build -q -c fledge-oci.toml -o out.gz
    "$fledge" cache clear -q
    measure "fledge gzip from docker-archive: (cold)" dout.gz "$fledge" build -q -c fledge-docker-archive.toml -o dout.gz
    cmp -s out.gz dout.gz || { echo "oci: and docker-archive: images differ" >&2; exit 1; }
    measure "umoci unpack + find, cpio -o, zstd -3 -T0" pipeline.out bash -c 'pipeline zstd -q -3 -T0'
    "$fledge" cache clear -q
    measure "fledge zstd from oci: (cold)" out.zst "$fledge" build -q -c fledge-oci.toml -o out.zst --compression zstd
    measure "fledge zstd from oci: (warm)" out.zst "$fledge" build -q -c fledge-oci.toml -o out.zst --compression zstd
done
rm -rf bundle
echo
echo "Image: Debian bookworm minbase, one layer of $(stat -c %s "$layer") bytes ($(stat -c %s minbase.tar) bytes of tar); $(nproc) cores"
echo
summary
