# Shared by cassandra.sh and kafka.sh (sourced, not run): what a local test server's script does
# around starting its JVM. The sourcing script sets `label`, `base`, `pidfile`, `host`, `port`,
# `startup_log` and `start_limit` (seconds), and defines `fetch` and `launch` (starts the JVM in
# the background and writes its pid to $pidfile), then calls `server_main "$@"`.

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  if running_pid >/dev/null; then
    if answers; then echo "$host:$port"; return 0; fi
  elif answers; then
    echo "$label: something else already listens on $host:$port; stop it first" >&2
    exit 1
  fi
  fetch
  launch
  local waited=0
  until answers; do
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$label: the JVM exited while starting; last lines of its log:" >&2
      tail -n 30 "$startup_log" >&2 2>/dev/null || true
      exit 1
    fi
    if [ "$waited" -ge "$start_limit" ]; then
      echo "$label: no answer on $host:$port after $start_limit s; see $base/logs" >&2
      stop
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "$label: up after ${waited} s (pid $(cat "$pidfile"), heap $heap, logs in $base/logs)" >&2
  echo "$host:$port"
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    echo "$label: not running" >&2
    return 0
  fi
  kill "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge 60 ]; then kill -9 "$pid" 2>/dev/null || true; fi
    sleep 1
    waited=$((waited + 1))
  done
  rm -f "$pidfile"
  echo "$label: stopped (pid $pid)" >&2
}

server_main() {
  case "${1:-}" in
    start) start ;;
    stop) stop ;;
    wipe)
      if running_pid >/dev/null; then echo "$label: stop it before wiping" >&2; exit 1; fi
      rm -rf "$base/data" ;;
    status) if answers; then echo "$host:$port"; else exit 1; fi ;;
    fetch) fetch ;;
    *) echo "usage: $0 start|stop|wipe|status|fetch" >&2; exit 2 ;;
  esac
}
