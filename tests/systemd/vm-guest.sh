#!/bin/bash
# make test-systemd, guest side (root, in /payload, systemd as PID 1): install asr-server with
# scripts/install from the wheelhouse only (no index), exactly as an operator would, then hand over
# to vm-host.sh. Exiting 0 tells vmrig the guest is ready.
set -euxo pipefail
W=/payload/wheelhouse
SRC=/payload/asr-server
T0=$EPOCHREALTIME

# issue 23: the host's only cluster listens on 5433, not 5432 (as after pg_upgradecluster, or when
# something else held 5432): the installer must find it and write a DSN that reaches it
pg_conftool 15 main set port 5433
systemctl restart postgresql@15-main
pg_lsclusters

# an env file that exists before the install must survive it (mode fixed to 0600), but for the
# ASR_DATABASE_URL line the installer appends for that cluster
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
size=$(stat -c %s /etc/asr-server/asr-server.env) lines=$(wc -l </etc/asr-server/asr-server.env)

"$SRC/scripts/install" --wheelhouse "$W"
echo "install took $(awk "BEGIN{printf \"%.0f\", $EPOCHREALTIME - $T0}") s"

test "$(head -c "$size" /etc/asr-server/asr-server.env | sha256sum)" = "$before"
tail -n +"$((lines + 1))" /etc/asr-server/asr-server.env
test "$(tail -n 1 /etc/asr-server/asr-server.env)" = "ASR_DATABASE_URL='postgresql:///asr?host=/var/run/postgresql&port=5433'"
test "$(stat -c %a /etc/asr-server/asr-server.env)" = 600
test "$(systemctl is-enabled asr-server.socket)" = enabled
test "$(systemctl is-active asr-server.socket)" = active
test "$(systemctl is-enabled asr-wyoming.socket)" = enabled
test "$(systemctl is-active asr-wyoming.socket)" = active
test "$(systemctl is-active asr-server.service)" = inactive   # nothing starts it before a request
ls -l /opt/asr-server /opt/asr-server/releases
/opt/asr-server/venv/bin/python -c 'import asr_daemon, sys; print(asr_daemon.__file__, sys.version)'
ls /var/lib/asr-server/models
(cd /tmp && runuser -u postgres -- psql -p 5433 -qAtc "SELECT count(*) FROM schema_migrations" asr)

# a second cluster, on 5432 (psql's default from now on): scripts/pg-cluster names both and keeps a
# DSN it wrote on its cluster; the upgrade in vm-host.sh must stay on 5433 too
pg_createcluster 15 spare --port 5432 --start >/dev/null
pg_lsclusters
dsn="postgresql:///asr?host=/var/run/postgresql&port=5433"
test "$("$SRC/scripts/pg-cluster" --url "$dsn" asr 2>/tmp/pgc.err)" = "$dsn"
cat /tmp/pgc.err
grep -q "using PostgreSQL 15/main (the cluster of $dsn): port 5433" /tmp/pgc.err
grep -q "the clusters here: 15/main (port 5433, online), 15/spare (port 5432, online)" /tmp/pgc.err
test "$("$SRC/scripts/pg-cluster" asr 2>/tmp/pgc.err)" = "postgresql:///asr"   # the default: 15/spare
cat /tmp/pgc.err

# test timing: the proxy exits 3 s after its last connection (60 s in the shipped unit)
install -d /etc/systemd/system/asr-server-proxy.service.d
printf '[Service]\nExecStart=\nExecStart=/usr/lib/systemd/systemd-socket-proxyd --exit-idle-time=3s /run/asr-server/http.sock\n' \
  >/etc/systemd/system/asr-server-proxy.service.d/test.conf
install -d /etc/systemd/system/asr-wyoming-proxy.service.d
printf '[Service]\nExecStart=\nExecStart=/usr/lib/systemd/systemd-socket-proxyd --exit-idle-time=3s /run/asr-server/wyoming.sock\n' \
  >/etc/systemd/system/asr-wyoming-proxy.service.d/test.conf
# test timing: this run starts the daemon far more often than use does (idle stops after 20 s, races,
# manual starts, watchdog and RuntimeMaxSec restarts: the WebSocket step was the 6th start in 10 min),
# past the shipped StartLimitBurst=5 per 10 min, which is for crash loops (in use idle stops come
# ASR_IDLE_STOP_AFTER=900 s apart); once hit, every connection is refused until a reset
install -d /etc/systemd/system/asr-server.service.d
printf '[Unit]\nStartLimitBurst=100\n' >/etc/systemd/system/asr-server.service.d/test-start-limit.conf
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
