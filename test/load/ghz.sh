#!/usr/bin/env bash
# Drives real ext_authz servers with ghz at a fixed concurrency and prints, for
# each: requests/s, p50 and p99 latency, and the server's CPU time per Check
# (user+sys from /proc/<pid>/stat over the measured run, divided by the number
# of requests). The load generator shares the machine's cores, so requests/s
# is capped by the client; CPU per Check is the figure that compares servers.
#
# Servers: a no-op ext_authz server and ext_proc processor (the gRPC floors), Bulwark on its default
# policy with a real API key (identity + RBAC routes), and Bulwark on the
# OPA-Envoy-style RBAC policy in test/load/rbac (no identity stage).
# Set OPA_ENVOY=/path/to/opa-envoy-binary to add OPA-Envoy on the same policy.
set -euo pipefail
cd "$(dirname "$0")/../.."

BULWARK=${BULWARK:-./bin/bulwark}
GHZ=${GHZ:-ghz}
# GHZ_EXTRA adds ghz flags, e.g. "--rps 500" for an open-loop rate instead of
# a closed loop. PIN=1 runs each server on CPU 1 and ghz on CPU 0 (taskset),
# so the load generator does not take the server's core.
GHZ_EXTRA=${GHZ_EXTRA:-}
SERVER_PIN=""
GHZ_PIN=""
if [ -n "${PIN:-}" ]; then
	GHZ_PIN="taskset -c 0"
	SERVER_PIN="taskset -c 1"
fi
CONCURRENCY=${CONCURRENCY:-16}
REQUESTS=${REQUESTS:-50000}
WARMUP=${WARMUP:-3000}
TICKS=$(getconf CLK_TCK)
DATA=test/load/check.json
CALL=envoy.service.auth.v3.Authorization/Check
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # name pid addr [data [call]]
	local name=$1 pid=$2 addr=$3 data=${4:-$DATA} call=${5:-$CALL}
	$GHZ_PIN "$GHZ" --insecure --call "$call" -D "$data" -c "$CONCURRENCY" -n "$WARMUP" $GHZ_EXTRA "$addr" >/dev/null
	local before after
	before=$(cpu_ticks "$pid")
	$GHZ_PIN "$GHZ" --insecure --call "$call" -D "$data" -c "$CONCURRENCY" -n "$REQUESTS" $GHZ_EXTRA -O json "$addr" >"$work/$name.json"
	after=$(cpu_ticks "$pid")
	python3 - "$work/$name.json" "$name" "$before" "$after" "$TICKS" <<'PY'
import json, sys
path, name, before, after, ticks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r = json.load(open(path))
lat = {d["percentage"]: d["latency"] / 1e6 for d in r.get("latencyDistribution") or []}
n = r["count"]
errs = sum((r.get("errorDistribution") or {}).values())
cpu_us = (after - before) / ticks * 1e6 / n
print(f"{name:<22} {r['rps']:>9.0f} req/s   p50 {lat.get(50, 0):6.2f} ms   p99 {lat.get(99, 0):6.2f} ms   "
      f"CPU/call {cpu_us:6.1f} µs   errors {errs}")
PY
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_port() {
	for _ in $(seq 1 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
	echo "nothing listens on port $1" >&2; return 1
}

run_server() { # name port data cmd...   (CALL_OVERRIDE selects another RPC)
	local name=$1 port=$2 data=$3; shift 3
	$SERVER_PIN "$@" >"$work/$name.log" 2>&1 &
	local pid=$!
	wait_port "$port" || { cat "$work/$name.log" >&2; return 1; }
	measure "$name" "$pid" "127.0.0.1:$port" "$data" "${CALL_OVERRIDE:-$CALL}"
	kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "ghz: concurrency $CONCURRENCY, $REQUESTS requests after $WARMUP warm-up; $(nproc) cores shared with the load generator"
go build -o "$work/noop" ./test/load/noop
# The default policy needs a principal: a real API key, role user. Its
# per-principal rate (600/min) would turn nearly every request of a load test
# into a 429, so the copy used here raises it: the figure is the allow path.
mkdir -p "$work/policies" && cp -r policies/bulwark "$work/policies/"
sed -i 's/requests_per_minute: [0-9]*/requests_per_minute: 1000000000/; s/tokens_per_day: [0-9]*/tokens_per_day: 1000000000000/' "$work/policies/bulwark/data.yaml"
export BULWARK_KEY_PEPPER=bench-pepper-0123456789abcdef
key=$("$BULWARK" keys create --keys-file "$work/keys.yaml" --id bench --roles user --tenant acme 2>/dev/null)
python3 - "$DATA" "$work/check-key.json" "$key" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["attributes"]["request"]["http"]["headers"]["authorization"] = "Bearer " + sys.argv[3]
json.dump(d, open(sys.argv[2], "w"))
PY
p=$(free_port); run_server noop-floor "$p" "$DATA" "$work/noop" --addr "127.0.0.1:$p"
p=$(free_port); run_server bulwark-default-apikey "$p" "$work/check-key.json" "$BULWARK" serve --grpc-addr "127.0.0.1:$p" \
	--admin-addr 127.0.0.1:0 --grpc-reflection --log-level warn --keys-file "$work/keys.yaml" --policy-dir "$work/policies"
# ext_proc: one exchange's request phase (headers, then a 4 KiB chat body:
# identity, parse, detectors, two policy decisions), as a bidi stream of two
# messages, the way Envoy sends them.
head -c 32 /dev/urandom | base64 >"$work/metadata.key"
python3 - "$work/extproc.json" "$key" "$work/metadata.key" <<'PY'
import base64, hashlib, hmac, json, sys, time
words = "please summarise the quarterly report for the board and list the three main risks with a short mitigation for each of them".split()
text = ""
i = 0
while len(text) < 4096:
    text += words[i % len(words)] + " "; i += 1
body = json.dumps({"model": "gpt-4o", "messages": [{"role": "system", "content": "You are a helpful analyst."}, {"role": "user", "content": text}]}).encode()
b64 = lambda s: base64.b64encode(s.encode() if isinstance(s, str) else s).decode()
hdrs = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "api.example.com", ":scheme": "https",
        "authorization": "Bearer " + sys.argv[2], "content-type": "application/json", "content-length": str(len(body))}
msgs = [{"requestHeaders": {"headers": {"headers": [{"key": k, "rawValue": b64(v)} for k, v in hdrs.items()]}}},
        {"requestBody": {"body": b64(body), "endOfStream": True}}]
json.dump(msgs, open(sys.argv[1], "w"))
# Behind ext_authz (deploy/envoy): Envoy forwards ext_authz's decision as
# metadata, so ext_proc's request headers take the principal from it (once
# its seal verifies) and only the body is decided on. The seal is made here
# as ext_authz makes it (identity.Voucher), under the server's
# --metadata-key-file, valid for the whole run.
def uvarint(n):
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80]); n >>= 7
    return out + bytes([n])
