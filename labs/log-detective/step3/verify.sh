if [ ! -x report.sh ]; then
    echo "report.sh is missing or not executable (chmod +x report.sh)"
    exit 1
fi
out=$(./report.sh 2>&1)
errors=$(grep -c ERROR logs/app.log)
if ! printf '%s\n' "$out" | grep -qx "errors: $errors"; then
    printf 'report.sh printed:\n%s\nIt should print a line "errors: %s".\n' "$out" "$errors"
    exit 1
fi
printf '%s\n' "$out"
