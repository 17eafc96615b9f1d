[ -f /tmp/labkernel-kc-step1-applied ] || { echo "the step is not applied yet"; exit 1; }
