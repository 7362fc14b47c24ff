#!/usr/bin/env bash
# tests/vm/backup.sh: `bulkhead backup` on one box, `bulkhead restore` on a fresh one gives the
# same plan. Two guests of the test image (ELF boot, each with its own copy of disk.img for
# the data partition) run side by side:
#   one: a non-default config (saved, running), an admin key; `bulkhead backup -o` (mode 0600,
#        no private TLS key without --with-secrets: the config gets a TLS log target whose
#        key file exists);
#   two: a copy of the archive whose config does not validate is refused (exit 2, the
#        finding with the archive's name, nothing changed); the real archive is restored and
#        confirmed: `bulkhead plan` of the restored config is byte-identical to one's, and so
#        are the admin keys and the SSH host key.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require vmlinux initramfs.cpio.gz disk.img
CFG=$ROOT/overlay/etc/bulkhead/bulkhead.toml
SAVED=/var/lib/bulkhead/bulkhead.toml
# the non-default config: another hostname and a TLS log target (its key must stay out)
python3 - "$CFG" "$TMP/custom.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
new, n = re.subn(r'(?m)^hostname\s*=.*$', 'hostname = "bh-backup-test"', text, count=1)
if n != 1:
    sys.exit("no hostname line in the shipped config")
new += '''
[[logging.targets]]
name = "siem-tls"
host = "198.51.100.7"
port = 6514
transport = "tls"
ca_file = "/var/lib/bulkhead/tls/ca.pem"
cert_file = "/var/lib/bulkhead/tls/client.pem"
key_file = "/var/lib/bulkhead/tls/client.key"
'''
open(sys.argv[2], "w").write(new)
PY
cp --sparse=always "$OUT/disk.img" "$TMP/one.img"
cp --sparse=always "$OUT/disk.img" "$TMP/two.img"
start_vm one --mode elf --disk "$TMP/one.img" --no-reboot
start_vm two --mode elf --disk "$TMP/two.img" --no-reboot
check "one is ready" wait_console one '^bulkhead: ready' 1 "$MARKER_TIMEOUT"
check "two is ready" wait_console two '^bulkhead: ready' 1 "$MARKER_TIMEOUT"
gwait one >/dev/null; gwait two >/dev/null

b64=$(base64 -w0 "$TMP/custom.toml")
check "one: TLS files and the non-default config in place, bulkhead restarted on it" g one "
  mkdir -p /var/lib/bulkhead/tls && for f in ca.pem client.pem client.key; do echo \"test \$f\" > /var/lib/bulkhead/tls/\$f; done &&
  echo $b64 | base64 -d > $SAVED.new && bulkhead -c $SAVED.new check && mv $SAVED.new $SAVED &&
  echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBackupTestKeyBackupTestKeyBackupTestKey0 admin@test' > /var/lib/bulkhead/authorized_keys &&
  kill \$(cat /run/bulkhead/bulkhead.pid)"
check "one is ready on the saved config" wait_console one '^bulkhead: ready' 2 "$MARKER_TIMEOUT"
check "one: bulkhead backup -o /tmp/one.tgz" g one 'bulkhead backup -o /tmp/one.tgz'
check "the archive is mode 0600" g one '[ "$(stat -c %a /tmp/one.tgz)" = 600 ]'
g one 'tar -tzf /tmp/one.tgz' > "$TMP/list" || true
sed 's/^/# /' "$TMP/list"
check "the archive has the config, the admin keys, the SSH host keys, the TLS CA and certificate" bash -c "
  grep -q 'bulkhead-backup/bulkhead.toml' '$TMP/list' && grep -q 'bulkhead-backup/authorized_keys' '$TMP/list' &&
  grep -q 'bulkhead-backup/ssh/dropbear_ed25519_host_key' '$TMP/list' && grep -q 'tls/siem-tls.ca.pem' '$TMP/list' &&
  grep -q 'tls/siem-tls.cert.pem' '$TMP/list'"
check_fails "the private TLS key is not in it (no --with-secrets)" grep -q 'siem-tls.key' "$TMP/list"
g one "bulkhead -c $SAVED plan" > "$TMP/plan.one" || true
g one 'base64 /tmp/one.tgz' | base64 -d > "$TMP/one.tgz" || true
g one 'cat /var/lib/bulkhead/authorized_keys; sha256sum /var/lib/bulkhead/ssh/dropbear_ed25519_host_key | cut -c1-64' > "$TMP/keys.one" || true
check "the archive reached the host" tar -tzf "$TMP/one.tgz"

# a copy whose config does not validate
mkdir -p "$TMP/bad" && tar -xzf "$TMP/one.tgz" -C "$TMP/bad"
sed -i 's/^backend = .*/backend = "pf"/' "$TMP/bad/bulkhead-backup/bulkhead.toml"
tar -czf "$TMP/bad.tgz" -C "$TMP/bad" bulkhead-backup
for n in one bad; do
  b=$(base64 -w0 "$TMP/$n.tgz")
  check "the $n archive copied to two" g two "echo $b | base64 -d > /tmp/$n.tgz"
done
g two 'sha256sum /var/lib/bulkhead/ssh/dropbear_ed25519_host_key' > "$TMP/two.key.before" || true
rc=0; g two "bulkhead restore /tmp/bad.tgz" > "$TMP/bad.out" 2>&1 || rc=$?
sed 's/^/# /' "$TMP/bad.out"
check "two: the archive with an invalid config is refused (exit 2, the finding names the archive)" bash -c "
  [ $rc = 2 ] && grep -q '/tmp/bad.tgz:bulkhead-backup/bulkhead.toml:[0-9]*:[0-9]*: ' '$TMP/bad.out' && grep -q 'nothing was changed' '$TMP/bad.out'"
g two 'sha256sum /var/lib/bulkhead/ssh/dropbear_ed25519_host_key' > "$TMP/two.key.after" || true
check "two: the SSH host key did not change" cmp "$TMP/two.key.before" "$TMP/two.key.after"
check "two: no config was saved" g two "! test -e $SAVED"
check "two: bulkhead restore /tmp/one.tgz applies with commit-confirm" g two 'bulkhead restore /tmp/one.tgz --confirm-within 300s'
check "two: bulkhead confirm" g two 'bulkhead confirm'
check "two: the restored config is saved" g two "for i in \$(seq 50); do test -e $SAVED && break; sleep 0.2; done; test -e $SAVED"
g two "bulkhead -c $SAVED plan" > "$TMP/plan.two" || true
check "bulkhead plan on two is byte-identical to one's ($(wc -l < "$TMP/plan.one") lines)" cmp "$TMP/plan.one" "$TMP/plan.two"
g two 'cat /var/lib/bulkhead/authorized_keys; sha256sum /var/lib/bulkhead/ssh/dropbear_ed25519_host_key | cut -c1-64' > "$TMP/keys.two" || true
check "two has one's admin keys and SSH host key" cmp "$TMP/keys.one" "$TMP/keys.two"
check_fails "two did not get the private TLS key" g two 'test -e /var/lib/bulkhead/tls/client.key'
stop_vm one; stop_vm two
finish
