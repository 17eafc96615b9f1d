grep -qx ready /opt/kc-demo/state || { echo "/opt/kc-demo/state is not ready"; exit 1; }
grep -qx 'state=/opt/kc-demo/state' /etc/kc-demo.conf || { echo "/etc/kc-demo.conf does not name the state file"; exit 1; }
