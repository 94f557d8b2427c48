#!/usr/bin/env bash
# Overload behaviour under a CPU-bound policy (README, Performance): Bulwark
# on a policy that burns milliseconds per Check, pinned to CPU 1, ghz pinned
# to CPU 0. Prints, for the given --max-in-flight: the unloaded latency, the
# sustainable (closed-loop) rate, then twice that rate: admitted and refused
# calls separately, RSS and goroutines before, after and 5 s after.
#
#   ./test/load/overload.sh [max-in-flight]     (default 1; needs ghz, taskset, curl, python3)
#
# RATE=410 fixes the overload rate instead of doubling the measured one, to
# compare builds or bounds at the same load.
set -euo pipefail
cd "$(dirname "$0")/../.."

BULWARK=${BULWARK:-./bin/bulwark}
GHZ=${GHZ:-ghz}
MAX_IN_FLIGHT=${1:-1}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/policy"
# The slowPolicy of test/e2e/overload_test.go.
cat >"$work/policy/slow.rego" <<'REGO'
package bulwark
import rego.v1
work := count([x | some x in numbers.range(1, 5000 + count(input.attributes.request.http.path)); x % 7 == 0])
decision := {"allowed": work > 0, "reason": "slow"}
REGO
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port) admin=$(free_port)
taskset -c 1 "$BULWARK" serve --grpc-addr "127.0.0.1:$port" --admin-addr "127.0.0.1:$admin" --grpc-reflection \
	--log-level warn --policy-dir "$work/policy" --max-in-flight "$MAX_IN_FLIGHT" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
ghz_run() { taskset -c 0 "$GHZ" --insecure --call envoy.service.auth.v3.Authorization/Check -D test/load/check.json "$@" "127.0.0.1:$port"; }
# Admitted (OK) and refused calls apart, from ghz's per-call details.
stats() { python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); d = r.get("details") or []
ok = sorted(x["latency"] / 1e6 for x in d if x.get("status") == "OK")
refused = sorted(x["latency"] / 1e6 for x in d if x.get("status") == "Unavailable")
other = len(d) - len(ok) - len(refused)
q = lambda a, p: a[min(len(a) - 1, int(len(a) * p))] if a else float("nan")
secs = r["total"] / 1e9
print(f"{sys.argv[2]:<20} admitted {len(ok) / secs:5.0f}/s p50 {q(ok, .5):7.2f} p99 {q(ok, .99):7.2f} ms | "
      f"refused {len(refused)} p50 {q(refused, .5):6.2f} p99 {q(refused, .99):6.2f} ms | other errors {other}")
PY
}
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$pid/status"; }
goroutines() { curl -s "127.0.0.1:$admin/metrics" | awk '/^go_goroutines / {print $2}'; }

echo "max-in-flight $MAX_IN_FLIGHT; $(nproc) cores, server on CPU 1, ghz on CPU 0"
ghz_run -c 4 -n 500 >/dev/null
echo "before: RSS $(rss), goroutines $(goroutines)"
ghz_run -c 2 --rps 40 -n 1200 -O json >"$work/unloaded.json"; stats "$work/unloaded.json" "unloaded 40/s"
ghz_run -c 4 -n 3000 -O json >"$work/closed.json"; stats "$work/closed.json" "closed loop c4"
rate=${RATE:-$(python3 -c "import json; print(2 * int(json.load(open('$work/closed.json'))['rps']))")}
ghz_run -c 128 --connections 4 --rps "$rate" -n $((rate * 20)) -O json >"$work/double.json"; stats "$work/double.json" "2x ($rate/s)"
echo "after: RSS $(rss), goroutines $(goroutines)"
sleep 5
echo "5 s later: RSS $(rss), goroutines $(goroutines)"
