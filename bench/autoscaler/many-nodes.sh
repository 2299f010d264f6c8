#!/usr/bin/env bash
# A simulated many-node run on the process provider: a head of 1 CPU whose autoscaler launches N worker nodes of 1 CPU
# (each a raylet in a network namespace of its own) for a Ray.RequestResources of N+1 CPUs, then `raysharp status` and
# N SPREAD tasks across them, then `raysharp down`. Prints the time from the request until 10, 25, 50 (and N) workers are
# ALIVE, what `status` takes at N nodes, how many nodes ran the tasks and how long they took, and the memory at N nodes.
# Needs root (network namespaces) and a Release build:
#   dotnet build RaySharp.slnx -c Release && sudo bench/autoscaler/many-nodes.sh [N]
# UPSCALING_SPEED (default 100: all N launch in one tick; 1.0 is the YAML's default), STORE_MB (object store per node,
# default 64), JOIN_TIMEOUT_S (how long to wait for the N workers, default 900; the run goes on with those that joined,
# and says so), STALL_S (give up waiting when no worker joined for this long, default 240), HOLD_MS (how long each
# SPREAD task holds its CPU, default 20000).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cli="$repo/artifacts/bin/RaySharp.Cli/release/RaySharp.Cli.dll"
driver="$repo/artifacts/bin/RaySharp.TestDriver/release/RaySharp.TestDriver.dll"
n="${1:-50}"
speed="${UPSCALING_SPEED:-100}"
store_mb="${STORE_MB:-64}"
join_timeout_s="${JOIN_TIMEOUT_S:-900}"
stall_s="${STALL_S:-240}"
hold_ms="${HOLD_MS:-20000}"
name=bench-many
id="$(printf %s "$name" | sha256sum | cut -c1-6)"   # the process provider's prefix: namespaces rsl<id>n<i>, bridge rsl<id>
work="$(mktemp -d /tmp/raysharp-bench-many.XXXXXX)"
export RAYSHARP_TEMP_DIR="$work/operator"
state="$RAYSHARP_TEMP_DIR/launcher/$name"
config="$work/cluster.yaml"
store=$((store_mb * 1024 * 1024))
cat > "$config" <<YAML
cluster_name: $name
max_workers: $n
upscaling_speed: $speed
idle_timeout_minutes: 60
provider: {type: process}
available_node_types:
  head: {resources: {CPU: 1}, max_workers: 0}
  worker: {resources: {CPU: 1}, min_workers: 0, max_workers: $n}
head_node_type: head
head_start_ray_commands:
  - raysharp stop
  - raysharp start --head --port=6379 --object-store-memory=$store
worker_start_ray_commands:
  - raysharp stop
  - raysharp start --address=\$RAYSHARP_HEAD_ADDRESS --object-store-memory=$store
YAML

