# Guest test: the order in which a program sees what an m2m device
# returned, on $VIDEO (default /dev/video0) of the test device's m2m
# backend: m2m-poll-pairs (see m2m-poll-pairs.c), STREAMS streams (default
# 100) with epoll and with select, then m2m-eos-order (see
# m2m-eos-order.c), DRAINS drains (default STREAMS). Prints "PAIRS status" and "EOS status" lines for the
# host; exits 1 if either failed.
# make check builds and passes both programs (tools/check/driver.sh,
# t_m2m_order); by hand: gcc -O2 -static -I$(tools/vm/kernel.sh headers)
# -o NAME tools/vm/tests/NAME.c, and --file them.
. /test.env
pairs=0
start=$(date +%s)
for mode in epoll select; do
	/extra/m2m-poll-pairs "${VIDEO:-/dev/video0}" "${STREAMS:-100}" $mode || pairs=1
done
echo "PAIRS $pairs ($(($(date +%s) - start)) s)"
start=$(date +%s)
/extra/m2m-eos-order "${VIDEO:-/dev/video0}" "${DRAINS:-${STREAMS:-100}}"
eos=$?
echo "EOS $eos ($(($(date +%s) - start)) s)"
[ $pairs = 0 ] && [ $eos = 0 ]
