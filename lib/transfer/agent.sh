#!/usr/bin/env bash
# The far side of a transfer (see mod.rs), one per channel: run through the
# master as `bash --norc -c "$AGENT" offload SESSION`, it reads framed
# requests on stdin and answers on stdout.
set -u
export LC_ALL=C
S=${1:?session}
T=$(mktemp -d "${TMPDIR:-/tmp}/offload-xfer.XXXXXX") || { echo "BAD 0 cannot make a temporary folder"; exit 70; }
case $T in /*) ;; *) T=$PWD/$T ;; esac
trap 'wait; rm -rf "$T"' EXIT
shopt -s dotglob
if command -v zstd >/dev/null 2>&1; then Z=1; else Z=0; fi
# GNU tar reads a bundle (whole records) straight from the channel and stops
# at its end; any other tar gets it through head -c.
case $(tar --version 2>/dev/null) in *"GNU tar"*) G=1 ;; *) G=0 ;; esac
echo "READY $Z $T"
one() { tr '\n' ' ' < "$1" | head -c 400; }
# The last name takes the rest of the line: c is always one field.
while IFS=' ' read -r kind id a b c _; do
  case $kind in
  P)
    # Files arrive in a hidden staging folder beside their destination,
    # DEST_DIR/.offload-part.SESSION-ID/NAME, are checked, then moved in one
    # go per folder. The bundle's own lists travel in its tar, in $T/b.ID:
    # D (staging<TAB>destination folders) first, then the files, then P
    # (their staged paths, NUL-separated) and M (their checksums, as cksum
    # prints them). A process costs more here than the work: no step forks
    # one it can do without.
    m=$T/b.$id
    direct=0
    if [ "$b" = 1 ]; then
      head -c "$a" | { zstd -dqc | tar -x --no-same-owner -f - -C / 2> "$T/e"; s=$?; cat > /dev/null; exit $s; }
    elif [ "$G" = 1 ] && [ $((a % 10240)) -eq 0 ]; then
      direct=1
      tar -x -B -b 20 --no-same-owner -f - -C / 2> "$T/e"
    else
      head -c "$a" | { tar -x --no-same-owner -f - -C / 2> "$T/e"; s=$?; cat > /dev/null; exit $s; }
    fi
    # shellcheck disable=SC2181 # the status of whichever of the three ran
    if [ $? -ne 0 ]; then
      # Cleared before the answer: a retry may come to the same staging
      # folder on another channel as soon as it is read.
      if [ -f "$m/D" ]; then while IFS=$'\t' read -r sd dd; do rm -rf -- "$sd"; done < "$m/D"; fi
      rm -rf -- "$m"
      echo "BAD $id tar: $(one "$T/e")"
      # Read straight from the channel, a failed tar may have stopped short:
      # the stream can no longer be trusted. End this channel; the bundle
      # goes again on another.
      [ "$direct" = 1 ] && exit 75
      continue
    fi
    # The answer comes last: once it is read, a retry of the bundle may
    # reuse its names (here or on another channel).
    (
      SD=() DD=()
      while IFS=$'\t' read -r sd dd; do SD+=("$sd"); DD+=("$dd"); done < "$m/D"
      if xargs -0 cksum -- < "$m/P" > "$m/C" 2>&1 && cmp -s "$m/C" "$m/M"; then
        answer="OK $id"
        for i in "${!SD[@]}"; do mv -f -t "${DD[i]}" -- "${SD[i]}"/* || answer="BAD $id cannot move into place"; done
        rmdir -- "${SD[@]}" || answer="BAD $id cannot move into place"
      else
        rm -rf -- "${SD[@]}"
        answer="BAD $id checksum: $(one "$m/C")"
      fi
      rm -rf -- "$m"
      echo "$answer"
    ) &
    ;;
  C)
    IFS= read -r p
    { [ -d "${p%/*}/" ] || mkdir -p -- "${p%/*}/"; } 2> "$T/e"
    if [ "$c" = 1 ]; then
      if head -c "$b" | { zstd -dqc | dd of="$p.offload-part.$S" bs=1M seek="$a" oflag=seek_bytes conv=notrunc status=none 2>> "$T/e"; s=$?; cat > /dev/null; exit $s; }; then
        echo "OK $id"
      else
        echo "BAD $id write: $(one "$T/e")"
      fi
    elif dd of="$p.offload-part.$S" bs=1M seek="$a" oflag=seek_bytes conv=notrunc \
        count="$b" iflag=count_bytes,fullblock status=none 2>> "$T/e"; then
      # dd read exactly the chunk's bytes from the channel itself.
      echo "OK $id"
    else
      # It may have stopped short: end this channel rather than read on out
      # of step; the chunk goes again on another.
      echo "BAD $id write: $(one "$T/e")"
      exit 75
    fi
    ;;
  F)
    IFS= read -r p
    (
      sz=$(stat -c %s -- "$p.offload-part.$S" 2>/dev/null)
      if [ "$sz" != "$a" ]; then echo "BAD $id size ${sz:-missing}, expected $a";
      elif [ "$(cksum < "$p.offload-part.$S")" != "$b $a" ]; then echo "BAD $id checksum differs";
      elif mv -f -- "$p.offload-part.$S" "$p"; then echo "OK $id";
      else echo "BAD $id cannot rename into place"; fi
    ) &
    ;;
  G)
    # a bytes of paths, NUL-separated, then b bytes of the same without
    # their leading /: their checksums (M), then the tar of them (T, or Z
    # when zstd-compressed), then tar's complaints (X).
    wait
    head -c "$a" > "$T/l"
    head -c "$b" > "$T/r"
    xargs -0 -r cksum -- < "$T/l" > "$T/s" 2> "$T/e"
    IFS= read -r -d '' sums < "$T/s"
    printf 'M %s %s\n%s' "$id" "${#sums}" "$sums"
    if [ "$c" = 1 ]; then
      tar -c -b 128 -f - -C / --null --no-recursion -T "$T/r" 2>> "$T/e" | zstd -1 -q -c > "$T/z"
      printf 'Z %s %s\n' "$id" "$(wc -c < "$T/z")"
      cat "$T/z"
    else
      echo "T $id"
      tar -c -b 128 -f - -C / --null --no-recursion -T "$T/r" 2>> "$T/e"
    fi
    IFS= read -r -d '' err < "$T/e"
    printf 'X %s %s\n%s' "$id" "${#err}" "$err"
    ;;
  R)
    IFS= read -r p
    sz=$(stat -c %s -- "$p" 2>/dev/null)
    if [ -z "$sz" ] || [ $((a + b)) -gt "$sz" ]; then echo "BAD $id missing or shorter than expected";
    else
      printf 'D %s %s\n' "$id" "$b"
      dd if="$p" bs=1M skip="$a" count="$b" iflag=skip_bytes,count_bytes status=none
    fi
    ;;
  H)
    IFS= read -r p
    s=$(cksum < "$p" 2>/dev/null)
    echo "S $id ${s:-missing}"
    ;;
  Q)
    head -c "$a" > "$T/l.$id"
    xargs -0 -r stat -c '%s %n' -- < "$T/l.$id" > "$T/s.$id" 2> /dev/null
    printf 'L %s %s\n' "$id" "$(wc -c < "$T/s.$id")"
    cat "$T/s.$id"
    rm -f "$T/l.$id" "$T/s.$id"
    ;;
  K)
    head -c "$a" > "$T/l.$id"
    xargs -0 -r cksum -- < "$T/l.$id" > "$T/s.$id" 2> /dev/null
    printf 'L %s %s\n' "$id" "$(wc -c < "$T/s.$id")"
    cat "$T/s.$id"
    rm -f "$T/l.$id" "$T/s.$id"
    ;;
  W)
    # Sweep what killed transfers left in the folders listed (a bytes,
    # NUL-separated): staging names (.offload-part.*, *.offload-part,
    # *.offload-part.*) not modified for b seconds, never this session's.
    # A live transfer's are modified as they are written. One find for
    # all the folders (a push's absolute paths; one missing is passed
    # over); the paths removed come back, NUL-separated.
    head -c "$a" > "$T/l.$id"
    printf -v mm '%d.%03d' $((b / 60)) $(((b % 60) * 1000 / 60))
    # shellcheck disable=SC2016 # for the inner bash to expand
    xargs -0 -r bash --norc -c 'S=$1 mm=$2; shift 2; find "$@" -mindepth 1 -maxdepth 1 \( -name "*.offload-part" -o -name "*.offload-part.*" \) ! -name ".offload-part.$S-*" ! -name "*.offload-part.$S" -mmin "+$mm" -print0' sweep "$S" "$mm" < "$T/l.$id" 2> /dev/null \
      | while IFS= read -r -d '' p; do rm -rf -- "$p" 2> /dev/null && printf '%s\0' "$p"; done > "$T/s.$id"
    printf 'L %s %s\n' "$id" "$(wc -c < "$T/s.$id")"
    cat "$T/s.$id"
    rm -f "$T/l.$id" "$T/s.$id"
    ;;
  N)
    echo "OK $id"
    ;;
  E)
    wait
    echo "BYE"
    exit 0
    ;;
  *)
    echo "BAD ${id:-0} unknown request '$kind'"
    exit 64
    ;;
  esac
done
wait
