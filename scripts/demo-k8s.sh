#!/usr/bin/env bash
# make demo-k8s: a pod started the way Kubernetes starts one — through
# containerd's CRI (crictl, as the kubelet would), runtime handler
# "bulwark" — runs in a measured, attested VM and receives its secret.
#
# attestd + a host TPM (managed swtpm) + the host service (launcher daemon)
# + containerd 2.x with containerd-shim-bulwark-v2 + crictl, all under one
# scratch directory (DEMO_DIR, default a new temp dir; removed at the end
# unless DEMO_KEEP=1). Then a pod whose image is signed by an unknown key is
# refused with attestd's reasons, and nothing of it runs.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/lib.sh"
bin="$repo/bin"
for b in launcher attestd bulwark-agent containerd-shim-bulwark-v2; do
  [ -x "$bin/$b" ] || { echo "demo-k8s: $bin/$b missing: run 'make build' (make demo-k8s does)" >&2; exit 1; }
done
export PATH="$bin:$PATH:$(go env GOPATH 2>/dev/null || echo /root/go)/bin"
for t in containerd ctr crictl; do
  command -v "$t" >/dev/null || { echo "demo-k8s: $t not found: run 'make tools' (scripts/install-containerd.sh)" >&2; exit 1; }
done

work=${DEMO_DIR:-$(mktemp -d /tmp/bulwark-demo-k8s.XXXXXX)}
mkdir -p "$work"
export BULWARK_STATE="$work/host-state"
export COSIGN_PASSWORD=demo-password
step=0
say() { step=$((step + 1)); printf '\n\033[1m==> %d. %s\033[0m\n' "$step" "$*"; }
note() { printf '    %s\n' "$*"; }

