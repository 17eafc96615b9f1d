# Runs beside the learner's shell: waits for the shell to be there, then sets up.
until [ -f /tmp/labkernel-kc-shell-ready ]; do sleep 0.2; done
echo configured > handshake.txt
touch /tmp/labkernel-kc-setup-done
