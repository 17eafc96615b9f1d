echo "kc-note: cannot reach the package mirror" >&2
exit 3
