#!/usr/bin/env bash
# bench/firewall.sh: the cost of loading and changing the firewall.
#
#   sudo bench/firewall.sh            (REPS=3 runs of each; SETN=30 set changes per run)
#
# In one namespace (bhb-<id>-gw; lan0/srv0/up0 are veths with their peers in it), with the policy from
# bench/gen-policy.py (10,000 group elements, 200 rules):
#   1. cold load:   `bulkhead apply` into a fresh namespace and empty state dir, against
#                   `nft -f` of the text `bulkhead plan --only firewall` renders, into a
#                   fresh namespace;
#   2. replace:     `bulkhead apply` of a changed policy (one group member differs; the
#                   policies alternate) against `nft -f` of the same rendered text over the
#                   loaded table;
#   3. no-op apply: `bulkhead apply` of the unchanged policy (nothing to load), for reference;
#   4. one set change: `bulkhead set add GROUP ADDR` (no daemon: the CLI does it), the same
#                   through a running `bulkhead run` (control socket), and the raw
#                   `nft add element` - each followed by an untimed delete; and the CPU an
#                   idle `bulkhead run` spends with this policy loaded (IDLE seconds).
# Timings are taken inside the namespace (no `ip netns exec` in them). Prints the ratios.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = --inner ]; then
  # inner MODE ...: timing loops that run inside the namespace; print one figure (ms) a line
  shift
  mode=$1; shift
  t() { local a=$EPOCHREALTIME; "$@" >/dev/null; local b=$EPOCHREALTIME; awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f\n", (b-a)*1000}'; }
  case $mode in
    nft-f) t nft -f "$1" ;;
    breakdown) # the steps of a replace, one by one, with the policy loaded
      echo "list $(t nft list table inet bulkhead)"
      echo "check $(t nft -c -f "$1")"
      echo "load $(t nft -f "$1")"
      echo "parse $(t "$BULKHEAD" -c "$2" check)"
      echo "plan $(t "$BULKHEAD" -c "$2" plan --only firewall)" ;;
    apply) t "$BULKHEAD" -c "$1" --state-dir "$2" apply ;;
    setadd-cli|setadd-daemon|setadd-nft)
      cfg=$1 st=$2 n=$3
      for i in $(seq "$n"); do
        a="10.127.$((i / 250)).$((i % 250 + 1))"
        case $mode in
          setadd-nft) t nft add element inet bulkhead g000 "{ $a }" ;;
          *) t "$BULKHEAD" -c "$cfg" --state-dir "$st" set add g000 "$a"
             "$BULKHEAD" -c "$cfg" --state-dir "$st" set del g000 "$a" >/dev/null
             continue ;;
        esac
        nft delete element inet bulkhead g000 "{ $a }"
      done ;;
  esac
  trap - EXIT; rm -rf "$W"; exit 0
fi

need_root
need nft nftables
bulkhead_bin
export BULKHEAD
SETN=${SETN:-30} IDLE=${IDLE:-10}
ELEMENTS=${ELEMENTS:-10000} RULES=${RULES:-200}

python3 "$BENCH_DIR/gen-policy.py" --elements "$ELEMENTS" --rules "$RULES" > "$W/a.toml"
# policy B: the same with one member of g000 changed
sed '0,/"10.64.0.0"/s//"10.126.0.1"/' "$W/a.toml" > "$W/b.toml"
"$BULKHEAD" -c "$W/a.toml" check >&2
"$BULKHEAD" -c "$W/a.toml" plan --only firewall > "$W/a.nft"
"$BULKHEAD" -c "$W/b.toml" plan --only firewall > "$W/b.nft"
log "rendered firewall: $(wc -l < "$W/a.nft") lines, $(wc -c < "$W/a.nft") bytes"

gw_ns() { # fresh gateway namespace with the links the policy names
  ip netns del "$(nsname gw)" 2>/dev/null || true
  ns_add gw
  for l in lan0 srv0 up0; do ip -n "$(nsname gw)" link add "$l" type veth peer name "${l}p"; ip -n "$(nsname gw)" link set "$l" up; ip -n "$(nsname gw)" link set "${l}p" up; done
}
inner() { inns gw "$BASH" "$BENCH_DIR/firewall.sh" --inner "$@"; }
gw_ns; peer_text_as_applied gw "$W/a.nft" "$W/b.nft"

