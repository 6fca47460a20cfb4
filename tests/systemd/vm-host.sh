#!/bin/bash
# shellcheck disable=SC2317  # functions are called through check
# make test-systemd, host side: requests go through the forwarded public port; unit states, drop-ins
# and journals are read or written in the guest over ssh. Proves the whole lifecycle under systemd.
set -uo pipefail
url=http://127.0.0.1:$VMRIG_PORT_8765
guest() { "$VMRIG_SSH" "$@"; }
fail=0
audio=$(mktemp -d)
trap 'rm -rf "$audio"' EXIT
check() {  # description command...
  local what=$1; shift
  if "$@"; then echo "PASS: $what"; else echo "FAIL: $what"; fail=1; fi
}
is() {  # unit state
  local s; s=$(guest systemctl is-active "$1"); [[ $s == "$2" ]] || { echo "  $1 is $s"; return 1; }
}
becomes() {  # unit state seconds
  guest "timeout $3 sh -c 'until [ \"\$(systemctl is-active $1)\" = $2 ]; do sleep 0.5; done'" ||
    { echo "  $1 is $(guest systemctl is-active "$1") after $3 s"; return 1; }
}
prop() { guest systemctl show -p "$2" --value "$1"; }
elapsed() { awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $1}"; }
say() { espeak-ng -w "$audio/$1.wav" "$2" && echo "$audio/$1.wav"; }
transcribe() {  # file: a synchronous transcription through the public socket
  local t0=$EPOCHREALTIME out
  out=$(curl -fsS --max-time 600 -F "file=@$1" "$url/v1/audio/transcriptions") || { echo "  request failed"; return 1; }
  echo "  -> ${out:0:120} in $(elapsed "$t0") s"
  [[ ${out,,} == *"fellow americans"* || ${out,,} == *"number"* ]]
}
submit() {  # file: queue a job, print its id
  curl -fsS --max-time 300 -F "file=@$1" "$url/v1/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
job_status() { curl -fsS --max-time 300 "$url/v1/jobs/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])'; }
jobs_complete() {  # seconds id...: every job reaches `completed` in time
  local deadline=$((SECONDS + $1)) i s pending; shift
  while :; do
    pending=()
    for i in "$@"; do s=$(job_status "$i" 2>/dev/null) || s=unreachable; [[ $s == completed ]] || pending+=("$i:$s"); done
    ((${#pending[@]} == 0)) && return 0
    ((SECONDS > deadline)) && { echo "  not completed: ${pending[*]}"; return 1; }
    sleep 3
  done
}
journal_has() {  # unit pattern
  guest journalctl -b --no-pager -u "$1" | grep -q -- "$2" || { echo "  no '$2' in the journal of $1"; return 1; }
}
dropin() {  # name content: a test drop-in for asr-server.service (empty content removes it)
  if [[ -n $2 ]]; then
    guest "mkdir -p /etc/systemd/system/asr-server.service.d && printf '[Service]\n$2\n' >/etc/systemd/system/asr-server.service.d/$1.conf"
  else
    guest rm -f "/etc/systemd/system/asr-server.service.d/$1.conf"
  fi
  guest systemctl daemon-reload
}

jfk=$(say jfk "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.")

echo "== before any request"
check "socket listening" is asr-server.socket active
check "daemon not started" is asr-server.service inactive

echo "== request 1: socket activation (cold start)"
check "first request answered (not refused)" transcribe "$jfk"
check "daemon active (READY=1 came)" is asr-server.service active
check "idle watcher started with it" is asr-idle-watcher.service active
guest systemctl show asr-server.service -p Type -p NotifyAccess -p StatusText -p MainPID -p User -p WatchdogUSec
check "STATUS= names the model" bash -c "[[ '$(prop asr-server.service StatusText)' == *tiny.en* ]]"
check "access log line with the job id" guest "tail -n1 /var/log/asr-server/access.log | grep -q '\"job_id\":\"'"
guest tail -n1 /var/log/asr-server/access.log

echo "== idle: proxy exits 3 s after its last connection, the watcher stops the daemon after 20 s quiet"
t0=$EPOCHREALTIME
check "daemon stopped when idle" becomes asr-server.service inactive 150
echo "  stopped $(elapsed "$t0") s after the last request"
check "idle stop is no failure (result success, no restart)" \
  bash -c "[[ '$(prop asr-server.service Result)' == success && '$(prop asr-server.service NRestarts)' == 0 ]]"
check "watcher stopped with it" is asr-idle-watcher.service inactive
check "socket still listening" is asr-server.socket active
check "watcher logged its decision" journal_has asr-idle-watcher.service idle.stop

echo "== request 2: re-activation after the idle stop"
pid1=$(guest journalctl -b -u asr-server.service -o cat | grep -c 'Started asr-server')
check "request 2 answered" transcribe "$jfk"
check "started again" bash -c "(( $(guest journalctl -b -u asr-server.service -o cat | grep -c 'Started asr-server') > pid1 ))"

echo "== systemctl stop, then systemctl start by hand"
guest systemctl stop asr-server.service
check "stopped, proxy with it" bash -c "[[ $(guest systemctl is-active asr-server-proxy.service) != active ]]"
guest systemctl start asr-server.service
check "manual start stays up (no StopWhenUnneeded)" bash -c "sleep 5; [[ $(guest systemctl is-active asr-server.service) == active ]]"
check "request through the socket served by it" transcribe "$jfk"

echo "== RuntimeMaxSec: the backstop restarts the daemon and queued jobs still complete"
dropin runtime 'RuntimeMaxSec=40s'
guest systemctl restart asr-server.service
ids=()
for n in 1 2 3 4 5; do
  f=$(say "n$n" "Number $n. The quick brown fox jumps over the lazy dog, number $n, while the band plays on in the park.")
  ids+=("$(submit "$f")")
done
echo "  queued ${ids[*]}"
t0=$EPOCHREALTIME
check "restarted by RuntimeMaxSec" guest "timeout 240 sh -c 'until [ \"\$(systemctl show -p NRestarts --value asr-server.service)\" -ge 1 ]; do sleep 1; done'"
check "journal: runtime limit reached" journal_has asr-server.service "runtime time limit"
dropin runtime ''
check "all queued jobs completed after the restart" jobs_complete 400 "${ids[@]}"
echo "  $(elapsed "$t0") s from the first restart"
guest journalctl -b --no-pager -u asr-server.service -o cat | grep -E "runtime time limit|Scheduled restart|Failed with result" | tail -n 4

echo "== watchdog: a wedged worker is killed and restarted"
dropin watchdog 'WatchdogSec=15s\nTimeoutAbortSec=5s'
guest systemctl restart asr-server.service
before=$(prop asr-server.service NRestarts)
main=$(prop asr-server.service MainPID)
guest "pkill -STOP -P $main"   # the Granian worker(s): the loop and the job thread freeze
check "watchdog fired" guest "timeout 120 sh -c 'until journalctl -b -u asr-server.service | grep -q \"Watchdog timeout\"; do sleep 1; done'"
check "restarted after the watchdog" guest "timeout 180 sh -c 'until [ \"\$(systemctl show -p NRestarts --value asr-server.service)\" -gt $before ] && [ \"\$(systemctl is-active asr-server.service)\" = active ]; do sleep 1; done'"
check "a new main process" bash -c "[[ $(prop asr-server.service MainPID) != $main ]]"
check "served after the watchdog restart" transcribe "$jfk"
dropin watchdog ''

echo "== backup timer (issue 6)"
if guest test -e /etc/systemd/system/asr-backup.timer; then
  check "backup timer enabled and waiting" bash -c "[[ $(guest systemctl is-enabled asr-backup.timer) == enabled ]]" 
  check "backup timer active" is asr-backup.timer active
  check "backup runs" guest systemctl start asr-backup.service
  guest systemctl list-timers --no-pager asr-backup.timer
else
  echo "SKIP: systemd/asr-backup.timer is not in this tree yet (issue 6)"
fi

echo "== upgrade in place: scripts/install again"
t0=$EPOCHREALTIME
check "re-install succeeds" guest /payload/asr-server/scripts/install --wheelhouse /payload/wheelhouse
echo "  re-install took $(elapsed "$t0") s"
check "env file kept" guest "grep -q '^ASR_MODEL=tiny.en' /etc/asr-server/asr-server.env"
check "two releases kept, venv switched" guest "[ \$(ls /opt/asr-server/releases | wc -l) = 2 ]"
check "served after the upgrade" transcribe "$jfk"

echo "== uninstall keeps data"
check "uninstall succeeds" guest /payload/asr-server/scripts/uninstall
check "units gone" guest "! test -e /etc/systemd/system/asr-server.service"
check "venv gone" guest "! test -e /opt/asr-server"
check "state kept" guest "test -d /var/lib/asr-server/uploads"
check "database kept" guest "runuser -u postgres -- psql -qAtc 'SELECT count(*) FROM jobs' asr"

echo "== journal (asr units)"
guest journalctl -b --no-pager -o short-monotonic -u asr-server.socket -u asr-server-proxy.service \
  -u asr-server.service -u asr-idle-watcher.service | grep -vE '"event": "(job_|segment)' | tail -n 80
exit "$fail"
