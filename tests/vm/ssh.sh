#!/usr/bin/env bash
# tests/vm/ssh.sh: SSH listens where the config says and the init keeps it running.
#
# The test image boots with the shipped config; a tagging switch hands the management VLAN
# and one other VLAN of its trunk to two client namespaces. The guest is then switched to a
# copy of the shipped config with `ssh_port = 2222` (saved as /var/lib/bulkhead/bulkhead.toml,
# `bulkhead run` restarted on it). Checks: dropbear moves to MGMT_ADDR:2222 and nothing
# listens on port 22; an SSH banner answers from the management VLAN on 2222 and not on 22;
# `kill -9` of dropbear in the guest: the init starts it again (and backs off on a second
# kill); the saved config edited to 2223 and reloaded (SIGHUP): dropbear and the firewall
# follow; from the other VLAN neither the management address nor that VLAN's gateway answers
# on 2223 or 22. Addresses and VLAN ids are read from the shipped config.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require vmlinux initramfs.cpio.gz
CFG=$ROOT/overlay/etc/bulkhead/bulkhead.toml
PORT=2222

# management segment and the first other VLAN segment of the shipped config; a client
# address in each: the subnet's last host (not the gateway)
read -r MG_VLAN MG_GW MG_CL MG_LEN OT_NAME OT_VLAN OT_GW OT_CL OT_LEN < <(python3 - "$CFG" <<'PY'
import ipaddress, sys, tomllib
segs = tomllib.load(open(sys.argv[1], "rb"))["segments"]
def pick(name, s):
    net = ipaddress.ip_network(s["subnet"])
    host = net.broadcast_address - 1
    if str(host) == s["gateway"]:
        host -= 1
    return [str(s["vlan"]), s["gateway"], str(host), str(net.prefixlen)]
mg = next((n, s) for n, s in segs.items() if s.get("management"))
ot = next((n, s) for n, s in segs.items() if not s.get("management") and "vlan" in s)
print(" ".join(pick(*mg)[:] + [ot[0]] + pick(*ot)))
PY
)
[ -n "$OT_LEN" ] || { echo "could not read the management and another VLAN segment from $CFG" >&2; exit 2; }
log "management VLAN $MG_VLAN gateway $MG_GW (client $MG_CL); $OT_NAME VLAN $OT_VLAN gateway $OT_GW (client $OT_CL)"

# the config under test: the shipped one with ssh_port = 2222
python3 - "$CFG" "$TMP/ssh.toml" "$PORT" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
new, n = re.subn(r"(?m)^ssh_port\s*=.*$", f"ssh_port = {sys.argv[3]}", text)
if n != 1:
    sys.exit(f"{sys.argv[1]}: expected one ssh_port line, found {n}")
open(sys.argv[2], "w").write(new)
PY

# two client namespaces behind the tagging switch
NS_MG=bhs$BHID-mg NS_OT=bhs$BHID-ot
netns_add "$NS_MG"; netns_add "$NS_OT"
python3 "$VM_DIR/vlanswitch.py" --sock "$TMP/sw.sock" --peer "$TMP/qemu.sock" \
  --port "$MG_VLAN:bhs${BHID}m:$NS_MG" --port "$OT_VLAN:bhs${BHID}o:$NS_OT" \
  --ready "$TMP/sw.ready" 2> "$TMP/switch.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -e "$TMP/sw.ready" ] && break; sleep 0.1; done
[ -e "$TMP/sw.ready" ] || { cat "$TMP/switch.log"; notok "the tagging switch did not start"; finish; }
ip -n "$NS_MG" addr add "$MG_CL/$MG_LEN" dev "bhs${BHID}m"
ip -n "$NS_MG" route add default via "$MG_GW"
ip -n "$NS_OT" addr add "$OT_CL/$OT_LEN" dev "bhs${BHID}o"
ip -n "$NS_OT" route add default via "$OT_GW"

# banner NS ADDR PORT: an SSH server answers there (its banner within 10 s)
banner() {
  ip netns exec "$1" python3 - "$2" "$3" <<'PY'
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.settimeout(10)
    b = s.recv(64)
except OSError as e:
    sys.exit(f"{sys.argv[1]}:{sys.argv[2]}: {e}")
print(b.decode(errors="replace").strip())
sys.exit(0 if b.startswith(b"SSH-2.0-") else 1)
PY
}

start_vm vm --mode elf --trunk "dgram:$TMP/qemu.sock:$TMP/sw.sock" --no-reboot
wait_marker vm || { notok "boot"; finish; }
ok "booted in ${BOOT_SECS}s"
check "control channel answers" gwait vm
check "bulkhead is ready on the shipped config" g vm \
  'for i in $(seq 600); do [ -e /var/lib/bulkhead/ready ] && break; sleep 0.1; done; [ -e /var/lib/bulkhead/ready ]'

# the config with ssh_port = 2222 becomes the one in effect
b64=$(base64 -w0 "$TMP/ssh.toml")
check "the config with ssh_port = $PORT is saved and bulkhead restarted on it" g vm "
  echo $b64 | base64 -d > /var/lib/bulkhead/bulkhead.toml.new &&
  bulkhead -c /var/lib/bulkhead/bulkhead.toml.new check &&
  mv /var/lib/bulkhead/bulkhead.toml.new /var/lib/bulkhead/bulkhead.toml &&
  kill \$(cat /run/bulkhead/bulkhead.pid)"
