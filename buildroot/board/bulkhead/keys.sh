# Sourced by post-build.sh and post-image.sh: the bundle signing pair and the keyring the
# image trusts, handled like image/build does: RAUC_CERT / RAUC_KEY / RAUC_KEYRING from the
# environment, else the development pair in image/keys/ (made on first use, for tests only;
# docs/upgrade.md says how to use your own keys).
KEYS=${BR2_EXTERNAL_BULKHEAD_PATH:?}/../image/keys
RAUC_CERT=${RAUC_CERT:-$KEYS/dev.cert.pem}
RAUC_KEY=${RAUC_KEY:-$KEYS/dev.key.pem}
if [ "$RAUC_CERT" = "$KEYS/dev.cert.pem" ] && [ ! -s "$RAUC_CERT" ]; then
  command -v openssl >/dev/null || { echo "bulkhead: openssl is needed to make the development signing key" >&2; exit 1; }
  mkdir -p "$KEYS"
  echo "bulkhead: making the development bundle signing key in $KEYS (do not use it for real boxes)" >&2
  openssl req -x509 -newkey rsa:3072 -nodes -days 36500 -subj "/O=Bulkhead/CN=Bulkhead development signing key" \
    -keyout "$RAUC_KEY" -out "$RAUC_CERT" 2>/dev/null || { echo "bulkhead: openssl req failed" >&2; exit 1; }
  chmod 600 "$RAUC_KEY"
fi
RAUC_KEYRING=${RAUC_KEYRING:-$RAUC_CERT}
[ -s "$RAUC_KEYRING" ] || { echo "bulkhead: no keyring $RAUC_KEYRING (RAUC_KEYRING)" >&2; exit 1; }
export RAUC_CERT RAUC_KEY RAUC_KEYRING
