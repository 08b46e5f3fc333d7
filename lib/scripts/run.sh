#!/bin/bash
# offload rank runner: runs this rank's components one after another
# (pre; command; post) and appends one result line per component.
export LC_ALL=C
rank=$1
: "${OFFLOAD_RUN:?OFFLOAD_RUN is not set}"
tail_bytes=${OFFLOAD_TAIL:-2000}
# The exit status of a component whose command worked but whose declared
# outputs are not all there.
OUTPUT_STATUS=70
results="$OFFLOAD_RUN/results/rank-$rank.tsv"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/offload-rank-$rank.XXXXXX") || exit 92
trap 'rm -rf "$scratch"' EXIT
now() {
    if [ -n "${EPOCHREALTIME:-}" ]; then printf '%s' "$EPOCHREALTIME"; else date +%s.%N; fi
}
# The last tail_bytes of a file on one line: \ -> \\, tab -> \t, newline -> \n, CR -> \r.
one_line_tail() {
    local s
    [ "$tail_bytes" -gt 0 ] && [ -s "$1" ] || return 0
    s=$(tail -c "$tail_bytes" "$1" | tr -d '\000')
    s=${s//\\/\\\\}
    s=${s//$'\t'/\\t}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    printf '%s' "$s"
}
offload_component() {
    local id=$1 pre=$2 cmd=$3 post=$4 keep=${5:-} status=0 phase=ok stats="" t0 t1
    local out="$scratch/$id.out" err="$scratch/$id.err"
    : > "$out"; : > "$err"
    t0=$(now)
    if [ -n "$pre" ]; then
        bash -c "$pre" >> "$out" 2>> "$err"; status=$?
        [ "$status" -ne 0 ] && phase=pre
    fi
    if [ "$status" -eq 0 ]; then
        bash -c "$cmd" >> "$out" 2>> "$err"; status=$?
        [ "$status" -ne 0 ] && phase="command"
    fi
    if [ "$status" -eq 0 ] && [ -n "$post" ]; then
        stats=$(bash -c "$post" 2>> "$err"); status=$?
        [ "$status" -ne 0 ] && phase=post
    fi
    # The declared outputs are the component's result too: each must be
    # there and a regular file (not a link, not a folder).
    if [ "$status" -eq 0 ] && [ $# -gt 5 ]; then
        local o missing=0
        for o in "${@:6}"; do
            if [ ! -f "$o" ] || [ -L "$o" ]; then
                missing=$((missing + 1))
                echo "offload: declared output missing or not a regular file: $o" >> "$err"
            fi
        done
        if [ "$missing" -gt 0 ]; then status=$OUTPUT_STATUS; phase=output; fi
    fi
    t1=$(now)
    stats=${stats//[$'\t\r\n']/ }
    echo "== offload component $id: exit $status ($phase)"
    cat "$out"; cat "$err" >&2
    if [ -n "$keep" ]; then
        { echo "== offload component $id: exit $status ($phase)"; echo "== stdout"; cat "$out"; echo "== stderr"; cat "$err"; } > "$keep.offload-tmp" && mv -f "$keep.offload-tmp" "$keep"
    fi
    printf 'R\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$status" "$phase" "$t0" "$t1" "${stats:0:4000}" \
        "$(one_line_tail "$out")" "$(one_line_tail "$err")" >> "$results"
    rm -f "$out" "$err"
}
# The rank's component list, written by prepare.
# shellcheck source=/dev/null
. "$OFFLOAD_RUN/tasks/rank-$rank.sh"