check "bulkhead runs the saved config" wait_console vm \
  'starting: bulkhead run --config /var/lib/bulkhead/bulkhead.toml' 1 60
check "dropbear listens on $MG_GW:$PORT and nothing listens on port 22" g vm "
  for i in \$(seq 600); do netstat -ltn | grep -q ' $MG_GW:$PORT ' && break; sleep 0.1; done
  netstat -ltn | grep ' $MG_GW:$PORT ' && ! netstat -ltn | grep -E ':22 '"
check "the init logged dropbear's move to $MG_GW:$PORT" grep -q "dropbear listening on $MG_GW:$PORT " "$TMP/vm.console"
check "SSH answers from the management VLAN on $MG_GW:$PORT" banner "$NS_MG" "$MG_GW" "$PORT"
check_fails "nothing answers from the management VLAN on $MG_GW:22" banner "$NS_MG" "$MG_GW" 22

# kill -9: the init starts it again
P1=$(g vm 'cat /run/dropbear.pid' | tr -dc 0-9)
check "dropbear is killed with SIGKILL (pid ${P1:-?})" g vm "[ -n '$P1' ] && kill -9 $P1"
back_again() {  # OLDPID: a new dropbear listens on the port; prints how long that took in the guest
  g vm "t0=\$(cut -d' ' -f1 /proc/uptime)
    for i in \$(seq 300); do
      p=\$(cat /run/dropbear.pid 2>/dev/null)
      [ -n \"\$p\" ] && [ \"\$p\" != $1 ] && kill -0 \$p 2>/dev/null && netstat -ltn | grep -q ' $MG_GW:$PORT ' && break
      sleep 0.1
    done
    t1=\$(cut -d' ' -f1 /proc/uptime)
    echo \"dropbear back as pid \$p after \$(awk -v a=\$t0 -v b=\$t1 'BEGIN{printf \"%.1f\", b-a}') s (guest clock)\"
    [ \"\$p\" != $1 ] && kill -0 \$p && netstat -ltn | grep -q ' $MG_GW:$PORT '"
}
if back_again "$P1" > "$TMP/back1" 2>&1; then ok "$(cat "$TMP/back1")"; else notok "dropbear not back after kill -9"; sed 's/^/    /' "$TMP/back1"; fi
check "the init logged the exit and a restart after 1 s" grep -q "dropbear (pid $P1) exited with status 137 after [0-9]*s; restarting in 1s" "$TMP/vm.console"
check "SSH answers again from the management VLAN" banner "$NS_MG" "$MG_GW" "$PORT"
P2=$(g vm 'cat /run/dropbear.pid' | tr -dc 0-9)
check "a second kill -9 (pid ${P2:-?}) right away" g vm "[ -n '$P2' ] && kill -9 $P2"
if back_again "$P2" > "$TMP/back2" 2>&1; then ok "$(cat "$TMP/back2")"; else notok "dropbear not back after the second kill -9"; sed 's/^/    /' "$TMP/back2"; fi
check "the second restart backed off to 2 s" grep -q "dropbear (pid $P2) exited with status 137 after [0-9]*s; restarting in 2s" "$TMP/vm.console"

# a reload (SIGHUP) of an edited config moves SSH to the new port, firewall and dropbear alike
P3=$((PORT + 1))
check "the saved config is edited to ssh_port = $P3 and bulkhead reloads it (SIGHUP)" g vm "
  sed -i 's/^ssh_port = $PORT\$/ssh_port = $P3/' /var/lib/bulkhead/bulkhead.toml &&
  grep -qx 'ssh_port = $P3' /var/lib/bulkhead/bulkhead.toml &&
  kill -HUP \$(cat /run/bulkhead/bulkhead.pid)"
check "dropbear follows to $MG_GW:$P3 and leaves $PORT" g vm "
  for i in \$(seq 600); do netstat -ltn | grep -q ' $MG_GW:$P3 ' && break; sleep 0.1; done
  netstat -ltn | grep ' $MG_GW:$P3 ' && ! netstat -ltn | grep -E ':($PORT|22) '"
check "SSH answers from the management VLAN on $MG_GW:$P3 after the reload" banner "$NS_MG" "$MG_GW" "$P3"
check_fails "nothing answers on $MG_GW:$PORT any more" banner "$NS_MG" "$MG_GW" "$PORT"

# not from another VLAN
check "the $OT_NAME VLAN reaches the gateway (the guest pings its client)" g vm "ping -c1 -W5 $OT_CL"
for a in "$MG_GW" "$OT_GW"; do
  for p in "$P3" 22; do
    check_fails "no SSH from the $OT_NAME VLAN to $a:$p" banner "$NS_OT" "$a" "$p"
  done
done
stop_vm vm
check "poweroff stopped dropbear through the init" grep -q 'shutting down (poweroff)' "$TMP/vm.console"
finish
