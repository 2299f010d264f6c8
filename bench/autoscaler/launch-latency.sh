#!/usr/bin/env bash
# Time from a demand appearing to its task running on a node the autoscaler launched, split into decision (demand to
# the monitor's "Launching" line), launch and setup (to the updater's "up-to-date") and join and run (to the task's
# result), on the process provider. Needs root (network namespaces) and a Release build:
#   dotnet build RaySharp.slnx -c Release && sudo bench/autoscaler/launch-latency.sh [rounds]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cli="$repo/artifacts/bin/RaySharp.Cli/release/RaySharp.Cli.dll"
driver="$repo/artifacts/bin/RaySharp.TestDriver/release/RaySharp.TestDriver.dll"
rounds="${1:-3}"
work="$(mktemp -d /tmp/raysharp-bench-autoscaler.XXXXXX)"
export RAYSHARP_TEMP_DIR="$work/operator"
config="$work/cluster.yaml"
cat > "$config" <<YAML
cluster_name: bench-launch
max_workers: 1
idle_timeout_minutes: 0.1
provider: {type: process}
available_node_types:
  head: {resources: {CPU: 1}, max_workers: 0}
  gpu: {resources: {CPU: 1, GPU: 1}, max_workers: 1}
head_node_type: head
YAML
cleanup() { dotnet "$cli" down -y "$config" > /dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
dotnet "$cli" up -y "$config" > "$work/up.log"
ms() { date -d "$1" +%s%3N; }
echo "round  decision_ms  launch_setup_ms  join_run_ms  total_ms"
for round in $(seq 1 "$rounds"); do
  # The previous round's node must be gone (idle for 6 s) before the next demand.
  while grep -q '"gpu"' "$RAYSHARP_TEMP_DIR/launcher/bench-launch/state.json"; do sleep 1; done
  log="$(ls -d "$RAYSHARP_TEMP_DIR"/launcher/bench-launch/nodes/head/session_2*/logs | tail -1)/monitor.out"
  before=$(wc -l < "$log")
  start=$(date +%s%3N)
  dotnet "$cli" exec "$config" "dotnet $driver autoscale-gpu auto" > "$work/driver.log" 2>&1
  done_at=$(date +%s%3N)
  grep -q gpu-task-ran-on "$work/driver.log" || { cat "$work/driver.log"; exit 1; }
  lines="$(tail -n +"$((before + 1))" "$log")"
  launched=$(ms "$(echo "$lines" | grep -m1 'Launching' | cut -c1-23)")
  up=$(ms "$(echo "$lines" | grep -m1 'up-to-date' | cut -c1-23)")
  printf "%5d  %11d  %15d  %11d  %8d\n" "$round" $((launched - start)) $((up - launched)) $((done_at - up)) $((done_at - start))
done
