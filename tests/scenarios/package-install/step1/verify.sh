[ "$(dpkg-deb --field kc-hello.deb Package 2>/dev/null)" = kc-hello ] || { echo "kc-hello.deb is not built yet"; exit 1; }
