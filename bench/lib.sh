# bench/lib.sh: shared helpers of the benchmark scripts (source it; bash, root).
# Every namespace a script creates is named bhb-<id>-<what> and removed by the EXIT trap;
# every process it starts is recorded and killed by pid.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
BHID=${BHID:-$(printf '%04x' $((RANDOM)))}
W=$(mktemp -d "/tmp/bhb-$BHID.XXXX")
BH_NETNS=() BH_PIDS=()
REPS=${REPS:-3}

log() { printf '# %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

bh_cleanup() {
  local rc=$? p ns
  trap - EXIT INT TERM
  for p in "${BH_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${BH_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  for ns in "${BH_NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "files kept in $W"; else rm -rf "$W"; fi
  exit "$rc"
}
trap bh_cleanup EXIT
trap 'exit 130' INT TERM

need_root() { [ "$(id -u)" = 0 ] || die "benchmarks need root (network namespaces)"; }

# need CMD PACKAGE...: install the Debian packages when CMD is missing.
need() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  log "installing $* (for $cmd)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after installing $*"
}

# The release binary; built when missing (BULKHEAD=PATH overrides).
bulkhead_bin() {
  BULKHEAD=${BULKHEAD:-$ROOT/target/release/bulkhead}
  if [ ! -x "$BULKHEAD" ]; then
    log "building bulkhead (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet)
  fi
  [ -x "$BULKHEAD" ] || die "no bulkhead binary at $BULKHEAD"
}

# ns_add WHAT: create namespace bhb-$BHID-WHAT (lo up); prints its name.
ns_add() {
  local n="bhb-$BHID-$1"
  ip netns add "$n"
  BH_NETNS+=("$n")
  ip -n "$n" link set lo up
}
nsname() { printf 'bhb-%s-%s' "$BHID" "$1"; }
inns() { local n; n=$(nsname "$1"); shift; ip netns exec "$n" "$@"; }

# veth NS_A IF_A NS_B IF_B
veth() {
  ip link add "bhb$BHID$2" type veth peer name "bhb$BHID$4"
  ip link set "bhb$BHID$2" netns "$(nsname "$1")" name "$2"
  ip link set "bhb$BHID$4" netns "$(nsname "$3")" name "$4"
  ip -n "$(nsname "$1")" link set "$2" up
  ip -n "$(nsname "$3")" link set "$4" up
}

# now_ns: monotonic-ish wall clock in ns
now_ns() { date +%s%N; }
ms_since() { echo $(( ($(now_ns) - $1) / 1000000 )); }

# stats of numbers on stdin: "min–max (median M)"
range() {
  sort -g | awk '{a[NR]=$1} END{ if(NR==0){print "n/a"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%s–%s (median %s)\n", a[1], a[NR], m }'
}
median() { sort -g | awk '{a[NR]=$1} END{ m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m }'; }

# bg_in NS CMD...: start CMD in namespace NS in the background; BGPID is its pid (ip netns
# exec and taskset/env exec the command, so it is the server's own pid) and is recorded.
bg_in() {
  local n; n=$(nsname "$1"); shift
  ip netns exec "$n" "$@" &
  BGPID=$!
  BH_PIDS+=("$BGPID")
}

# dhcp_rig: the DHCP benchmarks' topology (the recipe's): namespaces dsrv and dcli joined by
# veth-srv (10.0.0.1/8) - veth-cli (10.0.0.2/8), and in dsrv an unused veth `up0` for the
# uplink a Bulkhead config needs.
dhcp_rig() {
  ns_add dsrv; ns_add dcli
  ip link add "bhb${BHID}s" type veth peer name "bhb${BHID}c"
  ip link set "bhb${BHID}s" netns "$(nsname dsrv)" name veth-srv
  ip link set "bhb${BHID}c" netns "$(nsname dcli)" name veth-cli
  ip -n "$(nsname dsrv)" addr add 10.0.0.1/8 dev veth-srv
  ip -n "$(nsname dcli)" addr add 10.0.0.2/8 dev veth-cli
  ip -n "$(nsname dsrv)" link set veth-srv up; ip -n "$(nsname dcli)" link set veth-cli up
  ip -n "$(nsname dsrv)" link add up0 type veth peer name up0p
  ip -n "$(nsname dsrv)" link set up0 up; ip -n "$(nsname dsrv)" link set up0p up
}

# kea_start DIR: Kea 2.2 (memfile lease file in DIR, multi-threading on, 2 threads) serving
# the DHCP rig's 10.0.0.0/8 on veth-srv, started in dsrv pinned to CPU 1; BGPID is its pid.
kea_start() {
  local dir=$1
  cat > "$dir.json" <<JSON
{"Dhcp4":{"interfaces-config":{"interfaces":["veth-srv"],"dhcp-socket-type":"udp"},
 "lease-database":{"type":"memfile","persist":true,"name":"$dir/kea-leases4.csv","lfc-interval":3600},
 "multi-threading":{"enable-multi-threading":true,"thread-pool-size":2,"packet-queue-size":16},
 "valid-lifetime":4000,"renew-timer":1000,"rebind-timer":2000,
 "subnet4":[{"id":1,"subnet":"10.0.0.0/8","pools":[{"pool":"10.1.0.0 - 10.254.255.254"}]}],
 "loggers":[{"name":"kea-dhcp4","output_options":[{"output":"$dir/kea-dhcp4.log"}],"severity":"WARN"}]}}
JSON
  bg_in dsrv env KEA_PIDFILE_DIR="$dir" KEA_LOCKFILE_DIR="$dir" taskset -c 1 kea-dhcp4 -c "$dir.json" > "$dir.log" 2>&1
}

# Where the kernel holds no flowtable (no nf_flow_table), `bulkhead apply` loads the table
# without its flowtable `ft` and the rule that adds flows to it: give the peer (`nft -f`) the
# same text. Args: NS (a namespace of this run) FILE... (the first one is probed)
peer_text_as_applied() {
  local ns=$1 f; shift
  inns "$ns" nft -c -f "$1" 2>/dev/null && return 0
  for f in "$@"; do
    awk '/^\tflowtable ft \{/ { skip = 1 } skip { if ($0 ~ /^\t\}/) skip = 0; next } /flow add @ft/ { next } { print }' \
      "$f" > "$f.noft" && mv "$f.noft" "$f"
  done
  log "this kernel holds no flowtable: nft -f loads the rendered text without flowtable ft, as apply does"
  inns "$ns" nft -c -f "$1" >&2 || die "nft -c -f of the rendered text without the flowtable failed"
}
