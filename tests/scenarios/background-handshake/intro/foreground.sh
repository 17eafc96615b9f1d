touch /tmp/labkernel-kc-shell-ready
echo "waiting for the setup..."; until [ -f /tmp/labkernel-kc-setup-done ]; do sleep 0.2; done; echo "setup done"
