# Guest test: the insmod cycles (lifecycle-insmod.sh), then, with the
# module loaded again, the unbind cycles (lifecycle-unbind.sh): one boot
# for both. Each prints its own RESULT line.
sh /extra/lifecycle-insmod.sh
insmod_status=$?
if ! grep -q '^virtio_media ' /proc/modules; then
	insmod /extra/virtio_media.ko $(tr ' ' '\n' < /proc/cmdline | sed -n 's/^virtio_media\.//p') ||
		{ echo "RESULT unbind-cycles FAIL the module did not load after the insmod cycles"; exit 1; }
fi
sh /extra/lifecycle-unbind.sh
unbind_status=$?
[ "$insmod_status" = 0 ] && [ "$unbind_status" = 0 ]
