# Shared by the benchmarks: timing one run of a command, and the table of medians.
#
# measure NAME OUTPUT CMD...   runs CMD once under /usr/bin/time -v and appends a line
#                              (round, name, wall s, CPU s, output bytes, peak RSS MB) to
#                              $results; OUTPUT is the file whose size is reported.
# summary [A B ...]            prints one Markdown row per NAME, in first-run order: the
#                              median and the range over the rounds of wall time, CPU time
#                              and peak RSS, the size, and the wall time against the first
#                              NAME (the baseline) as the median of the per-round ratios;
#                              then, for each pair A B given, a row with A's wall time and
#                              size against B's, paired by round the same way.
#
# The caller sets $results (a file) and $round (the round number) and runs every command
# once per round, so the commands are interleaved and each ratio pairs runs made close in time.

measure() {
    local name=$1 out=$2; shift 2
    rm -f "$out"
    sync
    /usr/bin/time -v -o time.txt "$@" >/dev/null 2>err.txt || { echo "$name failed:" >&2; cat err.txt >&2; return 1; }
    local wall rss size cpu
    cpu=$(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.3f", s }' time.txt)
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' time.txt)
    rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' time.txt)
    size=$(stat -c %s "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$wall" "$cpu" "$size" "$rss" >> "$results"
    printf 'round %s: %-46s %7.2f s wall %7.2f s cpu %11d B %7s MB\n' "$round" "$name" "$wall" "$cpu" "$size" "$rss" >&2
}

summary() {
    python3 - "$results" "$@" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
names, by = [], {}
if not rows:
    sys.exit(0)
for rnd, name, wall, cpu, size, rss in rows:
    if name not in by:
        names.append(name)
        by[name] = {}
    by[name][rnd] = (float(wall), float(cpu), int(size), float(rss))
base = by[names[0]]
def fig(xs, fmt):
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"
print(f"Rounds: {len(base)}; each figure is the median (range) over the rounds.")
print()
print("| run | wall (s) | CPU user+sys (s) | size (MB) | peak RSS (MB) | wall vs first row | size vs first row |")
print("|---|---:|---:|---:|---:|---:|---:|")
bsize = statistics.median(v[2] for v in base.values())
for n in names:
    runs = by[n]
    walls = [v[0] for v in runs.values()]
    cpus = [v[1] for v in runs.values()]
    rss = [v[3] for v in runs.values()]
    size = statistics.median(v[2] for v in runs.values())
    ratios = [runs[r][0] / base[r][0] for r in runs if r in base and base[r][0] > 0]
    ratio = fig(ratios, "{:.3f}") if ratios else "-"
    print(f"| {n} | {fig(walls, '{:.2f}')} | {fig(cpus, '{:.2f}')} | {size / 1e6:.3f} | {fig(rss, '{:.1f}')} | {ratio} | {size / bsize:.4f} |")
pairs = list(zip(sys.argv[2::2], sys.argv[3::2]))
pairs = [(a, b) for a, b in pairs if a in by and b in by]
if pairs:
    print()
    print("| pair | wall, median of per-round ratios (range) | size ratio |")
    print("|---|---:|---:|")
for a, b in pairs:
    ratios = [by[a][r][0] / by[b][r][0] for r in by[a] if r in by[b] and by[b][r][0] > 0]
    size = statistics.median(v[2] for v in by[a].values()) / statistics.median(v[2] for v in by[b].values())
    print(f"| {a} / {b} | {fig(ratios, '{:.3f}')} | {size:.4f} |")
EOF
}
