#!/bin/bash
# Submits a sweep template (strong-scaling.sbatch, weak-scaling.sbatch) as one job array per node
# count of its grid table, each asking exactly the nodes (-N) and tasks per node its rows need, all
# writing under one directory ${OUT_ROOT:-runs}/$SWEEP_ID.
#
#   MPILLAMA_BIN=... MODEL=... PROMPTS=... slurm/submit-sweep.sh TEMPLATE [sbatch options] [-- generate options]
#
# SWEEP_ID defaults to sweep-DATE-TIME; SWEEP_GRIDS="N:P:T ..." replaces the template's table.
# Prints the job ids, one a line. Compiles nothing, reads no paths of its own.
set -euo pipefail
[ $# -ge 1 ] && [ -r "$1" ] || { echo "usage: $0 TEMPLATE [sbatch options] [-- generate options]" >&2; exit 2; }
tmpl=$1
shift
sb=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do sb+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
export SWEEP_ID=${SWEEP_ID:-sweep-$(date +%Y%m%d-%H%M%S)}
declare -A rows per
while read -r i nodes pp tp; do
  rows[$nodes]+="${rows[$nodes]:+,}$i"
  r=$(((pp * tp + nodes - 1) / nodes))
  [ "$r" -gt "${per[$nodes]:-0}" ] && per[$nodes]=$r
done < <(bash "$tmpl" --list)
[ ${#rows[@]} -gt 0 ] || { echo "$0: $tmpl --list printed no grids" >&2; exit 1; }
for n in $(printf '%s\n' "${!rows[@]}" | sort -n); do
  sbatch --parsable -N "$n" --ntasks-per-node="${per[$n]}" --array="${rows[$n]}" "${sb[@]}" "$tmpl" "$@"
done
echo "submit-sweep: output in ${OUT_ROOT:-runs}/$SWEEP_ID" >&2
