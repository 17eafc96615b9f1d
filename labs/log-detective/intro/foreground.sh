until [ -f logs/.ready ]; do sleep 0.2; done; clear; ls -l logs
