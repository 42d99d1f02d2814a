#!/usr/bin/env bash
# The Go clientv3 load program (benches/go/load/) against a real etcd and against `lessor
# serve`, in one run on this machine, one after the other (not at once: they would share the
# cores), each on a fresh data folder; then both side by side with lessor's ratio.
#
#   benches/go/run.sh                    # 2,000 calls per measure, 1 and 8 clients
#   OPS=5000 CLIENTS=1,8,32 benches/go/run.sh
#
# Needs etcd, go and Debian's golang-etcd-server-dev (clientv3 in GOPATH mode), and cargo.
# Both servers are durable: etcd fsyncs its WAL per commit, lessor serve runs with its default
# Durability::Immediate (an fsync per group of writes). DURABILITY=batched runs lessor with
# --durability batched (fsync within 10 ms) instead.
set -euo pipefail
cd "$(dirname "$0")/../.."

OPS="${OPS:-2000}"
CLIENTS="${CLIENTS:-1,8}"
EXPIRING="${EXPIRING:-500}"
DURABILITY="${DURABILITY:-immediate}"
ETCD_PORT="${ETCD_PORT:-23791}"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac

tmp="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "== building lessor (release) and the load program" >&2
cargo build --release -q -p lessor-cli
GOCACHE="$target/go-cache" GOPATH=/usr/share/gocode GO111MODULE=off \
    go build -o "$tmp/load" ./benches/go/load

echo "== etcd $(etcd --version | head -1 | awk '{print $3}') on 127.0.0.1:$ETCD_PORT" >&2
peer=$((ETCD_PORT + 1))
etcd --name bench --data-dir "$tmp/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" --logger=zap --log-level=warn \
    >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
pids+=("$etcd_pid")
for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$ETCD_PORT" endpoint health >/dev/null 2>&1 && break
    sleep 0.2
done
"$tmp/load" -endpoint "127.0.0.1:$ETCD_PORT" -server-pid "$etcd_pid" -ops "$OPS" -clients "$CLIENTS" -expiring "$EXPIRING" \
    >"$tmp/etcd.txt"
kill "$etcd_pid"

echo "== lessor serve (--durability $DURABILITY)" >&2
"$target/release/lessor" --db "$tmp/lessor.redb" serve --listen 127.0.0.1:0 \
    --durability "$DURABILITY" 2>"$tmp/serve.log" &
lessor_pid=$!
pids+=("$lessor_pid")
endpoint=""
for _ in $(seq 100); do
    endpoint="$(sed -n 's/^listening on //p' "$tmp/serve.log")"
    [ -n "$endpoint" ] && break
    sleep 0.1
done
[ -n "$endpoint" ] || { cat "$tmp/serve.log" >&2; exit 1; }
"$tmp/load" -endpoint "$endpoint" -server-pid "$lessor_pid" -ops "$OPS" -clients "$CLIENTS" -expiring "$EXPIRING" \
    >"$tmp/lessor.txt"
kill -TERM "$lessor_pid"

echo
# CPU time (user + system) per call, µs, of the load program (the client) and of the server.
fmt='%-16s %7s | %10s %9s %9s %6s %6s | %10s %9s %9s %6s %6s | %7s\n'
printf "$fmt" measure clients "etcd /s" "p50 µs" "p99 µs" "cli µs" "srv µs" \
    "lessor /s" "p50 µs" "p99 µs" "cli µs" "srv µs" ratio
paste -d' ' "$tmp/etcd.txt" "$tmp/lessor.txt" |
    while read -r name c _ _ erate ep50 ep99 ecli esrv _ _ _ _ lrate lp50 lp99 lcli lsrv; do
        if [ "$name" = expiry_lateness ]; then
            # Lateness: the rate column means nothing; the ratio is etcd's p99 over lessor's.
            ratio="$(awk -v a="$ep99" -v b="$lp99" 'BEGIN { printf "%.0fx", (b > 0 ? a / b : 0) }')"
            erate=- lrate=-
        else
            ratio="$(awk -v a="$lrate" -v b="$erate" 'BEGIN { printf "%.2fx", a / b }')"
        fi
        printf "$fmt" "$name" "$c" "$erate" "$ep50" "$ep99" "$ecli" "$esrv" \
            "$lrate" "$lp50" "$lp99" "$lcli" "$lsrv" "$ratio"
    done
