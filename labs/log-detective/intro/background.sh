# Runs hidden beside the learner's shell, as on Killercoda (no shebang needed: run as
# `bash FILE`); nothing waits for it, so it ends with a marker the foreground waits for.
set -eu
mkdir -p logs
i=0
for level in INFO INFO ERROR INFO WARN INFO ERROR INFO INFO ERROR INFO WARN; do
    i=$((i + 1))
    case $level in
        ERROR) msg="payment gateway timed out for order $((1000 + i))" ;;
        WARN) msg="slow query: $((i * 120)) ms" ;;
        *) msg="served request $i" ;;
    esac
    printf '2026-11-26T09:%02d:00Z %-5s %s\n' "$i" "$level" "$msg" >> logs/app.log
done
touch logs/.ready
