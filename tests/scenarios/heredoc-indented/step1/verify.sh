grep -qx 'name=demo' app.conf && grep -qx 'port=8080' app.conf \
  || { echo "app.conf is not the two lines name=demo and port=8080: $(cat app.conf 2>&1)"; exit 1; }
