#!/usr/bin/env bash
# The main demo: builds RaySharp, starts a local head node, shows the cluster, and stops it, leaving nothing behind.
# Uses its own session root so it never touches a cluster you already run.
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

echo "== Building RaySharp (Release)"
dotnet build src/RaySharp.Cli -c Release -v quiet -nologo
dotnet build examples/ClusterInfo -c Release -v quiet -nologo
dotnet build examples/NodeIps -c Release -v quiet -nologo
dotnet build examples/Actors -c Release -v quiet -nologo
dotnet build examples/LargeObjects -c Release -v quiet -nologo
raysharp() { dotnet artifacts/bin/RaySharp.Cli/release/RaySharp.Cli.dll "$@"; }

export RAYSHARP_TEMP_DIR="${RAYSHARP_TEMP_DIR:-$(mktemp -d /tmp/raysharp-demo.XXXXXX)}"
trap 'raysharp stop >/dev/null 2>&1 || true' EXIT

echo
echo "== examples/NodeIps: 1000 remote tasks on an embedded cluster (Ray.Init() starts one when none runs)"
dotnet artifacts/bin/NodeIps/release/NodeIps.dll
echo
echo "== examples/ClusterInfo: the embedded cluster's nodes and resources"
dotnet artifacts/bin/ClusterInfo/release/ClusterInfo.dll
echo
echo "== raysharp start --head --num-cpus=2 --resources '{\"demo\": 1}'"
raysharp start --head --num-cpus=2 --resources '{"demo": 1}'
echo
echo "== raysharp status"
raysharp status
echo
echo "== examples/Actors on that cluster (Ray.Init(\"auto\")): counters, an async actor, a named actor, lightweight actors"
dotnet artifacts/bin/Actors/release/Actors.dll auto
echo
echo "== raysharp list actors"
raysharp list actors --limit 10
echo
echo "== examples/LargeObjects on that cluster: 200 MB through the shared-memory object store, read in place by tasks"
dotnet artifacts/bin/LargeObjects/release/LargeObjects.dll auto
echo
echo "== raysharp memory (the job ended, so its objects are freed; the store's counters remain)"
raysharp memory
echo
echo "== raysharp stop"
raysharp stop
trap - EXIT
# Every shared-memory file of this demo's sessions must be gone (other clusters' files on this machine are not ours).
sessions=$(find "$RAYSHARP_TEMP_DIR" -maxdepth 1 -name 'session_*' ! -name session_latest -printf '%f\n')
left=()
for s in $sessions; do
  for f in /dev/shm/raysharp_"$s"*; do [ -e "$f" ] && left+=("$f"); done
done
echo
if [ "${#left[@]}" -gt 0 ]; then
  echo "error: raysharp stop left ${#left[@]} shared-memory file(s) behind: ${left[*]}" >&2
  exit 1
fi
echo "Demo finished: every process stopped, no shared-memory file left. Logs are under ${RAYSHARP_TEMP_DIR}."
