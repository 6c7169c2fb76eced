#!/usr/bin/env bash
# Registry benchmark: `fledge push` and `fledge pull` of the build benchmark's image, and a
# shared build cache through a registry (`--cache-to`, `--cache-from`), against Debian's
# docker-registry started here on 127.0.0.1 (filesystem storage, no auth). See bench/README.md.
#
# Usage: bench/registry.sh [WORKDIR]   (env RUNS=5 rounds, FLEDGE=path/to/fledge; the input is
#                                        bench/run.sh's, made first if missing)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench=${1:-${TMPDIR:-/tmp}/fledge-bench}
fledge=$(realpath "${FLEDGE:-$repo/target/release/fledge}")
runs=${RUNS:-5}
[ -x "$fledge" ] || { echo "no fledge binary at $fledge: run 'cargo build --release -p fledge'" >&2; exit 1; }
for t in docker-registry python3 /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install docker-registry time)" >&2; exit 1; }
done
[ -f "$bench/.input-ready" ] || RUNS=0 FLEDGE=$fledge bash "$repo/bench/run.sh" "$bench" >/dev/null
. "$repo/bench/lib.sh"

work=$bench/registry
rm -rf "$work"
mkdir -p "$work"
cd "$work"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: 127.0.0.1:%s\n' "$work" "$port" > registry.yml
docker-registry serve registry.yml >/dev/null 2>&1 &
registry=$!
trap 'kill "$registry" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
host=127.0.0.1:$port

export FLEDGE_CACHE_DIR=$work/cache
cfg=$bench/fledge.toml
"$fledge" build -q -c "$cfg" -o image.cpio.gz
results=$work/results.tsv
: > "$results"
# A push, its output (the pushed manifest's digest) kept in pushed.txt for `measure`.
push=(bash -c '"$0" push -m image.manifest.json "$@" > pushed.txt' "$fledge")
for round in $(seq "$runs"); do
    r=r$round
    measure "first push (image, manifest JSON)" pushed.txt "${push[@]}" image.cpio.gz "docker://$host/bench/$r:1"
    measure "the same push again (nothing uploaded)" pushed.txt "${push[@]}" image.cpio.gz "docker://$host/bench/$r:1"
    measure "push to a new repository, --chunk-size 4M" pushed.txt "${push[@]}" --chunk-size 4M image.cpio.gz "docker://$host/bench/$r-chunked:1"
    measure "push to a new repository, --mount-from" pushed.txt "${push[@]}" --mount-from "bench/$r" image.cpio.gz "docker://$host/bench/$r-mounted:1"
    rm -rf pulled
    measure "fledge pull back" pulled/image.cpio.gz "$fledge" pull -q "docker://$host/bench/$r:1" pulled
    cmp -s image.cpio.gz pulled/image.cpio.gz || { echo "round $round: the pulled image differs" >&2; exit 1; }

    # A shared cache: each "machine" is a new cache directory.
    export FLEDGE_CACHE_DIR=$work/machine-a-$r
    measure "build, empty cache" cold.gz "$fledge" build -q -c "$cfg" -o cold.gz
    export FLEDGE_CACHE_DIR=$work/machine-b-$r
    measure "build, empty cache, then --cache-to" shared.gz "$fledge" build -q -c "$cfg" -o shared.gz --cache-to "docker://$host/cache/$r:main"
    export FLEDGE_CACHE_DIR=$work/machine-c-$r
    measure "build, another empty cache, --cache-from" from.gz "$fledge" build -q -c "$cfg" -o from.gz --cache-from "docker://$host/cache/$r:main"
    measure "that cache again, local and warm" warm.gz "$fledge" build -q -c "$cfg" -o warm.gz
    for f in shared.gz from.gz warm.gz; do
        cmp -s cold.gz "$f" || { echo "round $round: $f differs from the cold build" >&2; exit 1; }
    done
    rm -rf "$work"/machine-*-"$r"
    export FLEDGE_CACHE_DIR=$work/cache
done
echo
echo "Image: $(stat -c %s image.cpio.gz) bytes (bench/run.sh's input, gzip); docker-registry $(docker-registry --version 2>/dev/null | awk '{print $NF}'); $(nproc) cores"
echo
summary "build, another empty cache, --cache-from" "build, empty cache" \
    "build, empty cache, then --cache-to" "build, empty cache"
