#!/bin/bash
# make test-systemd, guest side (root, in /payload, systemd as PID 1): install asr-server with
# scripts/install from the wheelhouse only (no index), exactly as an operator would, then hand over
# to vm-host.sh. Exiting 0 tells vmrig the guest is ready.
set -euxo pipefail
W=/payload/wheelhouse
SRC=/payload/asr-server
T0=$EPOCHREALTIME

# an env file that exists before the install must survive it unchanged (mode fixed to 0600)
install -d -m 755 /etc/asr-server
cat >/etc/asr-server/asr-server.env <<'ENV'
# test settings: tiny model, short idle window, quick drain and heartbeats
ASR_MODEL=tiny.en
ASR_WORKERS=1
ASR_IDLE_STOP_AFTER=20
ASR_IDLE_CHECK_INTERVAL=2
ASR_DRAIN_TIMEOUT=5
ASR_HEARTBEAT_INTERVAL=1
ASR_STALE_AFTER=10
ASR_RETRY_BACKOFF=0.5
# a 6 s clip takes minutes under TCG emulation: no segment for that long is not a wedge here
ASR_WATCHDOG_STALL_AFTER=1800
OMP_WAIT_POLICY=PASSIVE
ENV
chmod 644 /etc/asr-server/asr-server.env
before=$(sha256sum </etc/asr-server/asr-server.env)

"$SRC/scripts/install" --wheelhouse "$W"
echo "install took $(awk "BEGIN{printf \"%.0f\", $EPOCHREALTIME - $T0}") s"

test "$(sha256sum </etc/asr-server/asr-server.env)" = "$before"
test "$(stat -c %a /etc/asr-server/asr-server.env)" = 600
test "$(systemctl is-enabled asr-server.socket)" = enabled
test "$(systemctl is-active asr-server.socket)" = active
test "$(systemctl is-enabled asr-wyoming.socket)" = enabled
test "$(systemctl is-active asr-wyoming.socket)" = active
test "$(systemctl is-active asr-server.service)" = inactive   # nothing starts it before a request
ls -l /opt/asr-server /opt/asr-server/releases
/opt/asr-server/venv/bin/python -c 'import asr_daemon, sys; print(asr_daemon.__file__, sys.version)'
ls /var/lib/asr-server/models
(cd /tmp && runuser -u postgres -- psql -qAtc "SELECT count(*) FROM schema_migrations" asr)

# test timing: the proxy exits 3 s after its last connection (60 s in the shipped unit)
install -d /etc/systemd/system/asr-server-proxy.service.d
printf '[Service]\nExecStart=\nExecStart=/usr/lib/systemd/systemd-socket-proxyd --exit-idle-time=3s /run/asr-server/http.sock\n' \
  >/etc/systemd/system/asr-server-proxy.service.d/test.conf
install -d /etc/systemd/system/asr-wyoming-proxy.service.d
printf '[Service]\nExecStart=\nExecStart=/usr/lib/systemd/systemd-socket-proxyd --exit-idle-time=3s /run/asr-server/wyoming.sock\n' \
  >/etc/systemd/system/asr-wyoming-proxy.service.d/test.conf
systemctl daemon-reload

# exposure as the real manager computes it
for u in asr-server.service asr-server-proxy.service asr-wyoming-proxy.service asr-idle-watcher.service asr-backup.service; do
  systemd-analyze security --no-pager "$u" | tail -n 1
done

# CPU transcription under TCG emulation is extremely slow with CTranslate2's default AVX2/MKL code
# paths (one 6 s clip took over 20 min). Time one transcription with the SIMD dispatch held to SSE4.2;
# if that is quicker, the daemon uses it in this VM (test-only settings, never shipped).
espeak-ng -w /tmp/probe.wav "ask not what your country can do for you"
probe() {
  (cd /tmp && env "$@" timeout 400 runuser -u asr -- /opt/asr-server/venv/bin/python -c '
import time
from faster_whisper import WhisperModel
t0 = time.time()
m = WhisperModel("/var/lib/asr-server/models/tiny.en", device="cpu", compute_type="int8", cpu_threads=2)
segs, _ = m.transcribe("/tmp/probe.wav", beam_size=1)
print("probe:", " ".join(s.text for s in segs).strip(), f"in {time.time() - t0:.0f} s")
')
}
SLOW_ENV=(CT2_FORCE_CPU_ISA=GENERIC MKL_ENABLE_INSTRUCTIONS=SSE4_2 DNNL_MAX_CPU_ISA=SSE41 OMP_WAIT_POLICY=PASSIVE)
t0=$EPOCHREALTIME
if probe "${SLOW_ENV[@]}"; then
  echo "SSE4.2 probe took $(awk "BEGIN{printf \"%.0f\", $EPOCHREALTIME - $t0}") s: using it in this VM"
  printf '%s\n' "${SLOW_ENV[@]}" >>/etc/asr-server/asr-server.env
else
  echo "SSE4.2 probe did not finish in 400 s: keeping the defaults"
fi
