grep -q '^node/' nodes.txt || { echo "nodes.txt lists no node"; exit 1; }
