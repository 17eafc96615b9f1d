grep -qx hello /root/kc-home/greeting.txt || { echo "/root/kc-home/greeting.txt does not say hello"; exit 1; }
