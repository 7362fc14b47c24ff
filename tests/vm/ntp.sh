#!/usr/bin/env bash
# tests/vm/ntp.sh: the clock, from far in the past to synced, and TLS log shipping across it.
#
# The test image boots (ELF, one boot) with its real-time clock at 2001-01-01 (qemu -rtc).
# On the host side of its uplink, a namespace holds a real chronyd NTP server (`local stratum
# 8`, `allow`; run with -x, so it never touches the host's clock) and a real rsyslog with a
# TLS input (client certificates required). The guest is switched to a copy of the shipped
# config with a static uplink, `[system] ntp = [the server]`, `gateway_egress = "dns"` and
# its log target moved to that rsyslog over TLS. Until the NTP server is started, every TLS
# handshake fails (the receiver's certificate is "not yet valid" in 2001): the shipper must
# keep retrying and spooling. Checks:
#   - before sync: nothing arrives, events are in the spool, `bulkhead status` says why;
#   - after the server starts: `bulkhead status` shows the clock synced with the server named
#     (time to first sync is reported), the guest's date is today's;
#   - every event logged before the sync (stamped 2001) arrives, among them the reloads
#     triggered before the sync;
#   - the firewall: NTP leaves through the output chain's ntp rule (its counter), an NTP
#     query to another host of the uplink is dropped (gateway_egress), nothing in the guest
#     listens on UDP 123, and from the management VLAN and another VLAN the gateway does not
#     answer NTP queries (it answers ping).
# the guest lives through the wait for the sync (bulkhead run nudges chronyd every 30 s): a longer hard limit
VM_TIMEOUT=${VM_TIMEOUT:-600}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require vmlinux initramfs.cpio.gz
for t in chronyd certtool rsyslogd; do
  command -v "$t" >/dev/null || { echo "tests/vm/ntp.sh needs $t on the host (chrony, gnutls-bin, rsyslog)" >&2; exit 2; }
done
CFG=$ROOT/overlay/etc/bulkhead/bulkhead.toml
SAVED=/var/lib/bulkhead/bulkhead.toml
SRV=198.18.80.1 OTHER=198.18.80.3 GW_UP=198.18.80.2
RELOADS=5

# the management segment and another VLAN segment of the shipped config (client: last host)
# shellcheck disable=SC2034  # MG_GW, OT_GW are read through ${!gw} below
read -r MG_VLAN MG_GW MG_CL MG_LEN OT_VLAN OT_GW OT_CL OT_LEN < <(python3 - "$CFG" <<'PY'
import ipaddress, sys, tomllib
segs = tomllib.load(open(sys.argv[1], "rb"))["segments"]
def pick(s):
    net = ipaddress.ip_network(s["subnet"])
    host = net.broadcast_address - 1
    if str(host) == s["gateway"]:
        host -= 1
    return [str(s["vlan"]), s["gateway"], str(host), str(net.prefixlen)]
mg = next(s for s in segs.values() if s.get("management"))
ot = next(s for s in segs.values() if not s.get("management") and "vlan" in s)
print(" ".join(pick(mg) + pick(ot)))
PY
)
[ -n "$OT_LEN" ] || { echo "could not read two VLAN segments from $CFG" >&2; exit 2; }

# the config under test
python3 - "$CFG" "$TMP/ntp.toml" "$SRV" "$GW_UP" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
srv, up = sys.argv[3], sys.argv[4]
def sub(pat, rep, flags=re.M):
    global text
    text, n = re.subn(pat, rep, text, count=1, flags=flags)
    if n != 1:
        sys.exit(f"shipped config: no match for {pat}")
