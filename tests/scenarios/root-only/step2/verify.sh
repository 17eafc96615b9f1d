id kc-demo >/dev/null || { echo "there is no user kc-demo"; exit 1; }
[ "$(stat -c %U /opt/kc-demo/state)" = kc-demo ] || { echo "/opt/kc-demo/state belongs to $(stat -c %U /opt/kc-demo/state)"; exit 1; }
