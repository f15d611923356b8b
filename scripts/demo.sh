#!/usr/bin/env bash
# make demo: Bulwark's main job, end to end, on embedded defaults.
#
# attestd (embedded store, TPM-sealed vault, TLS) + a host TPM (managed swtpm)
# + launcher + a QEMU micro-VM (KVM where it works, else TCG). The demo signs
# a kernel, an initrd and an image, writes a policy from them, stores a
# secret, enrolls the host, runs the image, and checks that the workload saw
# exactly the stored secret, which crossed the host only HPKE-wrapped to the
# guest's key (the host's root is still trusted: docs/security.md). Then it
# shows a refused launch (an image re-signed by an unknown key) and cleans up.
#
# Everything lives in one scratch directory (DEMO_DIR, default a new temp
# dir) and is removed at the end unless DEMO_KEEP=1.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/lib.sh"
bin="$repo/bin"
for b in launcher attestd bulwark-agent; do
  [ -x "$bin/$b" ] || { echo "demo: $bin/$b missing: run 'make build' (make demo does)" >&2; exit 1; }
done

work=${DEMO_DIR:-$(mktemp -d /tmp/bulwark-demo.XXXXXX)}
mkdir -p "$work"
export BULWARK_STATE="$work/host-state"   # this demo's host: its own managed swtpm and launch log
export COSIGN_PASSWORD=demo-password       # the demo's signing keys are encrypted with this
step=0
say() { step=$((step + 1)); printf '\n\033[1m==> %d. %s\033[0m\n' "$step" "$*"; }
note() { printf '    %s\n' "$*"; }

