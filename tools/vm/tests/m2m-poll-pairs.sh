# Guest test: m2m-poll-pairs (see m2m-poll-pairs.c) on /dev/video0 of an
# m2m device, STREAMS streams (default 200) with epoll and with select.
# make check builds and passes the program (tools/check/driver.sh,
# t_m2m_poll_pairs); by hand: gcc -O2 -static -I$(tools/vm/kernel.sh
# headers) -o m2m-poll-pairs tools/vm/tests/m2m-poll-pairs.c, --file it.
. /test.env
status=0
for mode in epoll select; do
	/extra/m2m-poll-pairs /dev/video0 "${STREAMS:-200}" $mode || status=1
done
exit $status