declare -A R
add() { R[$1]+="$2 "; }
for rep in $(seq "$REPS"); do
  log "run $rep/$REPS"
  # 1. cold
  gw_ns; add cold_nft "$(inner nft-f "$W/a.nft")"
  gw_ns; rm -rf "$W/st"; add cold_apply "$(inner apply "$W/a.toml" "$W/st")"
  # 2. replace (A loaded; load B, then A again)
  add repl_apply "$(inner apply "$W/b.toml" "$W/st")"
  add repl_apply "$(inner apply "$W/a.toml" "$W/st")"
  add repl_nft "$(inner nft-f "$W/b.nft")"
  add repl_nft "$(inner nft-f "$W/a.nft")"
  # where the time of a replace goes: each child command apply runs, alone
  while read -r k v; do add "bd_$k" "$v"; done < <(inner breakdown "$W/a.nft" "$W/a.toml")
  # 3. no-op: make the live table the applied one again, then apply the same file twice
  inner apply "$W/a.toml" "$W/st" >/dev/null
  add noop_apply "$(inner apply "$W/a.toml" "$W/st")"
  # 4. one set change
  add set_cli "$(inner setadd-cli "$W/a.toml" "$W/st" "$SETN" | median)"
  add set_nft "$(inner setadd-nft "$W/a.toml" "$W/st" "$SETN" | median)"
  bg_in gw "$BULKHEAD" -c "$W/a.toml" --state-dir "$W/st" run > "$W/run.log" 2>&1
  runpid=$BGPID
  for _ in $(seq 300); do [ -e "$W/st/ready" ] && break; sleep 0.1; done
  [ -e "$W/st/ready" ] || { cat "$W/run.log" >&2; die "bulkhead run did not get ready"; }
  # the idle supervisor's CPU (its own + its nft children's), over IDLE seconds
  sleep 2; c0=$(awk '{print $14+$15+$16+$17}' "/proc/$runpid/stat")
  sleep "$IDLE"; c1=$(awk '{print $14+$15+$16+$17}' "/proc/$runpid/stat")
  add idle_cpu "$(awk -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v s="$IDLE" 'BEGIN{printf "%.0f", 100*c/hz/s}')"
  add set_daemon "$(inner setadd-daemon "$W/a.toml" "$W/st" "$SETN" | median)"
  kill -TERM "$runpid"; wait "$runpid" 2>/dev/null || true
  rm -f "$W/st/ready"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
med() { printf '%s\n' ${R[$1]} | median; }
rng() { printf '%s\n' ${R[$1]} | range; }
echo "firewall benchmark: $ELEMENTS group elements, $RULES rules, $(wc -c < "$W/a.nft") bytes of nft text; $REPS runs (ms)"
printf '%-44s %s\n' \
  "cold load: nft -f" "$(rng cold_nft)" \
  "cold load: bulkhead apply" "$(rng cold_apply)" \
  "  ratio apply / nft -f (medians)" "$(ratio "$(med cold_apply)" "$(med cold_nft)")x  (goal <= 1.2x)" \
  "replace: nft -f" "$(rng repl_nft)" \
  "replace: bulkhead apply" "$(rng repl_apply)" \
  "  ratio apply / nft -f (medians)" "$(ratio "$(med repl_apply)" "$(med repl_nft)")x  (goal <= 1.2x)" \
  "no-op apply (unchanged policy)" "$(rng noop_apply)" \
  "steps of a replace, each alone:" "" \
  "  nft list table inet bulkhead (apply: 0x, netlink instead)" "$(rng bd_list)" \
  "  nft -c -f (apply: 0x, one nft -f is the check)" "$(rng bd_check)" \
  "  nft -f (apply: 1x)" "$(rng bd_load)" \
  "  bulkhead check (parse + plan the config)" "$(rng bd_parse)" \
  "  bulkhead plan --only firewall" "$(rng bd_plan)" \
  "set add: nft add element (median of $SETN)" "$(rng set_nft)" \
  "set add: bulkhead set add, no daemon" "$(rng set_cli)  (goal <= 5 ms)" \
  "set add: bulkhead set add via bulkhead run" "$(rng set_daemon)  (goal <= 5 ms)" \
  "  ratio set add (daemon) / nft add element" "$(ratio "$(med set_daemon)" "$(med set_nft)")x" \
  "idle bulkhead run with this policy, CPU %" "$(rng idle_cpu)  (of one core, incl. its nft children)"
