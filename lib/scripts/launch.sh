#!/bin/bash
# offload rank launcher, for sites without srun: starts ranks 0..RANKS-1
# on the job's nodes, each with the site's own remote start (pbsdsh -h
# HOST, qrsh -inherit HOST, ssh HOST), and waits for them all.
#
#   launch.sh NODEFILE FORMAT RANKS THREADS START...
#
# NODEFILE is the scheduler's node list, in FORMAT pbs (one line per slot,
# as $PBS_NODEFILE) or sge (HOST SLOTS QUEUE PROCESSORS, as $PE_HOSTFILE).
# Rank R takes THREADS slots in the list's order and runs on the host of
# its first; its output goes to logs/rank-R.log. Exit 0 when every rank's
# start returned 0 (a failing component does not fail its rank), 94 when
# the node list is missing or too short.
set -u
: "${OFFLOAD_RUN:?OFFLOAD_RUN is not set}"
nodefile=$1 format=$2 ranks=$3 threads=$4
shift 4
if [ -z "$nodefile" ] || [ ! -r "$nodefile" ]; then
    echo "offload: no node list to start the ranks from (${nodefile:-none given})" >&2
    exit 94
fi
slots=()
case $format in
    pbs)
        while read -r h _; do
            [ -n "$h" ] && slots+=("$h")
        done < "$nodefile"
        ;;
    sge)
        while read -r h n _; do
            [ -n "$h" ] || continue
            for ((i = 0; i < n; i++)); do slots+=("$h"); done
        done < "$nodefile"
        ;;
    *)
        echo "offload: unknown node list format '$format'" >&2
        exit 94
        ;;
esac
need=$((ranks * threads))
if [ "${#slots[@]}" -lt "$need" ]; then
    echo "offload: the node list has ${#slots[@]} slots; $ranks ranks of $threads threads need $need" >&2
    exit 94
fi
pids=()
for ((r = 0; r < ranks; r++)); do
    host=${slots[$((r * threads))]}
    "$@" "$host" env "OFFLOAD_RUN=$OFFLOAD_RUN" "OFFLOAD_TAIL=${OFFLOAD_TAIL:-2000}" \
        /bin/bash "$OFFLOAD_RUN/tasks/run.sh" "$r" \
        < /dev/null > "$OFFLOAD_RUN/logs/rank-$r.log" 2>&1 &
    pids+=("$!")
done
status=0
for p in "${pids[@]}"; do
    wait "$p" || status=1
done
exit "$status"
