expected=$(cut -d' ' -f1 logs/access.log | sort -u | wc -l)
if [ ! -f visitors.txt ]; then
    echo "There is no visitors.txt yet"
    exit 1
fi
got=$(tr -d ' \n' < visitors.txt)
if [ "$got" != "$expected" ]; then
    echo "visitors.txt says '$got'; count each address once"
    exit 1
fi
echo "$expected visitors"