def enc(s):
    s = s.encode(); return uvarint(len(s)) + s
md = {"decision_id": "bench-1", "principal_id": "bench", "principal_kind": "api_key", "tenant": "acme", "roles": ["user"]}
exp = int(time.time() * 1000) + 3600 * 1000
canon = b"".join(enc(x) for x in ["bulwark.authz.v1", md["decision_id"], md["principal_id"], md["principal_kind"], md["tenant"]])
canon += uvarint(len(md["roles"])) + b"".join(enc(r) for r in md["roles"]) + exp.to_bytes(8, "big")
key = open(sys.argv[3], "rb").read().strip()
md["expires_unix_ms"] = str(exp)
md["mac"] = base64.urlsafe_b64encode(hmac.new(key, canon, hashlib.sha256).digest()).decode().rstrip("=")
msgs[0]["metadataContext"] = {"filterMetadata": {"envoy.filters.http.ext_authz": md}}
json.dump(msgs, open(sys.argv[1].replace(".json", "-authz.json"), "w"))
PY
EXTPROC=envoy.service.ext_proc.v3.ExternalProcessor/Process
p=$(free_port); CALL_OVERRIDE=$EXTPROC run_server noop-extproc-floor "$p" "$work/extproc.json" "$work/noop" --addr "127.0.0.1:$p"
p=$(free_port); CALL_OVERRIDE=$EXTPROC run_server bulwark-extproc-4k "$p" "$work/extproc.json" \
	"$BULWARK" serve --grpc-addr "127.0.0.1:$p" --admin-addr 127.0.0.1:0 --grpc-reflection --log-level warn \
	--keys-file "$work/keys.yaml" --policy-dir "$work/policies"
p=$(free_port); CALL_OVERRIDE=$EXTPROC run_server bulwark-extproc-4k-authz "$p" "$work/extproc-authz.json" \
	"$BULWARK" serve --grpc-addr "127.0.0.1:$p" --admin-addr 127.0.0.1:0 --grpc-reflection --log-level warn \
	--metadata-key-file "$work/metadata.key" \
	--keys-file "$work/keys.yaml" --policy-dir "$work/policies"
p=$(free_port); run_server bulwark-rbac "$p" "$DATA" "$BULWARK" serve --grpc-addr "127.0.0.1:$p" --admin-addr 127.0.0.1:0 \
	--grpc-reflection --log-level warn --policy-dir test/load/rbac --policy-query envoy/authz/allow
# What a rate-limit check adds: the same RBAC decision with and without one
# limit, against a local redis-server (if installed) on a free port.
p=$(free_port); run_server bulwark-unlimited "$p" "$DATA" "$BULWARK" serve --grpc-addr "127.0.0.1:$p" --admin-addr 127.0.0.1:0 \
	--grpc-reflection --log-level warn --policy-dir test/load/limited --policy-query bulwark/unlimited
p=$(free_port); run_server bulwark-limit-local "$p" "$DATA" "$BULWARK" serve --grpc-addr "127.0.0.1:$p" --admin-addr 127.0.0.1:0 \
	--grpc-reflection --log-level warn --policy-dir test/load/limited --policy-query bulwark/limited
if command -v redis-server >/dev/null; then
	rp=$(free_port)
	redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
	redis_pid=$!
	wait_port "$rp"
	r_before=$(cpu_ticks "$redis_pid")
	p=$(free_port); run_server bulwark-limit-redis "$p" "$DATA" "$BULWARK" serve --grpc-addr "127.0.0.1:$p" --admin-addr 127.0.0.1:0 \
		--grpc-reflection --log-level warn --policy-dir test/load/limited --policy-query bulwark/limited --redis-url "redis://127.0.0.1:$rp"
	r_after=$(cpu_ticks "$redis_pid")
	python3 -c "import sys; print(f'{\"redis-server\":<22} CPU/Check {($r_after-$r_before)/$TICKS*1e6/($REQUESTS+$WARMUP):6.1f} µs (Redis side of bulwark-limit-redis)')"
	kill "$redis_pid"
fi
if [ -n "${OPA_ENVOY:-}" ]; then
	p=$(free_port); run_server opa-envoy-rbac "$p" "$DATA" "$OPA_ENVOY" run --server --addr 127.0.0.1:0 --log-level error \
		--set "plugins.envoy_ext_authz_grpc.addr=127.0.0.1:$p" --set plugins.envoy_ext_authz_grpc.path=envoy/authz/allow \
		--set decision_logs.console=false test/load/rbac
fi
