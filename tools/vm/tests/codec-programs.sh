# Guest test: the codec tests with real programs in one boot (each boot of
# the debug kernel costs about 30 s under TCG). Runs, from /extra, each of
# codec-decode.sh (decoder device), codec-convert.sh (m2m device) and
# codec-encode.sh (encoder device) that the host put there (--file); each
# exports its own files. Exits 1 if one of them failed.
status=0
for part in decode convert encode; do
	[ -f "/extra/codec-$part.sh" ] || continue
	echo "=== codec-$part.sh ==="
	sh "/extra/codec-$part.sh" || { echo "codec-$part.sh: status $?"; status=1; }
done
exit $status
