[ "$(cat step2-setup.txt 2>/dev/null)" = "entered step 2
finished" ] || { echo "step2-setup.txt: $(cat step2-setup.txt 2>&1)"; exit 1; }