pids=()
cleanup() {
  rc=$?
  if [ -n "${cri:-}" ] && [ -S "$cri" ]; then
    for p in $(crictl --runtime-endpoint "unix://$cri" pods -q 2>/dev/null); do
      crictl --runtime-endpoint "unix://$cri" stopp "$p" >/dev/null 2>&1 || true
      crictl --runtime-endpoint "unix://$cri" rmp "$p" >/dev/null 2>&1 || true
    done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do # containerd, the daemon, attestd
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  "$bin/launcher" tpm stop >/dev/null 2>&1 || true
  if [ "${DEMO_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "demo-k8s: files kept in $work (logs: $work/*.log)"
  else
    rm -rf "$work"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

L() { "$bin/launcher" "$@"; }
A() { "$bin/attestd" "$@"; }
# wait_for WHAT SECONDS CMD...: runs CMD until it succeeds.
wait_for() {
  local what=$1 secs=$2
  shift 2
  for _ in $(seq 1 $((secs * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "demo-k8s: $what did not happen within $secs s" >&2
  return 1
}

addr="127.0.0.1:$(free_port)"
say "attestd (TLS, embedded store, vault sealed to the TPM) and this host's TPM (a managed swtpm)"
L tpm info >/dev/null
"$bin/attestd" serve --data "$work/attestd" --listen "$addr" --metrics-addr "" --log-format text \
  --tpm "swtpm:$BULWARK_STATE/swtpm" --ek-ca "$BULWARK_STATE/swtpm/ca/swtpm-localca-rootca-cert.pem" \
  --ek-ca "$BULWARK_STATE/swtpm/ca/issuercert.pem" >"$work/attestd.log" 2>&1 &
pids+=($!)
wait_attestd "$work/attestd.log" "${pids[0]}"
ca="$work/attestd/tls/ca.crt"
A admin-cert --data "$work/attestd" --name demo-admin -o "$work/admin" >/dev/null
ctl() { A ctl --addr "$addr" --ca "$ca" --cert "$work/admin/demo-admin.crt" --key "$work/admin/demo-admin.key" "$@"; }
note "attestd serving on $addr"

say "The guest (host kernel as a PVH vmlinux, base initramfs), a signed image, its policy and a secret"
L keygen --output-key-prefix "$work/cosign" >/dev/null
L kernel extract -o "$work/vmlinux" >/dev/null
L initrd build --agent "$bin/bulwark-agent" -o "$work/base.cpio" >/dev/null
L image build -o "$work/hello" --ref local/hello:1 --busybox sh,echo,ls,sha256sum,cut \
  --entrypoint /bin/sh --cmd -c \
  --cmd 'echo "pod: secrets in /run/secrets: $(ls /run/secrets)"; echo "pod: fingerprint $(sha256sum /run/secrets/db-password | cut -d" " -f1)"' >/dev/null
for f in vmlinux base.cpio; do L sign --key "$work/cosign.key" "$work/$f" >/dev/null; done
L sign --key "$work/cosign.key" --image "$work/hello" --ref local/hello:1 >/dev/null
L policy init --kernel "$work/vmlinux" --initrd "$work/base.cpio" --image "$work/hello" \
  --signer "$work/cosign.pub" --secret db-password --name hello -o "$work/attestd/policies/hello.yaml" >/dev/null 2>&1
ctl policies reload >/dev/null
head -c 32 /dev/urandom | base64 >"$work/db-password"
ctl secret put db-password --from-file "$work/db-password" >/dev/null
want=$(sha256sum "$work/db-password" | cut -d' ' -f1)
note "policy 'hello' pins the kernel, initrd and image digests and the cosign key; secret db-password: fingerprint $want"

say "Enroll the host and start the host service (launcher daemon)"
L enroll --attestd "$addr" --ca "$ca" | sed 's/^/    /'
"$bin/launcher" daemon --attestd "$addr" --ca "$ca" >"$work/daemon.log" 2>&1 & # not through L: $! must be the daemon itself
pids+=($!)
wait_for "the host service" 30 L ps -q
note "serving on $BULWARK_STATE/launcher.sock"

say "containerd 2.x with the runtime handler 'bulwark' (deploy/containerd/bulwark-runtime.toml)"
cdir="$work/containerd"
mkdir -p "$cdir/cni"
cri="$cdir/containerd.sock"
cat >"$cdir/config.toml" <<EOF
version = 3
root = '$cdir/root'
state = '$cdir/state'
disabled_plugins = ['io.containerd.nri.v1.nri']
[grpc]
  address = '$cri'
[ttrpc]
  address = '$cri.ttrpc'
[plugins.'io.containerd.internal.v1.opt']
  path = '$cdir/opt'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'docker.io/local/pause:1'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    conf_dir = '$cdir/cni'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.bulwark]
    runtime_type = 'io.containerd.bulwark.v2'
    pod_annotations = ['bulwark.dev/*']
    container_annotations = ['bulwark.dev/*']
EOF
BULWARK_GUEST_DIRS="$work" containerd --config "$cdir/config.toml" >"$work/containerd.log" 2>&1 &
pids+=($!)
wait_for "containerd" 30 ctr -a "$cri" version
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 300\n' "$cri" "$cri" >"$cdir/crictl.yaml"
# crictl's own warnings (cgroup v1, no cgroup_parent) go to its log.
C() { crictl --config "$cdir/crictl.yaml" "$@" 2>>"$work/crictl.log"; }
L image build -o "$work/pause" --ref docker.io/local/pause:1 --busybox sleep --entrypoint /bin/sleep --cmd 3600 >/dev/null
for img in pause hello; do (cd "$work/$img" && tar -cf "$work/$img.tar" .); done
for args in "images import $work/pause.tar" "images import $work/hello.tar" "images tag local/hello:1 docker.io/local/hello:1"; do
  # shellcheck disable=SC2086 # the words of each command
  ctr -a "$cri" -n k8s.io $args >>"$work/ctr.log" 2>&1 || { cat "$work/ctr.log" >&2; exit 1; }
done
note "images imported into containerd's content store (namespace k8s.io); the shim reads them from there"

# pod_json NAME SIGNATURE PAYLOAD_FILE: a host-network pod for the handler.
pod_json() {
  jq -n --arg name "$1" --arg sig "$2" --arg payload "$(base64 -w0 "$3")" --arg dir "$work" '{
    metadata: {name: $name, namespace: "default", uid: ($name + "-uid")},
    annotations: {"bulwark.dev/policy": "hello", "bulwark.dev/template": "none",
      "bulwark.dev/kernel": ($dir + "/vmlinux"), "bulwark.dev/initrd": ($dir + "/base.cpio"),
      "bulwark.dev/image-signature": $sig, "bulwark.dev/image-signature-payload": $payload},
    log_directory: ($dir + "/pods/" + $name),
    linux: {security_context: {namespace_options: {network: 2}}}}'
}
jq -n '{metadata: {name: "hello"}, image: {image: "docker.io/local/hello:1"}, log_path: "hello.log"}' >"$work/container.json"

say "crictl runp --runtime bulwark, create, start: the pod's container in a measured, attested VM"
pod_json hello "$(cat "$work/hello.sig")" "$work/hello.payload.json" >"$work/pod.json"
t0=$(date +%s%N)
pod=$(C runp --runtime bulwark "$work/pod.json")
ctr_id=$(C create "$pod" "$work/container.json" "$work/pod.json")
C start "$ctr_id" >/dev/null
note "pod $pod, container $ctr_id started in $((($(date +%s%N) - t0) / 1000000)) ms (verify, measure, boot, attest, release)"
wait_for "the container to exit" 120 bash -c "crictl --config $cdir/crictl.yaml inspect -o json $ctr_id 2>/dev/null | jq -e '.status.state == \"CONTAINER_EXITED\"'"
note "crictl logs $ctr_id:"
C logs "$ctr_id" | sed 's/^/      /'
got=$(C logs "$ctr_id" | sed -n 's/^pod: fingerprint //p')
if [ "$got" != "$want" ]; then
  echo "demo-k8s: FAILED: the pod saw fingerprint '$got', the stored secret has '$want'" >&2
  exit 1
fi
note "OK: the pod read exactly the stored secret (released only to its attested VM's key)"
C rm "$ctr_id" >/dev/null
C stopp "$pod" >/dev/null
C rmp "$pod" >/dev/null

say "A refused pod: the same image re-signed by an unknown key"
COSIGN_PASSWORD=rogue L keygen --output-key-prefix "$work/rogue" >/dev/null
cp -r "$work/hello" "$work/hello-rogue"
COSIGN_PASSWORD=rogue L sign --key "$work/rogue.key" --image "$work/hello-rogue" --ref local/hello:1 >/dev/null
pod_json rogue "$(cat "$work/hello-rogue.sig")" "$work/hello-rogue.payload.json" >"$work/rogue.json"
pod=$(C runp --runtime bulwark "$work/rogue.json")
ctr_id=$(C create "$pod" "$work/container.json" "$work/rogue.json")
set +e
crictl --config "$cdir/crictl.yaml" start "$ctr_id" >"$work/rogue.out" 2>&1
rc=$?
set -e
if [ $rc -eq 0 ]; then
  echo "demo-k8s: FAILED: a pod whose image is signed by an unknown key started" >&2
  exit 1
fi
note "crictl start failed (exit $rc), with attestd's reasons:"
awk '/does not allow it:$/ { sub(/.*launch refused/, "launch refused"); print; while ((getline l) > 0 && l ~ /^[ \t]+- /) { sub(/^[ \t]+/, "  ", l); print l }; exit }' "$work/rogue.out" | sed 's/^/      /'
running=$(L ps -q | wc -l)
if [ "$running" != 0 ]; then
  echo "demo-k8s: FAILED: $running sandboxes run after the refusal" >&2
  exit 1
fi
C rm "$ctr_id" >/dev/null 2>&1 || true
C stopp "$pod" >/dev/null
C rmp "$pod" >/dev/null

printf '\n\033[1mSummary\033[0m\n'
echo "  CRI            containerd $(containerd --version | awk '{print $3}'), handler bulwark -> containerd-shim-bulwark-v2 -> launcher daemon"
echo "  allowed pod    its image read from containerd's content store, measured, attested; secret fingerprint $want matched"
echo "  refused pod    image re-signed by an unknown key: crictl start failed with the policy's reasons; nothing ran"
echo "demo-k8s: OK"
