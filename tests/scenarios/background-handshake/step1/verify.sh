grep -qx configured handshake-seen.txt || { echo "handshake-seen.txt is not a copy of the setup's handshake.txt"; exit 1; }
