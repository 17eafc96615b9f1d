dpkg-query -W -f='${Status}' kc-hello 2>/dev/null | grep -q "install ok installed" || { echo "kc-hello is not installed"; exit 1; }
[ "$(kc-hello)" = "hello from a package" ] || { echo "kc-hello does not say hello"; exit 1; }
