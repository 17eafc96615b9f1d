mkdir -p ~/kc-home
echo "written by the setup" > ~/kc-home/from-setup.txt