attestd_pid=""
cleanup() {
  rc=$?
  if [ -n "$attestd_pid" ] && kill -0 "$attestd_pid" 2>/dev/null; then
    kill "$attestd_pid" 2>/dev/null || true
    wait "$attestd_pid" 2>/dev/null || true
  fi
  "$bin/launcher" tpm stop >/dev/null 2>&1 || true
  if [ "${DEMO_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "demo: files kept in $work (attestd log: $work/attestd.log)"
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

L() { "$bin/launcher" "$@"; }
A() { "$bin/attestd" "$@"; }

# A free loopback port for attestd.
port=$(free_port)
addr="127.0.0.1:$port"

say "The host TPM: a managed swtpm with an EK certificate (no /dev/tpmrm0 here)"
L tpm info | sed 's/^/    /'
ek_root="$BULWARK_STATE/swtpm/ca/swtpm-localca-rootca-cert.pem"
ek_int="$BULWARK_STATE/swtpm/ca/issuercert.pem"
if [ -e /dev/tpmrm0 ]; then
  note "this machine has /dev/tpmrm0: the demo uses it; attestd is given no EK CA for it, so allow-list it instead"
fi

say "Start attestd: TLS, embedded store, vault master key sealed to the TPM"
"$bin/attestd" serve --data "$work/attestd" --listen "$addr" --metrics-addr "" --log-format text \
  --tpm "swtpm:$BULWARK_STATE/swtpm" --ek-ca "$ek_root" --ek-ca "$ek_int" \
  >"$work/attestd.log" 2>&1 &
attestd_pid=$!
wait_attestd "$work/attestd.log" "$attestd_pid"
grep -E "^attestd:" "$work/attestd.log" | sed 's/^/    /'
ca="$work/attestd/tls/ca.crt"
A admin-cert --data "$work/attestd" --name demo-admin -o "$work/admin" >/dev/null
ctl() { A ctl --addr "$addr" --ca "$ca" --cert "$work/admin/demo-admin.crt" --key "$work/admin/demo-admin.key" "$@"; }
note "admin certificate issued: $work/admin/demo-admin.crt"

say "Create a cosign-compatible signing key"
L keygen --output-key-prefix "$work/cosign" | sed 's/^/    /'

say "Prepare the guest: the host kernel as a PVH vmlinux, and the base initramfs (agent + modules)"
L kernel extract -o "$work/vmlinux" | sed 's/^/    /'
L initrd build --agent "$bin/bulwark-agent" -o "$work/base.cpio" | sed 's/^/    /'

say "Build a small OCI image (busybox) whose workload prints a fingerprint of its secret"
L image build -o "$work/image" --ref demo:latest --busybox sh,echo,cat,sha256sum,cut,ls \
  --entrypoint /bin/sh --cmd -c \
  --cmd 'echo "workload: secrets in /run/secrets: $(ls /run/secrets)"; echo "workload: fingerprint $(sha256sum /run/secrets/db-password | cut -d" " -f1)"' \
  | sed 's/^/    /'

say "Sign kernel, initrd and image"
L sign --key "$work/cosign.key" "$work/vmlinux" | sed 's/^/    /'
L sign --key "$work/cosign.key" "$work/base.cpio" | sed 's/^/    /'
L sign --key "$work/cosign.key" --image "$work/image" --ref demo:latest | sed 's/^/    /'

say "Write the policy from the artifacts themselves (launcher policy init) and load it"
L policy init --kernel "$work/vmlinux" --initrd "$work/base.cpio" --image "$work/image" \
  --signer "$work/cosign.pub" --secret db-password --name demo -o "$work/attestd/policies/demo.yaml" 2>&1 | sed 's/^/    /'
L policy check "$work/attestd/policies/demo.yaml" | sed 's/^/    /'
ctl policies reload | sed 's/^/    /'

say "Store a secret in attestd's vault (the admin API, over mTLS)"
head -c 32 /dev/urandom | base64 >"$work/db-password"
ctl secret put db-password --from-file "$work/db-password" | sed 's/^/    /'
want=$(sha256sum "$work/db-password" | cut -d' ' -f1)
note "fingerprint of the stored secret: $want"

say "Enroll the host (EK certificate chain, AK proven with ActivateCredential)"
L enroll --attestd "$addr" --ca "$ca" | sed 's/^/    /'

say "Run the image: verify → measure → boot → record in PCR 13 → attest → release → run"
base_args=(--attestd "$addr" --ca "$ca" --policy demo --kernel "$work/vmlinux" --initrd "$work/base.cpio"
  --console "$work/console.log" -v)
run_args=("${base_args[@]}" --signer "$work/cosign.pub")
set +e
L run "${run_args[@]}" --template none --image "$work/image" --report "$work/run.json" >"$work/run.out" 2>"$work/run.err"
rc=$?
set -e
grep -E "^launcher:" "$work/run.err" | sed 's/^/    /'
sed 's/^/    /' "$work/run.out"
if [ $rc -ne 0 ]; then
  echo "demo: the launch failed (exit $rc):" >&2
  grep -v "level=DEBUG" "$work/run.err" | tail -20 >&2
  exit 1
fi
got=$(sed -n 's/^workload: fingerprint //p' "$work/run.out")
if [ "$got" != "$want" ]; then
  echo "demo: FAILED: the workload saw fingerprint '$got', the stored secret has '$want'" >&2
  exit 1
fi
accel=$(jq -r .accelerator "$work/run.json")
memory=$(jq -r '"QEMU \(.qemu_peak_rss_mib) MiB + launcher \(.launcher_peak_rss_mib) MiB (peak RSS)"' "$work/run.json")
note "OK: the workload read exactly the stored secret (fingerprints match); the launcher forwarded only HPKE ciphertext"
note "    (wrapped to the guest key in the attested event; root on this host is trusted: docs/security.md)"

say "Make a VM template of this recipe, and run the image again: a clone, with an identity of its own"
L template create --kernel "$work/vmlinux" --initrd "$work/base.cpio" --name demo --replace 2>&1 | grep -v "^launcher:" | sed 's/^/    /'
set +e
L run "${run_args[@]}" --image "$work/image" --report "$work/clone.json" >"$work/clone.out" 2>"$work/clone.err"
rc=$?
set -e
grep -E "^launcher: (cloning|resuming|workload running|sandbox)" "$work/clone.err" | sed 's/^/    /'
if [ $rc -ne 0 ] || [ "$(sed -n 's/^workload: fingerprint //p' "$work/clone.out")" != "$want" ] || [ "$(jq -r .template "$work/clone.json")" != demo ]; then
  echo "demo: FAILED: the clone launch (exit $rc):" >&2
  grep -v "level=DEBUG" "$work/clone.err" | tail -20 >&2
  exit 1
fi
cold_ms=$(jq -r .start_ms "$work/run.json")
clone_ms=$(jq -r .start_ms "$work/clone.json")
note "OK: the clone read the same secret; sandbox start to workload running (attestation included): cold boot ${cold_ms} ms, clone ${clone_ms} ms"

say "A refused launch: the same image re-signed by an unknown key"
COSIGN_PASSWORD=rogue L keygen --output-key-prefix "$work/rogue" >/dev/null
COSIGN_PASSWORD=rogue L sign --key "$work/rogue.key" --image "$work/image" --ref demo:latest >/dev/null
set +e
L run "${run_args[@]}" --image "$work/image" >"$work/refused1.out" 2>"$work/refused1.err"
rc1=$?
L run "${base_args[@]}" --image "$work/image" >"$work/refused2.out" 2>"$work/refused2.err"
rc2=$?
set -e
note "with --signer, the launcher's own check refuses before anything boots (exit $rc1):"
grep -E "^launcher run:|^  - " "$work/refused1.err" | sed 's/^/      /'
note "without --signer, attestd's policy refuses it at preflight, still before boot (exit $rc2):"
grep -E "^launcher run:|^  - " "$work/refused2.err" | sed 's/^/      /'
if [ $rc1 -eq 0 ] || [ $rc2 -eq 0 ] || [ -s "$work/refused1.out" ] || [ -s "$work/refused2.out" ]; then
  echo "demo: FAILED: a launch with an image signed by an unknown key was not refused" >&2
  exit 1
fi

say "The audit log: every verdict and release, hash-chained"
ctl audit verify | sed 's/^/    /'
ctl nodes | sed 's/^/    /'

printf '\n\033[1mSummary\033[0m\n'
echo "  attestd        $addr (TLS; vault sealed to the TPM; embedded store in $work/attestd)"
echo "  host TPM       managed swtpm ($BULWARK_STATE/swtpm)"
echo "  sandbox        QEMU microvm, accelerator: ${accel:-unknown}; memory: $memory"
echo "  allowed run    secret released wrapped to the attested guest key; fingerprint $want matched"
echo "  clone          from template demo: workload running in ${clone_ms} ms after the sandbox started, cold boot ${cold_ms} ms"
echo "  refused runs   image re-signed by an unknown key: refused before boot by the launcher's signer check (exit $rc1) and by attestd's policy (exit $rc2)"
echo "demo: OK"
