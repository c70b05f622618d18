#!/usr/bin/env bash
# Pack a device call's results into $OUT so that they come back (the device returns <= 8 files of <= 16 MiB).
#   bash scripts/device_pack.sh NAME PATH...     -> $OUT/NAME.tar, gzip-compressed (resume states, videos, _tmp and
#   the harness's .score_cache left out: the cache is derived and the tenth session lost a whole findings call to it:
#   79 MiB of cache filled the first four parts and the cell records were in the fifth, which did not come back)
# A tar over 16 MiB is split into NAME.tar.partNN pieces (cat them back together here), and the call says so, so
# no result is lost to the size limit: the seventh session lost a trained decoder to a 46 MB tar that held its
# optimiser state. Weights that must come back go in as files of their own when they fit.
set -uo pipefail
name=${1:?usage: device_pack.sh NAME PATH...}; shift
out=${OUT:?device_pack.sh: \$OUT is not set (run it inside a device call)}
limit=$((16 * 1024 * 1024))
tar --exclude='*_state.safetensors' --exclude='*.mp4' --exclude='_tmp' --exclude='.score_cache' -czf "$out/$name.tar" "$@" 2>/dev/null
size=$(stat -c %s "$out/$name.tar")
if (( size > limit )); then
  split -b $((limit - 65536)) -d "$out/$name.tar" "$out/$name.tar.part" && rm "$out/$name.tar"
  echo "device_pack: $name.tar is $((size / 1048576)) MiB: split into $(ls "$out/$name.tar.part"* | wc -l) parts" \
       "(cat $name.tar.part* > $name.tar); the device returns 8 files at most"
else
  echo "device_pack: $name.tar $((size / 1024)) KiB"
fi
total=$(du -sb "$out" | cut -f1)
if (( total > 4 * limit )); then
  echo "device_pack: WARNING \$OUT holds $((total / 1048576)) MiB: more than the device may bring back; pack less"
fi
