#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after the other, growing the
# committed corpora in b2bua/fuzz/corpus/<target>/ and then minimizing them (cargo fuzz cmin).
# Crashes land in b2bua/fuzz/artifacts/<target>/; commit each as a test case. Needs cargo-fuzz
# (`cargo install cargo-fuzz`) and a nightly toolchain (`rustup toolchain install nightly`).
#   b2bua/fuzz/run-all.sh 1200          # 20 minutes per target
#   JOBS=2 b2bua/fuzz/run-all.sh 600    # two fuzzing processes per target
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
jobs="${JOBS:-1}"
targets=(sip_message tcp_framer sdp rtp radius_packet flow_yaml)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/b2bua-fuzz-target}"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -jobs="$jobs" \
    -workers="$jobs" -max_len=70000 -rss_limit_mb=2048 -print_final_stats=1
  cargo +nightly fuzz cmin "$t" "corpus/$t"
done