ours() {  # pids of every process of this cluster: those in its namespaces, and any with the work folder in its command line
  { for ns in $(ip netns list | awk '{print $1}' | grep "^rsl${id}n" || true); do ip netns pids "$ns" 2>/dev/null || true; done
    pgrep -f "$work" || true; } | sort -un | grep -vx "$$" || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -d "$state" ]; then timeout 300 dotnet "$cli" down -y "$config" > "$work/down-trap.log" 2>&1 || cat "$work/down-trap.log" >&2; fi
  local left; left="$(ours)"
  if [ -n "$left" ]; then echo "left after down, killed: $(echo $left)" >&2; kill -9 $left 2> /dev/null || true; fi
  for ns in $(ip netns list | awk '{print $1}' | grep "^rsl$id" || true); do echo "namespace left after down, deleted: $ns" >&2; ip netns del "$ns"; done
  ip link del "rsl$id" 2> /dev/null && echo "bridge left after down, deleted" >&2
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ms() { date +%s%3N; }
mem_line() {  # RSS of the cluster's processes (MiB, by kind) and the machine's used memory
  local pids; pids="$(ours | tr '\n' ',' | sed 's/,$//')"
  ps -o rss=,args= -p "$pids" | awk '
    { kind = "other"; for (i = 2; i <= NF; i++) if ($i ~ /^(gcs_server|raylet|monitor|worker)$/) { kind = $i; break }
      rss[kind] += $1; count[kind]++; total += $1; procs++ }
    END { printf "RSS %d MiB in %d processes (", total / 1024, procs; sep = "";
          for (k in rss) { printf "%s%s %d x %d MiB", sep, k, count[k], rss[k] / 1024 / count[k]; sep = ", " }; print ")" }'
  local pss=0 p; for p in ${pids//,/ }; do pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2> /dev/null || echo 0))); done
  echo "PSS (shared pages split among their users) $((pss / 1024)) MiB"
  echo "free -m: used $(free -m | awk '/^Mem:/ {print $3}') MiB, available $(free -m | awk '/^Mem:/ {print $7}') MiB, /dev/shm used $(df -m /dev/shm | awk 'NR == 2 {print $3}') MiB"
}

echo "machine: $(nproc) CPUs, $(free -m | awk '/^Mem:/ {print $2}') MiB; before: used $(free -m | awk '/^Mem:/ {print $3}') MiB"
echo "N=$n workers, upscaling_speed=$speed, object store ${store_mb} MiB per node"
t=$(ms); dotnet "$cli" up -y "$config" > "$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
echo "up (head): $(( $(ms) - t )) ms"
head_ip="$(dotnet "$cli" get-head-ip "$config")"
# `status` run here, on the machine, against the head's GCS over the bridge: what the poll costs is status alone.
status_json() { RAYSHARP_CLUSTER_TOKEN="$(cat "$state/cluster_token")" timeout 120 dotnet "$cli" status --address "$head_ip:6379" --format json; }
alive_workers() { python3 -c 'import json,sys; print(sum(1 for x in json.load(sys.stdin)["nodes"] if x["state"] == "ALIVE" and not x["is_head_node"]))'; }
launched() { python3 -c 'import json,sys; print(sum(1 for x in json.load(open(sys.argv[1]))["Nodes"] if not x["Terminated"] and x["Tags"].get("raysharp-node-kind") == "worker"))' "$state/state.json"; }
mem_line

start=$(ms)
dotnet "$cli" exec "$config" "dotnet $driver autoscale-request auto $((n + 1))" > "$work/request.log" 2>&1 || { cat "$work/request.log"; exit 1; }
echo "request written: $(( $(ms) - start )) ms after the exec started"
milestones=""; for m in 10 25 50 "$n"; do [ "$m" -le "$n" ] && milestones="$milestones $m"; done
milestones="$(echo $milestones | tr ' ' '\n' | sort -un | tr '\n' ' ')"
declare -A reached
alive=0; last_change=$(ms); slowest_status=0; polls=0
echo "  elapsed_s  launched  alive  status_ms"
while :; do
  t=$(ms)
  if json="$(status_json 2> "$work/status.err")"; then
    took=$(( $(ms) - t )); polls=$((polls + 1)); [ $took -gt $slowest_status ] && slowest_status=$took
    now_alive="$(echo "$json" | alive_workers)"
  else
    took=$(( $(ms) - t )); now_alive=$alive; echo "  status failed after $took ms: $(tail -1 "$work/status.err")"
  fi
  [ "$now_alive" != "$alive" ] && last_change=$(ms)
  alive=$now_alive
  elapsed=$(( $(ms) - start ))
  printf "  %9.1f  %8s  %5s  %9s\n" "$(echo "$elapsed / 1000" | bc -l)" "$(launched)" "$alive" "$took"
  for m in $milestones; do
    if [ -z "${reached[$m]:-}" ] && [ "$alive" -ge "$m" ]; then reached[$m]=$elapsed; fi
  done
  [ "$alive" -ge "$n" ] && break
  if [ $elapsed -gt $((join_timeout_s * 1000)) ]; then echo "gave up: $alive of $n workers alive after ${join_timeout_s} s"; break; fi
  if [ $(( $(ms) - last_change )) -gt $((stall_s * 1000)) ]; then echo "gave up: no worker joined for ${stall_s} s, $alive of $n alive"; break; fi
  sleep 2
done
echo
echo "workers ALIVE  time from the request (s)"
for m in $milestones; do
  if [ -n "${reached[$m]:-}" ]; then printf "%13d  %.1f\n" "$m" "$(echo "${reached[$m]} / 1000" | bc -l)"; else printf "%13d  not reached\n" "$m"; fi
done
echo "status while scaling: $polls polls, slowest ${slowest_status} ms"
monitor_log="$(ls -d "$state"/nodes/head/session_2*/logs | tail -1)/monitor.out"
echo "monitor: $(grep -c 'Launching' "$monitor_log" || true) launch lines ($(grep 'Launching' "$monitor_log" | sed 's/.*Launching \([0-9]*\).*/\1/' | paste -sd+ | bc) nodes), $(grep -c 'update-failed' "$monitor_log" || true) failed setups, $(grep -c 'tick failed' "$monitor_log" || true) failed ticks"
grep -m3 -E 'update-failed|tick failed' "$monitor_log" | cut -c1-300 || true
echo
echo "at $alive workers (+ head):"
for i in 1 2 3; do t=$(ms); status_json > /dev/null; echo "  status --format json (here, direct): $(( $(ms) - t )) ms"; done
t=$(ms); RAYSHARP_CLUSTER_TOKEN="$(cat "$state/cluster_token")" dotnet "$cli" status --address "$head_ip:6379" > "$work/status.txt"; echo "  status (text, direct): $(( $(ms) - t )) ms, $(wc -l < "$work/status.txt") lines"
t=$(ms); dotnet "$cli" exec "$config" "raysharp status --format json" > /dev/null; echo "  raysharp exec <config> 'raysharp status --format json': $(( $(ms) - t )) ms"
mem_line | sed 's/^/  /'
echo
tasks=$((alive + 1))
echo "$tasks SPREAD tasks of 1 CPU, each holding it $hold_ms ms:"
for round in cold warm; do
  t=$(ms)
  dotnet "$cli" exec "$config" "dotnet $driver autoscale-spread auto $tasks $hold_ms" > "$work/spread.log" 2>&1 || { tail -20 "$work/spread.log"; exit 1; }
  echo "  $round: $(grep '^spread' "$work/spread.log") (driver run $(( $(ms) - t )) ms)"
done
mem_line | sed 's/^/  after the tasks: /'
echo
t=$(ms); dotnet "$cli" down -y "$config" > "$work/down.log" 2>&1 || { cat "$work/down.log"; exit 1; }
echo "down: $(( $(ms) - t )) ms"
sleep 1
left="$(ours)"; nss="$(ip netns list | grep "rsl$id" || true)"
echo "left after down: processes [$(echo $left)], namespaces [$(echo $nss | awk '{print $1}')], bridge [$(ip -br link show "rsl$id" 2> /dev/null | awk '{print $1}')]"