sub(r'^(state_dir\s*=.*)$', rf'\1\nntp = ["{srv}"]\ngateway_egress = "dns"')
sub(r'^address = "dhcp"$', f'address = "{up}/24"\ngateway = "{srv}"')
sub(r'^\[\[logging\.targets\]\]\n.*?(?=^\[)', flags=re.M | re.S, rep=f'''[[logging.targets]]
name = "siem"
host = "{srv}"
port = 6514
transport = "tls"
format = "rfc5424"
ca_file = "/var/lib/bulkhead/tls/ca.pem"
cert_file = "/var/lib/bulkhead/tls/client.pem"
key_file = "/var/lib/bulkhead/tls/client.key"

''')
open(sys.argv[2], "w").write(text)
PY

# the PKI (valid from now: "not yet valid" for a guest in 2001)
pki() {
  local d=$TMP/pki; mkdir -p "$d"
  certtool --generate-privkey --key-type=rsa --bits=2048 --outfile "$d/ca.key"
  printf 'cn = "bulkhead test CA"\nca\ncert_signing_key\nexpiration_days = 2\n' > "$d/ca.tmpl"
  certtool --generate-self-signed --load-privkey "$d/ca.key" --template "$d/ca.tmpl" --outfile "$d/ca.pem"
  printf 'cn = "siem"\nip_address = "%s"\ntls_www_server\nsigning_key\nexpiration_days = 2\n' "$SRV" > "$d/server.tmpl"
  printf 'cn = "gateway"\ntls_www_client\nsigning_key\nexpiration_days = 2\n' > "$d/client.tmpl"
  for n in server client; do
    certtool --generate-privkey --key-type=rsa --bits=2048 --outfile "$d/$n.key"
    certtool --generate-certificate --load-privkey "$d/$n.key" --load-ca-certificate "$d/ca.pem" \
      --load-ca-privkey "$d/ca.key" --template "$d/$n.tmpl" --outfile "$d/$n.pem"
  done
}
pki > "$TMP/pki.log" 2>&1 || { cat "$TMP/pki.log"; notok "certtool"; finish; }

# the uplink's far side: NTP server (not started yet) and the TLS syslog receiver
NS_UP=bhn$BHID-up NS_MG=bhn$BHID-mg NS_OT=bhn$BHID-ot
netns_add "$NS_UP"; netns_add "$NS_MG"; netns_add "$NS_OT"
mkdir -p "$TMP/rsyslog"
cat > "$TMP/rsyslog/rsyslog.conf" <<EOF
global(workDirectory="$TMP/rsyslog"
       defaultNetstreamDriverCAFile="$TMP/pki/ca.pem"
       defaultNetstreamDriverCertFile="$TMP/pki/server.pem"
       defaultNetstreamDriverKeyFile="$TMP/pki/server.key"
       maxMessageSize="64k" net.enableDNS="off")
