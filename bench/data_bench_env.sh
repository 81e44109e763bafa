# Sourced by the data benchmarks (bench/data_arrow_bench.sh, bench/data_prepare_bench.sh): the
# repository root as working directory, the folder of the 20k-pair bench files, `--repeats N`
# into REPEATS, and a line about the machine.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export SDPO_DATA_BENCH_DIR="${SDPO_DATA_BENCH_DIR:-${TMPDIR:-/tmp}/sdpo-data-bench}"
REPEATS=3
if [ "${1:-}" = "--repeats" ]; then REPEATS="$2"; fi
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
