grep -qx done carried-on.txt || { echo "carried-on.txt does not say done"; exit 1; }
