#!/usr/bin/env bash
# Runs the whole RaySharp test suite on this machine.
# Installs what the tests need when it is missing (iproute2 for the network-namespace test hosts, root being required
# to create them; redis-server for the control store tests, which start their own Redis on a free port; openssh-server
# and rsync for the SSH test hosts, which start their own sshd in each host), without starting the packages' system
# services, builds everything in Release and prints a closing "Tests: N passed, N failed" line.
# A test running longer than RAYSHARP_TEST_HANG_TIMEOUT (default 10m, dotnet test's --blame-hang-timeout syntax) is
# taken as hung: the run is stopped and the test named.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dotnet >/dev/null 2>&1; then
  echo "error: the .NET 10 SDK is required (dotnet not found on PATH)" >&2
  exit 1
fi
if [ "$(id -u)" != "0" ]; then
  echo "error: the multi-node tests create network namespaces and bridges; run as root (for example: sudo $0)" >&2
  exit 1
fi
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "Installing ${missing[*]} for the multi-node, control store and SSH tests..."
  # The tests start their own servers inside their test hosts: a policy-rc.d keeps the install from starting the
  # machine's own sshd (on port 22) and redis-server. Only when there is none already (Docker images have one).
  policy=/usr/sbin/policy-rc.d
  ours=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# scripts/test.sh: no service starts while it installs test dependencies\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    ours=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$ours" ]; then
    rm -f "$policy"
    trap - EXIT
  fi
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
mkdir -p artifacts
log=artifacts/test-output.log
set +e
# A test that hangs (a deadlock) is stopped after this long with a message naming it, instead of running to CI's limit.
# The slowest test (ChaosTests) takes about 1 minute on a quiet machine; 10 minutes leaves room for a loaded one.
hang_timeout="${RAYSHARP_TEST_HANG_TIMEOUT:-10m}"
dotnet test RaySharp.slnx -c Release --logger "console;verbosity=normal" \
  --blame-hang-timeout "$hang_timeout" --blame-hang-dump-type none 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# dotnet test prints a "Failed:" line only when something failed: count with awk alone so a missing line is 0.
passed=$(awk '$1 == "Passed:" && $2 ~ /^[0-9]+$/ {s += $2} END {print s + 0}' "$log")
failed=$(awk '$1 == "Failed:" && $2 ~ /^[0-9]+$/ {s += $2} END {print s + 0}' "$log")
echo
echo "Tests: ${passed} passed, ${failed} failed"
if [ "$rc" -eq 0 ] && [ "$passed" -eq 0 ]; then
  echo "error: no test ran" >&2
  exit 1
fi
exit "$rc"
