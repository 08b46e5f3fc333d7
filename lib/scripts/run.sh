#!/bin/bash
# offload rank runner: runs this rank's components one after another
# (pre; command; post) and appends one result line per component.
#
# Each phase runs in a subshell of this runner (`( eval ... )`: a fork, no
# new bash), with no positional parameters; the runner's own names all
# start with `offload_` or `_offload_`. A no-op component costs one fork:
# the stdout and stderr files are reused, and tails and the rank log's copy
# are read only when there is something in them.
export LC_ALL=C
_offload_rank=$1
: "${OFFLOAD_RUN:?OFFLOAD_RUN is not set}"
_offload_tail=${OFFLOAD_TAIL:-2000}
# The exit status of a component whose command worked but whose declared
# outputs are not all there.
_offload_output_status=70
_offload_results="$OFFLOAD_RUN/results/rank-$_offload_rank.tsv"
_offload_scratch=$(mktemp -d "${TMPDIR:-/tmp}/offload-rank-$_offload_rank.XXXXXX") || exit 92
trap 'rm -rf "$_offload_scratch"' EXIT
# The end of the job (the scheduler's cancel, time limit or preemption sends
# SIGTERM to every process of the job) is not the components' doing: the
# runner notes it, lets the component in hand end (the signal reaches it
# too: a subshell takes the default action back), and stops. A component
# cut off so writes no result line, so poll sends it round again with no
# attempt counted; one that had finished is recorded as it ended.
_offload_cut=0
trap '_offload_cut=1' TERM INT
_offload_out="$_offload_scratch/stdout"
_offload_err="$_offload_scratch/stderr"
if [ -n "${EPOCHREALTIME:-}" ]; then
    _offload_now() { _offload_t=$EPOCHREALTIME; }
else
    _offload_now() { _offload_t=$(date +%s.%N); }
fi
# The last _offload_tail bytes of a file on one line, into _offload_v:
# \ -> \\, tab -> \t, newline -> \n, CR -> \r.
_offload_tail_of() {
    _offload_v=
    [[ $_offload_tail -gt 0 ]] || return 0
    _offload_v=$(tail -c "$_offload_tail" "$1" | tr -d '\000')
    _offload_v=${_offload_v//\\/\\\\}
    _offload_v=${_offload_v//$'\t'/\\t}
    _offload_v=${_offload_v//$'\n'/\\n}
    _offload_v=${_offload_v//$'\r'/\\r}
}
offload_component() {
    # Globals (no `local`): this runs once per component, and each
    # statement counts.
    [[ $_offload_cut -eq 0 ]] || exit 143
    _offload_id=$1 _offload_pre=$2 _offload_cmd=$3 _offload_post=$4
    _offload_status=0 _offload_phase=ok _offload_stats=''
    : > "$_offload_out" 2> "$_offload_err"
    _offload_now
    _offload_t0=$_offload_t
    if [[ -n $_offload_pre ]]; then
        (set --; eval "$_offload_pre") >> "$_offload_out" 2>> "$_offload_err"
        _offload_status=$?
        [[ $_offload_status -ne 0 ]] && _offload_phase=pre
    fi
    if [[ $_offload_status -eq 0 ]]; then
        (set --; eval "$_offload_cmd") >> "$_offload_out" 2>> "$_offload_err"
        _offload_status=$?
        [[ $_offload_status -ne 0 ]] && _offload_phase="command"
    fi
    if [[ $_offload_status -eq 0 && -n $_offload_post ]]; then
        _offload_stats=$(set --; eval "$_offload_post" 2>> "$_offload_err")
        _offload_status=$?
        [[ $_offload_status -ne 0 ]] && _offload_phase=post
        _offload_stats=${_offload_stats//[$'\t\r\n']/ }
    fi
    # A phase killed by a signal (status 129-192) may have been killed by
    # the end of the job, whose SIGTERM can reach the runner a moment after
    # the component: wait for it (a trapped signal ends `wait` at once)
    # before taking the death for the component's own.
    if [[ $_offload_cut -eq 0 && $_offload_status -gt 128 && $_offload_status -le 192 ]]; then
        sleep 3 &
        wait $! 2> /dev/null
        kill $! 2> /dev/null
    fi
    if [[ $_offload_cut -ne 0 && $_offload_status -ne 0 ]]; then
        echo "== offload component $_offload_id: cut off by the end of the job (exit $_offload_status in $_offload_phase); no result" >&2
        exit 143
    fi
    # The declared outputs are the component's result too: each must be
    # there and a regular file (not a link, not a folder).
    if [[ $_offload_status -eq 0 && $# -gt 5 ]]; then
        _offload_missing=0
        for _offload_o in "${@:6}"; do
            if [[ ! -f $_offload_o || -L $_offload_o ]]; then
                _offload_missing=$((_offload_missing + 1))
                echo "offload: declared output missing or not a regular file: $_offload_o" >> "$_offload_err"
            fi
        done
        if [[ $_offload_missing -gt 0 ]]; then
            _offload_status=$_offload_output_status
            _offload_phase=output
        fi
    fi
    _offload_now
    echo "== offload component $_offload_id: exit $_offload_status ($_offload_phase)"
    _offload_otail='' _offload_etail=''
    if [[ -s $_offload_out ]]; then
        cat "$_offload_out"
        _offload_tail_of "$_offload_out"
        _offload_otail=$_offload_v
    fi
    if [[ -s $_offload_err ]]; then
        cat "$_offload_err" >&2
        _offload_tail_of "$_offload_err"
        _offload_etail=$_offload_v
    fi
    if [[ -n ${5:-} ]]; then
        {
            echo "== offload component $_offload_id: exit $_offload_status ($_offload_phase)"
            echo "== stdout"; cat "$_offload_out"; echo "== stderr"; cat "$_offload_err"
        } > "$5.offload-tmp" && mv -f "$5.offload-tmp" "$5"
    fi
    printf 'R\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$_offload_id" "$_offload_status" "$_offload_phase" \
        "$_offload_t0" "$_offload_t" "${_offload_stats:0:4000}" "$_offload_otail" "$_offload_etail" >> "$_offload_results"
    [[ $_offload_cut -eq 0 ]] || exit 143
    return 0
}
# The rank's component list, written by prepare.
# shellcheck source=/dev/null
. "$OFFLOAD_RUN/tasks/rank-$_offload_rank.sh"
