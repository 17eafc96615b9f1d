grep -q notes.txt listing.txt || { echo "listing.txt does not list notes.txt"; exit 1; }
[ "$(cat count.txt 2>/dev/null)" = 80 ] || { echo "count.txt does not say 80"; exit 1; }
