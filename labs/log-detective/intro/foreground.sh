ls -l logs
