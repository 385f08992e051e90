#!/usr/bin/env bash
# Build the Containerfile's image and start it for real, as a cluster would run it:
#   1. a Debian bookworm base made locally with mmdebstrap (no image registry is reachable from CI),
#      imported with `podman import` and passed as BASE_IMAGE;
#   2. `podman build --pull=never`, pip given the host's CA bundle as a build secret;
#   3. `podman run --read-only --cap-drop ALL` as uid 10001, a loopback-published port, state on a mounted
#      folder: /healthz and /readyz answer, the shipped runbooks are loaded, and SIGTERM (`podman stop`)
#      ends it with exit status 0.
# Everything podman keeps (images, layers, containers) lives in a temporary folder removed at the end;
# the machine's /var/lib/containers is never touched. Needs root, podman, runc, mmdebstrap (.ci/run
# installs them).
#
# RUNBOOKD_ROOTFS_CACHE=DIR keeps the mmdebstrap tarball in DIR between local runs (about 2 minutes saved);
# CI leaves it unset and builds from scratch.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CA_BUNDLE="${RUNBOOKD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
WORK="$(mktemp -d /var/tmp/runbookd-image.XXXXXX)"
CONTAINER="runbookd-image-test-$$"
BASE_TAG="localhost/runbookd-base:test-$$"
IMAGE_TAG="localhost/runbookd:test-$$"

log() { printf '== image: %s\n' "$*"; }
fail() { printf 'image test FAILED: %s\n' "$*" >&2; exit 1; }

# podman reads its engine and storage settings from these files, for every command below.
mkdir -p "${WORK}/storage" "${WORK}/run" "${WORK}/state" "${WORK}/etc" "${WORK}/tmp"
cat > "${WORK}/containers.conf" <<CONF
[containers]
# podman's default ulimits (above this machine's hard limits) are refused here; these are below them.
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
# crun fails on this cgroup layout; runc works.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "${WORK}/run/libpod"
CONF
cat > "${WORK}/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "${WORK}/storage"
runroot = "${WORK}/run"
CONF
export CONTAINERS_CONF="${WORK}/containers.conf"
export CONTAINERS_STORAGE_CONF="${WORK}/storage.conf"
export TMPDIR="${WORK}/tmp"

