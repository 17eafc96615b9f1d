# A URL of port 8080 (directly, or through jupyter-server-proxy), no placeholder left.
grep -Eqx 'https?://[^{}[:space:]]+(:8080|/proxy/8080)/?' url.txt || { echo "url.txt holds '$(cat url.txt 2>/dev/null)'"; exit 1; }
