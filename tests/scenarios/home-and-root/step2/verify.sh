f=/root/kc-home/combined.txt
grep -q "written by the setup" "$f" && grep -q "copied in as an asset" "$f" \
  || { echo "$f lacks the setup's or the asset's line"; exit 1; }