image_ids=()
had_var_lib_containers=0
[[ -e /var/lib/containers ]] && had_var_lib_containers=1
cleanup() {
  local rc=$?
  set +e
  if [[ "${rc}" != 0 ]] && podman container exists "${CONTAINER}" 2>/dev/null; then
    echo "--- container log" >&2
    podman logs "${CONTAINER}" >&2 2>&1 || true
  fi
  podman rm -f -t 0 "${CONTAINER}" >/dev/null 2>&1 || true
  local i
  for (( i=${#image_ids[@]}-1; i>=0; i-- )); do
    podman rmi -f "${image_ids[i]}" >/dev/null 2>&1 || true
  done
  podman image prune -f >/dev/null 2>&1 || true   # the build stage's layers, only in this store
  # Layers podman left mounted inside the temporary store, innermost first, then the store itself.
  findmnt -rn -o TARGET | grep -F "${WORK}/" | sort -r | while read -r mnt; do
    umount "${mnt}" 2>/dev/null || umount -l "${mnt}" 2>/dev/null || true
  done
  rm -rf "${WORK}"
  # podman keeps a blob-info cache (no images) in /var/lib/containers/cache whatever the store: remove
  # the folder only if this run created it.
  [[ "${had_var_lib_containers}" == 0 ]] && rm -rf /var/lib/containers
  exit "${rc}"
}
trap cleanup EXIT

for tool in podman runc mmdebstrap python3; do
  command -v "${tool}" >/dev/null || fail "${tool} is not installed (.ci/run installs it)"
done
[[ -s "${CA_BUNDLE}" ]] || fail "no CA bundle at ${CA_BUNDLE}"

# --- 1. the base: Debian bookworm with python3 ----------------------------------------------------------
# The machine's own apt sources, named explicitly: mmdebstrap reads sources from standard input when it
# is not a terminal, and CI has none.
sources=()
[[ -s /etc/apt/sources.list ]] && grep -qE '^[[:space:]]*deb ' /etc/apt/sources.list && sources+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [[ -s "${f}" ]] && sources+=("${f}")
done
[[ ${#sources[@]} -gt 0 ]] || fail "no apt sources in /etc/apt/sources.list*"

rootfs="${WORK}/rootfs.tar"
if [[ -n "${RUNBOOKD_ROOTFS_CACHE:-}" ]]; then
  mkdir -p "${RUNBOOKD_ROOTFS_CACHE}"
  rootfs="${RUNBOOKD_ROOTFS_CACHE}/rootfs-bookworm-python3.tar"
fi
if [[ ! -s "${rootfs}" ]]; then
  log "mmdebstrap bookworm (minbase + python3, python3-venv, ca-certificates) from ${sources[*]}"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    bookworm "${rootfs%.tar}.partial.tar" "${sources[@]}" < /dev/null   # the .tar suffix picks the format
  mv "${rootfs%.tar}.partial.tar" "${rootfs}"
else
  log "reusing ${rootfs}"
fi
base_id="$(podman import --quiet "${rootfs}" "${BASE_TAG}")"
image_ids+=("${base_id}")

# --- 2. the image ----------------------------------------------------------------------------------------
log "podman build (base ${BASE_TAG})"
podman build --pull=never --network=host --quiet \
  --secret "id=ca,src=${CA_BUNDLE}" \
  --build-arg "BASE_IMAGE=${BASE_TAG}" \
  --build-arg "REVISION=$(git -C "${ROOT}" rev-parse HEAD 2>/dev/null || echo unknown)" \
  --iidfile "${WORK}/iid" --tag "${IMAGE_TAG}" \
  -f "${ROOT}/Containerfile" "${ROOT}" > "${WORK}/build.log" 2>&1 \
  || { cat "${WORK}/build.log" >&2; fail "podman build failed"; }
image_id="$(cat "${WORK}/iid")"
image_ids+=("${image_id}")

inspect() { podman image inspect --format "$1" "${image_id}"; }
[[ "$(inspect '{{.Config.User}}')" == "10001:10001" ]] || fail "image user is $(inspect '{{.Config.User}}')"
[[ "$(inspect '{{json .Config.Entrypoint}}')" == '["runbookd"]' ]] || fail "entrypoint $(inspect '{{json .Config.Entrypoint}}')"
[[ "$(inspect '{{json .Config.Cmd}}')" == '["serve","--config","/etc/runbookd/config.yaml"]' ]] \
  || fail "cmd $(inspect '{{json .Config.Cmd}}')"
[[ "$(inspect '{{index .Config.Labels "org.opencontainers.image.title"}}')" == runbookd ]] || fail "no OCI title label"
# The CA bundle given as a build secret is in no layer.
secret_seen="$(podman run --rm --read-only --cap-drop ALL --entrypoint /bin/sh "${image_id}" \
  -c 'if test -e /run/secrets/ca; then echo present; else echo absent; fi')"
[[ "${secret_seen}" == absent ]] || fail "the build secret is in the image (${secret_seen})"

# --- 3. run it as a cluster would ------------------------------------------------------------------------
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
admin_token="admin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
cat > "${WORK}/etc/config.yaml" <<CONF
server: {listen: "0.0.0.0:8080", shutdown_grace: 5s}
state: {path: /var/lib/runbookd/state.db}
runbooks: {paths: [/usr/share/runbookd/runbooks]}
dry_run: true
prometheus: {url: "http://127.0.0.1:9", timeout: 2s}
alertmanager: {url: "http://127.0.0.1:9", timeout: 2s}
auth:
  webhook_token: {env: RUNBOOKD_WEBHOOK_TOKEN}
  tokens:
    - {name: admin, role: admin, secret: {env: RUNBOOKD_ADMIN_TOKEN}}
approvers: {sre: [admin]}
log: {format: json}
CONF
chmod 0644 "${WORK}/etc/config.yaml"
chown 10001:10001 "${WORK}/state"
chmod 0700 "${WORK}/state"

log "podman run --read-only --cap-drop ALL -p 127.0.0.1:${port}:8080"
podman run -d --name "${CONTAINER}" --read-only --cap-drop ALL --security-opt no-new-privileges \
  -p "127.0.0.1:${port}:8080" \
  -v "${WORK}/etc/config.yaml:/etc/runbookd/config.yaml:ro" \
  -v "${WORK}/state:/var/lib/runbookd" \
  -e RUNBOOKD_WEBHOOK_TOKEN="webhook-${admin_token}" -e RUNBOOKD_ADMIN_TOKEN="${admin_token}" \
  "${image_id}" > /dev/null

python3 - "${port}" "${admin_token}" "${ROOT}/runbooks" <<'PY'
import json, pathlib, sys, time, urllib.error, urllib.request
port, token, runbooks = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
base = f"http://127.0.0.1:{port}"
def get(path, auth=False):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if auth else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read()
deadline = time.monotonic() + 120
while True:
    try:
        status, _ = get("/healthz")
        if status == 200:
            break
    except (OSError, urllib.error.URLError):
        pass
    if time.monotonic() > deadline:
        sys.exit("image test FAILED: /healthz did not answer within 120 s")
    time.sleep(0.5)
while get("/readyz")[0] != 200:
    if time.monotonic() > deadline:
        sys.exit("image test FAILED: /readyz did not answer 200")
    time.sleep(0.5)
_, body = get("/api/v1/runbooks", auth=True)
names = {r["name"] for r in json.loads(body)["runbooks"]}
shipped = {p.stem for p in runbooks.glob("*.yaml")}
if names != shipped:
    sys.exit(f"image test FAILED: the image serves runbooks {sorted(names)}, the repository ships {sorted(shipped)}")
print(f"== image: /healthz and /readyz answer; {len(names)} shipped runbooks loaded")
# A webhook is stored by the SQLite intake's writer process: it must start and write in this container
# (read-only root, no capabilities, uid 10001).
alert = {"status": "firing", "labels": {"alertname": "ImageSmokeTest", "job": "image"}, "fingerprint": "0123456789abcdef"}
payload = {"version": "4", "status": "firing", "receiver": "runbookd", "groupLabels": {}, "commonLabels": {},
           "commonAnnotations": {}, "externalURL": "", "groupKey": "{}:{}", "alerts": [alert]}
req = urllib.request.Request(base + "/api/v1/alertmanager", data=json.dumps(payload).encode(), method="POST",
                             headers={"Authorization": f"Bearer webhook-{token}", "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as resp:
    stored = json.loads(resp.read())
if resp.status != 200 or stored.get("status") != "stored":
    sys.exit(f"image test FAILED: the webhook answered {resp.status} {stored}")
_, body = get(f"/api/v1/receipts/{stored['receipt']}", auth=True)
print(f"== image: a webhook was stored (receipt {stored['receipt']}): {body.decode()[:200]}")
PY

uid="$(podman exec "${CONTAINER}" /bin/sh -c 'id -u')"
[[ "${uid}" == 10001 ]] || fail "runs as uid ${uid}"
[[ -s "${WORK}/state/state.db" ]] || fail "the state is not on the mounted folder"

log "SIGTERM (podman stop)"
podman stop -t 30 "${CONTAINER}" > /dev/null
status="$(podman inspect --format '{{.State.ExitCode}}' "${CONTAINER}")"
[[ "${status}" == 0 ]] || { podman logs "${CONTAINER}" >&2 2>&1 || true; fail "exit status ${status} after SIGTERM (want 0)"; }
log "built, served and stopped cleanly (exit 0)"
