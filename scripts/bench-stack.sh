# Sourced by the benchmarks that run a local stack of their own (scripts/bench-e2e,
# scripts/bench-queries): a state directory and free ports of their own, the benchmark project's
# keys, and start_stack / stop_stack around scripts/dev. A stack a developer runs is not touched.
# Expects $root (the repository).

state="$(mktemp -d)"
export DEV_STATE_DIR="$state"
eval "$("$root/scripts/dev-ports")"
export DEV_PROJECT_ID=b0b0b0b0b0b0b0b0b0b0b0b0
export DEV_WRITE_KEY=bench-write-key-0123456789abcdef0123456789
export DEV_READ_KEY=bench-read-key-0123456789abcdef01234567890
export DEV_MASTER_KEY=bench-master-key-0123456789abcdef012345678
# One project drives the whole load: the per-project quota is off, as this measures the stack's
# capacity, not a tenant's share of it (scripts/bench-fairness measures that).
export GATEWAY_PROJECT_QUOTA_BYTES_PER_SEC=0 GATEWAY_PROJECT_QUOTA_RECORDS_PER_SEC=0

dev=""
# start_stack: scripts/dev in the background, on the data of the last start; waits until it runs.
start_stack() {
    : >"$state/dev.out"
    "$root/scripts/dev" >>"$state/dev.out" 2>&1 &
    dev=$!
    for _ in $(seq 1 6000); do
        grep -q "The local stack is running" "$state/dev.out" 2>/dev/null && return 0
        if ! kill -0 "$dev" 2>/dev/null; then
            cat "$state/dev.out" >&2
            echo "scripts/dev failed" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "the stack did not start" >&2
    exit 1
}
# stop_stack: as Ctrl-C (TERM, not INT: a background job of a script ignores SIGINT).
stop_stack() {
    [[ -n "$dev" ]] || return 0
    kill -TERM "$dev" 2>/dev/null || true
    wait "$dev" 2>/dev/null || true
    dev=""
}
cleanup() {
    stop_stack
    rm -rf "$state"
}
trap cleanup EXIT
