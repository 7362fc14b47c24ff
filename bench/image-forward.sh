#!/usr/bin/env bash
# bench/image-forward.sh: TCP forwarding through the appliance image under qemu (TCG), with
# the benchmark policy and flow offload, against the same VM without a ruleset.
#
#   sudo image/build --test && sudo bench/image-forward.sh     (REPS=2, SECS=10)
#
# The test image boots (ELF kernel, 1 vCPU, TCG) with its two NICs on taps in the namespace
# bhb-<id>-vmh (and a third NIC without a peer for the uplink). Each tap is bridged there to a
# veth into its own namespace: cli (10.1.0.2, on the guest's eth0 = segment lan) and srv
# (10.2.0.2, iperf3 -s, on the guest's eth1 = segment srv). The guest's config is the
# bench/gen-policy.py policy (10,000 set elements, 200 rules; the iperf3 flow is allowed by
# the last rule) with lan0/srv0/up0 renamed eth0/eth1/eth2. Interleaved in the same VM:
#   offload    the policy as shipped ([system] flow_offload on: flowtable ft);
#   nooffload  the policy with [system] flow_offload = false;
#   none       no ruleset (`bulkhead run` stopped with SIGSTOP, `nft flush ruleset`; it is
#              continued and reloads the policy afterwards).
# DAEMON=stop (default): `bulkhead run` is stopped during every measurement, so the figures
# compare the forwarding paths alone; DAEMON=run leaves it running in the policy variants.
# The guest runs without a watchdog (image/run --watchdog none, bulkhead.watchdog=0, else the
# init falls back to softdog): a stopped
# `bulkhead run` no longer pets it, and the reset would end qemu (--no-reboot) mid-run.
# TCP: iperf3 -t SECS from cli to srv, Mbit/s received. Offloads (TSO/GSO/GRO) are off on
# the host's side, so that every packet crosses the guest's forwarding path.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need qemu-system-x86_64 qemu-system-x86
need iperf3 iperf3
OUT=${OUT:-$ROOT/image/out-test}
REPS=${REPS:-2}
SECS=${SECS:-10}
DAEMON=${DAEMON:-stop}
[ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio.gz" ] || die "missing $OUT/vmlinux: run image/build --test first"

python3 "$BENCH_DIR/gen-policy.py" | sed 's/"lan0"/"eth0"/; s/"srv0"/"eth1"/; s/"up0"/"eth2"/' > "$W/offload.toml"
sed '0,/^\[system\]$/s//[system]\nflow_offload = false/' "$W/offload.toml" > "$W/nooffload.toml"
grep -q '"eth0"' "$W/offload.toml" && grep -q '"eth2"' "$W/offload.toml" || die "policy: interface names not replaced"

ns_add vmh; ns_add cli; ns_add srv
TA="bhb${BHID}a" TB="bhb${BHID}b"
CON=$W/vm.console CTL=$W/vm.ctl; : > "$CON"
ip netns exec "$(nsname vmh)" "$ROOT/image/run" --out "$OUT" --mode elf --mem 512 --watchdog none --append bulkhead.watchdog=0 \
  --trunk "tap:$TA" --uplink "tap:$TB" --serial "file:$CON" --ctl "$CTL" --timeout 3600 --no-reboot \
  -- -netdev hubport,id=up3,hubid=9 -device virtio-net-pci,netdev=up3,mac=52:54:00:b4:00:03,addr=0x9,romfile= \
  > "$W/qemu.log" 2>&1 &
QPID=$!; BH_PIDS+=("$QPID")
g() { python3 "$ROOT/tests/vm/guestctl.py" --timeout "${GT:-120}" "$CTL" "$@"; }
for _ in $(seq 600); do grep -q '^bulkhead: ready' "$CON" && break
  kill -0 "$QPID" 2>/dev/null || { tail -20 "$CON" >&2; die "qemu exited"; }; sleep 0.2; done
grep -q '^bulkhead: ready' "$CON" || die "the guest did not get ready"
python3 "$ROOT/tests/vm/guestctl.py" --wait 120 "$CTL" true >/dev/null

# the host side: tap <-> bridge <-> veth into cli / srv
for x in "$TA cli 10.1.0.2 10.1.0.1" "$TB srv 10.2.0.2 10.2.0.1"; do
  set -- $x
  V=$(nsname vmh)
  ip -n "$V" link add "br$2" type bridge
  ip -n "$V" link set "$1" master "br$2"; ip -n "$V" link set "$1" up
  ip link add "bhb${BHID}$2" type veth peer name "bhb${BHID}$2p"
  ip link set "bhb${BHID}$2" netns "$V" name "v$2"; ip -n "$V" link set "v$2" master "br$2"
  ip link set "bhb${BHID}$2p" netns "$(nsname "$2")" name eth0
  ip -n "$V" link set "v$2" up; ip -n "$V" link set "br$2" up
  ip -n "$(nsname "$2")" link set eth0 up
  ip -n "$(nsname "$2")" addr add "$3/24" dev eth0
  ip -n "$(nsname "$2")" route add default via "$4"
  for d in "$1" "v$2" "br$2"; do ip netns exec "$V" ethtool -K "$d" tso off gso off gro off >/dev/null 2>&1 || true; done
  inns "$2" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1 || true
done

# setcfg NAME: the guest runs W/NAME.toml (SIGHUP) and its table is loaded
setcfg() {
  { echo "cat > /etc/bulkhead/bulkhead.toml <<'TOML'"; cat "$W/$1.toml"; echo TOML
    echo "bulkhead -c /etc/bulkhead/bulkhead.toml check"; } | GT=300 g - >&2 ||
    die "the guest did not take the $1 config"
  g 'kill -CONT $(cat /run/bulkhead/bulkhead.pid) 2>/dev/null; kill -HUP $(cat /run/bulkhead/bulkhead.pid)' >/dev/null
  local want=absent i out
  [ "$1" = offload ] && want=present
  for i in $(seq 300); do
    out=$(g 'nft list chain inet bulkhead forward 2>/dev/null | grep -c "rule:lan-srv-iperf"; nft list flowtables 2>/dev/null | grep -c "flowtable ft"' 2>/dev/null | tr -d '\r' | tr '\n' ' ') || true
    set -- $out
    if [ "${1:-0}" -ge 1 ]; then
      if [ "$want" = present ]; then [ "${2:-0}" -ge 1 ] && return 0; else [ "${2:-0}" = 0 ] && return 0; fi
    fi
    sleep 1
  done
  die "the guest did not load the $1 policy"
}
setnone() {
  g 'kill -STOP $(cat /run/bulkhead/bulkhead.pid); nft flush ruleset; nft list ruleset | grep -c "^table" || true' | grep -qx 0 ||
    die "the guest's ruleset is not empty"
}

inns srv iperf3 -s -D -I "$W/iperf3.pid" --logfile "$W/iperf3.log"
sleep 0.5; BH_PIDS+=("$(cat "$W/iperf3.pid")")
tcp() { inns cli iperf3 -c 10.2.0.2 -t "$SECS" -J > "$W/tcp.json"
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.0f" % (j["end"]["sum_received"]["bits_per_second"]/1e6))' "$W/tcp.json"; }
# packets counted by the forward chain's "builtin:established" rule (0 without the table)
estab() { g 'nft list chain inet bulkhead forward 2>/dev/null | sed -n "s/.*counter packets \([0-9]*\) .*builtin:established.*/\1/p"' 2>/dev/null | tr -d '\r' | head -1; }
# offload evidence for variant V (policy variants): the guest reads its conntrack entry of the
# iperf3 data connection half-way through the transfer (a background job writing to a file,
# so the control channel stays free), and the forward chain's established counter is read
# before and after: a flow in the flowtable no longer crosses the forward chain.
CT=${CT:-1}
tcp_ct() { local v=$1 e0 e1 mbit ct segs
  e0=$(estab)
  g "rm -f /tmp/ct.txt; (sleep $((SECS / 2)); grep 'dport=5201' /proc/net/nf_conntrack > /tmp/ct.txt 2>&1) </dev/null >/dev/null 2>&1 &" >/dev/null
  mbit=$(tcp); e1=$(estab)
  ct=$(g 'cat /tmp/ct.txt' 2>/dev/null | tr -d '\r')
  segs=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(int(j["end"]["sum_sent"]["bytes"]/1448))' "$W/tcp.json")
  {
    echo "$v: conntrack half-way through the transfer:"
    printf '%s\n' "$ct" | sed 's/^/    /'
    echo "$v: [OFFLOAD] entries: $(grep -c 'OFFLOAD' <<<"$ct" || true); forward chain established packets during the transfer: $(( ${e1:-0} - ${e0:-0} )) (iperf3 data segments sent: ~$segs)"
  } >> "$W/ct.log"
  tail -1 "$W/ct.log" >&2
  echo "$mbit"; }

declare -A R
for rep in $(seq "$REPS"); do
  for v in offload nooffload none; do
    case $v in none) setnone ;; *) setcfg "$v" ;; esac
    if [ "$v" = offload ]; then
      st=$(g 'bulkhead status 2>/dev/null | grep "^flow offload"' | tr -d '\r') || true
      log "guest status: $st"
    fi
    # DAEMON=stop (the default): bulkhead run is stopped (SIGSTOP) during every measurement,
    # so that its work on the guest's one CPU does not count against the policy variants
    [ "$DAEMON" = stop ] && g 'kill -STOP $(cat /run/bulkhead/bulkhead.pid)' >/dev/null
    if [ "$CT" = 1 ] && [ "$v" != none ]; then R[$v]+="$(tcp_ct "$v") "; else R[$v]+="$(tcp) "; fi
    log "run $rep $v: TCP Mbit/s ${R[$v]}"
  done
done
g 'kill -CONT $(cat /run/bulkhead/bulkhead.pid)' >/dev/null 2>&1 || true
g poweroff >/dev/null 2>&1 || true
for _ in $(seq 100); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done

med() { printf '%s\n' ${R[$1]} | median; }
rng() { printf '%s\n' ${R[$1]} | range; }
pct() { awk -v a="$(med "$1")" -v b="$(med "$2")" 'BEGIN{printf "%.0f %%", 100*a/b}'; }
echo "TCP forwarding through the appliance under qemu (TCG, 1 vCPU): $REPS runs of ${SECS}s each, DAEMON=$DAEMON"
printf '%-40s %s\n' "ruleset in the guest" "TCP Mbit/s"
for v in offload nooffload none; do printf '%-40s %s\n' "$v" "$(rng "$v")"; done
printf '%-40s %s\n' "offload / none (medians)" "$(pct offload none)  (goal >= 95 %)"
printf '%-40s %s\n' "nooffload / none (medians)" "$(pct nooffload none)"
printf '%-40s %s\n' "offload / nooffload (medians)" "$(pct offload nooffload)"
[ -f "$W/ct.log" ] && { echo "offload evidence per policy run (CT=1):"; cat "$W/ct.log"; }
