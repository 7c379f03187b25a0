#!/usr/bin/env bash
# bench/tcg.sh — how fast this machine runs a guest under qemu's TCG, per CPU model: the figures
# behind local/vm/vm.ts TCG_CPU_MODEL and a yardstick for the VM tier's timings (docs/VM.md),
# which vary several-fold from one day or machine to the next.
#
#   npm run bench:tcg [-- --release bookworm|trixie] [-- --models "qemu64 max"]
#
# Uses the VM runner's image (`npm run vm -- build`, which builds it if needed). Two runs per
# model, one VM at a time, no network: (1) a bare boot to systemd's power-off; (2) the image's
# kernel with a shell as init running a fixed mix of what a first boot spends its time on (300
# fork+exec, 30 perl, 20 python3 starts, 10 `dpkg -l`, 5 `apt-cache policy`, 20 sha256sum of
# python3), timed by the guest's own uptime. Prints seconds; nothing is judged.
set -euo pipefail

release=bookworm models="qemu64 max"
while [[ $# -gt 0 ]]; do
  case $1 in
    --release) release=${2:?--release needs bookworm or trixie}; shift 2 ;;
    --models) models=${2:?--models needs a list}; shift 2 ;;
    *) echo "bench/tcg.sh: unknown argument $1 (usage: --release bookworm|trixie, --models \"M …\")" >&2; exit 2 ;;
  esac
done

# The runner's own image for this release (built first if there is none): its cache key, not a guess.
built=$(npm run --silent vm -- build --release "$release") || { echo "bench/tcg.sh: the image build failed (npm run vm -- build --release $release)" >&2; exit 1; }
built=${built##*$'\n'}
built=${built#*: }
image=$(dirname -- "${built% (kernel *}")
[[ -f $image/image.qcow2 && -f $image/vmlinuz ]] || { echo "bench/tcg.sh: no image where the runner said: $built" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
cat >"$work/mix.sh" <<'EOF'
t() { echo "MIX $1 $(cut -d' ' -f1 /proc/uptime)"; }
t start
for i in $(seq 300); do /bin/true; done
for i in $(seq 30); do perl -e 1; done
for i in $(seq 20); do python3 -c pass; done
for i in $(seq 10); do dpkg -l >/dev/null; done
for i in $(seq 5); do apt-cache policy >/dev/null 2>&1; done
for i in $(seq 20); do sha256sum /usr/bin/python3 >/dev/null; done
t end
echo o >/proc/sysrq-trigger
exit
EOF
# The guest's bash reads the script straight from a raw disk; `exit` keeps it from the padding.
truncate -s 64K "$work/mix.img"
dd if="$work/mix.sh" of="$work/mix.img" conv=notrunc status=none

qemu() {
  local model=$1 append=$2
  shift 2
  timeout 900 qemu-system-x86_64 -accel tcg,thread=multi -cpu "$model" -m 1024 -smp 1 -nographic -no-reboot \
    -snapshot -kernel "$image/vmlinuz" -initrd "$image/initrd.img" -append "root=/dev/vda ro console=ttyS0 $append" \
    -drive "file=$image/image.qcow2,if=virtio,format=qcow2" -nic none "$@"
}

echo "image: ${image##*/}; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
printf '%-10s %16s %16s\n' model "bare boot (s)" "work mix (s)"
for model in $models; do
  start=$(date +%s.%N)
  qemu "$model" "systemd.unit=poweroff.target" >"$work/boot.log" 2>&1 || true
  boot=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
  grep -q "reboot: Power down" "$work/boot.log" || boot="failed"
  qemu "$model" "panic=1 init=/bin/bash -- /dev/vdb" -drive "file=$work/mix.img,if=virtio,format=raw,readonly=on" >"$work/mix.log" 2>&1 || true
  mix=$(tr -d '\r' <"$work/mix.log" | awk '/^MIX start/ {s = $3} /^MIX end/ {e = $3} END {if (s != "" && e != "") printf "%.1f", e - s; else print "failed"}')
  printf '%-10s %16s %16s\n' "$model" "$boot" "$mix"
done