module(load="imtcp" maxSessions="20")
input(type="imtcp" address="$SRV" port="6514" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
ruleset(name="tls") { action(type="omfile" file="$TMP/tls.log" template="RSYSLOG_SyslogProtocol23Format") }
EOF
cat > "$TMP/chrony-server.conf" <<EOF
# the test's NTP server: this host's clock, served to the uplink; -x: never sets the clock
local stratum 8
allow 198.18.80.0/24
pidfile $TMP/chrony-server.pid
driftfile $TMP/chrony-server.drift
cmdport 0
bindcmdaddress /
EOF

# the two VLAN clients behind the tagging switch
python3 "$VM_DIR/vlanswitch.py" --sock "$TMP/sw.sock" --peer "$TMP/qemu.sock" \
  --port "$MG_VLAN:bhn${BHID}m:$NS_MG" --port "$OT_VLAN:bhn${BHID}o:$NS_OT" \
  --ready "$TMP/sw.ready" 2> "$TMP/switch.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -e "$TMP/sw.ready" ] && break; sleep 0.1; done
[ -e "$TMP/sw.ready" ] || { cat "$TMP/switch.log"; notok "the tagging switch did not start"; finish; }
ip -n "$NS_MG" addr add "$MG_CL/$MG_LEN" dev "bhn${BHID}m"
ip -n "$NS_OT" addr add "$OT_CL/$OT_LEN" dev "bhn${BHID}o"

UPTAP=bhn${BHID}u
start_vm vm --mode elf --trunk "dgram:$TMP/qemu.sock:$TMP/sw.sock" --uplink "tap:$UPTAP" --no-reboot \
  -- -rtc base=2001-01-01T00:00:00
for _ in $(seq 300); do ip link show "$UPTAP" >/dev/null 2>&1 && break; sleep 0.1; done
ip link set "$UPTAP" netns "$NS_UP"
ip -n "$NS_UP" link set "$UPTAP" up
ip -n "$NS_UP" addr add "$SRV/24" dev "$UPTAP"
ip -n "$NS_UP" addr add "$OTHER/24" dev "$UPTAP"
ip netns exec "$NS_UP" rsyslogd -n -f "$TMP/rsyslog/rsyslog.conf" -i "$TMP/rsyslog/pid" 2> "$TMP/rsyslog/err" &
PIDS+=($!)

wait_marker vm || { notok "boot"; finish; }
ok "booted in ${BOOT_SECS}s"
check "control channel answers" gwait vm
check "the guest's clock is in 2001" g vm '[ "$(date -u +%Y)" = 2001 ]'
check "bulkhead is ready on the shipped config" wait_console vm '^bulkhead: ready' 1 "$MARKER_TIMEOUT"

b64() { base64 -w0 "$1"; }
check "TLS files and the NTP + TLS config in place, bulkhead restarted on it" g vm "
  mkdir -p /var/lib/bulkhead/tls &&
  echo $(b64 "$TMP/pki/ca.pem") | base64 -d > /var/lib/bulkhead/tls/ca.pem &&
  echo $(b64 "$TMP/pki/client.pem") | base64 -d > /var/lib/bulkhead/tls/client.pem &&
  echo $(b64 "$TMP/pki/client.key") | base64 -d > /var/lib/bulkhead/tls/client.key &&
  echo $(b64 "$TMP/ntp.toml") | base64 -d > $SAVED.new && bulkhead -c $SAVED.new check && mv $SAVED.new $SAVED &&
  kill \$(cat /run/bulkhead/bulkhead.pid)"
check "ready on the saved config" wait_console vm '^bulkhead: ready' 2 "$MARKER_TIMEOUT"
gwait vm >/dev/null
# events before the clock is set: the start's own, and reloads
for _ in $(seq "$RELOADS"); do
  g vm 'kill -HUP $(cat /run/bulkhead/bulkhead.pid)' >/dev/null; sleep 1
done
sleep 3
g vm 'bulkhead status' > "$TMP/status.before" 2>&1 || true
sed -n '/^time:/p; /^log targets/,/^nflog/p' "$TMP/status.before" | sed 's/^/# before sync: /'
check "before sync: the clock is not synchronised" grep -q '^time:.*"synced":false' "$TMP/status.before"
check "before sync: nothing arrived at the receiver" bash -c "[ ! -s '$TMP/tls.log' ]"
SPOOLED=$(sed -n 's/^  siem .* in-spool \([0-9]*\) .*/\1/p' "$TMP/status.before")
check "before sync: events wait in the spool (${SPOOLED:-none})" bash -c "[ '${SPOOLED:-0}' -gt 0 ]"
check "before sync: the TLS error says the certificate is not valid yet" \
  grep -qiE '^  siem .*DISCONNECTED.*last error: .*(NotValidYet|not valid yet)' "$TMP/status.before"

# the NTP server starts: the guest syncs
ip netns exec "$NS_UP" chronyd -x -d -u root -f "$TMP/chrony-server.conf" > "$TMP/chrony-server.log" 2>&1 &
PIDS+=($!)
t0=$SECONDS
synced() {
  local t
  t=$(g vm 'bulkhead status' 2>/dev/null | grep '^time:') || return 1
  grep -q '"state":"synced"' <<<"$t" && grep -q "\"reference\":\"$SRV\"" <<<"$t"
}
# chronyd's first polls (iburst) went unanswered: it now polls every 64 s or more and needs
# a few answers before it selects the server and steps the clock
while [ $((SECONDS - t0)) -lt 300 ]; do synced && break; sleep 2; done
SYNC_SECS=$((SECONDS - t0))
check "bulkhead status: the clock synced with $SRV (${SYNC_SECS}s after the server started)" synced
g vm 'bulkhead status' 2>/dev/null | grep '^time:' | sed 's/^/# /'
check "the guest's date is today's" g vm "[ \"\$(date -u +%Y-%m-%d)\" = $(date -u +%Y-%m-%d) ]"

# what was logged in 2001 arrives
delivered() {
  local n r
  n=$(grep -c '^<[0-9]*>1 2001-' "$TMP/tls.log" 2>/dev/null || true)
  r=$(grep '^<[0-9]*>1 2001-' "$TMP/tls.log" 2>/dev/null | grep -c 'SIGHUP: reloading' || true)
  [ "${n:-0}" -ge "${SPOOLED:-1}" ] && [ "${r:-0}" -ge "$RELOADS" ]
}
for _ in $(seq 60); do delivered && break; sleep 1; done
N2001=$(grep -c '^<[0-9]*>1 2001-' "$TMP/tls.log" 2>/dev/null || true)
check "all ${SPOOLED:-?} spooled events arrived over TLS after the sync ($N2001 stamped 2001, $RELOADS reloads among them)" delivered
g vm 'bulkhead status' > "$TMP/status.after" 2>&1 || true
sed -n '/^  siem /p' "$TMP/status.after" | sed 's/^/# after sync: /'
check "after sync: the target is connected and its spool is empty" grep -qE '^  siem .* connected .* in-spool 0 ' "$TMP/status.after"

# the firewall: NTP out to the server only, no NTP service to the segments
check "NTP left through the output chain's ntp rule" g vm \
  "nft list chain inet bulkhead output | grep 'udp dport 123' | grep -q 'ip daddr $SRV' && nft list chain inet bulkhead output | grep 'udp dport 123' | grep -vq 'packets 0 '"
# one NTP query (chronyd -Q: measure only, never set the clock); exit 0 when answered
qconf() { printf 'server %s iburst\npidfile %s\ncmdport 0\nbindcmdaddress /\n' "$1" "$2"; }
g vm "echo $(qconf "$SRV" /tmp/q1.pid | base64 -w0) | base64 -d > /tmp/q1.conf &&
  echo $(qconf "$OTHER" /tmp/q2.pid | base64 -w0) | base64 -d > /tmp/q2.conf" >/dev/null
check "an NTP query from the gateway to the server is answered" g vm 'chronyd -Q -u root -t 8 -f /tmp/q1.conf'
check_fails "an NTP query from the gateway to another uplink host is dropped (gateway_egress)" g vm 'chronyd -Q -u root -t 6 -f /tmp/q2.conf'
check_fails "nothing in the guest listens on UDP 123" g vm "netstat -lun | grep -q ':123 '"
for v in MG OT; do
  ns=NS_$v gw=${v}_GW
  qconf "${!gw}" "$TMP/q-$v.pid" > "$TMP/q-$v.conf"
  check "VLAN ${v,,}: the gateway ${!gw} answers ping" ip netns exec "${!ns}" busybox ping -c 2 -W 2 "${!gw}"
  check_fails "VLAN ${v,,}: the gateway ${!gw} answers no NTP query" \
    ip netns exec "${!ns}" chronyd -Q -u root -t 6 -f "$TMP/q-$v.conf"
done
log "time to first sync: ${SYNC_SECS}s; events spooled before sync: ${SPOOLED:-?}; delivered stamped 2001: $N2001"
stop_vm vm
finish
