echo "step 2: the job is ready"
