#!/usr/bin/env bash
# Regenerates the default prompt sets (prompts/sets/default/<lang>/<lang>_<name>.au) from the
# texts in prompts/sets/texts/<lang>.tsv, with Debian's espeak-ng and sox:
#   apt-get install espeak-ng sox && prompts/generate.sh
# A text may switch voice mid-prompt: segments separated by " || ", each optionally starting
# with [en], [es] or [zh] (the language menu speaks each language in its own voice).
# The generated files are committed, so users need neither tool.
set -euo pipefail
cd "$(dirname "$0")"
declare -A VOICE=([en]=en-us [es]=es-419 [zh]=cmn-latn-pinyin)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for lang in en es zh; do
  out="sets/default/$lang"
  rm -rf "$out"
  mkdir -p "$out"
  while IFS=$'\t' read -r name text; do
    [ -n "$name" ] || continue
    parts=()
    i=0
    while IFS= read -r seg; do
      voice="${VOICE[$lang]}"
      if [[ "$seg" =~ ^\[(en|es|zh)\](.*)$ ]]; then
        voice="${VOICE[${BASH_REMATCH[1]}]}"
        seg="${BASH_REMATCH[2]}"
      fi
      espeak-ng -v "$voice" -s 150 -w "$work/$i.wav" "$seg"
      # Each segment to 8 kHz mono first, so that voices of different rates concatenate.
      sox -D "$work/$i.wav" -r 8000 -c 1 -b 16 "$work/$i.r.wav" norm -3 silence 1 0.01 -45d reverse silence 1 0.01 -45d reverse pad 0 0.08
      parts+=("$work/$i.r.wav")
      i=$((i + 1))
    done < <(printf '%s\n' "$text" | sed 's/ || /\n/g')
    sox -D "${parts[@]}" -t au -e mu-law -b 8 -r 8000 -c 1 "$out/${lang}_${name}.au"
  done < "sets/texts/$lang.tsv"
  echo "$lang: $(ls "$out" | wc -l) prompts"
done
