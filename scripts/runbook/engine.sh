#!/usr/bin/env bash
# engine.sh — stop, start or restart the engine's unit (keel-ops; start and restart confirm it
# stays up, else print its journal). docs/RUNBOOK.md "Engine not active".
#
# Usage: scripts/runbook/engine.sh [--stack FILE|-] stop|start|restart
# Exit: 0 done (started: active and steady); 1 it did not stay up (journal printed); 255 ssh
#       failed; 2 usage; 3 stack outputs missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

rb_common_args "$@"
case "${RB_ARGS[*]:-}" in
  stop | start | restart) action=${RB_ARGS[0]} ;;
  *) rb_die 2 "usage: $RB_PROG [--stack FILE|-] stop|start|restart" ;;
esac
rb_load_stack
rb_ssh -- sudo "$(rb_tool ops)" "$action"
