echo "entered step 2" > step2-setup.txt
